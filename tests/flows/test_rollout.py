"""/deploy tag:…, /deploy a b c: rollouts over lab hosts through the fake Bot API — a canary,
waves, a stop at the first failure, one build for all, cancellation, the asker's buttons."""

from __future__ import annotations

import re
from collections.abc import Callable

from store import Store
from tests.botprocess import BotProcess
from tests.fake_telegram import ChatRef, FakeMessage, FakeUser
from tests.lab.generations import DEFAULT_PACKAGES
from tests.lab.host import LabHost
from tests.people import OPERATOR, OTHER_OPERATOR
from tests.world import World

ROLLOUT_END = re.compile(r"^Rollout of .* — (succeeded|failed|cancelled|interrupted) after")


async def fleet(
    world: World, count: int, *, parallel: int = 3, operators: tuple[int, ...] = (OPERATOR,)
) -> list[LabHost]:
    """``count`` booted hosts m01…, each its own flake attribute, tagged web, pinned."""
    hosts = []
    for n in range(1, count + 1):
        name = f"m{n:02d}"
        host = world.lab.start_installed_host(name, stage="booted", luks=False, flake_attr=name)
        world.machine(
            name,
            host,
            luks=False,
            flake_attr=name,
            tags=["web"],
            rollback_timeout="4s",
            operators=list(operators),
        )
        world.lab.set_configuration(world.flake, name, version="1")
        hosts.append(host)
    world.rig.env["DEPLOYBOT_ROLLOUT_PARALLEL"] = str(parallel)
    await world.start()
    for n, host in enumerate(hosts, 1):
        await world.pin(f"m{n:02d}", host, initrd=False)
    return hosts


async def ask(world: World, user: FakeUser, command: str = "/deploy tag:web") -> FakeMessage:
    tg = world.rig.tg
    await tg.send_text(user, command)
    return await tg.wait_for_message(user, is_question, timeout=60)


def is_question(message: FakeMessage) -> bool:
    """The confirmation (the progress message has a button too: its detail)."""
    return any(b.get("text") == "Cancel" for row in message.buttons for b in row)


async def rollout_end(world: World, chat: ChatRef, timeout: float = 180) -> FakeMessage:
    def ended(message: FakeMessage) -> bool:
        return bool(ROLLOUT_END.search(message.body.split("\n")[0]))

    return await world.rig.tg.wait_for_message(chat, ended, edits=True, since=0, timeout=timeout)


async def each_machine(world: World, progress: FakeMessage) -> list[str]:
    """Press "Each machine" under the rollout's progress message: the detail's lines."""
    tg = world.rig.tg
    mark = tg.mark()
    await tg.press_button(world.op, progress, "Each machine")
    shown = await tg.wait_for_message(
        world.op, lambda m: m.body.startswith("Rollout ") and "machines" in m.body, since=mark
    )
    assert len(shown.body) <= 4096
    return shown.body.splitlines()


def passed_for(name: str) -> Callable[[FakeMessage], bool]:
    return lambda m: f"Reboot test of {name} passed" in m.body


def group(body: str, label: str) -> list[str]:
    """The machine names of one line of the result ("✅ new generation (6): m01, …")."""
    for line in body.splitlines():
        if f" {label} (" in line and "):" in line:
            return [n.strip() for n in line.split("):", 1)[1].split(",") if n.strip()]
    return []


async def test_a_rollout_stops_at_the_machine_that_rolls_back(world: World) -> None:
    hosts = await fleet(world, 12, parallel=3)
    before = [h.current_system for h in hosts]
    for n in range(1, 13):
        world.lab.set_configuration(world.flake, f"m{n:02d}", version="2")
    world.lab.set_configuration(world.flake, "m07", breaks_ssh=True)
    question = await ask(world, world.op)
    assert "update 12 machines?" in question.body
    assert "Canary first: m01" in question.body
    assert "Then in waves of 3: m02, m03" in question.body
    await world.rig.tg.press_button(world.op, question, "Update 12 machines")
    end = await rollout_end(world, world.op)
    body = end.body
    assert "— failed after" in body, body
    assert "stopped at the first failure: m07 rolled back" in body, body
    new = [f"m{n:02d}" for n in range(1, 7)]
    untouched = [f"m{n:02d}" for n in range(8, 13)]
    assert group(body, "new generation") == new, body
    assert "↩️ rolled back (1):" in body
    assert "• m07: failed at" in body, body
    assert "rolled back to generation 1" in body, body
    assert group(body, "not touched") == untouched, body
    for n, host in enumerate(hosts, 1):
        if n <= 6:
            assert host.current_generation == 2, n
            assert host.current_system != before[n - 1]
        else:
            # m07 switched back by itself; m08… never saw an activation.
            assert host.current_system == before[n - 1], n
            assert host.current_generation == 1, n
        assert host.timers == [], n
    assert str(hosts[6].activations[-1].unit).startswith("deploybot-rollback-")
    assert all(not h.activations for h in hosts[7:])
    assert len(end.body) <= 4096
    # The detail on demand, after the end: what each machine recorded, with the reason.
    detail = await each_machine(world, end)
    assert detail[0].endswith("(tag:web): 12 machines"), detail
    assert [line.split(":")[0] for line in detail[1:7]] == [f"✅ m{n:02d}" for n in range(1, 7)]
    assert detail[7].startswith("↩️ m07: rolled back — failed at"), detail
    assert "rolled back to generation 1" in detail[7]
    assert detail[8:] == [f"⏸ m{n:02d}: not touched" for n in range(8, 13)]
    # The machines' locks are gone: a single update of m08 is not refused as busy.
    store = world.rig.svc.store
    for n in range(1, 13):
        assert await store.active_job(f"m{n:02d}") is None, n


async def test_a_failed_build_touches_no_machine(world: World) -> None:
    hosts = await fleet(world, 3)
    for n in range(1, 4):
        world.lab.set_configuration(world.flake, f"m{n:02d}", version="2")
    world.lab.set_configuration(world.flake, "m02", fails=True)
    await world.rig.tg.send_text(world.op, "/deploy m01 m02 m03")
    # The systems are built before the question: a failed build asks nothing.
    end = await rollout_end(world, world.op)
    assert "— failed after" in end.body
    assert "the build failed for m02" in end.body, end.body
    assert "No machine was touched" in end.body
    assert not [m for m in world.rig.tg.bot_messages(world.op) if is_question(m)]
    assert all(h.current_generation == 1 and not h.activations for h in hosts)


def changed_packages(**changes: int | None) -> tuple[tuple[str, int], ...]:
    """The lab's default packages with some replaced (``None``: removed) or added."""
    packages = dict(DEFAULT_PACKAGES)
    for name, size in changes.items():
        base = name.split("_")[0]
        for old in [p for p in packages if p.split("-")[0] == base]:
            del packages[old]
        if size is not None:
            packages[name.replace("_", "-")] = size
    return tuple(packages.items())


async def test_the_review_shows_each_group_of_machines_closure_difference(world: World) -> None:
    hosts = await fleet(world, 4)
    openssl = changed_packages(**{"openssl_3.0.14": 40960 + 12288})
    for name in ("m01", "m02"):
        world.lab.set_configuration(world.flake, name, version="2", packages=openssl)
    world.lab.set_configuration(
        world.flake, "m03", version="2", packages=(*DEFAULT_PACKAGES, ("foo-1.2", 20 * 1024))
    )
    world.lab.set_configuration(world.flake, "m04", version="2")
    question = await ask(world, world.op)
    lines = question.body.splitlines()
    assert "Closure differences, 3 group(s) of machines:" in lines, question.body
    assert "• m01, m02 (2): 1 package change (1 version change, +12.0 KiB in all):" in lines
    assert "  openssl: 3.0.13 → 3.0.14, +12.0 KiB" in lines
    assert "• m03 (1): 1 package change (1 version change, +20.0 KiB in all):" in lines
    assert "  foo: ∅ → 1.2, +20.0 KiB" in lines
    assert "• m04 (1): no package changes" in lines
    assert not world.rig.tg.documents_in(world.op)
    await world.rig.tg.press_button(world.op, question, "Cancel")
    end = await rollout_end(world, world.op)
    assert "— cancelled after" in end.body
    assert all(h.current_generation == 1 and not h.activations for h in hosts)


async def test_a_long_rollout_review_arrives_whole_as_a_file(world: World) -> None:
    await fleet(world, 3)
    for n in range(1, 4):
        many = tuple((f"tool{n}x{i:03d}-1.{i}", 100) for i in range(400))
        world.lab.set_configuration(
            world.flake, f"m{n:02d}", version="2", packages=(*DEFAULT_PACKAGES, *many)
        )
    question = await ask(world, world.op)
    assert len(question.body) <= 4096
    lines = question.body.splitlines()
    assert "Closure differences, 3 group(s) of machines:" in lines, question.body
    for n in range(1, 4):
        assert any(
            line.startswith(f"• m{n:02d} (1): 401 package changes (400 version changes, +")
            for line in lines
        ), question.body
    assert "The whole list is in the file above." in lines
    (document,) = world.rig.tg.documents_in(world.op)
    assert document.document is not None
    listed = document.document.data.decode().splitlines()
    for n in range(1, 4):
        head = next(i for i, line in enumerate(listed) if line.startswith(f"• m{n:02d} (1): "))
        tools = [line for line in listed[head + 1 :] if line.startswith(f"  tool{n}x")]
        assert tools == [f"  tool{n}x{i:03d}: ∅ → 1.{i}" for i in range(400)]
    await world.rig.tg.press_button(world.op, question, "Cancel")
    await rollout_end(world, world.op)


async def test_a_cancelled_rollout_starts_no_new_machine(world: World) -> None:
    hosts = await fleet(world, 4, parallel=1)
    for n in range(1, 5):
        world.lab.set_configuration(world.flake, f"m{n:02d}", version="2", build_seconds=0.0)
    tg = world.rig.tg
    question = await ask(world, world.op)
    await tg.press_button(world.op, question, "Update 4 machines")

    def canary_on(message: FakeMessage) -> bool:
        return "In flight: m01" in message.body

    progress = await tg.wait_for_message(world.op, canary_on, edits=True, since=0, timeout=60)
    job = int(re.search(r"\(job (\d+)\)", progress.body.split("\n")[0]).group(1))  # type: ignore[union-attr]
    # The detail while it runs: the board as it is now.
    detail = await each_machine(world, progress)
    assert detail[1:] == [
        "▶️ m01: updating",
        "⏳ m02: waiting",
        "⏳ m03: waiting",
        "⏳ m04: waiting",
    ]
    await tg.send_text(world.op, f"/cancel {job}")
    end = await rollout_end(world, world.op)
    assert "— cancelled after" in end.body, end.body
    assert group(end.body, "new generation") == ["m01"], end.body
    assert group(end.body, "not touched") == ["m02", "m03", "m04"], end.body
    assert hosts[0].current_generation == 2
    assert all(h.current_generation == 1 and not h.activations for h in hosts[1:])


async def test_only_the_asker_may_press_the_rollout_buttons(world: World) -> None:
    hosts = await fleet(world, 2, operators=(OPERATOR, OTHER_OPERATOR))
    for n in range(1, 3):
        world.lab.set_configuration(world.flake, f"m{n:02d}", version="2")
    tg = world.rig.tg
    question = await ask(world, world.op)
    # The admin sees the message (forwarded, in a group …) and presses its button.
    query = await tg.press(world.admin, question, question.button_data("Update 2 machines"))
    answer = await tg.wait_for_callback_answer(query)
    assert answer.text == "Only the person who asked can answer this.", answer
    # The detail is the starter's and the admins', not another operator's of the machines.
    progress = await tg.wait_for_message(
        world.op, lambda m: "Each machine" in str(m.buttons), edits=True, since=0
    )
    other = tg.user(OTHER_OPERATOR, "otto")
    query = await tg.press(other, progress, progress.button_data("Each machine"))
    answer = await tg.wait_for_callback_answer(query)
    assert answer.text == "Only who started this rollout, or an admin, can see this.", answer
    assert not [m for m in tg.bot_messages(other) if "machines" in m.body]
    assert all(not h.activations for h in hosts)
    await tg.press_button(world.op, question, "Cancel")
    end = await rollout_end(world, world.op)
    assert "— cancelled after" in end.body
    assert "cancelled at the confirmation; nothing was changed" in end.body
    assert all(h.current_generation == 1 and not h.activations for h in hosts)


async def test_the_plan_names_what_it_skips_and_why(world: World) -> None:
    await fleet(world, 3)
    await world.rig.svc.store.update_machine("m03", host_key="")  # not installed by the bot
    # The tag's prefix in any case, as /report reads it.
    question = await ask(world, world.op, "/deploy m01 m03 ghost Tag:web")
    assert "update 2 machines?" in question.body, question.body
    assert "Then in waves of 3: m02" in question.body, question.body
    assert "• m03: not installed: no pinned system key" in question.body, question.body
    assert "• ghost: unknown or not yours" in question.body
    await world.rig.tg.press_button(world.op, question, "Cancel")
    await rollout_end(world, world.op)
    await world.rig.tg.send_text(world.op, "/deploy all")
    refusal = await world.rig.tg.wait_for_message(
        world.op, lambda m: "admins only" in m.body, timeout=20
    )
    assert "/deploy all is for admins only" in refusal.body


async def test_a_rollout_killed_mid_way_reports_where_it_stood(
    world: World, bot_process: BotProcess
) -> None:
    hosts = []
    for name in ("m01", "m02", "m03"):
        host = world.lab.start_installed_host(name, stage="booted", luks=False, flake_attr=name)
        world.machine(name, host, luks=False, flake_attr=name, tags=["web"], rollback_timeout="6s")
        world.lab.set_configuration(world.flake, name, version="2")
        hosts.append(host)
    old = hosts[1].current_system
    # m02's new system activates but no login reaches it: its guard decides.
    world.lab.set_configuration(world.flake, "m02", blocks_ssh=True)
    world.rig.write_inventory(world.inventory())
    world.rig.env["DEPLOYBOT_ROLLOUT_PARALLEL"] = "1"
    store = await Store.open(world.rig.settings.db)
    try:
        for name, host in zip(("m01", "m02", "m03"), hosts, strict=True):
            await store.update_machine(name, host_key=host.system_host_key or "")
    finally:
        await store.close()
    op, tg = world.op, world.rig.tg
    await bot_process.start()
    question = await ask(world, op)
    await tg.press_button(op, question, "Update 3 machines")
    await tg.wait_for_message(op, lambda m: "In flight: m02" in m.body, edits=True, timeout=90)
    await hosts[1].wait_until(lambda: hosts[1].sshd_broken, 30, "m02's activation")

    await bot_process.kill()
    await hosts[1].wait_until(
        lambda: hosts[1].current_system == old and not hosts[1].sshd_broken, 30, "m02's guard"
    )
    await bot_process.start()
    told = await tg.wait_for_message(op, lambda m: "was interrupted" in m.body, since=0, timeout=30)
    assert told.body.startswith("⏹ Rollout 4 (tag:web) was interrupted"), told.body
    assert "No machine was started again" in told.body
    assert group(told.body, "new generation") == ["m01"], told.body
    assert group(told.body, "under way") == ["m02"], told.body
    assert group(told.body, "not touched") == ["m03"], told.body
    assert "switches back by itself" in told.body
    assert hosts[0].current_generation == 2
    assert hosts[2].current_generation == 1
    assert not hosts[2].activations
    other = [m for m in tg.bot_messages(op) if "(update m0" in m.body and "interrupted" in m.body]
    assert other == [], "one message for the rollout, none per machine"


async def test_machines_with_a_new_kernel_are_rebooted_one_at_a_time(world: World) -> None:
    hosts = await fleet(world, 3, parallel=2)
    world.lab.set_configuration(world.flake, "m01", version="2")
    for name in ("m02", "m03"):
        world.lab.set_configuration(world.flake, name, kernel="6.12.34")
    tg, op = world.rig.tg, world.op
    question = await ask(world, op)
    await tg.press_button(op, question, "Update 3 machines")
    end = await rollout_end(world, op)
    assert "— succeeded after" in end.body, end.body
    offer = await tg.wait_for_message(op, lambda m: "Reboot these" in str(m.buttons), timeout=30)
    assert "2 machines now run a system with a new kernel" in offer.body
    assert "m02, m03" in offer.body
    assert "m01" not in offer.body
    # Someone else's press is refused; the asker's starts the tests.
    query = await tg.press(world.admin, offer, offer.button_data("Reboot these"))
    refused = await tg.wait_for_callback_answer(query)
    assert refused.text == "Only the person who asked can answer this."
    await tg.press_button(op, offer, "Reboot these")
    for name in ("m02", "m03"):
        await tg.wait_for_message(op, passed_for(name), since=0, timeout=90)
    tests = [j for j in await world.rig.svc.store.recent_jobs(20) if j.kind == "reboot-test"]
    assert [j.machine for j in sorted(tests, key=lambda j: j.id)] == ["m02", "m03"]
    first, second = sorted(tests, key=lambda j: j.id)
    assert first.finished_at <= second.started_at, "one at a time"
    assert hosts[1].booted_system == hosts[1].current_system
    assert hosts[2].booted_system == hosts[2].current_system
