"""The lab's updates on their own: the stand-in ``nix`` (build, copy), the system profile,
``switch-to-configuration`` and ``systemd-run`` guards on booted hosts, driven with the real
``ssh`` and no bot code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from tests.lab import Lab, LabHost
from tests.lab.generations import LabConfig
from tests.lab.proc import port_accepts
from tests.lab.units import fire_time

pytest_plugins = ["tests.lab.fixtures"]

PROFILE = "/nix/var/nix/profiles/system"
STORE_PATH = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-nixos-system-(\S+)-25\.05\.\S+$")


def ssh(
    lab: Lab, host: LabHost, command: str, known: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    argv = lab.ssh_argv(host, known_hosts=known)
    return subprocess.run([*argv, command], input=stdin, capture_output=True, text=True, timeout=30)


FEATURES = ("--extra-experimental-features", "nix-command flakes")


def nix(
    lab: Lab, *args: str, sshopts: str | None = None, features: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("NIX_CONFIG", None)
    if sshopts is not None:
        env["NIX_SSHOPTS"] = sshopts
    flags = FEATURES if features else ()
    return subprocess.run(
        [*lab.nix_command(), *flags, *args], capture_output=True, text=True, env=env, timeout=60
    )


def toplevel(flake: Path, attr: str) -> str:
    return f'{flake}#nixosConfigurations."{attr}".config.system.build.toplevel'


def build(lab: Lab, flake: Path, attr: str) -> str:
    result = nix(lab, "build", "--no-link", "--print-out-paths", toplevel(flake, attr))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def pinned(tmp_path: Path, host: LabHost) -> Path:
    known = tmp_path / f"known_hosts-{host.name}"
    known.write_text(host.known_hosts_line("booted") + "\n")
    return known


def sshopts(lab: Lab, host: LabHost, known: Path) -> str:
    return (
        f"-F none -i {lab.operator_key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -p {host.ssh_port}"
    )


def copy(lab: Lab, host: LabHost, known: Path, path: str) -> subprocess.CompletedProcess[str]:
    return nix(
        lab, "copy", "--to", f"ssh://root@{host.address}", path, sshopts=sshopts(lab, host, known)
    )


def switch_line(path: str, action: str = "switch") -> str:
    """What nixos-rebuild runs: the activation in a transient unit, waited for."""
    return shlex.join(
        [
            "systemd-run",
            "-E",
            "LOCALE_ARCHIVE",
            "-E",
            "NIXOS_INSTALL_BOOTLOADER",
            "--collect",
            "--no-ask-password",
            "--pipe",
            "--quiet",
            "--service-type=exec",
            "--unit=nixos-rebuild-switch-to-configuration",
            "--wait",
            f"{path}/bin/switch-to-configuration",
            action,
        ]
    )


def guard_line(
    generation: int, seconds: float, *, accuracy: str | None = "1s", remain: bool = True
) -> str:
    """A rollback guard: switch back to ``generation`` unless disarmed in time."""
    back = (
        f"nix-env -p {PROFILE} --switch-generation {generation} && "
        f"{PROFILE}/bin/switch-to-configuration switch"
    )
    argv = ["systemd-run", "--unit=deploybot-guard", f"--on-active={seconds}", "--collect"]
    if accuracy is not None:
        argv.append(f"--timer-property=AccuracySec={accuracy}")
    if not remain:
        argv.append("--timer-property=RemainAfterElapse=no")
    return shlex.join([*argv, "sh", "-c", back])


def set_line(path: str) -> str:
    return f"nix-env -p {PROFILE} --set {path}"


def update(lab: Lab, host: LabHost, known: Path, flake: Path, attr: str) -> str:
    """Build and copy ``attr``; return its store path."""
    path = build(lab, flake, attr)
    copied = copy(lab, host, known, path)
    assert copied.returncode == 0, copied.stderr
    return path


# ------------------------------------------------------------------------------ build


def test_build_is_deterministic_streams_and_fails_like_nix(lab: Lab) -> None:
    flake = lab.make_flake(
        {"ok": LabConfig(build_seconds=0.3), "broken": LabConfig(fails=True)}, name="f1"
    )
    started = time.monotonic()
    first = nix(lab, "build", "--no-link", "--print-out-paths", toplevel(flake, "ok"))
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    match = STORE_PATH.match(first.stdout.strip())
    assert match is not None, first.stdout
    assert match.group(1) == "ok"
    assert re.search(r"^building '/nix/store/\w{32}-.+\.drv'\.\.\.$", first.stderr, re.M)
    assert took >= 0.3
    again = nix(lab, "build", "--no-link", "--print-out-paths", toplevel(flake, "ok"))
    assert again.stdout == first.stdout
    assert "building" not in again.stderr, "an existing path is not built again"
    other = lab.make_flake({"ok": LabConfig(build_seconds=0.3)}, name="f2")
    assert build(lab, other, "ok") == first.stdout.strip(), "same content, same path"
    lab.set_configuration(flake, "ok", version="2")
    assert build(lab, flake, "ok") != first.stdout.strip()

    failed = nix(lab, "build", "--no-link", "--print-out-paths", toplevel(flake, "broken"))
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert re.search(r"^error: builder for '/nix/store/.+\.drv' failed with exit code 1;$",
                     failed.stderr, re.M)  # fmt: skip

    unknown = nix(lab, "build", "--no-link", "--print-out-paths", toplevel(flake, "nope"))
    assert unknown.returncode == 1
    assert f"error: flake 'path:{flake}' does not provide attribute" in unknown.stderr
    assert 'nixosConfigurations."nope".config.system.build.toplevel' in unknown.stderr

    odd = nix(lab, "frobnicate")
    assert odd.returncode == 1
    assert "error: 'frobnicate' is not a recognised command" in odd.stderr


def test_without_the_experimental_features_nix_refuses_like_nix(lab: Lab) -> None:
    """A nix.conf that does not enable them is Nix's default."""
    flake = lab.make_flake({"ok": LabConfig()}, name="f3")
    refusal = (
        "error: experimental Nix feature 'nix-command' is disabled; add "
        "'--extra-experimental-features nix-command' to enable it"
    )
    for args in (
        ("build", "--no-link", "--print-out-paths", toplevel(flake, "ok")),
        ("copy", "--to", "ssh://root@127.0.0.1", "/nix/store/x"),
        ("eval", "--raw", f"{flake}#x"),
    ):
        refused = nix(lab, *args, features=False)
        assert refused.returncode == 1
        assert refusal in refused.stderr, args
    only = nix(
        lab,
        "--extra-experimental-features",
        "nix-command",
        "build",
        "--print-out-paths",
        toplevel(flake, "ok"),
        features=False,
    )
    assert only.returncode == 1
    assert "experimental Nix feature 'flakes' is disabled" in only.stderr


# ------------------------------------------------------------------------------- copy


def test_copy_needs_the_pinned_key(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("cp", stage="booted", luks=False)
    flake = lab.make_flake({"cp": LabConfig(version="2")})
    path = build(lab, flake, "cp")
    name = path.removeprefix("/nix/store/")
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[{host.address}]:{host.ssh_port} {lab.operator_public_key}\n")
    refused = copy(lab, host, wrong, path)
    assert refused.returncode == 1
    assert "Host key verification failed." in refused.stderr
    assert f"error: cannot connect to 'root@{host.address}'" in refused.stderr
    assert not (host.root / "nix/store" / name).exists()

    with_port = nix(
        lab,
        "copy",
        "--to",
        f"ssh://root@{host.address}:{host.ssh_port}",
        path,
        sshopts=sshopts(lab, host, pinned(tmp_path, host)).rsplit(" -p ", 1)[0],
    )
    assert with_port.returncode == 1, "Nix 2.28 hands host:port to ssh as a host name"
    assert "Could not resolve hostname" in with_port.stderr

    known = pinned(tmp_path, host)
    started = time.monotonic()
    copied = copy(lab, host, known, path)
    took = time.monotonic() - started
    assert copied.returncode == 0, copied.stderr
    assert f"copying path '{path}' to 'ssh://root@{host.address}'..." in copied.stderr
    assert (host.root / "nix/store" / name / "bin/switch-to-configuration").is_file()
    assert took < 5
    again = copy(lab, host, known, path)
    assert again.returncode == 0
    assert "copying path" not in again.stderr, "paths already there are not sent again"

    bogus = copy(lab, host, known, f"/nix/store/{'a' * 32}-nothing")
    assert bogus.returncode == 1
    assert "is not valid" in bogus.stderr


# ----------------------------------------------------------------- profile and switch


def test_set_and_switch_in_a_transient_unit(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("sw", stage="booted", luks=False)
    old = host.current_system
    assert old is not None
    assert host.booted_system == old
    assert [g.number for g in host.generations] == [1]
    flake = lab.make_flake({"sw": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "sw")
    before = len(host.activations)
    started = time.monotonic()
    result = ssh(lab, host, f"{set_line(new)} && {switch_line(new)}", known)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "activating the configuration..." in result.stderr
    assert host.current_system == new
    assert host.booted_system == old
    assert host.current_generation == 2
    activation = host.activations[before]
    assert (activation.system, activation.action) == (new, "switch")
    assert activation.unit == "nixos-rebuild-switch-to-configuration.service"

    facts = ssh(
        lab,
        host,
        f"readlink /run/current-system; nix-env -p {PROFILE} --list-generations; "
        "systemctl is-active nixos-rebuild-switch-to-configuration",
        known,
    )
    lines = facts.stdout.splitlines()
    assert lines[0] == new
    assert re.fullmatch(r"   1   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d   ", lines[1])
    assert re.fullmatch(r"   2   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d   \(current\)", lines[2])
    assert lines[3] == "inactive", "--collect unloads the finished unit"
    back = ssh(lab, host, f"nix-env -p {PROFILE} --rollback; nix-env -p {PROFILE} --rollback")
    assert "switching profile from version 2 to 1" in back.stderr
    assert "error: no generation older than the current (1) exists" in back.stderr
    assert host.current_generation == 1
    assert host.current_system == new, "nix-env alone does not activate"
    print(f"set + switch over one ssh login: {took:.2f}s")


# ------------------------------------------------------------------------------ guard


def test_guard_rolls_back_by_itself_after_the_connection_is_gone(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("guard", stage="booted", luks=False)
    old = host.current_system
    flake = lab.make_flake({"guard": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "guard")
    line = f"{set_line(new)} && {guard_line(1, 2)} && {switch_line(new)}"
    result = ssh(lab, host, line, known)
    assert result.returncode == 0, result.stderr
    assert "Running timer as unit: deploybot-guard.timer" in result.stderr
    assert "Will run service as unit: deploybot-guard.service" in result.stderr
    assert host.current_system == new
    (timer,) = host.timers
    assert timer.state == "waiting"
    assert 2.0 <= timer.fires_at - timer.armed_at <= 3.0
    host.wait_until_sync(lambda: host.current_system == old, 6, "the guard's rollback")
    rolled = host.activations[-1]
    assert rolled.unit == "deploybot-guard.service"
    (elapsed,) = host.timers
    assert elapsed.state == "elapsed"
    assert elapsed.fired_at is not None
    late = elapsed.fired_at - timer.armed_at
    assert 2.0 <= late <= 3.3, f"AccuracySec=1s: due within [2 s, 3 s], fired after {late:.2f}s"
    assert rolled.at - elapsed.fired_at < 3, "the unit runs the rollback at once"
    assert host.current_generation == 1
    after = ssh(
        lab, host, "systemctl is-active deploybot-guard.timer; systemctl list-timers", known
    )
    lines = after.stdout.splitlines()
    assert lines[0] == "active", "an elapsed timer stays loaded until stopped"
    assert any("deploybot-guard.timer" in ln and ln.startswith("-") for ln in lines[2:])
    print(f"a 2 s guard (AccuracySec=1s) fired after {late:.2f}s, switched back after "
          f"{rolled.at - timer.armed_at:.2f}s")  # fmt: skip


def test_remain_after_elapse_no_unloads_the_fired_timer(lab: Lab, tmp_path: Path) -> None:
    """By default an elapsed timer stays loaded (the test above); with RemainAfterElapse=no
    systemd unloads it once the service it started has finished."""
    host = lab.start_installed_host("remain", stage="booted", luks=False)
    old = host.current_system
    flake = lab.make_flake({"remain": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "remain")
    line = f"{set_line(new)} && {guard_line(1, 1, remain=False)} && {switch_line(new)}"
    result = ssh(lab, host, line, known)
    assert result.returncode == 0, result.stderr
    assert [t.state for t in host.timers] == ["waiting"]
    host.wait_until_sync(lambda: host.current_system == old, 6, "the guard's rollback")
    host.wait_until_sync(lambda: host.timers == [], 6, "the elapsed timer unloaded")
    after = ssh(lab, host, "systemctl is-active deploybot-guard.timer", known)
    assert after.stdout == "inactive\n"
    bad = ssh(lab, host, guard_line(1, 5).replace("AccuracySec=1s", "RemainAfterElapse=maybe"))
    assert bad.returncode == 1
    assert "Failed to parse RemainAfterElapse= value: maybe" in bad.stderr


def test_disarmed_guard_does_nothing(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("disarm", stage="booted", luks=False)
    flake = lab.make_flake({"disarm": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "disarm")
    armed = ssh(lab, host, f"{set_line(new)} && {guard_line(1, 1.5)} && {switch_line(new)}", known)
    assert armed.returncode == 0, armed.stderr
    count = len(host.activations)
    disarm = ssh(
        lab,
        host,
        "systemctl stop deploybot-guard.timer; systemctl is-active deploybot-guard.timer",
        known,
    )
    assert disarm.stdout == "inactive\n"
    assert disarm.returncode == 3
    assert host.timers == []
    with pytest.raises(TimeoutError):
        host.wait_until_sync(lambda: len(host.activations) > count, 3, "no activation")
    assert host.current_system == new
    again = ssh(lab, host, "systemctl stop deploybot-guard.timer")
    assert again.returncode == 5
    assert "Unit deploybot-guard.timer not loaded." in again.stderr


def test_a_guard_started_by_hand_rolls_back_now(lab: Lab, tmp_path: Path) -> None:
    """systemd-run --on-active makes <unit>.service beside the timer: `systemctl start` of
    it runs the switch back now; the timer stays armed."""
    host = lab.start_installed_host("byhand", stage="booted", luks=False)
    old = host.current_system
    flake = lab.make_flake({"byhand": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "byhand")
    armed = ssh(lab, host, f"{set_line(new)} && {guard_line(1, 300)} && {switch_line(new)}", known)
    assert armed.returncode == 0, armed.stderr
    assert host.current_system == new
    started = ssh(lab, host, "systemctl start deploybot-guard.service", known)
    assert started.returncode == 0, started.stderr
    host.wait_until_sync(lambda: host.current_system == old, 10, "the rollback started by hand")
    assert host.activations[-1].unit == "deploybot-guard.service"
    (timer,) = host.timers
    assert timer.state == "waiting"
    unknown = ssh(lab, host, "systemctl start deploybot-nothing.service", known)
    assert unknown.returncode == 5
    assert (
        "Failed to start deploybot-nothing.service: Unit deploybot-nothing.service not found."
        in unknown.stderr
    )


def test_a_connection_cut_after_a_command_ends_the_line_there(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("cut", stage="booted", luks=False)
    flake = lab.make_flake({"cut": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "cut")
    host.cut_connection_after(f"nix-env -p {PROFILE} --set")
    cut = ssh(lab, host, f"{set_line(new)} && echo SELECTED && {guard_line(1, 300)}", known)
    assert cut.returncode == 255, "ssh saw the connection drop"
    assert "SELECTED" not in cut.stdout
    assert host.current_generation == 2, "the command before the cut ran"
    assert host.timers == [], "the rest of the line did not"
    again = ssh(lab, host, f"{set_line(new)} && echo SELECTED", known)
    assert again.stdout == "SELECTED\n", "once only"


def test_timer_accuracy_defaults_to_a_minute(lab: Lab) -> None:
    assert fire_time(100.0, 60.0, 17.3) == pytest.approx(137.3)
    assert fire_time(100.0, 1.0, 17.3) == pytest.approx(100.3)
    assert fire_time(100.0, 0.0, 17.3) == 100.0
    for perturb in (0.0, 12.5, 59.9):
        assert 100.0 <= fire_time(100.0, 60.0, perturb) <= 160.0
        assert 100.0 <= fire_time(100.0, 1.0, perturb) <= 101.0
    host = lab.start_installed_host("acc", stage="booted", luks=False)
    result = ssh(lab, host, guard_line(1, 5, accuracy=None))
    assert result.returncode == 0, result.stderr
    (timer,) = host.timers
    assert timer.accuracy == 60.0
    assert 5.0 <= timer.fires_at - timer.armed_at <= 65.0
    twice = ssh(lab, host, guard_line(1, 5))
    assert twice.returncode == 1
    assert "Unit deploybot-guard.timer was already loaded" in twice.stderr


async def test_configuration_breaking_ssh_is_undone_by_the_guard(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("brk", stage="booted", luks=False)
    old = host.current_system
    flake = lab.make_flake({"brk": LabConfig(breaks_ssh=True)})
    known = pinned(tmp_path, host)
    bad = update(lab, host, known, flake, "brk")
    async with await asyncssh.connect(
        host.address,
        host.ssh_port,
        username="root",
        client_keys=[str(lab.operator_key)],
        known_hosts=asyncssh.import_known_hosts(host.known_hosts_line("booted")),
        agent_path=None,
        config=[],
    ) as before:
        line = f"{set_line(bad)} && {guard_line(1, 3)} && {switch_line(bad)}"
        switched = ssh(lab, host, line, known)
        assert switched.returncode == 4, switched.stderr
        assert "stopping the following units: sshd.service" in switched.stderr
        assert "warning: the following units failed: sshd.service" in switched.stderr
        assert host.current_system == bad
        assert host.sshd_broken
        assert host.stage == "booted"
        assert not port_accepts(host.address, host.ssh_port), "new logins are refused"
        stale = await before.run("readlink /run/current-system", check=True)
        assert stale.stdout == f"{bad}\n", "a connection opened before the switch lives on"
        host.wait_until_sync(lambda: host.current_system == old, 8, "the guard's rollback")
    host.wait_until_sync(lambda: port_accepts(host.address, host.ssh_port), 5, "sshd back")
    answer = ssh(lab, host, "readlink /run/current-system; systemctl is-system-running", known)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == f"{old}\nrunning\n"
    assert [a.unit for a in host.activations[-2:]] == [
        "nixos-rebuild-switch-to-configuration.service",
        "deploybot-guard.service",
    ]


# ----------------------------------------------------------------- kernel and reboot


def test_kernel_change_then_reboot_boots_the_new_generation(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("krn", stage="booted", down_delay=0.05, boot_delay=0.05)
    assert host.luks_passphrase is not None
    flake = lab.make_flake({"krn": LabConfig(kernel="6.12.34")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "krn")
    links = " ".join(
        f"readlink /run/{which}-system/{part};"
        for which in ("booted", "current")
        for part in ("kernel", "initrd", "kernel-modules")
    )
    result = ssh(lab, host, f"{set_line(new)} && {switch_line(new)} && {links}", known)
    assert result.returncode == 0, result.stderr
    booted, current = result.stdout.splitlines()[:3], result.stdout.splitlines()[3:]
    assert all(b != c for b, c in zip(booted, current, strict=True))
    assert booted[0].endswith("-linux-6.12.33/bzImage")
    assert current[0].endswith("-linux-6.12.34/bzImage")
    assert current[1].endswith("-initrd-linux-6.12.34/initrd")

    ssh(lab, host, "reboot", known)
    host.wait_for_stage_sync("initrd", timeout=10)
    unlock = subprocess.run(
        [*lab.ssh_argv(host, initrd=True), "cryptsetup-askpass"],
        input=host.luks_passphrase + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Passphrase for" in unlock.stdout
    host.wait_for_stage_sync("booted", timeout=10)
    assert host.booted_system == host.current_system == new
    assert host.current_generation == 2
    same = ssh(lab, host, "readlink /run/booted-system/kernel /run/current-system/kernel", known)
    first, second = same.stdout.splitlines()
    assert first == second
    assert first.endswith("-linux-6.12.34/bzImage")
    assert ssh(lab, host, "uname -r", known).stdout == "6.12.34\n"


# ------------------------------------------------------------------------- the rest


def test_failed_unit_degrades_the_system_until_reset(lab: Lab) -> None:
    host = lab.start_installed_host("fail", stage="booted", luks=False)
    ran = ssh(lab, host, "systemd-run --unit=bad --wait false")
    assert ran.returncode == 1
    assert "Running as unit: bad.service; invocation ID: " in ran.stderr
    assert "Finished with result: exit-code" in ran.stderr
    assert "Main processes terminated with: code=exited/status=1/FAILURE" in ran.stderr
    facts = ssh(
        lab,
        host,
        "systemctl is-system-running; systemctl --failed --no-legend --plain; "
        "systemctl show bad.service -p ActiveState,Result --value",
    )
    assert facts.stdout.splitlines() == [
        "degraded",
        "bad.service loaded failed failed bad",
        "failed",
        "exit-code",
    ]
    reset = ssh(lab, host, "systemctl reset-failed bad.service; systemctl is-system-running")
    assert reset.stdout == "running\n"
    collected = ssh(lab, host, "systemd-run --unit=bad --collect --wait --quiet false")
    assert collected.returncode == 1
    assert host.units == {}, "--collect unloads even a failed unit"


def test_test_activation_in_the_session_is_not_what_boots(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("tst", stage="booted", luks=False, down_delay=0.05)
    old = host.current_system
    flake = lab.make_flake({"tst": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    new = update(lab, host, known, flake, "tst")
    result = ssh(lab, host, f"{new}/bin/switch-to-configuration test", known)
    assert result.returncode == 0, result.stderr
    assert "updating GRUB 2 menu..." not in result.stderr
    assert host.current_system == new
    assert host.activations[-1].unit is None, "run inside the SSH session, not in a unit"
    assert host.boot_system == old
    boot_id = host.boot_id
    ssh(lab, host, "systemctl reboot", known)
    host.wait_until_sync(lambda: host.stage == "booted" and host.boot_id != boot_id, 10)
    assert host.booted_system == host.current_system == old


def test_power_cut_ends_timers_and_units(lab: Lab) -> None:
    host = lab.start_installed_host("cut", stage="booted", luks=False, down_delay=0.05)
    armed = ssh(lab, host, f"{guard_line(1, 1)} && systemd-run --unit=long sleep 60")
    assert armed.returncode == 0, armed.stderr
    assert {t.name for t in host.timers} == {"deploybot-guard.timer"}
    assert "long.service" in host.units
    host.crash()
    assert host.timers == []
    assert host.units == {}
    host.power_on()
    with pytest.raises(TimeoutError):
        host.wait_until_sync(lambda: bool(host.activations), 2.5, "no activation")


def test_rollback_is_one_step_down_not_the_previous_current(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("gens", stage="booted", luks=False)
    first = host.current_system
    flake = lab.make_flake({"gens": LabConfig(version="2")})
    known = pinned(tmp_path, host)
    second = update(lab, host, known, flake, "gens")
    lab.set_configuration(flake, "gens", version="3")
    third = update(lab, host, known, flake, "gens")
    steps = (
        f"{set_line(second)}; nix-env -p {PROFILE} --switch-generation 1; "
        f"{set_line(third)}; nix-env -p {PROFILE} --rollback; "
        f"readlink {PROFILE} {PROFILE}-2-link {PROFILE}-3-link"
    )
    result = ssh(lab, host, steps, known)
    assert "switching profile from version 2 to 1" in result.stderr
    assert "switching profile from version 3 to 2" in result.stderr
    assert result.stdout.splitlines() == ["system-2-link", second, third]
    assert [g.path for g in host.generations] == [first, second, third]
    assert host.current_generation == 2, "one step down from 3, not back to 1"


def _path_info_format(text: str) -> list[tuple[str, int]]:
    """Nix's ``path-info -s`` lines: each path padded to the longest, a tab, 11 columns."""
    lines = text.splitlines()
    assert lines, "no output"
    width = max(len(line.split("\t")[0].rstrip()) for line in lines)
    rows = []
    for line in lines:
        column, tab, size = line.partition("\t")
        assert tab, repr(line)
        assert len(column) == width, repr(line)
        assert len(size) == 11, repr(line)
        assert size.strip().isdigit(), repr(line)
        rows.append((column.rstrip(), int(size)))
    assert [p for p, _ in rows] == sorted(p for p, _ in rows)
    return rows


def test_path_info_lists_the_closure_as_nix_does(lab: Lab, tmp_path: Path) -> None:
    packages = (("openssl-3.0.14", 53248), ("foo-1.2", 20480))
    flake = lab.make_flake({"pkgs": LabConfig(packages=packages)}, name="f-info")
    path = build(lab, flake, "pkgs")
    listed = nix(lab, "path-info", "--recursive", "--size", path)
    assert listed.returncode == 0, listed.stderr
    rows = dict(_path_info_format(listed.stdout))
    assert path in rows
    assert len(rows) == 6
    sized = {p.split("-", 1)[1]: s for p, s in rows.items()}
    assert sized["openssl-3.0.14"] == 53248
    assert sized["foo-1.2"] == 20480
    refused = nix(lab, "path-info", "--recursive", "--size", "/nix/store/" + "a" * 32 + "-x")
    assert refused.returncode == 1
    assert "is not valid" in refused.stderr
    bare = nix(lab, "path-info", "--recursive", "--size", path, features=False)
    assert bare.returncode == 1
    assert "nix-command" in bare.stderr
    host = lab.start_installed_host("info", stage="booted")
    command = "nix --extra-experimental-features 'nix-command flakes' path-info -r -s"
    answer = ssh(lab, host, f"{command} /run/current-system", pinned(tmp_path, host))
    assert answer.returncode == 0, answer.stderr
    running = dict(_path_info_format(answer.stdout))
    assert host.current_system in running
    assert {p.split("-", 1)[1] for p in running} >= {"openssl-3.0.13", "bash-5.2p37"}
