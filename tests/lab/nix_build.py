"""A stand-in ``nix`` for ``nix build``: the store paths of a lab flake's closures.

``nix_build.py [--lab-delay SECONDS] build --no-link --print-out-paths
<flake>#nixosConfigurations."<attr>".config.system.build.<output>…`` prints one store path
per installable, the same ones the stand-in nixos-anywhere builds itself, after the delay a
real build takes; an unknown attribute fails with Nix's own error. Only ``build`` exists
here (``nix copy`` for updates is another stand-in's job).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab.nixos_anywhere import Exit, Flake

_INSTALLABLE = re.compile(
    r'^nixosConfigurations\.(?:"([^"]+)"|([A-Za-z0-9_-]+))\.config\.system\.build\.(\w+)$'
)


def main(argv: list[str]) -> int:
    delay = 0.0
    if argv[:1] == ["--lab-delay"]:
        delay, argv = float(argv[1]), argv[2:]
    if argv[:1] != ["build"]:
        print(f"error: lab: this stand-in nix only builds, not {argv[:1]}", file=sys.stderr)
        return 1
    installables = [a for a in argv[1:] if not a.startswith("-")]
    if "--print-out-paths" not in argv or not installables:
        print("error: lab: expected --print-out-paths and an installable", file=sys.stderr)
        return 1
    paths = []
    try:
        for installable in installables:
            ref, _, attr = installable.partition("#")
            match = _INSTALLABLE.match(attr)
            if not match:
                raise Exit(1, f"error: lab: cannot build {installable!r}")
            name, output = match.group(1) or match.group(2), match.group(3)
            paths.append(Flake(ref, name).build(output))
    except Exit as failed:
        print(failed.message, file=sys.stderr)
        return failed.status
    time.sleep(delay)
    for path in paths:
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
