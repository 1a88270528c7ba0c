"""Probes that scale: one kept, pinned login per machine, one exec per probe, start times
spread. The machines are in-process asyncssh servers (tests/sshhosts.py) that count their
logins and commands; the bot is the real one."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncssh
import pytest_asyncio

from bot.flows.watch.schedule import probe_offset
from bot.remote.place import Place
from bot.remote.shell import SECTION_MAX, script, split_output
from tests.botrig import BotRig
from tests.people import OPERATOR
from tests.sshhosts import ANSWERS, Fleet, sim_hosts
from tests.waiting import eventually

HOSTS = 3


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """``check`` for ``eventually``, which awaits its probe."""

    async def probe() -> bool:
        return check()

    return probe


@pytest_asyncio.fixture
async def fleet(rig: BotRig) -> AsyncIterator[tuple[BotRig, Fleet]]:
    async with sim_hosts(HOSTS, rig.root) as hosts:
        rig.env["DEPLOYBOT_SSH_KEY"] = str(hosts.client_key)
        await rig.start(hosts.inventory(operators=f"[{OPERATOR}]"))
        for i in range(HOSTS):
            await rig.svc.store.update_machine(f"m{i}", host_key=hosts.host_key)
        try:
            yield rig, hosts
        finally:
            await rig.stop()


async def test_probes_keep_one_login_and_one_shell_per_machine(
    fleet: tuple[BotRig, Fleet],
) -> None:
    rig, hosts = fleet
    watcher = rig.engine.watcher
    for _ in range(3):
        probes = await watcher.probe_round()
        assert all(p is not None and p.ok for p in probes), probes
    for host in hosts.hosts:
        assert host.logins == 1
        assert host.execs == 1  # one shell, kept
        assert host.shells == 1
        assert len(host.commands) == 3  # a script each probe
        assert all("--deploybot-" in c for c in host.commands)
    assert rig.engine.basics.fleet.open_logins == HOSTS


async def test_a_dead_login_is_reopened(fleet: tuple[BotRig, Fleet]) -> None:
    rig, hosts = fleet
    watcher = rig.engine.watcher
    await watcher.probe_round()
    hosts.hosts[0].drop()
    await eventually(holds(lambda: not hosts.hosts[0].live), timeout=10, what="dropped")
    probes = await watcher.probe_round()
    assert all(p is not None and p.ok for p in probes), probes
    assert [h.logins for h in hosts.hosts] == [2, 1, 1]


async def test_what_is_no_boot_id_is_not_taken_for_one(fleet: tuple[BotRig, Fleet]) -> None:
    """A machine printing something else where its boot id goes (hostile, or broken):
    no boot id is kept, so no reboot is told from it."""
    rig, hosts = fleet
    hosts.hosts[0].boot_id = "\x1b]0;owned\x07 not a boot id"
    probes = await rig.engine.watcher.probe_round()
    first, second = (p.health if p is not None else None for p in probes[:2])
    assert first is not None
    assert second is not None
    assert first.boot_id == ""
    assert second.boot_id == hosts.hosts[1].boot_id
    assert (await rig.svc.store.machine("m0")).boot_id == ""


async def test_a_changed_pin_closes_the_old_login(fleet: tuple[BotRig, Fleet]) -> None:
    rig, hosts = fleet
    watcher, store = rig.engine.watcher, rig.svc.store
    await watcher.probe_round()
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    await store.update_machine("m1", host_key=" ".join(other.split()[:2]))
    probes = await watcher.probe_round()
    assert probes[1] is not None
    assert probes[1].state is Place.WRONG_KEY
    await eventually(holds(lambda: not hosts.hosts[1].live), timeout=10, what="old login closed")
    await store.update_machine("m1", host_key=hosts.host_key)
    probes = await watcher.probe_round()
    assert probes[1] is not None
    assert probes[1].ok
    assert hosts.hosts[1].logins == 2


async def test_logins_end_when_a_machine_leaves_and_when_the_bot_stops(
    fleet: tuple[BotRig, Fleet],
) -> None:
    rig, hosts = fleet
    await rig.engine.watcher.probe_round()
    assert all(h.live for h in hosts.hosts)
    rig.engine.basics.fleet.retain(["m0", "m2"])
    await eventually(holds(lambda: not hosts.hosts[1].live), timeout=10, what="m1's login closed")
    assert hosts.hosts[0].live
    assert hosts.hosts[2].live
    await rig.stop()
    await eventually(
        holds(lambda: not any(h.live for h in hosts.hosts)), timeout=10, what="all closed"
    )


async def test_a_machine_without_a_shell_is_asked_command_by_command(
    fleet: tuple[BotRig, Fleet],
) -> None:
    rig, hosts = fleet
    hosts.hosts[2].has_sh = False
    probes = await rig.engine.watcher.probe_round()
    assert probes[2] is not None
    assert probes[2].ok, probes[2]
    assert probes[2].health is not None
    assert probes[2].health.boot_id == hosts.hosts[2].boot_id
    host = hosts.hosts[2]
    # The shell fails, then the script as one exec, then each command on its own.
    assert host.commands[0] == "sh -s"
    assert host.commands[1].startswith("sh -c ")
    expected = ["cat /proc/sys/kernel/random/boot_id", *ANSWERS][:5]
    assert sorted(host.commands[2:]) == sorted(expected)
    assert host.logins == 1
    before = host.execs
    await rig.engine.watcher.probe_round()
    assert host.execs - before == 1 + 5  # the shell is not tried again on this login


async def test_a_kept_login_that_stops_answering_is_given_up_at_once(rig: BotRig) -> None:
    async with sim_hosts(1, rig.root) as hosts:
        rig.env["DEPLOYBOT_SSH_KEY"] = str(hosts.client_key)
        await rig.start(hosts.inventory(), ssh_timeout=1.0, check_timeout=0.5)
        await rig.svc.store.update_machine("m0", host_key=hosts.host_key)
        watcher, host = rig.engine.watcher, hosts.hosts[0]
        await watcher.probe_round()
        host.silence_shells()
        started = asyncio.get_running_loop().time()
        probes = await watcher.probe_round()
        took = asyncio.get_running_loop().time() - started
        # One wait for the silent shell (1.5 s), then a fresh login that answers.
        assert probes[0] is not None
        assert probes[0].ok, probes[0]
        assert took < 3.0
        assert host.logins == 2
        assert host.shells == 2
        await rig.stop()


# -- the script's output, parsed strictly ---------------------------------------------------

TAG = "--deploybot-0123456789abcdef--"


def script_output(sections: list[tuple[str, str, int]]) -> tuple[bytes, bytes]:
    out = "".join(f"{o}{TAG} {i} {s}\n" for i, (o, _, s) in enumerate(sections))
    err = "".join(f"{e}{TAG} {i}\n" for i, (_, e, _) in enumerate(sections))
    return out.encode(), err.encode()


def test_the_script_output_is_split_per_command() -> None:
    out, err = script_output([("abc\n", "", 0), ("200", "curl: oops\n", 7)])
    results = split_output(out, err, TAG, 2)
    assert results is not None
    assert [(r.stdout, r.stderr, r.exit_status) for r in results] == [
        (b"abc\n", b"", 0),
        (b"200", b"curl: oops\n", 7),
    ]


def test_forged_missing_or_extra_sections_are_not_believed() -> None:
    good_out, good_err = script_output([("a\n", "", 0), ("b\n", "", 0)])
    forged_out, forged_err = script_output([(f"a\n{TAG} 1 0\n", "", 0), ("b\n", "", 0)])
    swapped_out = f"a\n{TAG} 1 0\nb\n{TAG} 0 0\n".encode()
    cases = [
        (forged_out, forged_err),  # a command printing the next section's marker
        (good_out + b"trailing", good_err),
        (good_out, good_err + b"more"),
        (good_out.replace(b" 1 0\n", b" 1 999\n"), good_err),
        (swapped_out, good_err),
        (good_out[: len(good_out) // 2], good_err),
        (b"", b""),
        (good_out.rstrip(b"\n"), good_err),  # the last marker cut short
        (good_out.replace(b" 1 0\n", b" 1 0x\n"), good_err),
    ]
    for out, err in cases:
        assert split_output(out, err, TAG, 2) is None, (out, err)


def test_a_section_is_bounded() -> None:
    out, err = script_output([("x" * (10 * SECTION_MAX), "y" * (10 * SECTION_MAX), 0)])
    results = split_output(out, err, TAG, 1)
    assert results is not None
    assert len(results[0].stdout) == SECTION_MAX
    assert len(results[0].stderr) == SECTION_MAX


def test_the_script_quotes_every_argument() -> None:
    line = script([["curl", "http://127.0.0.1/a b;rm -rf /"]], TAG)
    assert line == (
        f'curl \'http://127.0.0.1/a b;rm -rf /\'; echo "{TAG} 0 $?"; echo "{TAG} 0" >&2'
    )


# -- spread start times ----------------------------------------------------------------------


def test_probe_offsets_are_stable_and_spread() -> None:
    names = [f"host-{i}" for i in range(1000)]
    offsets = [probe_offset(n, 60.0) for n in names]
    assert offsets == [probe_offset(n, 60.0) for n in names]
    assert all(0 <= o < 60 for o in offsets)
    per_second = Counter(int(o) for o in offsets)
    assert len(per_second) == 60
    assert max(per_second.values()) < 40  # 1000 / 60 ≈ 17 a second, not 1000 at once


async def test_scheduled_probes_start_spread(fleet: tuple[BotRig, Fleet]) -> None:
    rig, _ = fleet
    schedules = rig.svc.engine.schedules
    assert schedules is not None
    now = datetime.now(UTC)
    starts = {
        e.machine: (e.next_run - now).total_seconds()
        for e in schedules.entries()
        if e.next_run is not None
    }
    assert sorted(starts) == [f"m{i}" for i in range(HOSTS)]
    for name, start in starts.items():
        expected = 3600 + probe_offset(name, 3600)
        assert abs(start - expected) < 30, (name, start, expected)
    assert len({round(s) for s in starts.values()}) == HOSTS
