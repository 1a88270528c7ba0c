"""The lab's systemd initrd: the real ``systemd-ask-password`` asks, the real
``systemd-tty-ask-password-agent`` answers, each host in a mount namespace of its own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncssh

from tests.lab import Lab, LabHost
from tests.lab.ask_password import GIVING_UP, WRONG
from tests.lab.clients import connect, ssh
from tests.lab.proc import lab_processes

pytest_plugins = ["tests.lab.fixtures"]
HINT = "(press TAB for no echo) "
REAL = Path("/run/systemd/ask-password")


def _snapshot(folder: Path) -> tuple[float, list[str]]:
    return folder.stat().st_mtime, sorted(os.listdir(folder))


def _mounts_mentioning(needle: str) -> list[str]:
    """Mount table lines of every process that mention ``needle`` (any namespace)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "mountinfo").read_text()
        except OSError:
            continue
        found += [f"{entry.name}: {line}" for line in text.splitlines() if needle in line]
    return found


async def _answer(lab: Lab, host: LabHost, answers: list[bytes]) -> str:
    """Run the agent on a dumb terminal and answer its prompts in turn (b"\\x04" skips).

    The terminal starts with echo off: the agent prints its hint *before* it turns echo
    off, so even a write right after the hint can come back in clear (seen here).
    """
    async with await connect(lab, host, initrd=True) as conn:
        proc = await conn.create_process(
            "systemd-tty-ask-password-agent --query",
            term_type="dumb",
            term_modes={asyncssh.PTY_ECHO: 0},
            encoding=None,
        )
        seen = b""
        for answer in answers:
            seen += await asyncio.wait_for(proc.stdout.readuntil(HINT.encode()), 10)
            proc.stdin.write(answer)
        seen += await asyncio.wait_for(proc.stdout.read(), 10)
        await asyncio.wait_for(proc.wait_closed(), 10)
    return seen.decode(errors="replace")


async def test_each_host_sees_only_its_own_queries_and_nothing_leaks(tmp_path: Path) -> None:
    before = _snapshot(REAL)
    lab = Lab()
    try:
        one = lab.start_installed_host("one", initrd="systemd")
        two = lab.start_installed_host("two", initrd="systemd", volumes=[("disk-two", "vault")])
        for host in (one, two):

            def asking(h: LabHost = host) -> bool:
                return bool(h.pending_queries)

            await host.wait_until(asking, 10, "a query")
        listed_one = ssh(lab, one, "systemd-tty-ask-password-agent --list", initrd=True)
        listed_two = ssh(lab, two, "systemd-tty-ask-password-agent --list", initrd=True)
        assert listed_one.stdout.startswith(
            "'Please enter passphrase for disk disk-main-luks (crypted):' (PID "
        )
        assert listed_one.stdout.count("\n") == 1
        assert listed_two.stdout.startswith(
            "'Please enter passphrase for disk disk-two (vault):' (PID "
        )
        assert _snapshot(REAL) == before, "the real /run/systemd/ask-password was touched"
        assert _mounts_mentioning(str(lab.dir)), "the hosts' folders are mounted somewhere"
        assert not [m for m in _mounts_mentioning(str(lab.dir)) if m.startswith(f"{os.getpid()}:")]
    finally:
        lab.close()
    assert not lab_processes(lab.dir)
    assert not _mounts_mentioning(str(lab.dir))
    assert _snapshot(REAL) == before


async def test_three_wrong_answers_and_the_initrd_gives_up_until_a_reboot(lab: Lab) -> None:
    host = lab.start_installed_host("sd", initrd="systemd", boot_delay=0.1)
    first_boot = host.boot_id
    for attempt in range(1, 4):
        await host.wait_until(lambda: bool(host.pending_queries), 10, f"query {attempt}")
        session = await _answer(lab, host, [f"wrong {attempt}\r".encode()])
        assert "Please enter passphrase for disk disk-main-luks (crypted):" in session
        assert f"wrong {attempt}" not in session, "echo off from the start: never echoed"
        assert "Failed" not in session, "verdicts go to the console only"
        assert "attempts" not in session

        def judged(n: int = attempt) -> bool:
            return host.wrong_attempts == n

        await host.wait_until(judged, 10, f"verdict {attempt}")
    await host.wait_until(lambda: host.gave_up, 10, "giving up")
    assert host.console == [f"systemd-cryptsetup[crypted]: {WRONG}"] * 3 + [
        f"systemd-cryptsetup[crypted]: {GIVING_UP}"
    ]
    assert host.pending_queries == []
    listed = ssh(lab, host, "systemd-tty-ask-password-agent --list", initrd=True)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert host.stage == "initrd"
    assert not host.pending_passphrase
    # Only a reboot brings new tries.
    host.reboot()
    await host.wait_until(lambda: host.boot_id != first_boot and bool(host.pending_queries))
    assert not host.gave_up
    await _answer(lab, host, [(host.luks_passphrase or "").encode() + b"\r"])
    await host.wait_for_stage("booted")
    assert [a.correct for a in host.attempts] == [False, False, False, True]


async def test_two_volumes_two_queries_and_recovery_keys(lab: Lab) -> None:
    volumes = [("disk-main-luks", "crypted"), ("disk-data-luks", "cryptdata")]
    host = lab.start_installed_host("two", initrd="systemd", volumes=volumes, recovery_key=True)
    await host.wait_until(lambda: len(host.pending_queries) == 2, 10, "two queries")
    assert host.pending_queries == [
        "Please enter recovery key for disk disk-data-luks (cryptdata):",
        "Please enter recovery key for disk disk-main-luks (crypted):",
    ]
    # The agent answers every pending query in turn; verdicts stay on the console.
    key = (host.luks_passphrase or "").encode()
    session = await _answer(lab, host, [key + b"\r", key + b"\r"])
    assert session.count("Please enter recovery key for disk") == 2
    await host.wait_for_stage("booted")
    assert [a.correct for a in host.attempts] == [True, True]


async def test_no_tty_end_of_input_costs_a_try(lab: Lab) -> None:
    host = lab.start_installed_host("eof", initrd="systemd")
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    async with await connect(lab, host, initrd=True) as conn:
        result = await conn.run(
            "systemd-tty-ask-password-agent --query", stdin=asyncssh.DEVNULL, timeout=10
        )
    assert (result.exit_status, result.stdout) == (0, "")
    await host.wait_until(lambda: host.wrong_attempts == 1, 10, "the empty answer")
