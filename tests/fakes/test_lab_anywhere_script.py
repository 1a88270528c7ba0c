"""The stand-in nixos-anywhere behaves as the real script does: builds before its first
ssh, OpenSSH's own warnings, ``--store-paths``, ``GlobalKnownHostsFile``, endless loops,
and the EXIT trap around its copy of the key. No bot code."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.test_lab_anywhere import PASSPHRASE, steps
from tests.lab import Lab, LabHost
from tests.lab.proc import kill_tree

pytest_plugins = ["tests.lab.fixtures"]
FEATURES = ("--extra-experimental-features", "nix-command flakes")
STORE = ("/nix/store/" + "a" * 32 + "-disko", "/nix/store/" + "b" * 32 + "-nixos-system-x")


class Run:
    """One stand-in run in the background, its output collected in files."""

    def __init__(
        self, lab: Lab, host: LabHost, flake: Path | None, extra: list[str], **prefix: object
    ):
        self.dir = Path(tempfile.mkdtemp(prefix="anywhere-run-", dir=lab.dir))
        read_end, write_end = os.pipe()
        os.write(write_end, PASSPHRASE.encode())
        os.close(write_end)
        argv = lab.nixos_anywhere_command(**prefix)  # type: ignore[arg-type]
        argv += ["--flake", f"{flake}#clawsiecats-luks"] if flake is not None else []
        argv += ["-i", str(lab.operator_key)]
        argv += ["-p", str(host.ssh_port), "--disk-encryption-keys", "/tmp/disk.key"]
        argv += [f"/dev/fd/{read_end}", *extra, f"root@{host.address}"]
        with (self.dir / "out").open("wb") as out, (self.dir / "err").open("wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, pass_fds=[read_end], start_new_session=True
            )
        os.close(read_end)
        self.started = time.monotonic()

    @property
    def stdout(self) -> str:
        return (self.dir / "out").read_text()

    @property
    def stderr(self) -> str:
        return (self.dir / "err").read_text()

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def until(self, predicate: object, timeout: float = 20, what: str = "output") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if self.proc.poll() is not None and not predicate():  # type: ignore[operator]
                raise AssertionError(f"exited {self.proc.returncode} before {what}: {self.stderr}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout}s: {self.stdout} {self.stderr}")
            time.sleep(0.02)

    def stop(self) -> None:
        kill_tree(self.proc)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def logins(host: LabHost) -> int:
    log = host.paths.run / f"sshd-{host.stage}.log"
    return log.read_text().count("Accepted publickey") if log.exists() else 0


def built(lab: Lab, flake: Path) -> tuple[str, str]:
    """Both outputs built with the lab's nix, as the bot builds them before an install."""
    outputs = [
        f'{flake}#nixosConfigurations."clawsiecats-luks".config.system.build.{output}'
        for output in ("diskoScript", "toplevel")
    ]
    done = subprocess.run(
        [*lab.nix_command(), *FEATURES, "build", "--no-link", "--print-out-paths", *outputs],
        capture_output=True,
        text=True,
        check=True,
    )
    disko, system = done.stdout.split()
    return disko, system


def builds(lab: Lab, run: Run) -> list[str]:
    (record,) = [r for r in lab.stand_ins() if r["pid"] == run.proc.pid]
    found: list[str] = record["builds"]
    return found


def test_a_flake_is_built_before_the_first_ssh_even_with_store_paths(
    lab: Lab, lab_flake: Path, runs: list[Run]
) -> None:
    """As the real script's main: with --flake it builds both outputs itself (for minutes)
    before its first ssh; --store-paths does not stop that, only --store-paths without
    --flake does (docs/nixos-anywhere.md)."""
    host = lab.start_host("build")
    paths = built(lab, lab_flake)
    slow = Run(lab, host, lab_flake, ["--store-paths", *paths], build_delay=1.0, hold=True)
    runs.append(slow)
    slow.until(lab.stand_in_waiting, what="the first ssh")
    assert time.monotonic() - slow.started >= 2.0
    assert builds(lab, slow) == ["diskoScript", "toplevel"]
    assert logins(host) == 0
    assert steps(slow.stdout) == []
    slow.stop()
    (lab.dir / "stand-ins" / f"{slow.proc.pid}.waiting").unlink()
    fast = Run(lab, host, None, ["--store-paths", *paths], build_delay=30)
    runs.append(fast)
    assert fast.wait() == 0, fast.stderr
    assert time.monotonic() - fast.started < 30
    assert builds(lab, fast) == []
    assert host.state.installed_system == paths[1]


def test_store_paths_alone_must_be_in_the_local_store(
    lab: Lab, lab_flake: Path, runs: list[Run]
) -> None:
    host = lab.start_host("nostore")
    missing = Run(lab, host, None, ["--store-paths", *STORE])
    runs.append(missing)
    assert missing.wait() == 1
    assert f"cat: {STORE[1]}/system: No such file or directory" in missing.stderr
    assert logins(host) == 0
    _, system = built(lab, lab_flake)
    half = Run(lab, host, None, ["--store-paths", STORE[0], system])
    runs.append(half)
    assert half.wait() == 1
    assert f"aborted: {STORE[0]} and {system} must be existing store-paths" in half.stderr
    assert logins(host) == 0


def test_ssh_warnings_reach_stderr_unless_loglevel_error(
    lab: Lab, lab_flake: Path, runs: list[Run]
) -> None:
    host = lab.start_host("noisy")
    noisy = Run(lab, host, lab_flake, [], interval=1.0)  # the script's one probe a second
    runs.append(noisy)
    assert noisy.wait() == 0, noisy.stderr
    err = noisy.stderr
    assert f"Warning: Permanently added '[{host.address}]:{host.ssh_port}' (ED25519)" in err
    assert "Warning: Identity file /tmp/" in err
    assert "Pseudo-terminal will not be allocated" in err
    # The last probe of the reboot wait fails, right before Done.
    refused = f"ssh: connect to host {host.address} port {host.ssh_port}: Connection refused"
    assert err.splitlines()[-1] == refused
    assert steps(noisy.stdout)[-1] == "### Done! ###"
    host.wait_for_stage_sync("initrd")
    quiet_host = lab.start_host("quiet")
    quiet = Run(lab, quiet_host, lab_flake, ["--ssh-option", "LogLevel=ERROR"])
    runs.append(quiet)
    assert quiet.wait() == 0, quiet.stderr
    assert "Permanently added" not in quiet.stderr
    assert "Pseudo-terminal" not in quiet.stderr
    # OpenSSH prints this one while parsing -i, before any LogLevel applies: the script's
    # `ssh -G` runs before the key copy exists, so it is there in every run.
    assert quiet.stderr.startswith("Warning: Identity file /tmp/")


def test_a_swapped_target_shows_the_changed_key_and_still_connects(
    lab: Lab, lab_flake: Path, runs: list[Run]
) -> None:
    host = lab.start_host("swapped")
    pinned = lab.dir / "pinned_known_hosts"
    pinned.write_text(host.known_hosts_line() + "\n")
    run = Run(
        lab,
        host,
        lab_flake,
        ["--ssh-option", f"GlobalKnownHostsFile={pinned}", "--ssh-option", "LogLevel=ERROR"],
        hold=True,
    )
    runs.append(run)
    run.until(lab.stand_in_waiting, what="the first ssh")
    old_key = host.installer_host_key
    host.reboot()  # another machine (a fresh installer key) now answers at the address
    host.wait_for_stage_sync("installer")
    assert host.installer_host_key != old_key
    lab.release_stand_ins()
    run.until(lambda: "REMOTE HOST IDENTIFICATION HAS CHANGED" in run.stderr, what="the warning")
    assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in run.stderr
    # StrictHostKeyChecking=no: it goes on and installs the wrong machine.
    assert run.wait() == 0, run.stderr
    assert host.state.formatted


def test_endless_loops_and_the_exit_trap_around_the_key_copy(
    lab: Lab, lab_flake: Path, runs: list[Run]
) -> None:
    gone = lab.start_host("gone", stage="down")
    retrying = Run(lab, gone, lab_flake, [], interval=0.05)
    runs.append(retrying)
    retrying.until(lambda: retrying.stderr.count("ssh-copy-id: INFO") >= 5, what="retries")
    assert retrying.proc.poll() is None, "ssh-copy-id retries for ever"
    (record,) = [r for r in lab.stand_ins() if r["pid"] == retrying.proc.pid]
    copy = Path(record["key_copy"])
    assert copy.read_bytes() == lab.operator_key.read_bytes()
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    os.killpg(retrying.proc.pid, signal.SIGTERM)
    assert retrying.wait(10) == 128 + signal.SIGTERM
    assert not Path(record["tmp"]).exists(), "the EXIT trap removed the key copy"

    stuck = lab.start_host("stuck")
    stuck.reboot_script_delay = 3600.0  # `reboot` is accepted, the machine never goes down
    looping = Run(lab, stuck, lab_flake, [], interval=0.05)
    runs.append(looping)
    looping.until(
        lambda: "Waiting for the machine to become unreachable" in looping.stdout,
        what="the reboot wait",
    )
    mark = logins(stuck)
    looping.until(lambda: logins(stuck) >= mark + 5, what="probes")
    assert looping.proc.poll() is None, "the reboot wait loops for ever"
    (record,) = [r for r in lab.stand_ins() if r["pid"] == looping.proc.pid]
    os.killpg(looping.proc.pid, signal.SIGKILL)
    looping.wait(10)
    assert Path(record["key_copy"]).exists(), "SIGKILL runs no trap: the copy stays"
    subprocess.run(["rm", "-rf", record["tmp"]], check=True)
