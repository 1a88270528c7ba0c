"""The lab shell proper: reads ``SSH_ORIGINAL_COMMAND`` and runs it against the host folder.

It understands the small part of sh that the bot and nixos-anywhere send: ``;``, ``&&``,
``||``, ``>``/``>>``/``2>``/``>&2`` redirections, ``VAR=value`` prefixes, ``$HOME`` and
``$?``. Which
commands exist depends on the stage (and the initrd flavour); anything else answers
``command not found`` with status 127, as a shell would.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from tests.lab import shell_install as install
from tests.lab import shell_system as system
from tests.lab import shell_unlock as unlock
from tests.lab import shell_updates as updates
from tests.lab.model import STAGES
from tests.lab.shell_base import Ctx, ShellExit

Command = Callable[[Ctx, list[str]], int]

_EVERYWHERE: dict[str, Command] = {
    "true": system.cmd_true,
    "false": system.cmd_false,
    "exit": system.cmd_exit,
    "echo": system.cmd_echo,
    "cat": system.cmd_cat,
    "sleep": system.cmd_sleep,
    "uname": system.cmd_uname,
    "uptime": system.cmd_uptime,
    "reboot": system.cmd_reboot,
    "poweroff": system.cmd_poweroff,
    "umask": system.cmd_umask,
}
_RUNNING: dict[str, Command] = {
    "hostname": system.cmd_hostname,
    "df": system.cmd_df,
    "free": system.cmd_free,
    "mount": system.cmd_mount,
    "systemctl": system.cmd_systemctl,
    "shutdown": system.cmd_shutdown,
    "curl": system.cmd_curl,
    "nc": system.cmd_nc,
    "mkdir": system.cmd_mkdir,
    "chmod": system.cmd_chmod,
    "chown": system.cmd_chown,
    "readlink": updates.cmd_readlink,
    "ssh-keygen": system.cmd_ssh_keygen,
    "systemd-tty-ask-password-agent": unlock.agent,
}
_BOOTED: dict[str, Command] = {
    "nix-env": updates.cmd_nix_env,
    "nix-store": updates.cmd_nix_store,
    "systemd-run": updates.cmd_systemd_run,
}
_NIXOS: dict[str, Command] = {"nixos-version": system.cmd_nixos_version, "nix": install.nix}
_INSTALLER: dict[str, Command] = {
    "tar": install.tar_extract,
    "nixos-install": install.nixos_install,
}


def commands(ctx: Ctx) -> dict[str, Command]:
    """The commands that exist on the host in the stage this session reached."""
    table = dict(_EVERYWHERE)
    state = ctx.state
    if ctx.stage == "initrd":
        if state.initrd == "askpass":
            table["cryptsetup-askpass"] = unlock.askpass
        else:
            table["systemd-tty-ask-password-agent"] = unlock.agent
            table["systemctl"] = system.cmd_systemctl
        return table
    table.update(_RUNNING)
    if ctx.stage == "booted" or state.os != "debian" or state.kexec:
        table.update(_NIXOS)
    if ctx.stage == "installer":
        table.update(_INSTALLER)
    if ctx.stage == "booted":
        table.update(_BOOTED)
    table["sh"] = run_sh
    table["bash"] = run_sh
    return table


def _split(line: str) -> list[tuple[str, list[str]]]:
    """``a && b; c`` → [("", a), ("&&", b), (";", c)] with words unquoted."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    parts: list[tuple[str, list[str]]] = []
    connector, words = "", list[str]()
    for token in lexer:
        if token in (";", "&&", "||", "&", "\n"):
            if words:
                parts.append((connector, words))
            connector, words = token, []
        else:
            words.append(token.replace("${HOME}", "/root").replace("$HOME", "/root"))
    if words:
        parts.append((connector, words))
    return parts


@contextlib.contextmanager
def _redirected(ctx: Ctx, words: list[str]) -> Iterator[list[str]]:
    """Apply ``>``, ``>>``, ``2>``, ``2>&1`` and ``<`` to ctx's streams for one command."""
    argv: list[str] = []
    saved = (ctx.stdin, ctx.stdout, ctx.stderr)
    opened: list[BinaryIO] = []
    try:
        i = 0
        while i < len(words):
            word = words[i]
            fd2 = bool(argv) and argv[-1] == "2" and word in (">", ">>", ">&")
            if word in (">", ">>") and i + 1 < len(words):
                target = words[i + 1]
                if fd2:
                    argv.pop()
                if target == "/dev/null":
                    stream = open(os.devnull, "wb")  # noqa: SIM115
                else:
                    path = system.write_redirect(ctx, target, append=word == ">>")
                    stream = path.open("ab")
                opened.append(stream)
                if fd2:
                    ctx.stderr = stream
                else:
                    ctx.stdout = stream
                i += 2
            elif word == ">&" and i + 1 < len(words):
                if fd2:
                    argv.pop()
                    ctx.stderr = ctx.stdout
                elif words[i + 1] == "2":
                    ctx.stdout = ctx.stderr
                else:
                    ctx.stderr = ctx.stdout
                i += 2
            elif word == "<" and i + 1 < len(words):
                if words[i + 1] == "/dev/null":
                    stream_in = open(os.devnull, "rb")  # noqa: SIM115
                else:
                    stream_in = ctx.resolve(words[i + 1]).open("rb")
                opened.append(stream_in)
                ctx.stdin = stream_in
                i += 2
            else:
                argv.append(word)
                i += 1
        yield argv
    finally:
        for stream_any in opened:
            stream_any.close()
        ctx.stdin, ctx.stdout, ctx.stderr = saved


def run_simple(ctx: Ctx, words: list[str]) -> int:
    with _redirected(ctx, words) as argv:
        while argv and ("=" in argv[0] and argv[0].split("=")[0].isidentifier()):
            argv = argv[1:]
        while argv and argv[0] in ("exec", "sudo", "command", "--"):
            argv = argv[1:]
        if argv and argv[0] == "timeout":
            argv = argv[2:]
        if not argv:
            return 0
        name, args = argv[0], argv[1:]
        if name == "while" and args[:3] == ["read", "file", "ownership"]:
            return install.chown_pairs(ctx)
        if name.startswith("/nix/store/") and "disko" in name:
            return install.disko(ctx, args)
        if ctx.stage == "booted" and updates.is_switch(name):
            return updates.switch_to_configuration(ctx, name, args)
        command = commands(ctx).get(Path(name).name if name.startswith("/run/") else name)
        if command is None:
            return ctx.fail(f"bash: {name}: command not found", 127)
        status = command(ctx, args)
        _maybe_cut(ctx, argv)
        return status


def _maybe_cut(ctx: Ctx, argv: list[str]) -> None:
    """``LabHost.cut_connection_after``: kill this session's sshd, then stop here."""
    line = " ".join(argv)
    for command in ctx.state.cut_after:
        if (line == command or line.startswith(command + " ")) and ctx.ask(
            "cut", command=command
        ).get("cut"):
            pid = os.getppid()
            while pid > 1:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
                with open(f"/proc/{pid}/comm") as comm:
                    name = comm.read().strip()
                if name.startswith("sshd"):
                    os.kill(pid, signal.SIGKILL)
                    break
                pid = int(fields[1])
            os._exit(129)


def round_trip(ctx: Ctx) -> None:
    """A request reached the host (an exec, a line written to a kept shell): a far
    machine answers it ``command_delay`` later; the commands on that line run locally."""
    if ctx.state.command_delay:
        time.sleep(ctx.state.command_delay)


def run_line(ctx: Ctx, line: str) -> int:
    status = 0
    for connector, words in _split(line):
        if (connector == "&&" and status != 0) or (connector == "||" and status == 0):
            continue
        if words[0] in ("while", "do", "done", "if", "then", "fi"):
            if words[:4] == ["while", "read", "file", "ownership"]:
                status = install.chown_pairs(ctx)
            continue
        if words[0] not in ("sh", "bash"):  # their -c line is expanded when it runs
            words = [w.replace("$?", str(status)) for w in words]
        status = run_simple(ctx, words)
    return status


def run_sh(ctx: Ctx, args: list[str]) -> int:
    """``sh``/``bash``: ``-c LINE``, ``-s`` (lines from stdin, each run as it arrives), a
    script file, or a script on stdin."""
    if args and args[0] == "-c":
        return run_line(ctx, args[1] if len(args) > 1 else "")
    if args == ["-s"]:
        status = 0
        while line := ctx.read_line():
            ctx.refresh()  # a long-lived shell sees the host as it is now
            round_trip(ctx)
            status = run_line(ctx, line.decode().strip())
        return status
    files = [a for a in args if not a.startswith("-")]
    if files:
        path = ctx.resolve(files[0])
        if not path.is_file():
            return ctx.fail(f"bash: {files[0]}: No such file or directory", 127)
        script = path.read_text()
        if path.name == "nixos-anywhere-kexec.sh":
            return install.kexec_script(ctx)
    else:
        script = ctx.stdin.read().decode()
    return run_script(ctx, script)


def run_script(ctx: Ctx, script: str) -> int:
    """A script on stdin: the ones nixos-anywhere sends are recognised, others run line
    by line (no control flow)."""
    if "FACTS" in script and "is_installer" in script.lower():
        return install.facts(ctx)
    if "nixos-install" in script:
        words = shlex.split(script[script.index("nixos-install") :].splitlines()[0])
        copy = 'copyHostKeys-n} = "y"' in script or 'if [ y = "y" ]' in script
        return install.nixos_install(ctx, words[1:], copy_host_keys=copy)
    if "sleep 6 && reboot" in script:
        ctx.ask("reboot", after="script")
        return 0
    status = 0
    for raw in script.splitlines():
        line = raw.strip()
        if (
            not line
            or line.startswith("#")
            or line.startswith("set ")
            or line.startswith("export ")
        ):
            continue
        status = run_line(ctx, line)
    return status


def interactive(ctx: Ctx) -> int:
    """A login without a command: the scripted initrd asks for the passphrase at once;
    elsewhere a minimal prompt that runs one line at a time."""
    if ctx.stage == "initrd" and ctx.state.initrd == "askpass":
        return unlock.askpass(ctx, [])
    status = 0
    while True:
        ctx.out(f"[root@{ctx.state.name}:~]# ")
        line = ctx.read_line()
        if not line:
            ctx.out("\n")
            return status
        round_trip(ctx)
        try:
            status = run_line(ctx, line.decode().strip())
        except ShellExit as done:
            return done.status


def main(argv: list[str]) -> int:
    host_dir, stage = Path(argv[0]), argv[1]
    if stage not in STAGES:
        return 2
    ctx = Ctx(host_dir, stage)
    line = os.environ.get("SSH_ORIGINAL_COMMAND")
    try:
        if line is None:
            return interactive(ctx)
        round_trip(ctx)
        return run_line(ctx, line)
    except ShellExit as done:
        return done.status
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        sys.stderr.write(f"lab shell: {type(exc).__name__}: {exc}\n")
        return 70
