"""The booted host's service manager for transient units, and its activations.

``systemd-run`` in a session asks the lab (``control.py``) to start a unit; the unit's
command then runs as a lab-shell process whose parent is the lab, not sshd, so it
outlives the SSH session that started it, as a real transient unit does. Timers live on
the lab's supervisor thread and fire with systemd's accuracy (``fire_time``) even when no
connection is left. A power cut or reboot ends every unit and timer.

Every method runs on the supervisor thread (see ``host.py``), except the exit watchers,
which hand their result back to it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import shlex
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from tests.lab import generations as gen
from tests.lab.proc import kill_tree
from tests.lab.sshd import SHELL_SCRIPT

if TYPE_CHECKING:
    from tests.lab.host import LabHost

#: systemd's default ``AccuracySec=`` of a timer.
DEFAULT_ACCURACY = 60.0
_FINISHED_KEPT = 64


@dataclasses.dataclass(frozen=True)
class Activation:
    """One ``switch-to-configuration`` run: when, which system, how, from which unit."""

    at: float
    system: str
    action: str
    unit: str | None


@dataclasses.dataclass(frozen=True)
class Timer:
    """An armed (``waiting``) or fired (``elapsed``, still loaded) transient timer."""

    name: str
    service: str
    command: tuple[str, ...]
    armed_at: float
    fires_at: float
    accuracy: float
    state: str
    fired_at: float | None


def fire_time(earliest: float, accuracy: float, perturb: float) -> float:
    """When systemd's event loop wakes for a timer due between ``earliest`` and
    ``earliest + accuracy``: as late as allowed, on the host's per-boot phase of the
    minute, else of 10 s, 1 s, 250 ms (sd-event's ``sleep_between``)."""
    latest = earliest + accuracy
    if accuracy <= 1e-6:
        return earliest
    for step in (60.0, 10.0, 1.0, 0.25):
        candidate = math.floor(latest / step) * step + perturb % step
        if candidate >= latest:
            candidate -= step
        if candidate >= earliest:
            return candidate
    return latest


@dataclasses.dataclass
class _Service:
    name: str
    command: list[str]
    invocation: str
    collect: bool
    started: float
    proc: subprocess.Popen[bytes] | None = None
    state: str = "active"
    stopping: bool = False


@dataclasses.dataclass
class _Timer:
    name: str
    service: str
    command: list[str]
    env: dict[str, str]
    collect: bool
    armed_at: float
    due_mono: float
    accuracy: float
    remain: bool = True
    state: str = "waiting"
    fired_at: float | None = None


class SystemManager:
    """Transient services and timers of one host, and the activations they made."""

    def __init__(self, host: LabHost) -> None:
        self._host = host
        self._services: dict[str, _Service] = {}
        self._timers: dict[str, _Timer] = {}
        self._finished: dict[str, dict[str, Any]] = {}
        self.activations: list[Activation] = []

    # ---------------------------------------------------------------- observed

    def timers(self) -> list[Timer]:
        now_mono, now = time.monotonic(), time.time()
        return [
            Timer(
                name=t.name,
                service=t.service,
                command=tuple(t.command),
                armed_at=t.armed_at,
                fires_at=now + (t.due_mono - now_mono),
                accuracy=t.accuracy,
                state=t.state,
                fired_at=t.fired_at,
            )
            for t in self._timers.values()
        ]

    # ---------------------------------------------------------------- requests

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Answer a lab-shell request this manager owns; None for other ops."""
        op = message.get("op")
        if op == "start-unit":
            return self._start(message)
        if op == "stop-units":
            for name in message["units"]:
                self._stop(str(name))
            self._publish()
            return {"ok": True}
        if op == "reset-failed":
            for name, service in list(self._services.items()):
                if service.state == "failed" and (not message["units"] or name in message["units"]):
                    del self._services[name]
            self._publish()
            return {"ok": True}
        if op == "activate":
            return self._activate(message)
        if op == "start-service":
            return self._start_service(str(message["service"]))
        return None

    def _start_service(self, name: str) -> dict[str, Any]:
        """``systemctl start`` of a loaded unit: a transient timer's service exists (loaded,
        inactive) as long as its timer does, and starting it by hand runs it now; an active
        one is left running."""
        if name in self._services:
            return {"ok": True}
        timer = next((t for t in self._timers.values() if t.service == name), None)
        if timer is None:
            return {"ok": False, "error": f"Failed to start {name}: Unit {name} not found."}
        self._spawn(timer.service, timer.command, timer.env, timer.collect)
        self._publish()
        return {"ok": True}

    def _start(self, message: dict[str, Any]) -> dict[str, Any]:
        service = str(message["service"])
        command = [str(word) for word in message["command"]]
        env = {str(k): str(v) for k, v in dict(message.get("env", {})).items()}
        collect = bool(message.get("collect"))
        timer = message.get("timer")
        if timer is not None:
            name = str(timer["name"])
            if name in self._timers:
                return _already(name, "timer")
            if service in self._services:
                return _already(service, "timer")
            on_active, accuracy = float(timer["on_active"]), float(timer["accuracy"])
            due = fire_time(time.monotonic() + on_active, accuracy, self._perturb())
            armed = _Timer(
                name=name,
                service=service,
                command=command,
                env=env,
                collect=collect,
                armed_at=time.time(),
                due_mono=due,
                accuracy=accuracy,
                remain=bool(timer.get("remain", True)),
            )
            self._timers[name] = armed
            self._host._later(due - time.monotonic(), lambda: self._fire(armed))
            self._host._log(f"timer {name} armed, fires in {due - time.monotonic():.2f}s")
            self._publish()
            return {"ok": True}
        if service in self._services:
            return _already(service, "service")
        invocation = self._spawn(service, command, env, collect)
        self._publish()
        return {"ok": True, "invocation": invocation}

    def _fire(self, timer: _Timer) -> None:
        if self._timers.get(timer.name) is not timer or timer.state != "waiting":
            return
        timer.state = "elapsed"
        timer.fired_at = time.time()
        self._host._log(f"timer {timer.name} elapsed")
        if timer.service not in self._services:
            self._spawn(timer.service, timer.command, timer.env, timer.collect)
        self._publish()

    def _unload_elapsed(self, service: str) -> None:
        """``RemainAfterElapse=no``: an elapsed timer that cannot elapse again is unloaded
        once the unit it started has finished (the default keeps it loaded)."""
        for name, timer in list(self._timers.items()):
            if timer.service == service and timer.state == "elapsed" and not timer.remain:
                del self._timers[name]
                self._host._log(f"timer {name} unloaded (RemainAfterElapse=no)")

    def _spawn(self, name: str, command: list[str], env: dict[str, str], collect: bool) -> str:
        invocation = secrets.token_hex(16)
        service = _Service(name, command, invocation, collect, time.time())
        self._services[name] = service
        journal = self._host.paths.run / "units"
        journal.mkdir(parents=True, exist_ok=True)
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SSH_ORIGINAL_COMMAND": shlex.join(command),
            "LAB_UNIT": name,
            "INVOCATION_ID": invocation,
            **env,
        }
        argv = [sys.executable, "-S", str(SHELL_SCRIPT), str(self._host.paths.dir), "booted"]
        with (
            (journal / f"{invocation}.out").open("wb") as out,
            (journal / f"{invocation}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=environ,
                start_new_session=True,
            )
        service.proc = proc
        self._host._log(f"unit {name} started: {shlex.join(command)}")
        supervisor = self._host._ctx.supervisor

        def watch() -> None:
            proc.wait()
            try:
                supervisor.call(lambda: self._exited(service))
            except Exception:
                return

        threading.Thread(target=watch, name=f"lab-unit-{name}", daemon=True).start()
        return invocation

    def _exited(self, service: _Service) -> None:
        proc = service.proc
        if self._services.get(service.name) is not service or proc is None:
            return
        status = proc.returncode
        if status < 0:
            code, shown = "killed", _signal_name(-status)
            result = "success" if service.stopping and -status == 15 else "signal"
        else:
            code, shown = "exited", _exit_name(status)
            result = "success" if status == 0 else "exit-code"
        self._finished[service.invocation] = {
            "unit": service.name,
            "result": result,
            "code": code,
            "status": shown,
            "exit_status": status if status >= 0 else 128 - status,
            "runtime": time.time() - service.started,
        }
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))
        if result == "success" or service.collect:
            del self._services[service.name]
        else:
            service.state = "failed"
            service.proc = None
        self._host._log(f"unit {service.name} ended: {result} {shown}")
        self._unload_elapsed(service.name)
        self._publish()

    def _stop(self, name: str) -> None:
        if name in self._timers:
            del self._timers[name]
            self._host._log(f"timer {name} stopped")
        service = self._services.get(name)
        if service is not None and service.proc is not None and service.proc.poll() is None:
            service.stopping = True
            service.proc.terminate()

    # ------------------------------------------------------------- activation

    def _activate(self, message: dict[str, Any]) -> dict[str, Any]:
        host = self._host
        root = host.paths.root
        system, action = str(message["system"]), str(message["action"])
        unit = message.get("unit")
        info = gen.system_info(root, system) or {}
        breaks = bool(info.get("breaks_ssh") or info.get("blocks_ssh"))
        self.activations.append(Activation(time.time(), system, action, unit))
        host._log(f"activate {action} {system} by {unit or 'the session'}")
        state = host._state
        if action in ("switch", "boot"):
            state.installed_system = system
        stopped: list[str] = []
        if action in ("switch", "test"):
            gen.set_run_link(root, "current-system", system)
            if breaks and not state.sshd_broken:
                state.sshd_broken = True
                stopped.append("sshd.service")
                host._detach_sshd()
                host._log("activation stopped sshd (open connections live on)")
            elif not breaks and state.sshd_broken:
                state.sshd_broken = False
                host._start_system_sshd()
        host._publish()
        return {"ok": True, "breaks_ssh": breaks, "stopped": stopped}

    # ------------------------------------------------------------ boot and down

    def on_boot(self) -> bool:
        """Point /run at the boot entry; whether the booted system keeps sshd up."""
        host = self._host
        system = host._state.installed_system
        if system is None:
            return True
        root = host.paths.root
        if not gen.in_store(root, system).exists():
            gen.install(root, gen.default_closure(system))
        gen.set_run_link(root, "booted-system", system)
        gen.set_run_link(root, "current-system", system)
        info = gen.system_info(root, system) or {}
        breaks = bool(info.get("breaks_ssh") or info.get("blocks_ssh"))
        host._state.sshd_broken = breaks
        return not breaks

    def on_down(self) -> None:
        """The machine went down: every transient unit and timer is gone."""
        for service in self._services.values():
            if service.proc is not None:
                kill_tree(service.proc)
        self._services.clear()
        self._timers.clear()
        self._finished.clear()
        state = self._host._state
        state.units, state.finished, state.sshd_broken = {}, {}, False

    # ---------------------------------------------------------------- internals

    def _perturb(self) -> float:
        boot = self._host._state.boot_id.replace("-", "") or "0"
        return int(boot, 16) % 60_000_000 / 1e6

    def _publish(self) -> None:
        units: dict[str, dict[str, Any]] = {}
        now_mono, now = time.monotonic(), time.time()
        for service in self._services.values():
            units[service.name] = {
                "kind": "service",
                "state": service.state,
                "invocation": service.invocation,
                "command": service.command,
                "since": service.started,
            }
        for timer in self._timers.values():
            units[timer.name] = {
                "kind": "timer",
                "state": timer.state,
                "activates": timer.service,
                "next": None if timer.state != "waiting" else now + timer.due_mono - now_mono,
                "last": timer.fired_at,
                "since": timer.armed_at,
            }
        state = self._host._state
        state.units = units
        state.finished = dict(self._finished)
        self._host._publish()


def _already(name: str, kind: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": f"Failed to start transient {kind} unit: Unit {name} was already loaded "
        "or has a fragment file.",
    }


_EXIT_NAMES = {0: "SUCCESS", 1: "FAILURE", 2: "INVALIDARGUMENT", 3: "NOTIMPLEMENTED"}
_EXIT_NAMES.update({4: "NOPERMISSION", 5: "NOTINSTALLED", 6: "NOTCONFIGURED", 7: "NOTRUNNING"})


def _exit_name(status: int) -> str:
    name = _EXIT_NAMES.get(status)
    return f"{status}/{name}" if name else str(status)


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)
