"""After a whole deploy and unlock, the passphrases and the host's private key are nowhere:
not in the database, the state folder, the logs, the job log, nor any process's command line
or environment seen while it ran.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fake_telegram import FakeUser
from tests.world import World

PASSPHRASE = "leak-canary-7Qx!vR2#kL9 disk words"
WRONG = "leak-canary-wrong-Mz4%pT8"


class ProcessSampler:
    """Reads every process's argv and environment in a loop until stopped."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cmdline-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        self.seen.add((proc / part).read_bytes())
                    except OSError:
                        continue
            self.rounds += 1
            self._stop.wait(0.005)

    def containing(self, needle: bytes) -> list[bytes]:
        return [entry for entry in self.seen if needle in entry]


@contextmanager
def every_logger_at_debug() -> Iterator[None]:
    """DEBUG for the root and each named logger, restored afterwards."""
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    try:
        yield
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


def files_under(*roots: Path) -> dict[Path, bytes]:
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                found[path] = path.read_bytes()
    return found


async def deploy_and_unlock(world: World, op: FakeUser) -> None:
    """/deploy with a new disk passphrase, then a wrong and the right one at the initrd."""
    tg = world.rig.tg
    await world.confirm_deploy(op, "clawsiecats")
    await world.answer_secret(op, "New disk passphrase for clawsiecats", PASSPHRASE)
    await world.answer_secret(op, "again", PASSPHRASE)
    await world.answer_secret(op, "waiting for its disk passphrase", WRONG)
    await world.answer_secret(op, "attempt 2 of 3", PASSPHRASE)
    end = await world.job_end(op)
    assert "✅ unlocked by @opal, up after" in end.body, end.body
    # /log sends the job's log file: what it holds is what anyone can read back.
    await tg.send_text(op, "/log 1")
    await tg.wait_until(lambda: tg.documents_in(op), what="the job log")


async def test_no_secret_survives_a_deploy_and_unlock(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    host = world.lab.start_host("luks", luks=True)
    world.machine("clawsiecats", host)
    op = world.op
    with every_logger_at_debug(), ProcessSampler() as processes:
        caplog.set_level(logging.DEBUG)
        await world.start()
        await deploy_and_unlock(world, op)
        documents = [m.document.data for m in world.rig.tg.documents_in(op) if m.document]
        await world.rig.stop()
    assert [a.correct for a in host.attempts] == [False, True]
    assert host.stage == "booted"

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logs = "\n".join(formatter.format(r) for r in caplog.records)
    # The run was really watched: DEBUG records of the bot and the library, and the
    # processes the deploy started.
    assert "Call to Bot API endpoint `getUpdates`" in logs
    assert processes.containing(b"nixos_anywhere.py"), "the sampler missed the install"
    assert processes.containing(b"sshd"), "the sampler missed the lab's sshd"
    assert processes.rounds > 50

    stored = files_under(world.rig.root)
    db = [p for p in stored if p.name.startswith("deploybot.sqlite3")]
    assert db, "no database file was scanned"
    job_logs = [p for p in stored if p.suffix == ".log"]
    assert job_logs, "no job log was scanned"
    secrets = [
        ("passphrase", PASSPHRASE.encode()),
        ("wrong passphrase", WRONG.encode()),
        *(("host private key", line) for line in _key_lines(world.host_private_key)),
    ]
    # Plain booleans: a failing ``in`` would print the very secret it found.
    for what, needle in secrets:
        found_in_logs = needle in logs.encode()
        assert not found_in_logs, f"the {what} is in the logs"
        for path, data in stored.items():
            found = needle in data
            assert not found, f"the {what} is in {path.relative_to(world.root)}"
        in_chat_log = any(needle in data for data in documents)
        assert not in_chat_log, f"the {what} is in the job log sent to the chat"
        in_processes = bool(processes.containing(needle))
        assert not in_processes, f"the {what} was in a process's argv/env"


def _key_lines(private_key: str) -> list[bytes]:
    """The key's base64 lines past the first (which every OpenSSH key shares)."""
    lines = [line for line in private_key.splitlines() if not line.startswith("-----")]
    return [line.encode() for line in lines[1:] if len(line) >= 40]
