"""Resolving a machine's pins when its system key is the public half of a sops secret.

The figure: ``Fleet.pins()`` for a machine whose host key is only in sops, as every probe
calls it, with the derived public key cached per sops file version. The baseline: one
``sops decrypt`` of the same secret, which is what each probe would cost without the cache.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Figure, median, print_figures
from bot.config.inventory import Machine
from bot.core.sops import SopsReader
from bot.remote.fleet import Fleet
from bot.remote.pins import SopsHostKeys
from bot.remote.target import Reach
from store import Store
from tests.lab.sops import make_sops_secrets
from tests.world import make_host_key

ROUNDS = 200
DECRYPTS = 5


async def measure() -> tuple[list[Figure], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-pins-") as tmp:
        root = Path(tmp)
        secrets = make_sops_secrets(root, {"web_key": make_host_key(root)})
        reader = SopsReader(secrets.sops, secrets.env)
        machine = Machine(
            name="web",
            host="127.0.0.1",
            flake_attr="web",
            luks=True,
            secrets_file=secrets.path,
            host_key_secret="web_key",
        )
        store = await Store.open(root / "db.sqlite3")
        try:
            fleet = Fleet(store, Reach(client_key=root / "none"), SopsHostKeys(reader))
            started = time.perf_counter()
            first = await fleet.pins(machine)
            cold = time.perf_counter() - started
            assert first.system
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                await fleet.pins(machine)
                times.append(time.perf_counter() - started)
        finally:
            await store.close()
        decrypts = []
        for _ in range(DECRYPTS):
            started = time.perf_counter()
            (await reader.value(secrets.path, "web_key")).wipe()
            decrypts.append(time.perf_counter() - started)
    figure = Figure(
        "pins of a sops-keyed machine, per probe (cached)",
        median(times) * 1000,
        "one sops decrypt of its host key",
        median(decrypts) * 1000,
        unit="ms",
    )
    return [figure], {"first pins, sops included (s)": cold}


if __name__ == "__main__":
    print_figures(measure)
