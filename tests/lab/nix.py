"""Stand-in for ``nix`` (2.28, the version NixOS 25.05 ships), the lab's only one: ``nix
build`` of a lab flake's outputs (the install's and the update's) and ``nix copy --to
ssh://…`` through the real ssh.

Run it as ``Lab.nix_command()`` returns it: ``--lab-dir DIR`` first, then optionally
``--lab-build-delay SECONDS`` (every build takes that long more: a real evaluation), then
the real arguments. The builder's store is ``DIR/builder/nix/store`` (the stand-in
nixos-anywhere builds into it too). As with a nix.conf that does not enable them (Nix's
default), ``build``, ``copy`` and ``eval`` are refused without ``nix-command`` among the
experimental features (``--extra-experimental-features``, ``--experimental-features`` or
``NIX_CONFIG``), and a flake installable without ``flakes``, with Nix's own error.

- ``nix build [--no-link] [--print-out-paths]
  FLAKE#nixosConfigurations."ATTR".config.system.build.toplevel`` (or ``.diskoScript``):
  ``building '…drv'...`` lines on stderr over the attribute's ``build_seconds``, the
  store path on stdout; the same configuration gives the same
  path (already built: no build lines). A configuration with ``fails`` ends like Nix
  (``error: builder for '…' failed with exit code 1``, exit 1); an unknown attribute or
  output gives Nix's ``does not provide attribute`` error.
- ``nix copy --to ssh://[USER@]HOST PATH...``: runs ``ssh HOST -x -a $NIX_SSHOPTS --
  nix-store --serve --write`` as Nix does (NIX_SSHOPTS split on whitespace), so host-key
  pinning fails as OpenSSH fails (``Host key verification failed.``, then ``error: cannot
  connect to 'HOST'``, exit 1). As in Nix 2.28, a port goes in NIX_SSHOPTS (``-p PORT``):
  ``ssh://host:port`` reaches ssh as the host name ``host:port`` and fails to resolve.
  Store URL settings: ``?ssh-key=PATH`` (``-i``), ``compress=true`` (``-C``); others ignored.
- ``nix path-info --recursive --size PATH...``: each path of the closure, padded to the
  longest, a tab and its size in 11 columns, as Nix prints them (``--json`` is not simulated).
- Anything else: ``error: 'X' is not a recognised command``, exit 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab import generations as gen

VERSION = "nix (Nix) 2.28.3"
_GLOBAL_WITH_VALUE = {
    "--extra-experimental-features",
    "--experimental-features",
    "--log-format",
    "--max-jobs",
    "-j",
    "--cores",
    "--builders",
    "--store",
    "--eval-store",
}
_GLOBAL_WITH_TWO = {"--option", "--override-input"}
_GLOBAL_FLAGS = {
    "-L",
    "--print-build-logs",
    "--show-trace",
    "-v",
    "--verbose",
    "--quiet",
    "--accept-flake-config",
    "--no-write-lock-file",
    "--refresh",
    "--impure",
    "--keep-going",
    "--no-update-lock-file",
}
_OUTPUTS = ("toplevel", "diskoScript")


class NixError(Exception):
    """Print ``error: …`` and exit with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def split_args(argv: list[str]) -> tuple[list[str], set[str]]:
    """Drop Nix's global options; return the remaining words and the flags seen."""
    words: list[str] = []
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_WITH_VALUE:
            if arg.endswith("experimental-features") and i + 1 < len(argv):
                flags.update(f"feature:{f}" for f in argv[i + 1].split())
            i += 2
            continue
        if arg in _GLOBAL_WITH_TWO:
            i += 3
            continue
        if arg in _GLOBAL_FLAGS:
            i += 1
            continue
        if arg.startswith("-"):
            flags.add(arg)
            if arg in ("--to", "--from", "-o", "--out-link", "--profile"):
                words.append(arg)
        else:
            words.append(arg)
        i += 1
    return words, flags


def require(feature: str, flags: set[str]) -> None:
    """Refuse as Nix does when ``feature`` is not an enabled experimental feature."""
    enabled = {f.removeprefix("feature:") for f in flags if f.startswith("feature:")}
    for line in os.environ.get("NIX_CONFIG", "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("experimental-features", "extra-experimental-features"):
            enabled.update(value.split())
    if feature not in enabled:
        raise NixError(
            f"experimental Nix feature '{feature}' is disabled; add "
            f"'--extra-experimental-features {feature}' to enable it"
        )


# ------------------------------------------------------------------------------ build


def parse_attr_path(text: str) -> list[str]:
    """``nixosConfigurations."a-b".config`` → ["nixosConfigurations", "a-b", "config"]."""
    parts: list[str] = []
    for match in re.finditer(r'"([^"]*)"|([^."]+)', text):
        parts.append(match.group(1) if match.group(1) is not None else match.group(2))
    return parts


def flake_configs(ref: str) -> tuple[str, dict[str, gen.LabConfig]]:
    """The flake's printed ref (``path:/…``) and its lab configurations."""
    if ":" in ref and not ref.startswith(("path:", "git+file:")):
        raise NixError(f"unable to download '{ref}': Could not resolve host name (6)")
    folder = Path(ref.removeprefix("path:").removeprefix("git+file://")).resolve()
    if not (folder / "flake.nix").is_file():
        raise NixError(f"path '{folder}/flake.nix' does not exist")
    try:
        raw = json.loads((folder / "lab-flake.json").read_text())["nixosConfigurations"]
    except (OSError, ValueError, KeyError):
        raise NixError(f"lab: {folder} has no lab-flake.json") from None
    return f"path:{folder}", {attr: gen.LabConfig.from_json(c) for attr, c in raw.items()}


def build_installable(lab_dir: Path, installable: str) -> str:
    """Build ``FLAKE#nixosConfigurations."ATTR".config.system.build.OUTPUT`` into the
    builder's store; its store path (NixError as Nix fails)."""
    ref, _, attr_text = installable.partition("#")
    printed, configs = flake_configs(ref or ".")
    path = parse_attr_path(attr_text)
    known = (
        len(path) == 6
        and path[0] == "nixosConfigurations"
        and path[1] in configs
        and path[2:5] == ["config", "system", "build"]
        and path[5] in _OUTPUTS
    )
    if not known:
        raise NixError(
            f"flake '{printed}' does not provide attribute "
            f"'packages.x86_64-linux.{attr_text}', "
            f"'legacyPackages.x86_64-linux.{attr_text}' or '{attr_text}'"
        )
    return _realise(lab_dir, path[1], configs[path[1]], path[5])


def build(lab_dir: Path, words: list[str], flags: set[str], delay: float = 0.0) -> int:
    installables = [w for w in words if "#" in w or w.startswith((".", "/", "path:"))]
    if not installables:
        raise NixError('lab: nix build needs FLAKE#nixosConfigurations."NAME".config…')
    if any("#" in w for w in installables):
        require("flakes", flags)
    time.sleep(delay)
    outputs = [build_installable(lab_dir, installable) for installable in installables]
    if "--print-out-paths" in flags:
        sys.stdout.write("".join(p + "\n" for p in outputs))
        sys.stdout.flush()
    if "--no-link" not in flags:
        link = Path("result")
        if link.is_symlink():
            link.unlink()
        link.symlink_to(gen.in_store(lab_dir / "builder", outputs[0]))
    return 0


def _realise(lab_dir: Path, attr: str, config: gen.LabConfig, output: str) -> str:
    root = lab_dir / "builder"
    built = gen.closure(attr, config)
    if output == "diskoScript":
        path = f"{gen.STORE}/{gen.store_hash('disko', built.toplevel)}-disko"
        target = gen.in_store(root, path)
        if not target.exists():
            _build_lines(config, [gen.drv_of(path)])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("#!/bin/sh\n# lab disko script\n")
        return path
    if gen.in_store(root, built.toplevel).exists():
        return built.toplevel
    missing = [p for p in built.paths if not gen.in_store(root, p).exists()]
    etc = f"{gen.STORE}/{gen.store_hash('etc', built.toplevel)}-etc"
    drvs = [gen.drv_of(p) for p in missing[:-1]] + [gen.drv_of(etc), built.drv]
    _build_lines(config, drvs)
    gen.materialise(root, built)
    return built.toplevel


def _build_lines(config: gen.LabConfig, drvs: list[str]) -> None:
    count = len(drvs)
    err(f"these {count} derivation{'s' if count != 1 else ''} will be built:\n")
    err("".join(f"  {d}\n" for d in drvs))
    pause = config.build_seconds / max(count, 1)
    for n, drv in enumerate(drvs):
        err(f"building '{drv}'...\n")
        time.sleep(pause)
        if config.fails and n == count - 2:
            err(
                f"error: builder for '{drv}' failed with exit code 1;\n"
                "       last 2 log lines:\n"
                "       > building etc\n"
                "       > error: lab: this configuration does not build\n"
                f"       For full logs, run 'nix log {drv}'.\n"
            )
            raise NixError(f"1 dependencies of derivation '{drvs[-1]}' failed to build", status=1)


# ------------------------------------------------------------------------------- copy


def copy(lab_dir: Path, words: list[str], flags: set[str]) -> int:
    if "--to" not in words:
        raise NixError("lab: only `nix copy --to ssh://HOST PATH...` is supported")
    at = words.index("--to")
    if at + 1 >= len(words):
        raise NixError("flag '--to' requires 1 argument")
    url = words[at + 1]
    paths = [w for w in words[at + 2 :] + words[:at] if w.startswith("/")]
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ssh", "ssh-ng"):
        raise NixError(f"lab: only ssh:// stores are supported, not '{url}'")
    if parsed.scheme == "ssh-ng":
        raise NixError("lab: use ssh:// (the legacy SSH store), as nixos-rebuild does")
    authority = parsed.netloc
    root = lab_dir / "builder"
    closure: list[str] = []
    for path in paths:
        found = gen.store_closure(root, path)
        if found is None:
            raise NixError(f"path '{path}' is not valid")
        closure += [p for p in found if p not in closure]
    ssh = ["ssh", authority, "-x", "-a", *os.environ.get("NIX_SSHOPTS", "").split()]
    settings = urllib.parse.parse_qs(parsed.query)
    if "ssh-key" in settings:
        ssh += ["-i", settings["ssh-key"][-1]]
    if settings.get("compress", ["false"])[-1] == "true":
        ssh.append("-C")
    ssh += ["--", "nix-store", "--serve", "--write"]
    proc = subprocess.Popen(ssh, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def terminate(signum: int, frame: object) -> None:
        proc.kill()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        hello = proc.stdout.readline().decode().strip()
        if hello != "lab-nix-serve 1":
            raise NixError(f"cannot connect to '{authority}'")
        proc.stdin.write(json.dumps({"query": closure}).encode() + b"\n")
        proc.stdin.flush()
        valid = set(json.loads(proc.stdout.readline() or b"{}").get("valid", []))
        missing = [p for p in closure if p not in valid]
        if missing:
            err(f"copying {len(missing)} path{'s' if len(missing) != 1 else ''}...\n")
        shown = f"{parsed.scheme}://{authority}"
        for path in missing:
            err(f"copying path '{path}' to '{shown}'...\n")
        proc.stdin.write(json.dumps({"import": len(missing)}).encode() + b"\n")
        if missing:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as archive:
                for path in missing:
                    archive.add(gen.in_store(root, path), arcname=path.rsplit("/", 1)[1])
        proc.stdin.close()
        done = proc.stdout.readline().decode().strip()
        if proc.wait() != 0 or done != "ok":
            raise NixError(f"failed to add paths to '{shown}'")
    except BrokenPipeError:
        raise NixError(f"cannot connect to '{authority}'") from None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return 0


# -------------------------------------------------------------------------- path-info


def path_info(root: Path, words: list[str], flags: set[str]) -> int:
    """``nix path-info --recursive --size PATH...`` (``-r``, ``-s``), as Nix prints it."""
    recursive = bool(flags & {"--recursive", "-r", "-rs", "-sr"})
    sized = bool(flags & {"--size", "-s", "-rs", "-sr"})
    if not (recursive and sized) or flags & {"--json", "-S", "--closure-size"}:
        raise NixError("lab: only `nix path-info --recursive --size PATH...` is simulated")
    if not words:
        raise NixError("lab: nix path-info needs a store path")
    out = []
    for path in words:
        listed = gen.path_info_lines(root, path)
        if listed is None:
            raise NixError(f"path '{path}' is not valid")
        out.append(listed)
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    return 0


# ------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if argv[:1] != ["--lab-dir"] or len(argv) < 2:
        err("lab nix: start me as Lab.nix_command() gives (--lab-dir DIR first)\n")
        return 2
    lab_dir = Path(argv[1])
    delay = 0.0
    if argv[2:3] == ["--lab-build-delay"]:
        delay, argv = float(argv[3]), argv[:2] + argv[4:]
    words, flags = split_args(argv[2:])
    try:
        if "--version" in flags and not words:
            print(VERSION)
            return 0
        if not words:
            raise NixError("no subcommand specified")
        command, rest = words[0], words[1:]
        if command in ("build", "copy", "eval", "path-info"):
            require("nix-command", flags)
        if command == "build":
            return build(lab_dir, rest, flags, delay)
        if command == "copy":
            return copy(lab_dir, rest, flags)
        if command == "path-info":
            return path_info(lab_dir / "builder", rest, flags)
        if command == "eval":
            raise NixError("lab: `nix eval` is not simulated")
        raise NixError(f"'{command}' is not a recognised command")
    except NixError as failure:
        err(f"error: {failure}\n")
        if "not a recognised command" in str(failure):
            err("Try 'nix --help' for more information.\n")
        return failure.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
