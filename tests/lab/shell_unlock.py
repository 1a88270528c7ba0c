"""The two ways an initrd takes a LUKS passphrase over SSH.

``cryptsetup-askpass`` (scripted initrd) and ``systemd-tty-ask-password-agent`` (systemd
initrd), as reference.md describes them. Each answer is checked against the host's real
LUKS2 header with ``cryptsetup open --test-passphrase`` (the passphrase on stdin); the lab
records right or wrong and, when right, boots the system after the host's boot delay.
"""

from __future__ import annotations

from tests.lab import keys
from tests.lab.shell_base import Ctx


def _check(ctx: Ctx, answer: bytes, via: str) -> bool:
    image = ctx.paths.luks_image
    correct = image.exists() and keys.luks_opens(ctx.state.cryptsetup, image, answer)
    ctx.ask("attempt", correct=correct, via=via)
    return correct


def askpass(ctx: Ctx, args: list[str]) -> int:
    """Prompt while a device waits; a new prompt after an answer means it was wrong."""
    while True:
        waiting = ctx.wait_for(lambda s: s.pending_device is not None, ctx.state.askpass_wait)
        if not waiting:
            ctx.out("Passphrase is not requested now\n")
            return 1
        ctx.out(f"Passphrase for {ctx.state.pending_device}: ")
        with ctx.no_echo():
            line = ctx.read_line()
        ctx.out("\n")
        if not line.endswith(b"\n"):
            # `read` fails at end of input, even after a partial line: nothing is handed over.
            ctx.out("End of file reached. Exiting shell.\n")
            return 1
        _check(ctx, line.rstrip(b"\r\n"), "askpass")


def agent(ctx: Ctx, args: list[str]) -> int:
    """Answer the pending password query from the terminal, then exit."""
    if "--list" in args:
        if ctx.state.pending_device is not None:
            ctx.out(f"'Please enter passphrase for disk {_disk(ctx)}:' (tty-ask-password)\n")
        return 0
    if ctx.state.pending_device is None:
        return 0
    if not ctx.stdin_is_tty():
        return ctx.fail(
            "Failed to query password: No such device or address "
            "(no terminal: run it with ssh -t / RequestTTY=force)"
        )
    ctx.out(f"🔐 Please enter passphrase for disk {_disk(ctx)}: ")
    with ctx.no_echo():
        line = ctx.read_line()
    ctx.out("\n")
    if not line:
        return ctx.fail("Failed to query password: Operation canceled")
    _check(ctx, line.rstrip(b"\r\n"), "systemd")
    return 0


def _disk(ctx: Ctx) -> str:
    return f"crypted ({ctx.state.pending_device})"
