"""The two ways an initrd takes a LUKS passphrase over SSH.

``cryptsetup-askpass`` (scripted initrd): a stand-in that checks each answer against the
host's real LUKS2 header with ``cryptsetup open --test-passphrase`` (the passphrase on
stdin); the lab records right or wrong and, when right, boots the system after the host's
boot delay. ``systemd-tty-ask-password-agent`` (systemd initrd): the real one, answering the
real queries that ``ask_password.py`` has pending for the host.
"""

from __future__ import annotations

import subprocess
import time

from tests.lab import keys, ns_bind
from tests.lab.ask_password import AGENT
from tests.lab.shell_base import Ctx


def _check(ctx: Ctx, answer: bytes, via: str) -> bool:
    image = ctx.paths.luks_image
    # The key derivation, as slow as a slow machine's: no prompt until its verdict.
    time.sleep(ctx.state.askpass_verify)
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
    """The real ``systemd-tty-ask-password-agent``, seeing the host's own queries.

    It runs in a mount namespace where the host's folder is /run/systemd/ask-password
    (``ns_bind``), on this session's terminal (or its plain stdin under ``ssh -T``).
    """
    ctx.stdout.flush()
    ctx.stderr.flush()
    folder = ctx.paths.ask_password
    folder.mkdir(mode=0o755, exist_ok=True)
    argv = ns_bind.argv(folder, [AGENT, *args])
    done = subprocess.run(argv, stdin=ctx.stdin, stdout=ctx.stdout, stderr=ctx.stderr, check=False)
    return done.returncode
