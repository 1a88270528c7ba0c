"""The lab on its own: hosts, stages, unlocking and health answers, with plain ``ssh``
and asyncssh and no bot code."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import asyncssh
import pytest

from tests.lab import Lab
from tests.lab.ask_password import WRONG
from tests.lab.clients import connect, ssh
from tests.lab.proc import lab_processes, port_accepts

pytest_plugins = ["tests.lab.fixtures"]


def test_host_starts_quickly_and_leaves_nothing_behind() -> None:
    lab = Lab()
    try:
        started = time.monotonic()
        host = lab.start_host("quick")
        elapsed = time.monotonic() - started
        assert elapsed < 5, "a host start should take well under a second"
        assert host.stage == "installer"
        assert port_accepts(host.address, host.ssh_port)
        assert lab_processes(lab.dir)
    finally:
        lab.close()
    assert not lab_processes(lab.dir)
    assert not lab.dir.exists()
    assert not port_accepts(host.address, host.ssh_port)
    lease = socket.socket(socket.AF_UNIX)
    lease.bind(f"\0deploybot-lab/{host.address}")
    lease.close()


def test_several_hosts_get_their_own_addresses(lab: Lab) -> None:
    hosts = [lab.start_host(f"h{i}") for i in range(3)]
    assert len({h.address for h in hosts}) == 3
    assert all(h.ssh_port not in (22, h.initrd_port) for h in hosts)
    with pytest.raises(ValueError, match="duplicate"):
        lab.start_host("h0")


def test_installer_answers_like_a_nixos_installer(lab: Lab) -> None:
    host = lab.start_host("inst", mem_mib=1024)
    script = (
        "cat /etc/os-release; cat /proc/meminfo; "
        "mount -o remount,size=512M /nix/.rw-store && df /nix/.rw-store"
    )
    result = ssh(lab, host, script)
    assert result.returncode == 0, result.stderr
    assert "ID=nixos\n" in result.stdout
    assert "VARIANT_ID=installer\n" in result.stdout
    assert "MemTotal:        1048576 kB" in result.stdout
    assert "524288" in result.stdout.splitlines()[-1]
    assert host.state.rw_store_size == "512M"
    unknown = ssh(lab, host, "frobnicate --now")
    assert unknown.returncode == 127
    assert "command not found" in unknown.stderr


def test_debian_host_has_no_rw_store(lab: Lab) -> None:
    host = lab.start_host("deb", os="debian")
    result = ssh(lab, host, "cat /etc/os-release; mount -o remount,size=512M /nix/.rw-store")
    assert "ID=debian" in result.stdout
    assert "VARIANT_ID" not in result.stdout
    assert result.returncode == 32


async def test_wrong_passphrase_reprompts_then_right_one_boots(lab: Lab) -> None:
    host = lab.start_installed_host("ask", initrd="askpass", boot_delay=0.2)
    assert host.luks_passphrase is not None
    boot_id = host.boot_id
    async with await connect(lab, host, initrd=True) as conn:
        proc = await conn.create_process("cryptsetup-askpass")
        first = await proc.stdout.readuntil(": ")
        assert first.endswith("Passphrase for /dev/disk/by-partlabel/disk-main-luks: ")
        proc.stdin.write("not the passphrase\n")
        again = await proc.stdout.readuntil(": ")
        assert "Passphrase for" in again
        assert host.wrong_attempts == 1
        assert host.correct_attempts == 0
        proc.stdin.write(host.luks_passphrase + "\n")
        await host.wait_for_stage("booted", timeout=10)
    assert host.correct_attempts == 1
    assert host.first_unlock_at is not None
    assert host.boot_id == boot_id
    assert [a.via for a in host.attempts] == ["askpass", "askpass"]


def test_askpass_end_of_input_and_nothing_requested(lab: Lab) -> None:
    host = lab.start_installed_host("eof", boot_delay=1.0, askpass_wait=0.1)
    assert host.luks_passphrase is not None
    eof = ssh(lab, host, "cryptsetup-askpass", initrd=True, stdin="")
    assert eof.returncode == 1
    assert "End of file reached. Exiting shell." in eof.stdout
    partial = ssh(lab, host, "cryptsetup-askpass", initrd=True, stdin=host.luks_passphrase)
    assert "End of file reached" in partial.stdout
    assert host.attempts == []
    answered = ssh(lab, host, "cryptsetup-askpass", initrd=True, stdin=host.luks_passphrase + "\n")
    assert answered.stdout.endswith("Passphrase is not requested now\n")
    assert answered.returncode == 1
    assert host.correct_attempts == 1
    host.wait_for_stage_sync("booted")


async def test_systemd_initrd_runs_the_real_agent(lab: Lab) -> None:
    host = lab.start_installed_host("sd", initrd="systemd", boot_delay=0.1)
    assert host.luks_passphrase is not None
    await host.wait_until(lambda: bool(host.pending_queries), 10, "a query")
    async with await connect(lab, host, initrd=True) as conn:
        missing = await conn.run("cryptsetup-askpass", timeout=10)
        assert missing.exit_status == 127
        assert "command not found" in str(missing.stderr)
        # Without a terminal it reads stdin; end of input is an empty answer: one try gone.
        no_tty = await conn.run(
            "systemd-tty-ask-password-agent --query", stdin=asyncssh.DEVNULL, timeout=10
        )
        assert no_tty.exit_status == 0
        assert no_tty.stdout == ""
        await host.wait_until(lambda: host.wrong_attempts == 1, 10, "the empty answer")
        await host.wait_until(lambda: bool(host.pending_queries), 10, "the next query")
        proc = await conn.create_process(
            "systemd-tty-ask-password-agent --query", term_type="xterm"
        )
        prompt = await asyncio.wait_for(proc.stdout.readuntil("(press TAB for no echo) "), 10)
        assert "🔐 Please enter passphrase for disk disk-main-luks (crypted):" in prompt
        proc.stdin.write(host.luks_passphrase + "\n")
        await host.wait_for_stage("booted", timeout=10)
    assert [(a.correct, a.via) for a in host.attempts] == [(False, "systemd"), (True, "systemd")]
    assert host.console == [f"systemd-cryptsetup[crypted]: {WRONG}"]


def test_systemd_agent_with_plain_ssh_tty(lab: Lab) -> None:
    host = lab.start_installed_host("sdtty", initrd="systemd")
    assert host.luks_passphrase is not None
    host.wait_until_sync(lambda: bool(host.pending_queries), 10, "a query")
    result = ssh(
        lab,
        host,
        "systemd-tty-ask-password-agent --query",
        initrd=True,
        stdin="wrong\n",
        options=("RequestTTY=force",),
    )
    assert result.returncode == 0
    host.wait_until_sync(lambda: host.wrong_attempts == 1, 10, "the wrong answer")
    assert host.stage == "initrd"


async def test_reboot_cycle_gives_a_new_boot_id(lab: Lab) -> None:
    host = lab.start_installed_host("rb", stage="booted", down_delay=0.1, boot_delay=0.1)
    assert host.luks_passphrase is not None
    async with await connect(lab, host) as conn:
        before = (await conn.run("cat /proc/sys/kernel/random/boot_id", check=True)).stdout
        assert str(before).strip() == host.boot_id
        await conn.run("systemctl reboot", check=True)
    await host.wait_for_stage("initrd", timeout=10)
    assert host.boot_id != str(before).strip()
    async with await connect(lab, host, initrd=True) as conn:
        proc = await conn.create_process("cryptsetup-askpass")
        await proc.stdout.readuntil(": ")
        proc.stdin.write(host.luks_passphrase + "\n")
        await host.wait_for_stage("booted", timeout=10)
    async with await connect(lab, host) as conn:
        after = (await conn.run("cat /proc/sys/kernel/random/boot_id", check=True)).stdout
    assert str(after).strip() == host.boot_id != str(before).strip()


async def test_host_without_luks_reboots_straight_to_booted(lab: Lab) -> None:
    host = lab.start_installed_host("plain", luks=False, down_delay=0.05)
    assert host.stage == "booted"
    boot_id = host.boot_id
    host.reboot()
    assert host.stage == "down"
    await host.wait_for_stage("booted", timeout=10)
    assert host.boot_id != boot_id


async def test_health_answers_and_knobs(lab: Lab) -> None:
    host = lab.start_installed_host("health", stage="booted")
    async with await connect(lab, host) as conn:
        running = await conn.run("systemctl is-system-running")
        assert (running.exit_status, running.stdout) == (0, "running\n")
        host.set_failed_units(["nginx.service", "backup.service"])
        degraded = await conn.run("systemctl is-system-running")
        assert (degraded.exit_status, degraded.stdout) == (1, "degraded\n")
        failed = await conn.run("systemctl --failed --no-legend --plain")
        assert str(failed.stdout).split() == [
            "nginx.service", "loaded", "failed", "failed", "nginx",
            "backup.service", "loaded", "failed", "failed", "backup",
        ]  # fmt: skip
        facts = await conn.run("uptime; nixos-version; df -h /nix; hostname", check=True)
        lines = str(facts.stdout).splitlines()
        assert " up " in lines[0]
        assert lines[1].startswith("25.05")
        assert lines[3].endswith("/nix")
        assert lines[-1] == "health"
        host.set_http("http://127.0.0.1:8080/health", 200, "ok\n")
        healthy = await conn.run("curl -fsS http://127.0.0.1:8080/health")
        assert (healthy.exit_status, healthy.stdout) == (0, "ok\n")
        refused = await conn.run("curl -fsS http://127.0.0.1:9/x")
        assert refused.exit_status == 7
        machine_id = await conn.run("cat /etc/machine-id", check=True)
        assert str(machine_id.stdout).strip() == host.machine_id
    host.open_port(8443)
    assert port_accepts(host.address, 8443)
    host.close_port(8443)
    assert not port_accepts(host.address, 8443)


async def test_power_off_crash_and_vanishing_initrd(lab: Lab) -> None:
    host = lab.start_installed_host("pw", down_delay=0.05)
    host.open_port(8443)
    assert not port_accepts(host.address, 8443), "ports open only once booted"
    host.vanish_initrd()
    assert host.stage == "initrd"
    assert not port_accepts(host.address, host.initrd_port)
    host.crash()
    assert host.stage == "down"
    host.power_on()
    assert host.stage == "initrd"
    assert port_accepts(host.address, host.initrd_port)
    host.power_off()
    assert not port_accepts(host.address, host.initrd_port)
    with pytest.raises(TimeoutError):
        await host.wait_for_stage("initrd", timeout=0.2)


async def test_installed_host_keeps_given_keys_and_pinned_login_works(
    lab: Lab, tmp_path: Path
) -> None:
    from tests.lab.keys import generate_ed25519

    system_key = tmp_path / "system_key"
    system_pub = generate_ed25519(system_key, "sys")
    host = lab.start_installed_host(
        "pinned", stage="booted", system_host_key=system_key, luks_passphrase="correct horse"
    )
    assert host.system_host_key == system_pub
    assert host.luks_passphrase == "correct horse"
    assert host.initrd_host_key is not None
    assert host.initrd_host_key != system_pub
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line() + "\n")
    assert ssh(lab, host, "true", known_hosts=known).returncode == 0
    known.write_text(f"[{host.address}]:{host.ssh_port} {host.initrd_host_key}\n")
    refused = ssh(lab, host, "true", known_hosts=known)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            host.address,
            host.ssh_port,
            username="root",
            client_keys=[str(system_key)],
            known_hosts=None,
            agent_path=None,
            config=[],
        )
