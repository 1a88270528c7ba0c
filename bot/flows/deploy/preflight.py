"""Before anything is erased: who answers, what it is, and is it still the one confirmed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.config.inventory import Inventory
from bot.core.keys import fingerprint
from bot.core.text import printable
from bot.jobs.context import JobContext
from bot.remote.facts import (
    TargetFacts,
    is_nixos_installer,
    memory_verdict,
    parse_mem_total_mib,
    parse_os_release,
)
from bot.remote.fleet import Fleet
from bot.remote.identity import key_owner
from bot.remote.place import same_key
from bot.remote.ssh import SshError, fetch_host_key, run
from bot.remote.target import Target
from store import Store

FACTS_BYTES = 64 * 1024


@dataclass
class Preflight:
    facts: TargetFacts
    host_key: str  # the key the target presented (an installer's, or the pinned system key)
    installed_system: bool
    address: str = ""  # the one address the host resolved to, used for the whole job


async def preflight(
    ctx: JobContext,
    target: Target,
    fleet: Fleet,
    inventory: Inventory,
    store: Store,
    *,
    reinstall: bool,
    timeout: float,
) -> Preflight:
    """Who answers, and what it is: first contact pins the presented key as the installer's
    (trust on first use: the confirmation shows it to a person)."""
    machine = target.machine
    with ctx.failing(f"cannot reach {machine.host}:{machine.ssh_port}", SshError):
        presented = await fetch_host_key(machine.host, machine.ssh_port, timeout=timeout)
    pinned = target.pins.system
    installed_system = bool(pinned) and same_key(presented, pinned)
    if installed_system and not reinstall:
        raise ctx.fail(
            f"{machine.name} is installed: it answers with its pinned host key. To erase "
            f"and reinstall it, use /reinstall {machine.name}"
        )
    ctx.output(f"{machine.host}:{machine.ssh_port} presents {fingerprint(presented)}")
    owner = await key_owner(presented, machine, inventory, store)
    if owner is not None:
        other, kind = owner
        raise ctx.fail(
            f"{machine.name}'s host answers with {fingerprint(presented)}, the pinned "
            f"{kind} key of machine {other}: that is {other}, not {machine.name}. "
            f"Refusing to erase it; nothing was changed on {other} or {machine.name}."
        )
    with ctx.failing(f"cannot log in as root@{machine.host}", SshError):
        conn = await target.installer(presented)
    async with conn:
        with ctx.failing("could not read the target's facts", SshError):
            # Both files are a few hundred bytes; a target may send gigabytes.
            os_release = await run(
                conn, ["cat", "/etc/os-release"], timeout=timeout, max_output=FACTS_BYTES
            )
            meminfo = await run(
                conn, ["cat", "/proc/meminfo"], timeout=timeout, max_output=FACTS_BYTES
            )
    if not meminfo.ok:
        raise ctx.fail("could not read /proc/meminfo on the target")
    release = await asyncio.to_thread(parse_os_release, os_release.stdout_text)
    with ctx.failing("", ValueError):
        mem_mib = parse_mem_total_mib(meminfo.stdout_text)
    facts = TargetFacts(
        os_id=printable(release.get("ID", "unknown"), 64),
        os_name=printable(release.get("PRETTY_NAME", ""), 120),
        installer=is_nixos_installer(release),
        mem_mib=mem_mib,
        rw_store="",
    )
    ctx.output(f"target: {facts.describe()}")
    refusal, warning = memory_verdict(facts)
    if refusal:
        raise ctx.fail(refusal)
    if warning:
        await ctx.note(warning)
    await fleet.pin(machine, installer=presented)
    return Preflight(
        facts=facts, host_key=presented, installed_system=installed_system, address=machine.host
    )


async def remount(ctx: JobContext, target: Target, pre: Preflight, *, timeout: float) -> None:
    """Grow the installer's /nix/.rw-store, or nixos-anywhere runs out of space on it."""
    size = target.machine.rw_store_size
    argv = ["mount", "-o", f"remount,size={size}", "/nix/.rw-store"]
    with ctx.failing("could not remount /nix/.rw-store", SshError):
        conn = await target.installer(pre.host_key)
        async with conn:
            result = await run(conn, argv, timeout=timeout)
    if not result.ok:
        raise ctx.fail(
            f"mount -o remount,size={size} /nix/.rw-store failed "
            f"(exit {result.exit_status}): {result.stderr_text.strip()[:200]}"
        )
    ctx.output(f"/nix/.rw-store remounted with size={size}")


async def still_confirmed(
    ctx: JobContext, target: Target, pre: Preflight, *, timeout: float
) -> None:
    """The disk erased must belong to the machine whose key the user confirmed.

    nixos-anywhere does not check host keys, and the confirmation may have waited for
    minutes: a target that now answers with another key is not the one confirmed.
    """
    machine = target.machine
    where = f"{machine.host}:{machine.ssh_port}"
    with ctx.failing(f"cannot reach {where} any more", SshError):
        presented = await fetch_host_key(machine.host, machine.ssh_port, timeout=timeout)
    if not same_key(presented, pre.host_key):
        raise ctx.fail(
            f"the host key of {where} changed since you confirmed "
            f"{fingerprint(pre.host_key)}: it now presents {fingerprint(presented)}. "
            f"Nothing was installed; run /deploy {machine.name} again to confirm the new key"
        )
