"""Run a command with one host's folder as ``/run/systemd/ask-password``.

The real systemd tools use that fixed path, so every lab host gets a private mount
namespace: ``unshare --mount --propagation private`` starts this script, which bind-mounts
the host's folder over the path and execs the command. The mount lives only in that
namespace and vanishes with its last process. Before mounting, the script checks that it
really is in a namespace of its own, so the real machine's folder is never touched.

``python -S ns_bind.py HOST_FOLDER -- COMMAND...`` (see ``argv()``). Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ASK_PASSWORD_DIR = "/run/systemd/ask-password"
NOT_ISOLATED = 125


def argv(folder: Path, command: Sequence[str]) -> list[str]:
    """The command line that runs ``command`` inside ``folder``'s own namespace."""
    script = str(Path(__file__).resolve())
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-S",
        script,
        str(folder),
        "--",
        *command,
    ]


def _outer_namespaces() -> set[str]:
    """The mount namespaces of whoever started us (``unshare`` execs, so our parent is the
    lab) and of PID 1 when it may be read."""
    found = set()
    for pid in (os.getppid(), 1):
        try:
            found.add(os.readlink(f"/proc/{pid}/ns/mnt"))
        except OSError:
            continue
    return found


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write("usage: ns_bind.py FOLDER -- COMMAND...\n")
        return 2
    folder, command = args[0], args[2:]
    if os.readlink("/proc/self/ns/mnt") in _outer_namespaces():
        sys.stderr.write("ns_bind: not in a mount namespace of its own; refusing to mount\n")
        return NOT_ISOLATED
    if not os.path.isdir(ASK_PASSWORD_DIR):
        sys.stderr.write(f"ns_bind: {ASK_PASSWORD_DIR} does not exist on this machine\n")
        return NOT_ISOLATED
    mount = subprocess.run(["mount", "--bind", folder, ASK_PASSWORD_DIR], check=False)
    if mount.returncode != 0:
        return NOT_ISOLATED
    os.execv(command[0], command)  # noqa: S606 - argv as given, no shell
    return 127  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
