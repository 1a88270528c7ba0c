"""The stand-in nixos-anywhere against lab hosts: the manual procedure (docs/nixos-anywhere.md) by
hand, the kexec path, and every way it fails or hangs. No bot code."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab import Lab, LabHost
from tests.lab.keys import generate_ed25519, luks_opens
from tests.lab.proc import descendants

pytest_plugins = ["tests.lab.fixtures"]

PASSPHRASE = "correct horse battery staple"
FULL_STEPS = [
    "### Uploading install SSH keys ###",
    "### Gathering machine facts ###",
    "### Uploading /dev/fd/{fd} to /tmp/disk.key ###",
    "### Formatting hard drive with disko ###",
    "### Uploading the system closure ###",
    "### Copying extra files ###",
    "### Installing NixOS ###",
    "### Rebooting ###",
    "### Waiting for the machine to become unreachable due to reboot ###",
    "### Done! ###",
]


class Staged:
    """The ``mnt/`` folder of the manual procedure, steps 1-4."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        persist = folder / "nix/persist/system"
        (folder / "boot").mkdir(parents=True)
        (persist / "etc/ssh").mkdir(parents=True)
        self.initrd_key = generate_ed25519(folder / "boot/ssh_host_ed25519_key", "initrd")
        self.system_key = generate_ed25519(persist / "etc/ssh/ssh_host_ed25519_key", "host")
        self.machine_id = "0123456789abcdef0123456789abcdef"
        (persist / "etc/machine-id").write_text(self.machine_id + "\n")
        secret = persist / "etc/secret.conf"
        secret.write_text("x\n")
        secret.chmod(0o640)


def run_anywhere(
    lab: Lab,
    host: LabHost,
    flake: Path,
    *,
    staged: Staged | None = None,
    attr: str = "clawsiecats-luks",
    extra: list[str] | None = None,
    prefix: dict[str, object] | None = None,
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the stand-in with the disk passphrase on a pipe; return the result and the fd."""
    read_end, write_end = os.pipe()
    os.write(write_end, (PASSPHRASE + "\n").encode())
    os.close(write_end)
    argv = lab.nixos_anywhere_command(**(prefix or {}))  # type: ignore[arg-type]
    if staged is not None:
        argv += ["--extra-files", str(staged.dir)]
    argv += ["--flake", f"{flake}#{attr}", "-i", str(lab.operator_key)]
    argv += ["-p", str(host.ssh_port)]
    argv += ["--disk-encryption-keys", "/tmp/disk.key", f"/dev/fd/{read_end}"]
    argv += [*(extra or []), f"root@{host.address}"]
    try:
        result = subprocess.run(
            argv, pass_fds=[read_end], capture_output=True, text=True, timeout=60
        )
    finally:
        os.close(read_end)
    return result, read_end


def steps(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("### ")]


def plain_ssh(lab: Lab, host: LabHost, command: str, known: Path, stdin: str = "", *,
              initrd: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = lab.ssh_argv(host, initrd=initrd, known_hosts=known)
    return subprocess.run([*argv, command], input=stdin, capture_output=True, text=True, timeout=30)


def test_manual_procedure(lab: Lab, lab_flake: Path, tmp_path: Path) -> None:
    host = lab.start_host("clawsiecats", mem_mib=1024)
    staged = Staged(tmp_path / "mnt")
    remount = subprocess.run(
        [*lab.ssh_argv(host), "mount -o remount,size=512M /nix/.rw-store"], timeout=30
    )
    assert remount.returncode == 0
    result, fd = run_anywhere(lab, host, lab_flake, staged=staged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert steps(result.stdout) == [s.format(fd=fd) for s in FULL_STEPS]
    assert "installation finished!" in result.stdout
    assert PASSPHRASE not in result.stdout + result.stderr
    host.wait_for_stage_sync("initrd")
    assert host.initrd_host_key == staged.initrd_key
    key = host.persist / "etc/ssh/ssh_host_ed25519_key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.stat().st_uid == 0
    assert (host.persist / "etc/secret.conf").stat().st_mode & 0o777 == 0o640
    assert (host.root.stat().st_mode & 0o777) == 0o755

    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line("initrd") + "\n")
    plain_ssh(lab, host, "cryptsetup-askpass", known, PASSPHRASE + "\n", initrd=True)
    host.wait_for_stage_sync("booted")
    assert host.correct_attempts == 1
    known.write_text(f"[{host.address}]:{host.ssh_port} {staged.system_key}\n")
    booted = plain_ssh(lab, host, "cat /etc/machine-id; systemctl is-system-running", known)
    assert booted.stdout == f"{staged.machine_id}\nrunning\n", booted.stderr


def test_kexec_path_writes_the_disk_key_privately(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("deb", os="debian", mem_mib=2048)
    result, fd = run_anywhere(lab, host, lab_flake, extra=["--phases", "kexec,disko"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert steps(result.stdout) == [
        "### Uploading install SSH keys ###",
        "### Gathering machine facts ###",
        "### Switching system into kexec ###",
        "### Gathering machine facts ###",
        f"### Uploading /dev/fd/{fd} to /tmp/disk.key ###",
        "### Formatting hard drive with disko ###",
        "### Done! ###",
    ]
    assert "machine will boot into nixos in 6s..." in result.stdout
    assert host.stage == "installer"
    assert host.state.kexec
    disk_key = host.paths.ram / "tmp/disk.key"
    assert disk_key.stat().st_mode & 0o777 == 0o600
    assert luks_opens(lab.cryptsetup, host.paths.luks_image, PASSPHRASE.encode())
    assert not luks_opens(lab.cryptsetup, host.paths.luks_image, (PASSPHRASE + "\n").encode())


def test_nixos_installer_is_not_kexeced_and_flags_are_accepted(
    lab: Lab, lab_flake: Path, tmp_path: Path
) -> None:
    host = lab.start_host("flags")
    staged = Staged(tmp_path / "mnt")
    extra = [
        "--phases", "kexec,disko,install", "-L", "--debug", "--build-on", "local",
        "--post-kexec-ssh-port", str(host.ssh_port), "--copy-host-keys",
        "--chown", "nix/persist/system/etc/secret.conf", "1000:100",
        "--option", "substituters", "", "--kexec", "/nonexistent.tar.gz",
        "--ssh-option", "ServerAliveInterval=5",
    ]  # fmt: skip
    result, _ = run_anywhere(lab, host, lab_flake, staged=staged, extra=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Switching system into kexec ###" not in result.stdout
    assert steps(result.stdout)[-2:] == ["### Installing NixOS ###", "### Done! ###"]
    assert "SSH COMMAND:" in result.stderr
    assert host.stage == "installer"
    assert host.installed
    secret = host.persist / "etc/secret.conf"
    assert (secret.stat().st_uid, secret.stat().st_gid) == (1000, 100)
    copied = host.root / "etc/ssh/ssh_host_ed25519_key"
    assert copied.read_text() == (host.paths.ram / "etc/ssh/ssh_host_ed25519_key").read_text()


def test_target_host_flag(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("th", luks=False)
    argv = [
        *lab.nixos_anywhere_command(),
        "--flake", f"{lab_flake}#clawsiecats", "-i", str(lab.operator_key),
        "--ssh-port", str(host.ssh_port), "--target-host", f"root@{host.address}",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    host.wait_for_stage_sync("booted")


def test_kexec_runs_out_of_memory_below_one_gib(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("small", os="debian", mem_mib=987)
    result, _ = run_anywhere(lab, host, lab_flake)
    assert result.returncode == 1
    assert steps(result.stdout)[-1] == "### Switching system into kexec ###"
    assert "Failure unpacking initrd" in result.stdout
    assert "Kexec may have failed - check output above" in result.stdout
    assert result.stderr.rstrip().endswith("Kexec failed")
    assert host.stage == "installer"
    assert not host.state.kexec


def test_unreachable_host_retries_until_told_to_give_up(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("gone", stage="down")
    result, _ = run_anywhere(lab, host, lab_flake, prefix={"give_up_after": 2})
    assert result.returncode == 1
    assert steps(result.stdout) == ["### Uploading install SSH keys ###"]
    assert result.stderr.count("Connection refused") == 2
    assert "aborted: lab: 127.0.0." in result.stderr


def test_bad_flake_attribute(lab: Lab, lab_flake: Path, tmp_path: Path) -> None:
    host = lab.start_host("badattr")
    result, _ = run_anywhere(lab, host, lab_flake, attr="nope")
    assert result.returncode == 1
    # The script builds before its first ssh: it fails before any step.
    assert steps(result.stdout) == []
    assert f"error: flake 'path:{lab_flake}' does not provide attribute" in result.stderr
    assert 'nixosConfigurations."nope".config.system.build.diskoScript' in result.stderr
    not_a_flake, _ = run_anywhere(lab, host, tmp_path, extra=["--build-on", "local"])
    assert not_a_flake.returncode == 1
    assert steps(not_a_flake.stdout) == []
    assert "flake.nix' does not exist" in not_a_flake.stderr
    no_attr = subprocess.run(
        [*lab.nixos_anywhere_command(), "--flake", str(lab_flake), f"root@{host.address}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert no_attr.returncode == 1
    assert "Please specify the name of the NixOS configuration" in no_attr.stderr


@pytest.mark.parametrize(
    ("phase", "last_step"),
    [
        ("ssh-keys", "### Uploading install SSH keys ###"),
        ("facts", "### Gathering machine facts ###"),
        ("kexec", "### Switching system into kexec ###"),
        ("disko", "### Uploading /dev/fd/{fd} to /tmp/disk.key ###"),
        ("install", "### Uploading the system closure ###"),
        ("reboot", "### Rebooting ###"),
    ],
)
def test_injected_failure(lab: Lab, lab_flake: Path, phase: str, last_step: str) -> None:
    host = lab.start_host("fail", os="debian" if phase == "kexec" else "nixos-installer")
    host.inject_failure(phase, exit_code=7, message=f"{phase} broke")
    result, fd = run_anywhere(lab, host, lab_flake)
    assert result.returncode == 7
    assert steps(result.stdout)[-1] == last_step.format(fd=fd)
    assert result.stderr.rstrip().endswith(f"aborted: {phase} broke")
    assert host.stage == "installer"


def test_failure_from_the_command_prefix(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("prefixfail")
    result, _ = run_anywhere(lab, host, lab_flake, prefix={"fail": "facts", "exit_code": 4})
    assert result.returncode == 4
    assert "aborted: lab: injected failure in phase facts" in result.stderr


def test_hang_then_cancel(lab: Lab, lab_flake: Path) -> None:
    host = lab.start_host("hang")
    host.hang_at("install")
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE.encode())
    os.close(write_end)
    argv = [
        *lab.nixos_anywhere_command(),
        "--flake", f"{lab_flake}#clawsiecats-luks", "-i", str(lab.operator_key),
        "-p", str(host.ssh_port), "--disk-encryption-keys", "/tmp/disk.key",
        f"/dev/fd/{read_end}", f"root@{host.address}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, pass_fds=[read_end], stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while "### Uploading the system closure ###" not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            seen.append(proc.stdout.readline().rstrip("\n"))
    assert proc.poll() is None
    assert descendants(proc.pid) == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    proc.stdout.close()
    assert host.stage == "installer"
