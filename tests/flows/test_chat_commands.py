"""The read-only commands and the access gate, through the real PTB stack over HTTP."""

from __future__ import annotations

import asyncio

from tests.botrig import BotRig, audit_of
from tests.people import ADMIN, OPERATOR, OTHER_OPERATOR, STRANGER
from tests.waiting import eventually

INVENTORY = f"""
[machines.web]
host = "127.0.0.1"
ssh_port = 1
operators = [{OPERATOR}]

[machines.vault]
host = "127.0.0.1"
ssh_port = 2
luks = true
initrd_port = 3
operators = [{OTHER_OPERATOR}]
"""


async def test_admin_sees_every_machine(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    admin = rig.tg.user(ADMIN, "root_admin")
    reply = await rig.ask(admin, "/machines")
    assert "Machines (2)" in reply.body
    assert "web — 127.0.0.1, .#web, plain disk, state: unknown" in reply.body
    assert "vault — 127.0.0.1, .#vault, LUKS" in reply.body


async def test_operator_sees_only_own_machines(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    op = rig.tg.user(OPERATOR, "op")
    reply = await rig.ask(op, "/machines")
    assert "web" in reply.body
    assert "vault" not in reply.body
    who = await rig.ask(op, "/whoami")
    assert who.body == f"You are {OPERATOR} (@op): operator of web."


async def test_help_lists_only_what_the_user_may_run(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    admin_help = await rig.ask(rig.tg.user(ADMIN), "/help")
    op_help = await rig.ask(rig.tg.user(OPERATOR), "/help")
    assert "/audit" in admin_help.body
    assert "/audit" not in op_help.body
    assert "/machines" in op_help.body


async def test_stranger_gets_one_refusal_with_their_id(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    stranger = rig.tg.user(STRANGER, "eve")
    reply = await rig.ask(stranger, "/machines")
    assert str(STRANGER) in reply.body
    assert "Not authorised" in reply.body
    assert "web" not in reply.body
    assert "vault" not in reply.body
    mark = rig.tg.mark()
    await rig.tg.send_text(stranger, "/status web")
    await rig.tg.send_text(stranger, "hello?")

    # Every refusal is audited, counted on the stranger's one line of the hour.
    async def counted() -> str:
        found = [e for e in await rig.svc.store.recent_audit(100) if e.user_id == STRANGER]
        return found[0].detail if len(found) == 1 and "3 refusals" in found[0].detail else ""

    detail = await eventually(counted, what="three refusals on one line")
    assert detail.startswith("not an admin or operator; 3 refusals since ")
    assert detail.endswith(": message")
    assert await audit_of(rig, STRANGER, 1) == [("/machines", "", "refused")]
    # Within the hour the refusal is not repeated: nothing new in that chat.
    assert [m for m in rig.tg.bot_messages(stranger) if m.seq > mark] == []


async def test_operator_of_another_machine_is_refused_and_audited(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    other = rig.tg.user(OTHER_OPERATOR, "olga")
    reply = await rig.ask(other, "/status web")
    assert reply.body == "You may not act on 'web': it is unknown or not one of yours."
    unknown = await rig.ask(other, "/status nosuch")
    assert unknown.body == "You may not act on 'nosuch': it is unknown or not one of yours."
    entries = await audit_of(rig, OTHER_OPERATOR, 2)
    assert entries == [("/status", "web", "refused"), ("/status", "nosuch", "refused")]


async def test_status_probes_ports(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    admin = rig.tg.user(ADMIN)
    reply = await rig.ask(admin, "/status vault")
    assert "ssh 127.0.0.1:2 closed" in reply.body
    assert "initrd 127.0.0.1:3 closed" in reply.body
    everything = await rig.ask(admin, "/status")
    assert "web" in everything.body
    assert "vault" in everything.body


async def test_status_sees_an_open_port(rig: BotRig) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await rig.start(f'[machines.web]\nhost = "127.0.0.1"\nssh_port = {port}\n')
        reply = await rig.ask(rig.tg.user(ADMIN), "/status web")
        assert f"ssh 127.0.0.1:{port} open" in reply.body
    finally:
        server.close()
        await server.wait_closed()


async def test_bad_input_gets_one_line_and_the_bot_keeps_answering(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    admin = rig.tg.user(ADMIN)
    cases = {
        "/frobnicate": "Unknown command /frobnicate. /help lists the commands.",
        "/status web vault": "Too many arguments. Usage: /status [machine]",
        "/deploy": "Missing argument. Usage: /deploy <machine…>",
        "/status " + "x" * 5000: "That message is too long (5008 characters); commands are short.",
        "/status we\x07b": "That message has control characters; type the command plainly.",
        "/status nosuch": "Unknown machine 'nosuch'. /machines lists them.",
    }
    for text, answer in cases.items():
        reply = await rig.ask(admin, text)
        assert reply.body == answer
    still = await rig.ask(admin, "/whoami")
    assert still.body.startswith(f"You are {ADMIN}")


async def test_audit_shows_the_last_entries_to_admins(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    await rig.ask(rig.tg.user(STRANGER), "/machines")
    await audit_of(rig, STRANGER, 1)  # refusals of strangers are written in the background
    denied = await rig.ask(rig.tg.user(OPERATOR), "/audit")
    assert denied.body == "/audit is for admins only."
    reply = await rig.ask(rig.tg.user(ADMIN), "/audit")
    assert f"{STRANGER} /machines: refused (not an admin or operator)" in reply.body
    assert f"{OPERATOR} /audit: refused (needs admin right)" in reply.body


async def test_start_and_plain_text_without_question(rig: BotRig) -> None:
    await rig.start(INVENTORY)
    op = rig.tg.user(OPERATOR)
    start = await rig.ask(op, "/start")
    assert "nixos-anywhere" in start.body
    chat = await rig.ask(op, "good morning")
    assert chat.body == "I am not waiting for an answer from you. /help lists the commands."
    assert rig.tg.commands()  # setMyCommands published the command list
