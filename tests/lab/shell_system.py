"""Lab-shell commands a running machine answers: files, systemd, power, disk, health.

Each command takes the session context and its arguments and returns an exit status,
printing what the real tool prints in the cases the bot relies on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.lab import shell_updates as updates
from tests.lab.model import NIXOS_VERSION, HostState
from tests.lab.shell_base import Ctx, ShellExit

_SIZE = re.compile(r"^(\d+)([kKmMgG%]?)$")


def cmd_true(ctx: Ctx, args: list[str]) -> int:
    return 0


def cmd_false(ctx: Ctx, args: list[str]) -> int:
    return 1


def cmd_exit(ctx: Ctx, args: list[str]) -> int:
    raise ShellExit(int(args[0]) if args else 0)


def cmd_echo(ctx: Ctx, args: list[str]) -> int:
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    ctx.out(" ".join(args) + ("\n" if newline else ""))
    return 0


def cmd_sleep(ctx: Ctx, args: list[str]) -> int:
    time.sleep(min(float(args[0]) if args else 0.0, 600.0))
    return 0


def cmd_cat(ctx: Ctx, args: list[str]) -> int:
    if not args or args == ["-"]:
        shutil.copyfileobj(ctx.stdin, ctx.stdout)
        ctx.stdout.flush()
        return 0
    status = 0
    for name in args:
        if name == "/proc/uptime":
            up = time.time() - ctx.state.booted_at
            ctx.out(f"{up:.2f} {up * 1.7:.2f}\n")
            continue
        path = ctx.resolve(name)
        if path.is_dir():
            status = ctx.fail(f"cat: {name}: Is a directory")
        elif path.exists():
            ctx.stdout.write(path.read_bytes())
            ctx.stdout.flush()
        else:
            status = ctx.fail(f"cat: {name}: No such file or directory")
    return status


def cmd_hostname(ctx: Ctx, args: list[str]) -> int:
    ctx.out(("nixos" if ctx.stage == "installer" else ctx.state.name) + "\n")
    return 0


def cmd_uname(ctx: Ctx, args: list[str]) -> int:
    release = updates.booted_kernel(ctx)
    if not args or args == ["-s"]:
        ctx.out("Linux\n")
    elif args == ["-m"]:
        ctx.out("x86_64\n")
    elif args == ["-r"]:
        ctx.out(f"{release}\n")
    else:
        ctx.out(f"Linux {ctx.state.name} {release} #1-NixOS SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n")
    return 0


def cmd_uptime(ctx: Ctx, args: list[str]) -> int:
    up = int(time.time() - ctx.state.booted_at)
    if "-s" in args or "--since" in args:
        ctx.out(time.strftime("%Y-%m-%d %H:%M:%S\n", time.localtime(ctx.state.booted_at)))
        return 0
    minutes, hours, days = up // 60 % 60, up // 3600 % 24, up // 86400
    if "-p" in args or "--pretty" in args:
        parts = [
            f"{n} {unit}{'s' if n != 1 else ''}"
            for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
            if n
        ]
        ctx.out("up " + (", ".join(parts) or "0 minutes") + "\n")
        return 0
    span = f"{hours}:{minutes:02d}" if hours else f"{minutes} min"
    if days:
        span = f"{days} day{'s' if days != 1 else ''}, {span}"
    now = time.strftime("%H:%M:%S")
    ctx.out(f" {now} up {span},  1 user,  load average: 0.08, 0.03, 0.01\n")
    return 0


def cmd_nixos_version(ctx: Ctx, args: list[str]) -> int:
    if "--json" in args:
        version = NIXOS_VERSION.split()[0]
        ctx.out(json.dumps({"nixosVersion": version, "nixpkgsRevision": "9e83b64"}) + "\n")
    elif "--hash" in args or "--revision" in args:
        ctx.out("9e83b64f1e0ca3d4bc2f4dc2a8c5b1e5b1b9c0d1\n")
    else:
        ctx.out(NIXOS_VERSION + "\n")
    return 0


def size_kib(size: str, mem_mib: int) -> int:
    """A tmpfs ``size=`` value in KiB (``512M``, ``1G``, ``50%``, bytes)."""
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(size)
    number, unit = int(match.group(1)), match.group(2).lower()
    if unit == "%":
        return mem_mib * 1024 * number // 100
    if unit == "":
        return number // 1024
    return number * {"k": 1, "m": 1024, "g": 1024 * 1024}[unit]


def _mounts(ctx: Ctx) -> list[tuple[str, int, int, str]]:
    """(filesystem, size KiB, used KiB, mount point) as this stage has them."""
    state = ctx.state
    gib = 1024 * 1024
    if ctx.stage == "installer":
        if state.os == "debian":
            return [("/dev/vda1", 20 * gib, 2 * gib, "/"), ("tmpfs", 100 * 1024, 0, "/run")]
        store = size_kib(state.rw_store_size, state.mem_mib)
        return [
            ("tmpfs", state.mem_mib * 512, 8 * 1024, "/"),
            ("/dev/root", 1 * gib, 1 * gib, "/iso"),
            ("tmpfs", store, min(store, 40 * 1024), "/nix/.rw-store"),
        ]
    if ctx.stage == "initrd":
        return [("rootfs", state.mem_mib * 512, 30 * 1024, "/")]
    nix_size = 20 * gib
    used = nix_size * state.disk_use_percent // 100
    return [
        ("tmpfs", state.mem_mib * 512, 4 * 1024, "/"),
        ("/dev/mapper/crypted" if state.luks else "/dev/vda2", nix_size, used, "/nix"),
        ("/dev/vda1", 512 * 1024, 60 * 1024, "/boot"),
    ]


def _human(kib: int) -> str:
    value = float(kib)
    for unit in ("K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value}T"


def cmd_df(ctx: Ctx, args: list[str]) -> int:
    human = any(
        a == "--human-readable" or (a.startswith("-") and not a.startswith("--") and "h" in a)
        for a in args
    )
    targets = [a for a in args if not a.startswith("-")]
    mounts = _mounts(ctx)
    if targets:
        chosen = []
        for target in targets:
            best = max(
                (m for m in mounts if target == m[3] or target.startswith(m[3].rstrip("/") + "/")),
                key=lambda m: len(m[3]),
                default=None,
            )
            if best is None:
                return ctx.fail(f"df: {target}: No such file or directory")
            chosen.append(best)
        mounts = chosen
    header = "Size" if human else "1K-blocks"
    rows = [("Filesystem", header, "Used", "Avail" if human else "Available", "Use%", "Mounted on")]
    for fs, size, used, point in mounts:
        avail = size - used
        pct = f"{-(-used * 100 // size) if size else 0}%"
        fmt = _human if human else str
        rows.append((fs, fmt(size), fmt(used), fmt(avail), pct, point))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        ctx.out(
            f"{r[0]:<{widths[0]}} "
            + " ".join(f"{r[i]:>{widths[i]}}" for i in range(1, 5))
            + f" {r[5]}\n"
        )
    return 0


def cmd_free(ctx: Ctx, args: list[str]) -> int:
    total = ctx.state.mem_mib
    ctx.out("               total        used        free      shared  buff/cache   available\n")
    ctx.out(
        f"Mem:     {total:>11} {total // 5:>11} {total * 3 // 4:>11} {8:>11} "
        f"{total // 10:>11} {total * 4 // 5:>11}\n"
    )
    ctx.out(f"Swap:    {0:>11} {0:>11} {0:>11}\n")
    return 0


def cmd_mount(ctx: Ctx, args: list[str]) -> int:
    options = ""
    targets = []
    it = iter(args)
    for arg in it:
        if arg == "-o":
            options = next(it, "")
        elif arg.startswith("-o"):
            options = arg[2:]
        elif not arg.startswith("-"):
            targets.append(arg)
    if not targets:
        for fs, _, _, point in _mounts(ctx):
            ctx.out(f"{fs} on {point} type {'tmpfs' if fs == 'tmpfs' else 'ext4'} (rw)\n")
        return 0
    target = targets[-1]
    has_store = ctx.stage == "installer" and ctx.state.os != "debian"
    if target != "/nix/.rw-store" or not has_store:
        return ctx.fail(f"mount: {target}: mount point does not exist.", 32)
    opts = options.split(",")
    if "remount" not in opts:
        return ctx.fail(f"mount: {target}: {target} already mounted or mount point busy.", 32)
    for opt in opts:
        if opt.startswith("size="):
            size = opt.removeprefix("size=")
            try:
                size_kib(size, ctx.state.mem_mib)
            except ValueError:
                return ctx.fail(f"mount: {target}: bad option; size={size}.", 32)
            ctx.ask("remount", size=size)
    return 0


def system_state(state: HostState) -> str:
    if state.system_state is not None:
        return state.system_state
    if time.time() - state.booted_at < state.starting_for:
        return "starting"
    return "degraded" if updates.failed_units(state) else "running"


def cmd_systemctl(ctx: Ctx, args: list[str]) -> int:
    flags = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    verb = words[0] if words else "list-units"
    units = words[1:]
    state = ctx.state
    if ctx.stage == "initrd" and verb == "default" and state.initrd == "systemd":
        from tests.lab.shell_unlock import agent

        return agent(ctx, [])
    if verb in ("reboot", "poweroff", "halt", "kexec"):
        ctx.ask("poweroff" if verb in ("poweroff", "halt") else "reboot")
        return 0
    if ctx.stage == "booted":
        handled = updates.systemctl(ctx, verb, units, flags, args)
        if handled is not None:
            return handled
    failed = updates.failed_units(state) if ctx.stage == "booted" else []
    if verb == "is-system-running":
        answer = (
            system_state(state)
            if ctx.stage == "booted"
            else ("initializing" if ctx.stage == "initrd" else "running")
        )
        if "--quiet" not in flags and "-q" not in flags:
            ctx.out(answer + "\n")
        return 0 if answer == "running" else 1
    if verb in ("is-active", "is-failed"):
        answers = [
            updates.unit_state(state, unit) if ctx.stage == "booted" else "active" for unit in units
        ]
        if "--quiet" not in flags and "-q" not in flags:
            ctx.out("".join(answer + "\n" for answer in answers))
        if verb == "is-active":
            return 0 if all(a == "active" for a in answers) else 3
        return 0 if "failed" in answers else 1
    if verb == "list-units" or "--failed" in flags:
        if "--failed" not in flags and "--state=failed" not in flags:
            return ctx.fail("lab: only `systemctl --failed` lists units", 1)
        _list_failed(ctx, failed, legend="--no-legend" not in flags, plain="--plain" in flags)
        return 0
    return ctx.fail(f"Unknown command verb '{verb}'.", 1)


def _list_failed(ctx: Ctx, failed: list[str], *, legend: bool, plain: bool) -> None:
    width = max([len("UNIT"), *(len(u) for u in failed)])
    mark = "" if plain else "● "
    pad = "" if plain else "  "
    if legend:
        ctx.out(f"{pad}{'UNIT':<{width}} LOAD   ACTIVE SUB    DESCRIPTION\n")
    for unit in failed:
        ctx.out(f"{mark}{unit:<{width}} loaded failed failed {unit.rsplit('.', 1)[0]}\n")
    if legend:
        if failed:
            ctx.out(
                "\nLegend: LOAD   → Reflects whether the unit definition was properly loaded.\n"
                "        ACTIVE → The high-level unit activation state, i.e. generalization"
                " of SUB.\n"
                "        SUB    → The low-level unit activation state, values depend on unit"
                " type.\n"
            )
        ctx.out(f"\n{len(failed)} loaded units listed.\n")


def cmd_reboot(ctx: Ctx, args: list[str]) -> int:
    ctx.ask("reboot")
    return 0


def cmd_poweroff(ctx: Ctx, args: list[str]) -> int:
    ctx.ask("poweroff")
    return 0


def cmd_shutdown(ctx: Ctx, args: list[str]) -> int:
    ctx.ask("reboot" if "-r" in args or "--reboot" in args else "poweroff")
    return 0


def cmd_curl(ctx: Ctx, args: list[str]) -> int:
    fail = silent = show_error = False
    write_out = ""
    url = ""
    it = iter(args)
    for arg in it:
        if arg in ("-o", "--output", "-m", "--max-time", "--connect-timeout", "-H", "-X"):
            next(it, None)
        elif arg in ("-w", "--write-out"):
            write_out = next(it, "")
        elif arg == "--fail":
            fail = True
        elif arg == "--silent":
            silent = True
        elif arg == "--show-error":
            show_error = True
        elif arg.startswith("-") and not arg.startswith("--"):
            fail |= "f" in arg
            silent |= "s" in arg
            show_error |= "S" in arg
        elif not arg.startswith("-"):
            url = arg
    quiet_body = "-o" in args or "--output" in args
    answer = ctx.state.http.get(url) if ctx.stage == "booted" else None
    if answer is None:
        if not silent or show_error:
            host = re.sub(r"^\w+://", "", url).split("/")[0]
            name, _, port = host.partition(":")
            ctx.err(
                f"curl: (7) Failed to connect to {name} port {port or 80} after 0 ms: "
                "Couldn't connect to server\n"
            )
        ctx.out(write_out.replace("%{http_code}", "000"))
        return 7
    status, body = int(answer[0]), str(answer[1])
    if fail and status >= 400:
        if not silent or show_error:
            ctx.err(f"curl: (22) The requested URL returned error: {status}\n")
        ctx.out(write_out.replace("%{http_code}", str(status)))
        return 22
    if not quiet_body:
        ctx.out(body)
    ctx.out(write_out.replace("%{http_code}", str(status)))
    return 0


def cmd_umask(ctx: Ctx, args: list[str]) -> int:
    if args:
        ctx.umask = int(args[0], 8)
    else:
        ctx.out(f"{ctx.umask:04o}\n")
    return 0


def cmd_mkdir(ctx: Ctx, args: list[str]) -> int:
    parents = "-p" in args
    mode = 0o777 & ~ctx.umask
    it = iter(args)
    for arg in it:
        if arg in ("-m", "--mode"):
            mode = int(next(it, "755"), 8)
        elif not arg.startswith("-"):
            path = ctx.resolve(arg)
            try:
                path.mkdir(mode=mode, parents=parents, exist_ok=parents)
            except OSError as exc:
                return ctx.fail(f"mkdir: cannot create directory '{arg}': {exc.strerror}")
    return 0


def cmd_chmod(ctx: Ctx, args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    if len(words) < 2 or not re.fullmatch(r"[0-7]{3,4}", words[0]):
        return ctx.fail("chmod: lab: only octal modes are supported")
    for name in words[1:]:
        path = ctx.resolve(name)
        if not path.exists():
            return ctx.fail(f"chmod: cannot access '{name}': No such file or directory")
        path.chmod(int(words[0], 8))
    return 0


def cmd_chown(ctx: Ctx, args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    recursive = "-R" in args
    owner, _, group = words[0].partition(":")
    uid = int(owner) if owner.isdigit() else 0
    gid = int(group) if group.isdigit() else -1
    for name in words[1:]:
        path = ctx.resolve(name)
        if not path.exists():
            return ctx.fail(f"chown: cannot access '{name}': No such file or directory")
        targets = [path, *path.rglob("*")] if recursive and path.is_dir() else [path]
        for target in targets:
            os.lchown(target, uid, gid)
    return 0


def write_redirect(ctx: Ctx, target: str, append: bool) -> Path:
    """Open ``> target`` for the next command, honouring the session's umask."""
    path = ctx.resolve(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    os.close(os.open(path, flags, 0o666 & ~ctx.umask))
    return path


def cmd_nc(ctx: Ctx, args: list[str]) -> int:
    """``nc -z [-w SECONDS] HOST PORT``: whether a TCP port of this host accepts.

    ``127.0.0.1`` and ``localhost`` are the host's own loopback, which in the lab is the
    host's own address; the connect is real, to the lab's listener for ``open_port``.
    """
    timeout = 5.0
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "-w":
            timeout = float(next(it, "5"))
        elif arg.startswith("-"):
            continue
        else:
            positional.append(arg)
    if "-z" not in args or len(positional) != 2 or not positional[1].isdigit():
        ctx.err("usage: nc -z [-w timeout] host port\n")
        return 2
    host, port = positional
    if host in ("127.0.0.1", "localhost", "::1"):
        host = ctx.state.address
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        if "-v" in args:
            ctx.err(f"nc: connect to {host} port {port} (tcp) failed: Connection refused\n")
        return 1
    return 0


def cmd_ssh_keygen(ctx: Ctx, args: list[str]) -> int:
    """``ssh-keygen -y -f FILE`` and ``ssh-keygen -l -f FILE``: the real binary, run on the
    file as this stage sees it, its messages naming the path the caller gave."""
    mode, name = "", ""
    words = iter(args)
    for word in words:
        if word in ("-y", "-l"):
            mode = word
        elif word in ("-f", "-yf", "-lf"):
            mode = word[:2] if word != "-f" else mode
            name = next(words, "")
        else:
            mode = "?"
    if mode not in ("-y", "-l") or not name:
        return ctx.fail("lab: only `ssh-keygen -y -f FILE` and `ssh-keygen -l -f FILE`", 1)
    path = ctx.resolve(name)
    done = subprocess.run(
        ["ssh-keygen", mode, "-f", str(path)],
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    ctx.stdout.write(done.stdout.replace(str(path).encode(), name.encode()))
    ctx.stdout.flush()
    ctx.err(done.stderr.decode("utf-8", "replace").replace(str(path), name))
    return done.returncode
