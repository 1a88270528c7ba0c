"""A NixOS-shaped system in a Debian guest's real Nix store, and the flake the bot builds
new ones from.

The guest has Debian's ``nix-bin``: its ``/nix/store`` and its system profile
``/nix/var/nix/profiles/system`` are real, so ``nix copy --to ssh://`` really runs
``nix-store --serve`` there and ``nix-env --set`` / ``--switch-generation`` /
``--list-generations`` make and list real generations. A generation is a store path made
by ``nixos/make-system.sh``: the links and files the bot reads (kernel, initrd,
kernel-modules, nixos-version, sw/bin) and a ``bin/switch-to-configuration`` that points
``/run/current-system`` at it and starts or stops the real ``ssh.service``. A boot unit
(``nixos-links.service``) sets ``/run/booted-system`` and ``/run/current-system`` from the
profile, as NixOS's stage 2 does. No nixpkgs: the image's first generation is added with
``nix-store --add``; the bot's flake makes the others with ``derivation { builder =
"/bin/sh"; }`` in a store of the test's own (``bot_nix``).
"""

from __future__ import annotations

import inspect
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.vm.guest import Root

FILES = Path(__file__).parent / "nixos"
MAKE_SYSTEM = FILES / "make-system.sh"
PROFILE = "/nix/var/nix/profiles/system"
#: The image's first generation.
INSTALLED = "installed"
#: The flake's configurations: attribute → (label, sshd).
CONFIGS = {
    "good": ("good", "on"),
    "good2": ("good2", "on"),
    "nossh": ("nossh", "off"),
    "installed": (INSTALLED, "on"),
}


def recipe() -> str:
    """What of this goes into an image (the flake and the bot's side do not)."""
    files = "".join(p.read_text() for p in sorted(FILES.iterdir()))
    return files + inspect.getsource(make_system) + inspect.getsource(install)


def make_system(out: Path, label: str, sshd: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "out": str(out), "label": label, "sshd": sshd}
    subprocess.run(["/bin/sh", str(MAKE_SYSTEM)], check=True, env=env)


def install(root: Root) -> None:
    """The first generation in the root's store and profile, and the boot unit."""
    root.chroot(["groupadd", "--system", "nixbld"])  # Nix's build users' group, as on NixOS
    staged = root.path / "tmp" / f"nixos-system-vmguest-{INSTALLED}"
    make_system(staged, INSTALLED, "on")
    path = subprocess.run(
        ["chroot", str(root.path), "nix-store", "--add", f"/tmp/{staged.name}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.rmtree(staged)
    root.chroot(["nix-env", "-p", PROFILE, "--set", path])
    unit = (FILES / "nixos-links.service").read_text()
    root.write("/etc/systemd/system/nixos-links.service", unit)
    root.chroot(["systemctl", "enable", "nixos-links.service"])


def write_flake(folder: Path) -> str:
    """A flake of the lab's configurations at ``folder``; its ``path:`` reference."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MAKE_SYSTEM, folder / "make-system.sh")
    configs = "\n".join(
        f'    nixosConfigurations.{attr}.config.system.build.toplevel = mk "{label}" "{sshd}";'
        for attr, (label, sshd) in CONFIGS.items()
    )
    (folder / "flake.nix").write_text(
        "{\n  outputs = { self }: let\n"
        "    mk = label: sshd: derivation {\n"
        '      name = "nixos-system-vmguest-${label}";\n'
        '      system = "x86_64-linux";\n'
        '      builder = "/bin/sh";\n'
        "      args = [ ./make-system.sh ];\n"
        "      inherit label sshd;\n"
        "    };\n"
        f"  in {{\n{configs}\n  }};\n}}\n"
    )
    return f"path:{folder}"


def bot_nix(store: Path) -> str:
    """``DEPLOYBOT_NIX`` for a bot whose store is ``store`` (a chroot store in the test's
    folder, not this machine's /nix), offline; its builders see the host's /usr for
    /bin/sh (a chroot store always builds in Nix's sandbox). Through ``nix_shim``: Debian's
    Nix 2.8 has no ``--print-out-paths``."""
    words = [
        sys.executable,
        str(Path(__file__).parent / "nix_shim.py"),
        "nix",
        "--store",
        str(store),
        "--option",
        "substituters",
        " ",  # none (a word of its own: the bot refuses an empty one)
        "--option",
        "sandbox-paths",
        "/usr /bin /lib /lib64",
    ]
    return shlex.join(words)
