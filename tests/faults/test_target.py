"""Fault matrix, target side: SSH, nixos-anywhere and sops failing under a running deploy.

Each test ends with the job in its final state, a message in the chat saying what broke
and where, no stand-in process left behind, and the bot still answering.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from tests.lab.host import LabHost
from tests.people import OPERATOR
from tests.waiting import eventually
from tests.world import HOST_KEY_SECRET, LUKS_SECRET, World

OS_RELEASE = 'ID=nixos\nVARIANT_ID=installer\nPRETTY_NAME="NixOS installer"\n'
MEMINFO = "MemTotal:        2097152 kB\n"


def plain(world: World, host: LabHost, **keys: object) -> None:
    world.machine("clawsiecats", host, luks=False, flake_attr="clawsiecats", **keys)


def at_address(world: World, address: str, port: int) -> None:
    """A machine that is no lab host: only its address and port are real."""
    world.machines["clawsiecats"] = (
        "[machines.clawsiecats]\n"
        f'host = "{address}"\nssh_port = {port}\nflake_attr = "clawsiecats"\n'
        f"operators = [{OPERATOR}]\n"
    )


async def failed_job(world: World) -> str:
    """The job's final progress message, once it failed; the job's row says so too."""
    end = await world.job_end(world.op)
    assert "— failed after" in end.body, end.body

    async def stored() -> bool:
        job = await world.rig.svc.store.job(1)
        return job is not None and job.state == "failed"

    await eventually(stored, what="job 1 stored as failed")
    return end.body


async def still_answering(world: World) -> None:
    reply = await world.rig.ask(world.op, "/jobs", timeout=20)
    assert "#1 deploy clawsiecats" in reply.body
    assert "failed" in reply.body


# -- SSH --------------------------------------------------------------------------------


async def test_ssh_refused(world: World) -> None:
    host = world.lab.start_host("off", luks=False)
    plain(world, host)
    host.power_off()
    await world.start()
    await world.rig.tg.send_text(world.op, "/deploy clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at preflight: cannot reach" in body
    assert "refused" in body.lower()
    await still_answering(world)


@pytest_asyncio.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (a black-holed sshd)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_ssh_timing_out(world: World, silent_port: int) -> None:
    at_address(world, "127.0.0.1", silent_port)
    await world.start(ssh_timeout=1.0)
    await world.rig.tg.send_text(world.op, "/deploy clawsiecats")
    body = await failed_job(world)
    assert f"❌ failed at preflight: cannot reach 127.0.0.1:{silent_port}" in body
    assert "did not answer within 1 s" in body
    await still_answering(world)


Handler = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]


async def serve_ssh(world: World, handler: Handler) -> asyncssh.SSHAcceptor:
    """A real SSH server (asyncssh) that lets the lab's operator key in and runs ``handler``."""
    return await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        authorized_client_keys=asyncssh.import_authorized_keys(world.lab.operator_public_key),
        process_factory=handler,
        encoding=None,
    )


async def installer_facts(process: asyncssh.SSHServerProcess[bytes], drop_at: str) -> None:
    """Answer like an installer until the command naming ``drop_at``; then cut the line."""
    command = process.command or ""
    if drop_at in command:
        process.stdout.write(b"MemTotal:  ")
        process.get_extra_info("connection").abort()
        return
    process.stdout.write((MEMINFO if "meminfo" in command else OS_RELEASE).encode())
    process.exit(0)


async def never_answers(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("fault", ["drop", "hang"])
async def test_ssh_dropping_or_hanging_mid_command(world: World, fault: str) -> None:
    async def handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
        if fault == "drop":
            await installer_facts(process, drop_at="meminfo")
        else:
            await never_answers(process)

    server = await serve_ssh(world, handler)
    try:
        port = server.sockets[0].getsockname()[1]
        at_address(world, "127.0.0.1", port)
        await world.start(ssh_timeout=1.5)
        await world.rig.tg.send_text(world.op, "/deploy clawsiecats")
        body = await failed_job(world)
    finally:
        server.close()
        await server.wait_closed()
    assert "❌ failed at preflight: could not read the target's facts" in body
    if fault == "drop":
        assert "connection lost while running 'cat'" in body
    else:
        assert "did not finish within 1.5 s" in body
    await still_answering(world)


@pytest.mark.parametrize("rw_store_size", ["512M", ""])
async def test_host_key_changing_after_confirmation_stops_before_installing(
    world: World, rw_store_size: str
) -> None:
    """The key the user confirmed is the key that gets installed, or nothing is."""
    host = world.lab.start_host("rekeyed", luks=False)
    plain(world, host, rw_store_size=rw_store_size)
    await world.start()
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/deploy clawsiecats")
    confirmation = await tg.wait_for_message(op, lambda m: bool(m.buttons), timeout=20)
    confirmed_key = host.installer_host_key
    host.reboot()  # an installer makes a new host key at every boot
    await host.wait_until(
        lambda: host.stage == "installer" and host.installer_host_key != confirmed_key,
        timeout=10,
        what="the installer back with a new key",
    )
    await tg.press_button(op, confirmation, "Erase and install")
    body = await failed_job(world)
    assert "host key" in body, body
    assert "does not match" in body or "changed since you confirmed" in body, body
    assert not [e for e in host.events if "installed" in e]
    assert host.stage == "installer"
    await still_answering(world)


# -- nixos-anywhere ---------------------------------------------------------------------


async def test_nixos_anywhere_exiting_non_zero(world: World) -> None:
    host = world.lab.start_host("faulty", luks=False)
    host.inject_failure("install", exit_code=7, message="simulated install failure")
    plain(world, host)
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at nixos-anywhere (install)" in body
    assert "exited 7" in body
    tg = world.rig.tg
    await tg.wait_until(lambda: tg.documents_in(world.op), what="the job log")
    document = tg.documents_in(world.op)[-1].document
    assert document is not None
    assert b"simulated install failure" in document.data
    assert not world.stand_ins()
    await still_answering(world)


async def test_nixos_anywhere_hanging_past_its_timeout(world: World) -> None:
    host = world.lab.start_host("hangs", luks=False)
    host.hang_at("install")
    plain(world, host)
    await world.start(nixos_anywhere_timeout=3.0)
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at nixos-anywhere" in body
    assert "did not finish within 3 s and was stopped" in body
    assert not world.stand_ins(), "the hung nixos-anywhere outlived its timeout"
    await still_answering(world)


CHATTY = """\
import os, sys
line = b"building '/nix/store/" + b"x" * 90 + b".drv'...\\n"
out = os.fdopen(1, "wb", buffering=1 << 16)
for _ in range({lines}):
    out.write(line)
out.write(b"a single line without end " + b"y" * {long_line})
out.write(b"\\n")
out.flush()
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


async def test_nixos_anywhere_printing_10_mb(world: World, tmp_path: Path) -> None:
    """10 MB of build output: the bot stays responsive, the log keeps it, memory stays bounded."""
    host = world.lab.start_host("chatty", luks=False)
    host.inject_failure("reboot", exit_code=9, message="simulated failure after the noise")
    plain(world, host)
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY.format(lines=100_000, long_line=1_000_000))
    stand_in = world.rig.env["DEPLOYBOT_NIXOS_ANYWHERE"]
    world.rig.env["DEPLOYBOT_NIXOS_ANYWHERE"] = shlex.join(
        [sys.executable, str(script), *shlex.split(stand_in)[1:]]
    )
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    status = await world.rig.ask(world.op, "/whoami", timeout=20)
    assert status.body.startswith(f"You are {OPERATOR}")
    body = await failed_job(world)
    assert "exited 9" in body
    job = await world.rig.svc.store.job(1)
    assert job is not None
    log = await asyncio.to_thread(Path(job.log_path).read_bytes)
    assert log.count(b"building '/nix/store/" + b"x" * 90) == 100_000
    long_line = next(line for line in log.splitlines() if b"a single line without end" in line)
    assert len(long_line) < 5000  # the megabyte-long line was cut, not kept whole
    tg = world.rig.tg
    await tg.wait_until(lambda: tg.documents_in(world.op), timeout=30, what="the job log")
    assert not world.stand_ins()
    await still_answering(world)


# -- sops -------------------------------------------------------------------------------


async def test_sops_missing(world: World) -> None:
    host = world.lab.start_host("nosops", luks=False)
    plain(world, host)
    world.rig.env["DEPLOYBOT_SOPS"] = str(world.root / "no" / "sops")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at staging: sops executable" in body
    assert "not found or not executable" in body
    assert host.stage == "installer"
    await still_answering(world)


async def test_sops_key_missing(world: World) -> None:
    host = world.lab.start_host("nokey", luks=False)
    plain(world, host, host_key_secret="no_such_key")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at staging" in body
    assert "has no key 'no_such_key'" in body
    await still_answering(world)


async def test_sops_age_key_missing(world: World) -> None:
    host = world.lab.start_host("noage", luks=True)
    world.machine("clawsiecats", host, luks_passphrase_secret=LUKS_SECRET)
    world.rig.env["SOPS_AGE_KEY_FILE"] = str(world.root / "no-such-age-key.txt")
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at disk passphrase: no age key can decrypt" in body
    await still_answering(world)


async def test_sops_file_tampered(world: World) -> None:
    host = world.lab.start_host("tampered", luks=False)
    plain(world, host)
    text = world.sops.path.read_text()
    head = f"{HOST_KEY_SECRET}: ENC[AES256_GCM,data:"
    start = text.index(head) + len(head)
    flipped = "A" if text[start] != "A" else "B"
    world.sops.path.write_text(text[:start] + flipped + text[start + 1 :])
    await world.start()
    await world.confirm_deploy(world.op, "clawsiecats")
    body = await failed_job(world)
    assert "❌ failed at staging" in body
    assert "tampered" in body or "integrity" in body, body
    assert world.host_private_key.splitlines()[1] not in body
    await still_answering(world)
