"""Store paths, system closures and the system profile, shared by the stand-in ``nix`` and
the lab shell.

A lab flake attribute is a ``LabConfig``; its toplevel is a store path whose hash depends on
its content only, so building the same configuration twice gives the same path. A closure
is four store entries: the toplevel (``kernel``, ``initrd``, ``kernel-modules`` links,
``nixos-version``, ``bin/switch-to-configuration``) and the kernel, initrd and modules.

Links are stored relative (``../X``) inside a store or profile folder so that the real
filesystem never follows them out of the host's folder; ``sim_readlink`` prints them as
the real tools print them (store targets absolute, ``system-N-link`` as is).
Standard library only: the lab shell imports it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shutil
import time
from pathlib import Path
from typing import Any

STORE = "/nix/store"
PROFILE = "/nix/var/nix/profiles/system"
NIXOS_RELEASE = "25.05.20250612.9e83b64"
DEFAULT_KERNEL = "6.12.33"
SYSTEM_FILE = "lab-system.json"
#: Packages (store name, bytes) in every lab system unless a configuration says otherwise:
#: what ``nix path-info --size`` and so the closure difference see.
DEFAULT_PACKAGES: tuple[tuple[str, int], ...] = (
    ("openssl-3.0.13", 40960),
    ("bash-5.2p37", 20480),
    ("coreutils-9.5", 30720),
)
_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """How a lab flake attribute behaves when built, copied and activated.

    ``version`` changes the configuration (and so its store path) without changing how it
    behaves; ``kernel`` other than the default changes kernel, initrd and kernel-modules;
    ``breaks_ssh`` stops the system sshd on activation (until a good one is activated) and
    the activation fails (sshd.service failed, exit 4); ``blocks_ssh`` makes the system
    unreachable over ssh while the activation succeeds (a firewall that shuts port 22);
    ``fails`` makes ``nix build`` fail; ``build_seconds`` is how long building takes.
    """

    version: str = "1"
    kernel: str = DEFAULT_KERNEL
    breaks_ssh: bool = False
    blocks_ssh: bool = False
    fails: bool = False
    build_seconds: float = 0.0
    packages: tuple[tuple[str, int], ...] = DEFAULT_PACKAGES

    def identity(self) -> dict[str, Any]:
        """What the store path depends on (not the build time)."""
        return {
            "version": self.version,
            "kernel": self.kernel,
            "breaks_ssh": self.breaks_ssh,
            "blocks_ssh": self.blocks_ssh,
            "fails": self.fails,
            "packages": [list(p) for p in self.packages],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LabConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        chosen = {k: v for k, v in raw.items() if k in fields}
        if "packages" in chosen:
            chosen["packages"] = tuple((str(n), int(s)) for n, s in chosen["packages"])
        return cls(**chosen)


def store_hash(*parts: str) -> str:
    """32 characters of Nix's base32 alphabet, derived from ``parts``."""
    import hashlib

    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return "".join(_NIX32[b % 32] for b in digest[:32])


@dataclasses.dataclass(frozen=True)
class Closure:
    """The store paths of one built system."""

    attr: str
    config: LabConfig
    toplevel: str
    kernel: str
    initrd: str
    modules: str
    packages: tuple[str, ...] = ()

    @property
    def paths(self) -> list[str]:
        return [*self.packages, self.kernel, self.initrd, self.modules, self.toplevel]

    @property
    def drv(self) -> str:
        return drv_of(self.toplevel)


def drv_of(path: str) -> str:
    name = path.removeprefix(STORE + "/")
    return f"{STORE}/{store_hash('drv', name)}-{name.split('-', 1)[1]}.drv"


def closure(attr: str, config: LabConfig) -> Closure:
    """Where the configuration's closure lives in a store (no files are made)."""
    kernel = config.kernel
    ident = json.dumps({"attr": attr, **config.identity()}, sort_keys=True)
    return Closure(
        attr=attr,
        config=config,
        toplevel=f"{STORE}/{store_hash('toplevel', ident)}-nixos-system-{attr}-{NIXOS_RELEASE}",
        kernel=f"{STORE}/{store_hash('kernel', kernel)}-linux-{kernel}",
        initrd=f"{STORE}/{store_hash('initrd', kernel)}-initrd-linux-{kernel}",
        modules=f"{STORE}/{store_hash('modules', kernel)}-linux-{kernel}-modules",
        packages=tuple(package_path(name, size) for name, size in config.packages),
    )


def package_path(name: str, size: int) -> str:
    return f"{STORE}/{store_hash('package', name, str(size))}-{name}"


def nar_size(root: Path, path: str) -> int:
    """The lab's NAR size of a store entry: its files' bytes and its links' targets."""
    entry = in_store(root, path)
    if entry.is_symlink() or entry.is_file():
        return len(os.readlink(entry)) if entry.is_symlink() else entry.stat().st_size
    total = 0
    for folder, dirs, files in os.walk(entry):
        for name in files + dirs:
            item = Path(folder) / name
            if item.is_symlink():
                total += len(os.readlink(item))
            elif item.is_file():
                total += item.stat().st_size
    return total


def path_info_lines(root: Path, path: str) -> str | None:
    """``nix path-info --recursive --size PATH`` as Nix prints it (each path padded to the
    longest, a tab, the size in 11 columns); None: not a valid path."""
    paths = store_closure(root, path)
    if paths is None:
        return None
    width = max(len(p) for p in paths)
    return "".join(f"{p.ljust(width)}\t{nar_size(root, p):11d}\n" for p in sorted(paths))


def store_dir(root: Path) -> Path:
    """The folder holding ``/nix/store`` of a filesystem rooted at ``root``."""
    return root / STORE.lstrip("/")


def in_store(root: Path, path: str) -> Path:
    return store_dir(root) / path.removeprefix(STORE + "/")


def _name(path: str) -> str:
    return path.removeprefix(STORE + "/")


def materialise(root: Path, built: Closure) -> None:
    """Write the closure into the store under ``root`` (entries already there are kept)."""
    store = store_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    kernel = built.config.kernel

    def make(path: str, fill: Any) -> None:
        final = in_store(root, path)
        if final.exists() or final.is_symlink():
            return
        tmp = store / f".tmp-{os.getpid()}-{time.monotonic_ns()}-{_name(path)}"
        tmp.mkdir()
        fill(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    sizes = [size for _, size in built.config.packages]
    for size, path in zip(sizes, built.packages, strict=True):
        make(path, lambda d, size=size: (d / "data").write_bytes(b"p" * size))
    make(built.kernel, lambda d: (d / "bzImage").write_bytes(b"lab kernel " + kernel.encode()))
    make(built.initrd, lambda d: (d / "initrd").write_bytes(b"lab initrd " + kernel.encode()))

    def modules(d: Path) -> None:
        (d / "lib/modules" / kernel).mkdir(parents=True)

    make(built.modules, modules)

    def toplevel(d: Path) -> None:
        os.symlink(f"../{_name(built.kernel)}/bzImage", d / "kernel")
        os.symlink(f"../{_name(built.initrd)}/initrd", d / "initrd")
        os.symlink(f"../{_name(built.modules)}", d / "kernel-modules")
        (d / "nixos-version").write_text(NIXOS_RELEASE + "\n")
        (d / "system").write_text("x86_64-linux")  # what nixos-anywhere reads without --flake
        (d / "bin").mkdir()
        (d / "bin/switch-to-configuration").write_text("#! lab switch-to-configuration\n")
        (d / "bin/switch-to-configuration").chmod(0o555)
        system = {"attr": built.attr, "closure": built.paths, **dataclasses.asdict(built.config)}
        (d / SYSTEM_FILE).write_text(json.dumps(system, sort_keys=True) + "\n")

    make(built.toplevel, toplevel)


def default_closure(path: str) -> Closure:
    """A closure for a toplevel path made elsewhere (the stand-in nixos-anywhere)."""
    name = _name(path)
    attr = name.split("-", 1)[1].removeprefix("nixos-system-") if "-" in name else name
    plain = closure(attr, LabConfig())
    return dataclasses.replace(plain, toplevel=path)


def system_info(root: Path, toplevel: str) -> dict[str, Any] | None:
    """What ``materialise`` recorded about a toplevel in this store, if it is one."""
    try:
        raw: dict[str, Any] = json.loads((in_store(root, toplevel) / SYSTEM_FILE).read_text())
    except (OSError, ValueError):
        return None
    return raw


def store_closure(root: Path, path: str) -> list[str] | None:
    """The closure of ``path`` in the store under ``root`` (None: not a valid path)."""
    real = in_store(root, path)
    if not path.startswith(STORE + "/") or "/" in _name(path) or not real.exists():
        return None
    info = system_info(root, path)
    if info is None:
        return [path]
    paths = [str(p) for p in info.get("closure", [path])]
    return [p for p in paths if in_store(root, p).exists()] or [path]


# ------------------------------------------------------------------------ the profile


@dataclasses.dataclass(frozen=True)
class Generation:
    """One ``system-N-link``: its number, store path and creation time (time.time())."""

    number: int
    path: str
    created: float
    current: bool


def profile_dir(root: Path) -> Path:
    return root / posixpath.dirname(PROFILE).lstrip("/")


def generations(root: Path) -> list[Generation]:
    """The system profile's generations, oldest first."""
    folder = profile_dir(root)
    current = current_generation(root)
    found = []
    for link in folder.glob("system-*-link") if folder.is_dir() else []:
        number = link.name.removeprefix("system-").removesuffix("-link")
        if not number.isdigit() or not link.is_symlink():
            continue
        target = posixpath.normpath(posixpath.join(posixpath.dirname(PROFILE), os.readlink(link)))
        created = link.lstat().st_mtime
        found.append(Generation(int(number), target, created, int(number) == current))
    return sorted(found, key=lambda g: g.number)


def current_generation(root: Path) -> int | None:
    link = profile_dir(root) / "system"
    if not link.is_symlink():
        return None
    number = os.readlink(link).removeprefix("system-").removesuffix("-link")
    return int(number) if number.isdigit() else None


def _relative_store_target(link_dir: str, path: str) -> str:
    return posixpath.relpath(path, link_dir)


def set_profile(root: Path, path: str) -> int:
    """``nix-env -p PROFILE --set PATH``: a new generation, made current; its number."""
    folder = profile_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    existing = generations(root)
    number = max((g.number for g in existing), default=0) + 1
    link = folder / f"system-{number}-link"
    os.symlink(_relative_store_target(posixpath.dirname(PROFILE), path), link)
    switch_generation(root, number)
    return number


def switch_generation(root: Path, number: int) -> None:
    folder = profile_dir(root)
    tmp = folder / f".system-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(f"system-{number}-link", tmp)
    os.replace(tmp, folder / "system")


def install(root: Path, built: Closure) -> None:
    """What nixos-install leaves: the closure in the store and generation 1."""
    materialise(root, built)
    if not generations(root):
        set_profile(root, built.toplevel)


def set_run_link(root: Path, name: str, path: str) -> None:
    """``/run/current-system`` or ``/run/booted-system`` pointing at ``path``."""
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".{name}-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(posixpath.relpath(path, "/run"), tmp)
    os.replace(tmp, run / name)


def run_link(root: Path, name: str) -> str | None:
    link = root / "run" / name
    if not link.is_symlink():
        return None
    return posixpath.normpath(posixpath.join("/run", os.readlink(link)))


def simulated(root: Path, real: Path) -> str:
    """The path on the simulated host of ``real`` (inside ``root``), links resolved."""
    resolved = os.path.realpath(real)
    relative = os.path.relpath(resolved, os.path.realpath(root))
    return "/" if relative == "." else "/" + relative


def sim_readlink(root: Path, real: Path) -> str | None:
    """What ``readlink`` prints for the link stored at ``real`` (None: not a link)."""
    if not real.is_symlink():
        return None
    target = os.readlink(real)
    parent = simulated(root, real.parent)
    absolute = posixpath.normpath(posixpath.join(parent, target))
    if absolute.startswith(STORE + "/") or target.startswith("/"):
        return absolute
    return target
