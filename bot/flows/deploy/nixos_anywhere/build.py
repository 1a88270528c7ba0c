"""Building the disko script and the system closure before nixos-anywhere starts.

nixos-anywhere builds both itself before its first ssh, which can take minutes; a host key
checked before it starts is stale by the time it connects (docs/nixos-anywhere.md). So the
bot builds them first, checks the key, and hands the paths over with ``--store-paths``:
nixos-anywhere then connects at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OUTPUTS = ("diskoScript", "toplevel")
_STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]{1,200}")


def installable(flake: str, attr: str, output: str) -> str:
    """``<flake>#nixosConfigurations."<attr>".config.system.build.<output>``, as the
    script names it."""
    return f'{flake}#nixosConfigurations."{attr}".config.system.build.{output}'


def build_argv(nix: Sequence[str], *, flake: str, attr: str) -> list[str]:
    """One ``nix build`` for both outputs; it prints their paths in this order."""
    if not nix or any(not word for word in nix):
        raise ValueError("DEPLOYBOT_NIX is empty")
    targets = [installable(flake, attr, output) for output in OUTPUTS]
    return [*nix, "build", "--no-link", "--print-out-paths", "-L", *targets]


def store_paths(lines: Sequence[str]) -> tuple[str, str]:
    """The two store paths ``nix build --print-out-paths`` printed (build logs aside);
    ValueError unless there are exactly two."""
    # stdout and stderr arrive merged: nix's own lists of what it will build name
    # derivations, indented ("  /nix/store/…drv"); the printed outputs stand alone.
    found = [
        line.rstrip()
        for line in lines
        if _STORE_PATH.fullmatch(line.rstrip()) and not line.rstrip().endswith(".drv")
    ]
    if len(found) != len(OUTPUTS):
        raise ValueError(f"expected {len(OUTPUTS)} store paths, nix printed {len(found)}")
    return found[0], found[1]
