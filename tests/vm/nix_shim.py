"""Debian 12's ``nix`` (2.8) as the bot's: ``nix build --print-out-paths`` of ONE
installable becomes ``nix build --json`` and the path is printed; everything else (``nix
copy``, ``nix path-info``) runs unchanged.

Why a shim: Nix 2.8 has no ``--print-out-paths`` (``error: unrecognised flag``), and its
``--json`` lists the built paths sorted, not in the order of the installables, so the bot
cannot read several from it either; with one installable there is nothing to order. The
VM lab's updates build one system each. Run as ``python3 tests/vm/nix_shim.py nix ARGS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    if "build" not in argv or "--print-out-paths" not in argv:
        os.execvp(argv[0], argv)  # noqa: S606 (nix itself, its arguments as given)
    args = [word for word in argv if word != "--print-out-paths"]
    if sum("#" in word for word in args) != 1:
        print("nix_shim: Nix 2.8 cannot say which path is which installable's", file=sys.stderr)
        return 1
    done = subprocess.run([*args, "--json"], stdout=subprocess.PIPE, check=False)
    if done.returncode != 0:
        return done.returncode
    for entry in json.loads(done.stdout):
        print(entry["outputs"]["out"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
