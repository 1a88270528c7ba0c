"""The update's parts on their own: the guard's commands and parsers, the NIX_SSHOPTS pin
(against the lab's real ssh through the stand-in ``nix copy``), the build's output path,
the login the steps before the activation share."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from bot.config.inventory import Machine
from bot.flows.update import guard
from bot.flows.update.guard import Links
from bot.remote import nix
from bot.remote.nix import child_env
from bot.remote.place import Pins
from bot.remote.ssh import SshError
from bot.remote.target import Reach, Target
from tests.lab import Lab, LabHost
from tests.lab.generations import LabConfig

pytest_plugins = ["tests.lab.fixtures"]


def test_generations_are_parsed_with_the_current_one() -> None:
    text = (
        "   1   2026-11-30 12:00:00   \n"
        "   2   2026-11-30 12:05:00   (current)\n"
        "   3   2026-11-30 12:09:00   \n"
        "garbage (current)\n"
    )
    assert guard.parse_generations(text) == ([1, 2, 3], 2)
    assert guard.parse_generations("") == ([], None)


def test_guard_switches_back_to_the_recorded_generation_with_accuracy() -> None:
    argv = guard.arm(7, back_to=3, seconds=90)
    assert argv[:6] == [
        "systemd-run",
        "--unit=deploybot-rollback-7",
        "--on-active=90s",
        "--timer-property=AccuracySec=1s",
        "--timer-property=RemainAfterElapse=no",
        "--description=deploybot rollback guard",
    ]
    assert argv[-1] == (
        "nix-env -p /nix/var/nix/profiles/system --switch-generation 3 && "
        "/nix/var/nix/profiles/system-3-link/bin/switch-to-configuration switch"
    )
    assert "--rollback" not in " ".join(argv)
    activation = guard.activate(7, "/nix/store/x-system")
    assert "--collect" in activation
    assert "--unit=deploybot-switch-7" in activation
    assert activation[-2:] == ["/nix/store/x-system/bin/switch-to-configuration", "switch"]


def test_only_waiting_rollback_timers_count_as_armed() -> None:
    listing = (
        "Tue 2026-12-01 22:00:00 UTC 1min left - - deploybot-rollback-4.timer "
        "deploybot-rollback-4.service\n"
        "- - Tue 2026-12-01 21:00:00 UTC 1h ago deploybot-rollback-3.timer "
        "deploybot-rollback-3.service\n"
        "Tue 2026-12-02 00:00:00 UTC 2h left - - logrotate.timer logrotate.service\n"
    )
    assert guard.armed_guards(listing) == ["deploybot-rollback-4"]
    assert guard.elapsed_guards(listing) == ["deploybot-rollback-3"]


def test_links_say_what_needs_a_reboot() -> None:
    booted = Links("/k1", "/i1", "/m1")
    assert Links("/k1", "/i1", "/m1").changed(booted) == []
    assert Links("/k2", "/i2", "/m1").changed(booted) == ["kernel", "initrd"]


def test_build_path_is_the_last_store_path_not_a_derivation() -> None:
    lines = [
        "/nix/store/" + "a" * 32 + "-nixos-system-x.drv",
        "/nix/store/" + "b" * 32 + "-nixos-system-x-25.05",
    ]
    assert nix.Finished(0, lines).store_paths() == [lines[1]]
    assert nix.Finished(1, ["/nix/store/short-x", "error: nope"]).store_paths() == []
    assert nix.Finished(0, ["/nix/store/" + "c" * 32 + "-x; rm -rf /"]).store_paths() == []


async def test_a_nix_too_old_for_the_bots_build_says_which_nix_is_needed() -> None:
    """Debian 12's real Nix 2.8 refuses ``--print-out-paths``; the failure names the fix."""
    if (nix.version(nix_version()) or (0, 0)) >= nix.OLDEST_NIX:
        pytest.skip(f"this machine's nix is new enough: {nix_version()}")
    argv = nix.build_argv(("nix",), flake="path:/nonexistent", attr="web", outputs=["toplevel"])
    done = await nix.run_nix(argv, what="nix build", env=child_env(), on_line=print, timeout=60)
    assert done.code != 0
    assert done.last.startswith("error: unrecognised flag '--print-out-paths'")
    assert "need Nix 2.9 or newer" in done.last
    assert "deploybot check" in done.last


def nix_version() -> str:
    return subprocess.run(["nix", "--version"], capture_output=True, text=True).stdout


def test_ssh_options_pin_and_refuse_paths_nix_would_split(tmp_path: Path) -> None:
    options = nix.ssh_options(known_hosts=tmp_path / "kh", client_key=tmp_path / "id", port=2201)
    assert "-o StrictHostKeyChecking=yes" in options
    assert "StrictHostKeyChecking=no" not in options
    assert f"-o UserKnownHostsFile={tmp_path / 'kh'}" in options
    assert "-o IdentitiesOnly=yes" in options
    assert options.endswith("-p 2201")
    with pytest.raises(nix.NixError, match="spaces"):
        nix.ssh_options(known_hosts=tmp_path / "a b", client_key=tmp_path / "id", port=22)


async def test_copy_goes_only_to_the_pinned_key(lab: Lab, tmp_path: Path) -> None:
    host = lab.start_installed_host("pin", stage="booted", luks=False)
    flake = lab.make_flake({"pin": LabConfig(version="2")})
    lines: list[str] = []
    built = await nix.run_nix(
        nix.build_argv(lab.nix_command(), flake=str(flake), attr="pin", outputs=("toplevel",)),
        what="nix build",
        env=child_env(),
        on_line=lines.append,
        timeout=60,
    )
    (path,) = built.store_paths()
    assert built.code == 0
    assert any(line.startswith("building '/nix/store/") for line in lines)

    async def copy(key: str) -> nix.Finished:
        known = tmp_path / "state" / "known_hosts"
        nix.write_known_hosts(known, host.address, host.ssh_port, key)
        assert stat.S_IMODE(known.stat().st_mode) == 0o600
        env = child_env()
        env["NIX_SSHOPTS"] = nix.ssh_options(
            known_hosts=known, client_key=lab.operator_key, port=host.ssh_port
        )
        argv = nix.copy_argv(lab.nix_command(), user="root", host=host.address, path=path)
        return await nix.run_nix(argv, what="nix copy", env=env, on_line=lambda _: None, timeout=60)

    refused = await copy(lab.operator_public_key)  # a key the host does not hold
    assert refused.code == 1
    assert "cannot connect" in refused.last
    assert not (host.root / path.lstrip("/")).exists()
    assert host.system_host_key is not None
    copied = await copy(host.system_host_key)
    assert copied.code == 0, copied.last
    assert (host.root / path.lstrip("/") / "bin/switch-to-configuration").is_file()


# -- the login an update's steps share -------------------------------------------------------


def warm_target(lab: Lab, host: LabHost) -> Target:
    machine = Machine(
        name=host.name, host=host.address, ssh_port=host.ssh_port, flake_attr="x", luks=False
    )
    assert host.system_host_key is not None
    reach = Reach(client_key=lab.operator_key, ssh_timeout=5.0)
    return Target(machine, Pins(system=host.system_host_key), reach)


async def test_a_guard_whose_job_is_gone_unloads_itself_once_it_fired(lab: Lab) -> None:
    """No bot left to stop it (an interrupted job): the fired timer must not stay loaded."""
    host = lab.start_installed_host("gone", stage="booted", luks=False)
    login = warm_target(lab, host).login()
    try:
        shell = await login.shell()
        (armed,) = await shell.run([guard.arm(7, back_to=1, seconds=1)], timeout=10)
        assert armed.ok, armed.stderr_text
        assert [t.name for t in host.timers] == ["deploybot-rollback-7.timer"]
        await host.wait_until(
            lambda: any(a.unit == "deploybot-rollback-7.service" for a in host.activations),
            timeout=10,
            what="the guard's switch back",
        )
        await host.wait_until(lambda: host.timers == [], timeout=10, what="the timer unloaded")
        (listed,) = await shell.run([guard.running_guards()], timeout=10)
        assert "deploybot-rollback-7" not in listed.stdout_text
    finally:
        login.close()


async def test_the_steps_before_the_activation_share_one_login_made_ahead(lab: Lab) -> None:
    host = lab.start_installed_host("warm", stage="booted", luks=False)
    login = warm_target(lab, host).login()
    login.start()
    try:
        shell = await login.shell()
        again = await login.shell()
        assert again is shell
        (hostname,) = await again.run([["hostname"]], timeout=5)
        assert hostname.stdout_text.strip() == "warm"
        shell.close()  # it ended (a review can take minutes): the next step logs in anew
        fresh = await login.shell()
        assert fresh is not shell
        assert fresh.alive
        (result,) = await fresh.run([["readlink", "/run/current-system"]], timeout=5)
        assert result.stdout_text.strip() == host.current_system
    finally:
        login.close()


async def test_a_login_that_failed_ahead_is_tried_again_when_needed(lab: Lab) -> None:
    host = lab.start_installed_host("late", stage="booted", luks=False)
    host.power_off()
    await host.wait_until(lambda: host.stage == "down", 10, "the host off")
    login = warm_target(lab, host).login()
    login.start()
    try:
        with pytest.raises(SshError):
            await login.shell()
        host.power_on()
        await host.wait_for_stage("booted")
        shell = await login.shell()
        (result,) = await shell.run([["hostname"]], timeout=5)
        assert result.stdout_text.strip() == "late"
    finally:
        login.close()
