"""Lab-shell commands for updating a booted machine: ``readlink``, ``nix-env`` on the system
profile, ``<toplevel>/bin/switch-to-configuration``, ``systemd-run`` transient units and
timers, the ``systemctl`` verbs for them, and ``nix-store --serve --write`` (the receiving
end of the stand-in ``nix copy``).

Output follows the real tools (nix-env 2.28, systemd 257, switch-to-configuration-ng).
Standard library only, and light: every SSH command imports it (tarfile waits until used).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tests.lab import generations as gen
from tests.lab.model import HostState
from tests.lab.shell_base import Ctx

_SWITCH = "/bin/switch-to-configuration"
_BOOLEANS = {
    **dict.fromkeys(("1", "yes", "y", "true", "t", "on"), True),
    **dict.fromkeys(("0", "no", "n", "false", "f", "off"), False),
}
SERVE_HELLO = "lab-nix-serve 1"

# --------------------------------------------------------------------------- readlink


def cmd_readlink(ctx: Ctx, args: list[str]) -> int:
    """``readlink [-f|-e|-m] PATH...``: link targets as the host's filesystem has them."""
    canonical = any(a in ("-f", "-e", "-m", "--canonicalize") for a in args)
    names = [a for a in args if not a.startswith("-")]
    if not names:
        return ctx.fail("readlink: missing operand")
    status = 0
    root = ctx.paths.root
    for name in names:
        real = ctx.resolve(name)
        if canonical:
            if not real.exists() and "-m" not in args:
                status = 1
                continue
            ctx.out(gen.simulated(root, real) + "\n")
            continue
        target = gen.sim_readlink(root, real)
        if target is None:
            status = 1
        else:
            ctx.out(target + "\n")
    return status


def booted_kernel(ctx: Ctx) -> str:
    """The kernel release the booted system started (``uname -r``)."""
    if ctx.stage == "booted":
        booted = gen.run_link(ctx.paths.root, "booted-system")
        info = gen.system_info(ctx.paths.root, booted) if booted else None
        if info is not None:
            return str(info.get("kernel", gen.DEFAULT_KERNEL))
    return gen.DEFAULT_KERNEL


# ---------------------------------------------------------------------------- nix-env


def cmd_nix_env(ctx: Ctx, args: list[str]) -> int:
    """``nix-env -p /nix/var/nix/profiles/system`` with ``--set``, ``--rollback``,
    ``--list-generations`` or ``--switch-generation N``."""
    profile = "~/.nix-profile"
    operation: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-p", "--profile"):
            profile = next(it, "")
        elif arg in ("--set", "--switch-generation", "-G"):
            operation = [arg, next(it, "")]
        elif arg in ("--rollback", "--list-generations"):
            operation = [arg]
        elif arg.startswith("-"):
            if arg in ("-q", "--quiet", "-v", "--verbose"):
                continue
            return ctx.fail(f"error: unknown flag '{arg}'\nTry 'nix-env --help' for more info.")
        else:
            return ctx.fail(f"error: unexpected argument '{arg}'")
    if not operation:
        return ctx.fail("error: no operation specified\nTry 'nix-env --help' for more information.")
    if profile.rstrip("/") != gen.PROFILE:
        return ctx.fail(f"error: lab: only the system profile {gen.PROFILE} exists here")
    root = ctx.paths.root
    current = gen.current_generation(root)
    gens = gen.generations(root)
    op = operation[0]
    if op == "--set":
        path = operation[1]
        if not path.startswith(gen.STORE + "/") or not gen.in_store(root, path).exists():
            return ctx.fail(f"error: path '{path}' is not valid")
        gen.set_profile(root, path.rstrip("/"))
        return 0
    if op == "--list-generations":
        for g in gens:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created))
            ctx.out(f"{g.number:>4}   {stamp}   {'(current)' if g.current else ''}\n")
        return 0
    if op == "--rollback":
        older = [g.number for g in gens if current is not None and g.number < current]
        if not older:
            return ctx.fail(f"error: no generation older than the current ({current}) exists")
        target = max(older)
    else:
        if not operation[1].isdigit():
            return ctx.fail(f"error: invalid generation number '{operation[1]}'")
        target = int(operation[1])
        if target not in {g.number for g in gens}:
            return ctx.fail(f"error: generation {target} does not exist")
    ctx.err(f"switching profile from version {current} to {target}\n")
    gen.switch_generation(root, target)
    return 0


# --------------------------------------------------------------- switch-to-configuration


def is_switch(name: str) -> bool:
    return name.endswith(_SWITCH)


def switch_to_configuration(ctx: Ctx, name: str, args: list[str]) -> int:
    """``<toplevel>/bin/switch-to-configuration switch|boot|test|dry-activate``."""
    real = ctx.resolve(name)
    if not real.is_file():
        return ctx.fail(f"bash: {name}: No such file or directory", 127)
    root = ctx.paths.root
    toplevel = gen.simulated(root, real.parent.parent)
    action = args[0] if args else ""
    if action not in ("switch", "boot", "test", "dry-activate") or len(args) != 1:
        return ctx.fail("Usage: switch-to-configuration [switch|boot|test|dry-activate]")
    info = gen.system_info(root, toplevel) or {}
    breaks = bool(info.get("breaks_ssh"))
    broken = ctx.state.sshd_broken
    unit = os.environ.get("LAB_UNIT")
    if action == "dry-activate":
        if breaks and not broken:
            ctx.err("would stop the following units: sshd.service\n")
        ctx.err("would activate the configuration...\n")
        return 0
    if action in ("switch", "boot"):
        ctx.err("updating GRUB 2 menu...\n")
    if action == "boot":
        ctx.ask("activate", system=toplevel, action=action, unit=unit)
        return 0
    if breaks and not broken:
        ctx.err("stopping the following units: sshd.service\n")
    ctx.err("activating the configuration...\n")
    ctx.ask("activate", system=toplevel, action=action, unit=unit)
    ctx.err("setting up /etc...\n")
    ctx.err("reloading user units for root...\n")
    ctx.err("restarting sysinit-reactivation.target\n")
    if breaks or broken:
        ctx.err("starting the following units: sshd.service\n")
    if breaks:
        ctx.err(
            "warning: the following units failed: sshd.service\n\n"
            "× sshd.service - SSH Daemon\n"
            "     Loaded: loaded (/etc/systemd/system/sshd.service; enabled; preset: ignored)\n"
            "     Active: failed (Result: exit-code)\n"
            "    Process: sshd -t (code=exited, status=255/EXCEPTION)\n"
        )
        return 4
    return 0


# ------------------------------------------------------------------- nix-store --serve


def cmd_nix_store(ctx: Ctx, args: list[str]) -> int:
    """``nix-store --serve --write``: receive store paths from the stand-in ``nix copy``.

    Lab protocol (both ends are the lab's): a hello line; a JSON line ``{"query": [...]}``
    answered by ``{"valid": [...]}``; a JSON line ``{"import": N}`` then a tar stream of
    N store entries; ``ok``.
    """
    if "--serve" not in args:
        return ctx.fail("error: lab: only `nix-store --serve [--write]` is supported")
    root = ctx.paths.root
    store = gen.store_dir(root)
    ctx.out(SERVE_HELLO + "\n")
    query = json.loads(ctx.read_line() or b"{}")
    wanted = [str(p) for p in query.get("query", [])]
    valid = [p for p in wanted if gen.in_store(root, p).exists()]
    ctx.out(json.dumps({"valid": valid}) + "\n")
    header = json.loads(ctx.read_line() or b"{}")
    count = int(header.get("import", 0))
    if count == 0:
        ctx.out("ok\n")
        return 0
    if "--write" not in args:
        return ctx.fail("error: writing to the store is not allowed (no --write)")
    import tarfile

    store.mkdir(parents=True, exist_ok=True)
    staging = store / f".incoming-{os.urandom(6).hex()}"
    staging.mkdir()
    try:
        with tarfile.open(fileobj=ctx.stdin, mode="r|") as archive:
            archive.extractall(staging, filter="data")
        for entry in staging.iterdir():
            final = store / entry.name
            if not final.exists():
                os.rename(entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.out("ok\n")
    return 0


# ---------------------------------------------------------------------- systemd-run

_VALUE_OPTIONS = {
    "--unit": "u",
    "--property": "p",
    "--setenv": "E",
    "--description": "",
    "--slice": "",
    "--service-type": "",
    "--uid": "",
    "--gid": "",
    "--nice": "",
    "--working-directory": "",
    "--on-active": "",
    "--on-boot": "",
    "--on-startup": "",
    "--on-unit-active": "",
    "--on-unit-inactive": "",
    "--on-calendar": "",
    "--timer-property": "",
    "--path-property": "",
    "--socket-property": "",
    "--job-mode": "",
    "--expand-environment": "",
}
_SHORT_VALUE = {"-u": "--unit", "-p": "--property", "-E": "--setenv"}
_FLAGS = {
    "--collect": "-G",
    "--no-ask-password": "",
    "--pipe": "-P",
    "--quiet": "-q",
    "--wait": "",
    "--no-block": "",
    "--same-dir": "-d",
    "--remain-after-exit": "-r",
    "--pty": "-t",
    "--send-sighup": "",
    "--ignore-failure": "",
    "--system": "",
}
_SHORT_FLAGS = {short: long for long, short in _FLAGS.items() if short}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zµ]*)")
_SPAN_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "us": 1e-6,
    "usec": 1e-6,
    "µs": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def parse_timespan(text: str) -> float | None:
    """systemd's time span (``90``, ``90s``, ``1min 30s``, ``500ms``) in seconds."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    total, pos = 0.0, 0
    if not text:
        return None
    for match in _SPAN.finditer(text):
        if text[pos : match.start()].strip():
            return None
        unit = _SPAN_UNITS.get(match.group(2))
        if unit is None:
            return None
        total += float(match.group(1)) * unit
        pos = match.end()
    return total if not text[pos:].strip() and pos else None


def cmd_systemd_run(ctx: Ctx, args: list[str]) -> int:
    """``systemd-run`` for a transient service (optionally ``--wait``/``--pipe``) or a
    transient ``--on-active`` timer, as nixos-rebuild and a rollback guard use it."""
    values: dict[str, list[str]] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        name, eq, value = arg.partition("=")
        if arg[:2] in _SHORT_VALUE:
            name, value, eq = _SHORT_VALUE[arg[:2]], arg[2:], "=" if len(arg) > 2 else ""
        elif name in _SHORT_FLAGS and not eq:
            flags.add(_SHORT_FLAGS[name])
            i += 1
            continue
        if name in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    return ctx.fail(f"systemd-run: option '{name}' requires an argument")
                value = args[i + 1]
                i += 1
            values.setdefault(name, []).append(value)
        elif name in _FLAGS and not eq:
            flags.add(name)
        else:
            return ctx.fail(f"systemd-run: unrecognized option '{arg}'")
        i += 1
    command = args[i:]
    quiet = "--quiet" in flags
    timer_specs = [o for o in values if o.startswith("--on-")]
    if "--pty" in flags:
        return ctx.fail("lab: systemd-run --pty is not supported")
    if "--wait" in flags and "--no-block" in flags:
        return ctx.fail("--wait may not be combined with --no-block.")
    if timer_specs and ("--wait" in flags or "--pipe" in flags):
        return ctx.fail(
            "--wait may not be combined with path, socket or timer operations."
            if "--wait" in flags
            else "--pty/--pipe is not compatible in timer or --scope mode."
        )
    if not command:
        return ctx.fail("Command line to execute required.")
    if not _executable(ctx, command[0]):
        return ctx.fail(f"Failed to find executable {command[0]}: No such file or directory")
    unit = values.get("--unit", [f"run-r{os.urandom(16).hex()}"])[-1]
    base = unit.removesuffix(".service").removesuffix(".timer")
    if not re.fullmatch(r"[A-Za-z0-9:_.\\@-]+", base):
        return ctx.fail(f"Failed to mangle unit name: {unit}: Invalid argument")
    env: dict[str, str] = {}
    for assignment in values.get("--setenv", []):
        key, eq, value = assignment.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    service = f"{base}.service"
    request: dict[str, Any] = {
        "service": service,
        "command": command,
        "env": env,
        "collect": "--collect" in flags,
    }
    if timer_specs:
        if timer_specs != ["--on-active"]:
            return ctx.fail(f"lab: only --on-active timers are supported, not {timer_specs}")
        delay = parse_timespan(values["--on-active"][-1])
        if delay is None:
            return ctx.fail(f"Failed to parse timer value: {values['--on-active'][-1]}")
        accuracy, remain = 60.0, True
        for prop in values.get("--timer-property", []):
            key, _, value = prop.partition("=")
            if key == "AccuracySec":
                parsed = parse_timespan(value)
                if parsed is None:
                    return ctx.fail(f"Failed to parse AccuracySec= value: {value}")
                accuracy = parsed
            elif key == "RemainAfterElapse":
                if value not in _BOOLEANS:
                    return ctx.fail(f"Failed to parse RemainAfterElapse= value: {value}")
                remain = _BOOLEANS[value]
            elif key == "RandomizedDelaySec":
                parsed = parse_timespan(value)
                delay += (parsed or 0.0) * int.from_bytes(os.urandom(2), "big") / 65536
            else:
                return ctx.fail(f"lab: unsupported timer property {key}")
        request["timer"] = {
            "name": f"{base}.timer",
            "on_active": delay,
            "accuracy": accuracy,
            "remain": remain,
        }
    answer = ctx.ask("start-unit", **request)
    if not answer.get("ok"):
        return ctx.fail(str(answer.get("error")))
    if timer_specs:
        if not quiet:
            ctx.err(f"Running timer as unit: {base}.timer\nWill run service as unit: {service}\n")
        return 0
    invocation = str(answer["invocation"])
    if not quiet:
        ctx.err(f"Running as unit: {service}; invocation ID: {invocation}\n")
    if "--wait" not in flags:
        return 0
    return _wait(ctx, invocation, pipe="--pipe" in flags, quiet=quiet)


def _executable(ctx: Ctx, name: str) -> bool:
    from tests.lab.shell_run import commands

    if name.startswith("/"):
        return ctx.resolve(name).is_file() or Path(name).name in commands(ctx)
    return name in commands(ctx)


def _wait(ctx: Ctx, invocation: str, *, pipe: bool, quiet: bool) -> int:
    journal = ctx.paths.run / "units"
    offsets = {"out": 0, "err": 0}

    def drain() -> None:
        for stream in ("out", "err"):
            try:
                with (journal / f"{invocation}.{stream}").open("rb") as f:
                    f.seek(offsets[stream])
                    data = f.read()
            except OSError:
                continue
            offsets[stream] += len(data)
            if data and pipe:
                target = ctx.stdout if stream == "out" else ctx.stderr
                target.write(data)
                target.flush()

    while True:
        done = ctx.refresh().finished.get(invocation)
        drain()
        if done is not None:
            break
        time.sleep(0.02)
    if not quiet:
        ctx.err(
            f"Finished with result: {done['result']}\n"
            f"Main processes terminated with: code={done['code']}/status={done['status']}\n"
            f"Service runtime: {_span(float(done['runtime']))}\n"
        )
    return int(done["exit_status"]) if done["code"] == "exited" else 1


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}min {rest}s"


# -------------------------------------------------------------------------- systemctl


def _unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def failed_units(state: HostState) -> list[str]:
    """Failed units of the booted system: the knob's, sshd if broken, failed transients."""
    failed = list(state.failed_units)
    if state.sshd_broken and "sshd.service" not in failed:
        failed.append("sshd.service")
    failed += [n for n, u in state.units.items() if u["state"] == "failed" and n not in failed]
    return failed


def unit_state(state: HostState, name: str) -> str:
    """``systemctl is-active``'s answer for one unit."""
    name = _unit_name(name)
    unit = state.units.get(name)
    if unit is not None:
        return "active" if unit["kind"] == "timer" else str(unit["state"])
    if name in failed_units(state):
        return "failed"
    transient = {str(f.get("unit")) for f in state.finished.values()}
    if name.endswith(".timer") or name in transient or name.startswith("run-r"):
        return "inactive"
    return "active"


def systemctl(
    ctx: Ctx, verb: str, units: list[str], flags: set[str], args: list[str]
) -> int | None:
    """The verbs for transient units (``start``, ``stop``, ``reset-failed``,
    ``list-timers``, ``show``); None for the others."""
    state = ctx.state
    if verb == "show":
        return _show(ctx, args)
    if verb == "start":
        status = 0
        for unit in units:
            answer = ctx.ask("start-service", service=_unit_name(unit))
            if not answer.get("ok"):
                ctx.err(f"{answer.get('error')}\n")
                status = 5
        return status
    if verb == "stop":
        status = 0
        loaded = []
        for unit in units:
            name = _unit_name(unit)
            if name in state.units:
                loaded.append(name)
            else:
                ctx.err(f"Failed to stop {name}: Unit {name} not loaded.\n")
                status = 5
        if loaded:
            ctx.ask("stop-units", units=loaded)
        return status
    if verb == "reset-failed":
        ctx.ask("reset-failed", units=[_unit_name(u) for u in units])
        return 0
    if verb == "list-timers":
        _list_timers(ctx, units, legend="--no-legend" not in flags, show_all="--all" in flags)
        return 0
    return None


def _show(ctx: Ctx, args: list[str]) -> int:
    """``systemctl show UNIT... [-p PROP[,PROP]]... [--value]``."""
    wanted: list[str] = []
    names: list[str] = []
    it = iter(args[args.index("show") + 1 :])
    for arg in it:
        if arg in ("-p", "--property"):
            wanted += next(it, "").split(",")
        elif arg.startswith("--property="):
            wanted += arg.removeprefix("--property=").split(",")
        elif arg.startswith("-p") and len(arg) > 2:
            wanted += arg[2:].split(",")
        elif not arg.startswith("-"):
            names.append(_unit_name(arg))
    state = ctx.state
    blocks = []
    for name in names:
        unit = state.units.get(name)
        active = unit_state(state, name)
        props = {"Id": name, "Names": name}
        if unit is None:
            loaded = active != "inactive"
            props.update(
                LoadState="loaded" if loaded else "not-found",
                ActiveState=active,
                SubState={"active": "running", "failed": "failed"}.get(active, "dead"),
                Result="exit-code" if active == "failed" else "success",
            )
        elif unit["kind"] == "timer":
            props.update(
                LoadState="loaded",
                ActiveState="active",
                SubState=str(unit["state"]),
                Unit=str(unit["activates"]),
                Result="success",
            )
        else:
            props.update(
                LoadState="loaded",
                ActiveState=str(unit["state"]),
                SubState="running" if unit["state"] == "active" else "failed",
                Result="success" if unit["state"] == "active" else "exit-code",
                InvocationID=str(unit["invocation"]),
            )
        shown = [(k, props.get(k, "")) for k in wanted] if wanted else list(props.items())
        if "--value" in args:
            blocks.append("".join(f"{v}\n" for _, v in shown))
        else:
            blocks.append("".join(f"{k}={v}\n" for k, v in shown))
    ctx.out("\n".join(blocks))
    return 0


def _list_timers(ctx: Ctx, patterns: list[str], *, legend: bool, show_all: bool) -> None:
    import fnmatch

    now = time.time()
    rows: list[tuple[str, str, str, str, str, str]] = []
    timers = [(name, u) for name, u in ctx.state.units.items() if u["kind"] == "timer"]
    daily = now - now % 86400 + 86400
    builtin: dict[str, Any] = {
        "next": daily,
        "last": daily - 86400,
        "activates": "systemd-tmpfiles-clean.service",
    }
    timers.append(("systemd-tmpfiles-clean.timer", builtin))
    for name, unit in sorted(timers, key=lambda t: t[1]["next"] or float("inf")):
        if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        next_at, last = unit.get("next"), unit.get("last")
        rows.append(
            (
                _stamp(next_at) if next_at else "-",
                _left(next_at - now) if next_at else "-",
                _stamp(last) if last else "-",
                _ago(now - last) if last else "-",
                name,
                str(unit["activates"]),
            )
        )
    header = ("NEXT", "LEFT", "LAST", "PASSED", "UNIT", "ACTIVATES")
    table = [header, *rows] if legend else rows
    widths = [max(len(r[i]) for r in table) for i in range(6)] if table else [0] * 6
    for row in table:
        ctx.out(" ".join(f"{c:<{widths[i]}}" for i, c in enumerate(row)).rstrip() + "\n")
    if legend:
        ctx.out(f"\n{len(rows)} timers listed.\n")
        if not show_all:
            ctx.out("Pass --all to see loaded but inactive timers, too.\n")


def _stamp(at: float) -> str:
    return time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _left(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}min" if minutes else "", f"{secs}s"]
    return " ".join(p for p in parts if p and p != "0s") or "0s"


def _ago(seconds: float) -> str:
    return f"{_left(seconds)} ago"
