"""Stand-in for nixos-anywhere 1.13 that installs lab hosts through the real OpenSSH client.

Run it as ``Lab.nixos_anywhere_command()`` returns it: lab options first (they end with
the lab's folder), then the real flags the bot passes. It prints the real ``### … ###``
steps in the real order and sends the real remote commands (the lab shell on the target
answers them), and fails where the real one fails: an unreachable host (it retries for
ever, as ``until ssh-copy-id; do sleep 3; done`` does), a bad flake attribute, kexec with
less than 1 GiB of RAM, a failing remote command (its exit status), and faults injected
per phase (``aborted: …``, exit code) or hangs, from the lab options or the target host.

Like the script (``main`` of src/nixos-anywhere.sh, docs/nixos-anywhere.md) it builds both
closures locally before its first ssh whenever ``--flake`` is given, with the lab's ``nix``
into the lab's builder store (``--lab-build-delay`` stands for the minutes that takes), also
when ``--store-paths`` is given too: only ``--store-paths`` without ``--flake`` skips the
build, and then both paths must exist in the local (builder's) store and the system's
``system`` file is read (``cat "$nixosSystem/system"``). Each build is recorded
(``Lab.stand_ins()[i]["builds"]``). It runs ``ssh -G`` and then
the real ``ssh`` with the script's own arguments (``-o IdentitiesOnly=yes -i <copy> -o
UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no`` first, ``--ssh-option`` values after),
so OpenSSH's own warnings reach stderr — ``Warning: Permanently added …``, the
``REMOTE HOST IDENTIFICATION HAS CHANGED`` block when ``GlobalKnownHostsFile`` pins another
key (it still connects) — unless ``LogLevel=ERROR`` quiets them. It copies ``-i`` into a
temp dir that an EXIT trap removes: on exit and SIGTERM/SIGINT, not on SIGKILL.

Lab options: ``--lab-dir DIR`` (required), ``--lab-interval SECONDS`` (the real 3/1/5 s
waits), ``--lab-fail PHASE[:CODE]``, ``--lab-hang PHASE``, ``--lab-give-up-after N``,
``--lab-build-delay SECONDS``, ``--lab-hold-before-ssh`` (wait before the first ssh until
the test releases it: ``Lab.stand_in_waiting`` / ``Lab.release_stand_ins``). Each run
records its pid and temp dir in ``<lab dir>/stand-ins/<pid>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab import generations as gen
from tests.lab import nix as lab_nix
from tests.lab.model import PHASES, Fault, HostPaths, find_host_dir

GET_FACTS = """#!/bin/sh
set -efu "${enable_debug:-}"
cat <<FACTS
is_os=$(uname)
is_installer=$(grep -q VARIANT_ID=installer /etc/os-release && echo y || echo n)
FACTS
"""
KEXEC_SCRIPT = """
{
  set -eu
  cd "$HOME/kexec"
  echo Downloading kexec tarball, this may take a moment...
  wget "%s" -O- | tar -xv --gzip
  TMPDIR="$HOME/kexec" setsid --wait "$HOME/kexec/kexec/run" --kexec-extra-flags ''
} 2>&1 | tee "$HOME/kexec/nixos-anywhere.log" || true
if ! grep -q 'machine will boot into nixos' "$HOME/kexec/nixos-anywhere.log"; then
  echo 'Kexec may have failed - check output above'
  exit 1
fi
"""
INSTALL_SCRIPT = """set -eu
export PATH="$PATH:/run/current-system/sw/bin"
if [ ! -d "/mnt/tmp" ]; then
  mkdir -p /mnt/tmp
  chmod 777 /mnt/tmp
fi
if [ %s = "y" ]; then
  mkdir -m 755 -p /mnt/etc/ssh
fi
nixos-install --no-root-passwd --no-channel-copy --system "%s"
"""
REBOOT_SCRIPT = """pools="$(zpool list 2>/dev/null || echo 'no pools available')"
if command -v zpool >/dev/null && [ "$pools" != "no pools available" ]; then
  umount -Rv /mnt/
  swapoff -a
  zpool export -a || true
fi
nohup sh -c 'sleep 6 && reboot' >/dev/null 2>&1 &
"""
DEFAULT_KEXEC_URL = (
    "https://github.com/nix-community/nixos-images/releases/download/nixos-25.05/"
    "nixos-kexec-installer-noninteractive-x86_64-linux.tar.gz"
)


class Exit(Exception):
    """Stop with this status (after the message, if any, went to stderr)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.message = message


def abort(reason: str) -> Exit:
    return Exit(1, f"aborted: {reason}")


_REAL_PHASES = ("kexec", "disko", "install", "reboot")


@dataclasses.dataclass
class Options:
    flake: str = ""
    flake_attr: str = ""
    target: str = ""
    key: str = ""
    ssh_args: list[str] = dataclasses.field(default_factory=list)
    extra_files: str = ""
    chown: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    disk_keys: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    phases: set[str] = dataclasses.field(default_factory=lambda: set(_REAL_PHASES))
    kexec_url: str = ""
    post_kexec_port: str = ""
    copy_host_keys: bool = False
    build_on: str = "auto"
    debug: bool = False
    lab_dir: str = ""
    interval: float = 0.05
    faults: list[Fault] = dataclasses.field(default_factory=list)
    give_up_after: int | None = None
    store_paths: tuple[str, str] | None = None
    build_delay: float = 0.0
    hold: bool = False


_FLAGS_WITH_VALUE = {
    "--kexec-extract-path",
    "--kexec-launch-path",
    "--kexec-extra-flags",
    "--from",
    "--disko-mode",
}
_FLAGS_WITH_TWO_VALUES = {"--ssh-store-setting", "--option", "-s"}
_FLAGS_ALONE = {
    "-L",
    "--print-build-logs",
    "--no-disko-deps",
    "--show-trace",
    "--no-substitute-on-destination",
    "--no-use-machine-substituters",
    "--env-password",
    "-t",
    "--tty",
}


def parse(argv: list[str]) -> Options:
    opts = Options()
    i = 0

    def value(n: int = 1) -> list[str]:
        if i + n >= len(argv):
            raise abort(f"missing value for {argv[i]}")
        return argv[i + 1 : i + 1 + n]

    while i < len(argv):
        arg = argv[i]
        step = 1
        if arg in ("-f", "--flake"):
            opts.flake = value()[0]
            step = 2
        elif arg == "--target-host":
            opts.target = value()[0]
            step = 2
        elif arg == "-i":
            opts.key = value()[0]
            step = 2
        elif arg in ("-p", "--ssh-port"):
            opts.ssh_args += ["-p", value()[0]]
            step = 2
        elif arg == "--ssh-option":
            opts.ssh_args += ["-o", value()[0]]
            step = 2
        elif arg == "--extra-files":
            opts.extra_files = value()[0]
            step = 2
        elif arg == "--chown":
            path, owner = value(2)
            opts.chown.append((path, owner))
            step = 3
        elif arg == "--disk-encryption-keys":
            remote, local = value(2)
            opts.disk_keys.append((remote, local))
            step = 3
        elif arg == "--phases":
            opts.phases = set()
            for phase in value()[0].split(","):
                if phase not in _REAL_PHASES:
                    raise abort(f"Unknown phase: {phase}")
                opts.phases.add(phase)
            step = 2
        elif arg == "--kexec":
            opts.kexec_url = value()[0]
            step = 2
        elif arg == "--post-kexec-ssh-port":
            opts.post_kexec_port = value()[0]
            step = 2
        elif arg == "--copy-host-keys":
            opts.copy_host_keys = True
        elif arg == "--build-on":
            if value()[0] not in ("auto", "local", "remote"):
                raise abort(
                    "Supported values for --build-on are auto, local and remote. "
                    f"Unknown mode : {value()[0]}"
                )
            opts.build_on = value()[0]
            step = 2
        elif arg == "--build-on-remote":
            print("WARNING: --build-on-remote is deprecated, use --build-on remote instead")
            opts.build_on = "remote"
        elif arg in ("--no-reboot", "--stop-after-disko"):
            kept = "kexec,disko,install" if arg == "--no-reboot" else "kexec,disko"
            print(f"WARNING: {arg} is deprecated, use --phases {kept} instead")
            opts.phases = set(kept.split(","))
        elif arg == "--generate-hardware-config":
            step = 3
        elif arg == "--debug":
            opts.debug = True
        elif arg in _FLAGS_WITH_VALUE:
            step = 2
        elif arg in _FLAGS_WITH_TWO_VALUES:
            step = 3
        elif arg in _FLAGS_ALONE:
            pass
        elif arg == "--lab-dir":
            opts.lab_dir = value()[0]
            step = 2
        elif arg == "--lab-interval":
            opts.interval = float(value()[0])
            step = 2
        elif arg == "--lab-fail":
            phase, _, code = value()[0].partition(":")
            opts.faults.append(Fault(phase=phase, exit_code=int(code or 1)))
            step = 2
        elif arg == "--lab-hang":
            opts.faults.append(Fault(phase=value()[0], hang=True))
            step = 2
        elif arg == "--store-paths":
            disko, toplevel = value(2)
            opts.store_paths = (disko, toplevel)
            step = 3
        elif arg == "--lab-build-delay":
            opts.build_delay = float(value()[0])
            step = 2
        elif arg == "--lab-hold-before-ssh":
            opts.hold = True
        elif arg == "--lab-give-up-after":
            opts.give_up_after = int(value()[0])
            step = 2
        elif not opts.target:
            opts.target = arg
        else:
            raise Exit(1, "Usage: nixos-anywhere [options] [<ssh-host>]")
        i += step
    if not opts.target:
        raise abort("ssh-host must be set")
    if not opts.flake and opts.store_paths is None:
        raise abort("--flake or --store-paths must be set")
    if not opts.flake:
        return opts
    if "#" in opts.flake:
        opts.flake, _, opts.flake_attr = opts.flake.rpartition("#")
    if not opts.flake_attr:
        raise Exit(
            1,
            "Please specify the name of the NixOS configuration to be installed, as a URI "
            "fragment in the flake-uri.\nFor example, to use the output "
            'nixosConfigurations.foo from the flake.nix, append "#foo" to the flake-uri.',
        )
    if not opts.flake_attr.startswith("nixosConfigurations."):
        opts.flake_attr = f'nixosConfigurations."{opts.flake_attr}".config'
    return opts


class Installer:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp())
        #: The script's copy of the ``-i`` key (``$sshKeyDir/nixos-anywhere``).
        self.key_copy = self.tmp / "nixos-anywhere"
        self.key = opts.key
        self.ssh_args = ["-o", "IdentitiesOnly=yes", "-i", str(self.key_copy)]
        self.ssh_args += ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        self.ssh_args += opts.ssh_args
        self.connection = opts.target
        self.host = opts.target.rpartition("@")[2]
        self.built: list[str] = []
        self.facts: dict[str, str] = {}
        self.child: subprocess.Popen[bytes] | None = None
        self.host_dir = self._lab_host_dir()
        self.faults = list(opts.faults)
        if self.host_dir is not None:
            self.faults += HostPaths(self.host_dir).read_state().faults

    def record(self) -> None:
        """Tell the lab this run's pid and temp dir (where the key copy lives)."""
        if not self.opts.lab_dir:
            return
        folder = Path(self.opts.lab_dir) / "stand-ins"
        folder.mkdir(exist_ok=True)
        entry = {
            "pid": os.getpid(),
            "tmp": str(self.tmp),
            "key_copy": str(self.key_copy),
            "builds": self.built,
        }
        (folder / f"{os.getpid()}.json").write_text(json.dumps(entry))

    def copy_key(self) -> None:
        """``cp -- "$sshPrivateKeyFile" "$sshKeyDir/nixos-anywhere"``, or SSH_PRIVATE_KEY."""
        fd = os.open(self.key_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as copy:
            if self.key:
                try:
                    copy.write(Path(self.key).read_bytes())
                except OSError:
                    raise Exit(
                        1, f"cp: cannot stat '{self.key}': No such file or directory"
                    ) from None
            elif os.environ.get("SSH_PRIVATE_KEY"):
                copy.write(os.environ["SSH_PRIVATE_KEY"].encode() + b"\n")
        if self.key or os.environ.get("SSH_PRIVATE_KEY"):
            public = subprocess.run(
                ["ssh-keygen", "-y", "-f", str(self.key_copy)], capture_output=True, check=False
            )
            self.key_copy.with_suffix(".pub").write_bytes(public.stdout)

    def build(self, output: str) -> str:
        """``nixBuild "${flake}#${flakeAttr}.system.build.<output>"`` with the lab's nix."""
        attr = self.opts.flake_attr
        installable = f"{self.opts.flake}#{attr}.system.build.{output}"
        if self.opts.build_delay > 0:
            time.sleep(self.opts.build_delay)
        try:
            path = lab_nix.build_installable(Path(self.opts.lab_dir), installable)
        except lab_nix.NixError as failed:
            raise Exit(failed.status, f"error: {failed}") from None
        self.built.append(output)
        self.record()
        return path

    def builds(self) -> tuple[str, str]:
        """What ``main`` does before anything touches the target: with ``--flake`` (and
        ``--build-on`` not remote) both closures are built, whatever ``--store-paths``
        said; ``--store-paths`` alone must name paths in the local store."""
        opts = self.opts
        if opts.store_paths is not None:
            self.machine_system(opts.store_paths[1])
        if opts.flake:
            disko, system = opts.store_paths or ("", "")
            if "disko" in opts.phases:
                disko = self.build("diskoScript")
            if "install" in opts.phases:
                system = self.build("toplevel")
            return disko, system
        if opts.store_paths is None:
            raise abort("--flake or --store-paths must be set")
        disko, system = opts.store_paths
        if not all(self.local(path).exists() for path in (disko, system)):
            raise abort(f"{disko} and {system} must be existing store-paths")
        return disko, system

    def local(self, path: str) -> Path:
        """A store path in the local store (the lab's builder store)."""
        return gen.in_store(Path(self.opts.lab_dir) / "builder", path)

    def machine_system(self, system: str) -> str:
        """``checkBuildLocally``: ``machineSystem="$(cat "${nixosSystem}"/system)"`` under
        ``set -e``."""
        try:
            return self.local(system).joinpath("system").read_text().strip()
        except OSError:
            raise Exit(1, f"cat: {system}/system: No such file or directory") from None

    def hold(self) -> None:
        """``--lab-hold-before-ssh``: wait (bounded) until the test releases this run."""
        if not self.opts.hold or not self.opts.lab_dir:
            return
        folder = Path(self.opts.lab_dir) / "stand-ins"
        (folder / f"{os.getpid()}.waiting").write_text("")
        deadline = time.monotonic() + 60
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def ssh_config(self) -> None:
        """``ssh -G`` as the script runs it first: its warnings go to stderr."""
        subprocess.run(
            ["ssh", "-G", *self.ssh_args, self.connection],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            check=False,
        )

    def _lab_host_dir(self) -> Path | None:
        if not self.opts.lab_dir:
            return None
        return find_host_dir(Path(self.opts.lab_dir), self.host)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def step(text: str) -> None:
        print(f"### {text} ###", flush=True)

    def checkpoint(self, phase: str) -> None:
        """Where an injected fault of ``phase`` strikes: hang, or fail with its code."""
        for fault in self.faults:
            if fault.phase != phase:
                continue
            if fault.hang:
                while True:
                    signal.pause()
            reason = fault.message or f"lab: injected failure in phase {phase}"
            raise Exit(fault.exit_code, f"aborted: {reason}")

    def ssh(
        self,
        *command: str,
        stdin: int | None = None,
        capture: bool = False,
        extra: tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["ssh", "-T", *extra, *self.ssh_args, self.connection, *command]
        if self.opts.debug:
            print(f"SSH COMMAND: {' '.join(argv)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE if capture else None,
        )
        self.child = proc
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return subprocess.CompletedProcess(argv, 124, out or b"", None)
        finally:
            self.child = None
        return subprocess.CompletedProcess(argv, proc.returncode, out or b"", None)

    def run(self, *command: str, stdin: int | None = None) -> None:
        """``runSsh`` under ``set -e``: a failing remote command ends the install."""
        status = self.ssh(*command, stdin=stdin).returncode
        if status != 0:
            raise Exit(status)

    def reachable(self) -> bool:
        probe = self.ssh("--", "exit", "0", extra=("-o", "ConnectTimeout=10"), timeout=10)
        return probe.returncode == 0

    def sleep(self) -> None:
        time.sleep(self.opts.interval)

    # --------------------------------------------------------------------- steps

    def upload_ssh_key(self) -> None:
        self.step("Uploading install SSH keys")
        self.checkpoint("ssh-keys")
        attempts = 0
        while True:
            print(
                "/usr/bin/ssh-copy-id: INFO: attempting to log in with the new key(s), "
                "to filter out any that are already installed",
                file=sys.stderr,
                flush=True,
            )
            if self.ssh("exit", extra=("-o", "ConnectTimeout=10")).returncode == 0:
                print(
                    "/usr/bin/ssh-copy-id: WARNING: All keys were skipped because they "
                    "already exist on the remote system.",
                    file=sys.stderr,
                    flush=True,
                )
                return
            attempts += 1
            if self.opts.give_up_after is not None and attempts >= self.opts.give_up_after:
                raise abort(f"lab: {self.host} unreachable after {attempts} attempts")
            self.sleep()

    def import_facts(self, first: bool) -> None:
        self.step("Gathering machine facts")
        if first:
            self.checkpoint("facts")
        with tempfile.TemporaryFile() as script:
            script.write(GET_FACTS.encode())
            script.seek(0)
            result = self.ssh(
                "enableDebug=",
                "sh",
                "--",
                stdin=script.fileno(),
                capture=True,
                extra=("-o", "ConnectTimeout=10"),
            )
        if result.returncode != 0:
            raise Exit(1)
        facts = dict(
            line.split("=", 1)
            for line in result.stdout.decode().splitlines()
            if "=" in line and line.split("=", 1)[1]
        )
        if not facts:
            raise abort(
                "Retrieving host facts via SSH failed. Check with --debug for the root cause,"
                " unless you have done so already"
            )
        for fact in ("isOs", "isArch", "isInstaller", "isContainer", "isRoot", "hasTar"):
            if fact not in facts:
                raise abort(f"Failed to retrieve fact {fact} from host")
        self.facts = facts

    def kexec(self) -> None:
        if self.facts.get("isInstaller") == "y":
            return
        self.step("Switching system into kexec")
        self.checkpoint("kexec")
        with tempfile.TemporaryFile() as script:
            script.write((KEXEC_SCRIPT % (self.opts.kexec_url or DEFAULT_KEXEC_URL)).encode())
            script.seek(0)
            self.run(
                'mkdir -p "$HOME/kexec" && cat > "$HOME/kexec/nixos-anywhere-kexec.sh"',
                stdin=script.fileno(),
            )
        if self.ssh('bash "$HOME/kexec/nixos-anywhere-kexec.sh"').returncode != 0:
            log = self.ssh('cat "$HOME/kexec/nixos-anywhere.log" 2>/dev/null', capture=True)
            if log.returncode == 0:
                print("Remote output log:", file=sys.stderr)
                print(log.stdout.decode(), file=sys.stderr)
            raise Exit(1, "Kexec failed")
        port = self.opts.post_kexec_port or self._lab_installer_port()
        if "-p" in self.ssh_args:
            self.ssh_args[self.ssh_args.index("-p") + 1] = port
        else:
            self.ssh_args += ["-p", port]
        while self.reachable():
            self.sleep()
        self.connection = f"root@{self.host}"
        while not self.reachable():
            self.sleep()
        self.import_facts(first=False)
        if self.facts.get("isInstaller") != "y":
            raise abort("Failed to kexec into NixOS installer")

    def _lab_installer_port(self) -> str:
        """Port 22 of the kexec image: in the lab, the host's SSH port."""
        if self.host_dir is None:
            return "22"
        return str(HostPaths(self.host_dir).read_state().ssh_port)

    def disko(self, disko_script: str) -> None:
        first = True
        for remote, local in self.opts.disk_keys:
            self.step(f"Uploading {local} to {remote}")
            if first:
                self.checkpoint("disko")
                first = False
            with open(local, "rb") as source:
                self.run(
                    f'umask 077; mkdir -p "{posixpath.dirname(remote)}"; cat > {remote}',
                    stdin=source.fileno(),
                )
        if self.opts.build_on == "remote":
            self.step("Building disko script")
            disko_script = self.build("diskoScript")
        self.step("Formatting hard drive with disko")
        if first:
            self.checkpoint("disko")
        self.run(disko_script)

    def install(self, system: str) -> None:
        if self.opts.build_on == "remote":
            self.step("Building the system closure")
            system = self.build("toplevel")
        else:
            self.step("Uploading the system closure")
        self.checkpoint("install")
        if self.opts.extra_files:
            self.step("Copying extra files")
            tar = subprocess.Popen(
                ["tar", "-C", self.opts.extra_files, "-cpf-", "."], stdout=subprocess.PIPE
            )
            assert tar.stdout is not None
            result = self.ssh("tar -C /mnt -xf- --no-same-owner", stdin=tar.stdout.fileno())
            tar.stdout.close()
            if tar.wait() != 0:
                raise Exit(tar.returncode)
            if result.returncode != 0:
                raise Exit(result.returncode)
            self.run("chmod 755 /mnt")
        if self.opts.chown:
            pairs = "".join(f"{path} {owner}\n" for path, owner in self.opts.chown)
            with tempfile.TemporaryFile() as stdin:
                stdin.write(pairs.encode())
                stdin.seek(0)
                self.run(
                    'while read file ownership; do chown -R "$ownership" "/mnt/$file"; done',
                    stdin=stdin.fileno(),
                )
        self.step("Installing NixOS")
        script = INSTALL_SCRIPT % ("y" if self.opts.copy_host_keys else "n", system)
        with tempfile.TemporaryFile() as stdin:
            stdin.write(script.encode())
            stdin.seek(0)
            self.run("sh", stdin=stdin.fileno())

    def reboot(self) -> None:
        self.step("Rebooting")
        self.checkpoint("reboot")
        with tempfile.TemporaryFile() as stdin:
            stdin.write(REBOOT_SCRIPT.encode())
            stdin.seek(0)
            self.run("sh", stdin=stdin.fileno())
        self.step("Waiting for the machine to become unreachable due to reboot")
        while self.reachable():
            self.sleep()

    def main(self) -> int:
        opts = self.opts
        self.record()
        disko_script, system = opts.store_paths or ("", "")
        if opts.build_on != "remote":
            disko_script, system = self.builds()
            opts.build_on = "local"
        if "kexec" not in opts.phases:
            self.connection = f"root@{self.host}"
        self.ssh_config()
        self.copy_key()
        self.hold()
        self.upload_ssh_key()
        self.import_facts(first=True)
        if "kexec" in opts.phases:
            self.kexec()
        if "disko" in opts.phases:
            self.disko(disko_script)
        if "install" in opts.phases:
            self.install(system)
        if "reboot" in opts.phases:
            self.reboot()
        self.step("Done!")
        return 0

    def terminate(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT (a cancelled job): stop the running ssh too, then exit."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
        raise Exit(128 + signum)


def main(argv: list[str]) -> int:
    installer: Installer | None = None
    try:
        opts = parse(argv)
        for fault in opts.faults:
            if fault.phase not in PHASES:
                raise abort(f"lab: unknown phase {fault.phase}")
        installer = Installer(opts)
        signal.signal(signal.SIGTERM, installer.terminate)
        signal.signal(signal.SIGINT, installer.terminate)
        return installer.main()
    except Exit as done:
        sys.stdout.flush()
        if done.message:
            print(done.message, file=sys.stderr, flush=True)
        return done.status
    finally:
        if installer is not None:
            shutil.rmtree(installer.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
