"""Watching machines end to end: probes, incidents and alerts over the fake Bot API and lab.

Probes run every 300 ms through the bot's real JobQueue; alerts wait for two failed probes.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from bot.flows.watch.watcher import Watcher
from tests.fake_telegram import FakeMessage
from tests.lab.host import LabHost
from tests.waiting import eventually
from tests.world import World

FAST_WATCH: dict[str, Any] = {"alert_after": 2, "alert_batch": 0.3, "unlock_settle": 1.0}
PROBES = "300ms"


def watcher(world: World) -> Watcher:
    return world.rig.engine.watcher


def alerts(world: World, word: str) -> list[FakeMessage]:
    return [m for m in world.rig.tg.bot_messages(world.op) if word in m.body]


async def watched(world: World, host: LabHost, name: str = "web", **keys: Any) -> None:
    """Start the bot watching ``host`` as ``name`` (installed by the bot: keys pinned)."""
    await world.start(**FAST_WATCH)
    await world.pin(name, host, initrd=bool(keys.get("luks", False)))
    await eventually(lambda: _state_is(world, name, "up"), timeout=15, what=f"{name} probed up")


async def _state_is(world: World, name: str, state: str) -> bool:
    return (await world.rig.svc.store.machine(name)).state == state


async def test_down_and_back_one_alert_one_recovery(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, probe_interval=PROBES)
    await watched(world, host)
    op, tg = world.op, world.rig.tg
    host.power_off()
    alert = await tg.wait_for_message(op, lambda m: "🚨 web" in m.body, timeout=15)
    assert "down" in alert.body
    host.power_on()
    back = await tg.wait_for_message(op, lambda m: "✅ web recovered" in m.body, timeout=15)
    assert "it rebooted" in back.body
    await eventually(lambda: _state_is(world, "web", "up"), timeout=10, what="web up again")
    assert len(alerts(world, "🚨")) == 1
    assert len(alerts(world, "recovered")) == 1
    assert alerts(world, "rebooted unexpectedly") == []


async def test_many_machines_down_one_summary(world: World) -> None:
    hosts = [world.lab.start_installed_host(f"h{i}", stage="booted", luks=False) for i in range(3)]
    for i, host in enumerate(hosts):
        world.machine(f"m{i}", host, luks=False, probe_interval=PROBES)
    await world.start(**{**FAST_WATCH, "alert_batch": 2.0})
    for i, host in enumerate(hosts):
        await world.pin(f"m{i}", host, initrd=False)
    for i in range(3):
        await eventually(partial(_state_is, world, f"m{i}", "up"), timeout=15, what="up")
    for host in hosts:
        host.power_off()
    tg = world.rig.tg
    summary = await tg.wait_for_message(
        world.op, lambda m: "3 alerts at once" in m.body, timeout=20
    )
    assert all(f"🚨 m{i}" in summary.body for i in range(3))
    assert [m for m in alerts(world, "🚨") if "alerts at once" not in m.body] == []


async def test_unexpected_reboot_into_initrd_prompts(world: World) -> None:
    host = world.lab.start_installed_host("luks", stage="booted")
    world.machine("vault", host, probe_interval=PROBES, unlock_timeout="20s")
    await watched(world, host, "vault", luks=True)
    before = host.boot_id
    op, tg = world.op, world.rig.tg
    host.reboot()
    await tg.wait_for_message(
        op, lambda m: "vault rebooted unexpectedly and waits in its initrd" in m.body, timeout=15
    )
    await world.answer_secret(op, "waiting for its disk passphrase", host.luks_passphrase or "")
    await tg.wait_for_message(op, lambda m: "vault unlocked by" in m.body, timeout=30)

    async def new_boot_recorded() -> bool:
        known = await world.rig.svc.store.machine("vault")
        return known.state == "up" and known.boot_id == host.boot_id != before

    await eventually(new_boot_recorded, timeout=15, what="the new boot id")
    assert len(alerts(world, "rebooted unexpectedly")) == 1


async def test_degraded_machine_alert_and_recovery(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, probe_interval=PROBES)
    await watched(world, host)
    op, tg = world.op, world.rig.tg
    host.set_failed_units(["nginx.service"])
    alert = await tg.wait_for_message(op, lambda m: "🚨 web" in m.body, timeout=15)
    assert "system degraded" in alert.body
    assert "nginx.service" in alert.body
    report = await world.rig.ask(op, "/check web")
    assert "Checking web" in report.body
    report = await tg.wait_for_message(op, lambda m: "unhealthy" in m.body, timeout=15)
    assert "failed: nginx.service" in report.body
    host.set_failed_units([])
    await tg.wait_for_message(op, lambda m: "✅ web recovered" in m.body, timeout=15)
    assert len(alerts(world, "🚨")) == 1


async def test_failing_http_check(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    health, admin = "http://127.0.0.1:8080/health", "http://127.0.0.1:9000/"
    host.set_http(health, 200)
    host.set_http(admin, 503)
    world.machine("web", host, luks=False, checks=[health, admin])
    await world.start(**FAST_WATCH)
    await world.pin("web", host, initrd=False)
    op, tg = world.op, world.rig.tg
    await tg.send_text(op, "/check web")
    report = await tg.wait_for_message(op, lambda m: "unhealthy" in m.body, timeout=15)
    assert f"✓ {health}: HTTP 200" in report.body
    assert f"✗ {admin}: HTTP 503" in report.body


async def test_failing_tcp_check(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, probe_interval=PROBES, checks=["tcp:4431", "tcp:4432"])
    host.open_port(4431)
    await world.start(**FAST_WATCH)
    await world.pin("web", host, initrd=False)
    op, tg = world.op, world.rig.tg
    alert = await tg.wait_for_message(op, lambda m: "🚨 web" in m.body, timeout=15)
    assert "tcp:4432 closed" in alert.body
    assert "4431" not in alert.body


async def test_status_shows_last_check_and_uptime(world: World) -> None:
    host = world.lab.start_installed_host("plain", stage="booted", luks=False)
    world.machine("web", host, luks=False, probe_interval=PROBES)
    await watched(world, host)
    reply = await world.rig.ask(world.op, "/status web", timeout=15)
    assert "last check" in reply.body
    assert "✓ up, system running" in reply.body
    assert "up 100.0% of probes over 7 days" in reply.body


async def _probes_counted(world: World, name: str) -> int:
    store = world.rig.svc.store
    rows = await store.call(
        lambda: list(
            store.db.query("select sum(probes) as n from probe_hours where machine = ?", [name])
        )
    )
    return int(rows[0]["n"] or 0)


@pytest.mark.parametrize("luks", [False, True])
async def test_a_machine_not_installed_yet_is_no_changed_key(world: World, luks: bool) -> None:
    """Its system key is its sops key's public half, pinned before it is installed; the
    installer it runs meanwhile presents another key. That is no alert."""
    host = world.lab.start_host("fresh", luks=luks)
    world.machine("fresh", host, luks=luks, probe_interval=PROBES)  # host_key_secret from sops
    await world.start(**FAST_WATCH)
    alert_after = int(FAST_WATCH["alert_after"])

    async def probed() -> bool:
        return await _probes_counted(world, "fresh") >= alert_after + 3

    await eventually(probed, timeout=20, what="several probes of fresh")
    state = await world.rig.svc.store.machine("fresh")
    assert state.state == "installer"
    assert "not installed yet" in state.detail
    assert alerts(world, "🚨") == []
    assert [m for m in world.rig.tg.bot_messages(world.admin) if "🚨" in m.body] == []
