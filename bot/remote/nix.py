"""Running ``nix``: the one place that names a flake's outputs, gives the global flags,
reads store paths and runs it, for the install's build and the update's build and copy.

Every ``nix`` run carries ``--extra-experimental-features "nix-command flakes"``: a Nix whose
nix.conf does not enable them (the default) refuses ``build``, ``copy`` and ``eval``
otherwise. ``nix copy`` reaches a machine through the system ``ssh``, which Nix configures
only through ``NIX_SSHOPTS``: the bot writes the pinned key into a known_hosts file of its
own and makes ssh refuse any other key (docs/updates.md). Runs go through the one process
runner (``bot.remote.process``): own process group, bounded lines, SIGTERM then SIGKILL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.core.keys import parse_public_key
from bot.core.text import printable
from bot.remote.process import KILL_GRACE, Child, ProcessError, run_process

GLOBAL_FLAGS = ("--extra-experimental-features", "nix-command flakes")
#: The oldest Nix whose ``nix build`` has ``--print-out-paths``, which every build of the
#: bot reads its store paths from (Debian 12's ``nix-bin`` is 2.8; docs/updates.md).
OLDEST_NIX = (2, 9)
TOO_OLD = (
    f"the bot's builds need Nix {OLDEST_NIX[0]}.{OLDEST_NIX[1]} or newer "
    "(nix build --print-out-paths)"
)
_VERSION = re.compile(r"\(Nix\) (\d+)\.(\d+)(?:\.\d+)?")
#: Nix's store path grammar: 32 characters of its base32 (no e, o, t, u), a dash, then a
#: name of at most 211 of ``0-9A-Za-z+-._?=`` that is not ``.`` or ``..`` nor starts with
#: ``.-`` or ``..-`` (docs/updates.md).
STORE_PATH = re.compile(
    r"/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-(?!\.\.?(?:-|$))[0-9A-Za-z+._?=-]{1,211}"
)
MAX_LINE = 2000
KEPT_LINES = 200
_WITHHELD_PREFIXES = ("TELEGRAM_", "DEPLOYBOT_", "SOPS_")
_WITHHELD = frozenset({"SSH_PRIVATE_KEY", "SSHPASS", "SSH_AUTH_SOCK"})

LineCallback = Callable[[str], object]


class NixError(Exception):
    """nix could not be started or did not finish in time; the message says why."""


@dataclass(frozen=True)
class Finished:
    """A nix run that ended: its status and its last lines (stdout and stderr merged)."""

    code: int
    lines: list[str]

    @property
    def last(self) -> str:
        """Its last non-empty line: why it failed, usually; a Nix too old for the bot's
        flags says so in words an operator can act on."""
        # A Nix 2.8 prints "error: unrecognised flag …", then "Try 'nix --help' …".
        for line in self.lines[-2:]:
            if line.startswith("error: unrecognised flag '--print-out-paths'"):
                return f"{line}: {TOO_OLD}; `deploybot check` shows the Nix DEPLOYBOT_NIX runs"
        return next((line for line in reversed(self.lines) if line.strip()), "")

    def store_paths(self) -> list[str]:
        """The store paths ``--print-out-paths`` printed, in order: lines that are a store
        path alone (nix's own lists of what it builds or fetches are indented)."""
        return [
            line.rstrip()
            for line in self.lines
            if STORE_PATH.fullmatch(line.rstrip()) and not line.rstrip().endswith(".drv")
        ]


def version(text: str) -> tuple[int, int] | None:
    """(major, minor) from ``nix --version`` (``nix (Nix) 2.28.3``), or None."""
    found = _VERSION.search(text)
    return (int(found[1]), int(found[2])) if found else None


def installable(flake: str, attr: str, output: str) -> str:
    """``<flake>#nixosConfigurations."<attr>".config.system.build.<output>``, as
    nixos-anywhere and nixos-rebuild name it."""
    return f'{flake}#nixosConfigurations."{attr}".config.system.build.{output}'


def build_argv(nix: Sequence[str], *, flake: str, attr: str, outputs: Sequence[str]) -> list[str]:
    """One ``nix build`` of ``outputs``; it prints their paths in this order."""
    if not nix or any(not word for word in nix):
        raise ValueError("DEPLOYBOT_NIX is empty")
    targets = [installable(flake, attr, output) for output in outputs]
    return [*nix, *GLOBAL_FLAGS, "build", "--no-link", "--print-out-paths", "-L", *targets]


def build_many_argv(
    nix: Sequence[str], *, flake: str, attrs: Sequence[str], output: str
) -> list[str]:
    """One ``nix build`` of ``output`` of every attribute (a rollout's systems); it prints
    their paths in this order."""
    if not nix or any(not word for word in nix):
        raise ValueError("DEPLOYBOT_NIX is empty")
    targets = [installable(flake, attr, output) for attr in attrs]
    return [*nix, *GLOBAL_FLAGS, "build", "--no-link", "--print-out-paths", "-L", *targets]


def copy_argv(nix: Sequence[str], *, user: str, host: str, path: str) -> list[str]:
    # The port goes in NIX_SSHOPTS: Nix before 2.31 hands "host:port" to ssh as a name.
    if not nix or any(not word for word in nix):
        raise ValueError("DEPLOYBOT_NIX is empty")
    return [*nix, *GLOBAL_FLAGS, "copy", "--to", f"ssh://{user}@{host}", path]


def child_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for nix and nixos-anywhere: the bot's own, minus the bot's secrets.

    nix needs much of the environment (PATH, HOME, NIX_*, proxies, certificates), so this
    removes what it must not see: the bot token and settings, sops keys,
    ``SSH_PRIVATE_KEY`` (nixos-anywhere would use it), ``SSHPASS`` and the agent socket.
    """
    origin = os.environ if source is None else source
    return {
        name: value
        for name, value in origin.items()
        if name not in _WITHHELD and not name.startswith(_WITHHELD_PREFIXES)
    }


def known_hosts_line(host: str, port: int, key: str) -> str:
    """The pinned key as OpenSSH's known_hosts writes it for ``host:port``."""
    parsed = parse_public_key(key)
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {parsed.line(with_comment=False)}\n"


def write_known_hosts(path: Path, host: str, port: int, key: str) -> None:
    """Write the pinned key alone into ``path`` (mode 0600, in a 0700 folder)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(known_hosts_line(host, port, key))


def ssh_options(*, known_hosts: Path, client_key: Path, port: int) -> str:
    """``NIX_SSHOPTS`` that trust only the pinned key and use only the bot's key.

    Nix splits the value on whitespace, so a path with a space cannot be passed safely.
    """
    for path in (known_hosts, client_key):
        if any(c.isspace() for c in str(path)):
            raise NixError(f"{path}: NIX_SSHOPTS cannot carry a path with spaces")
    return " ".join(
        [
            "-F none",
            f"-o UserKnownHostsFile={known_hosts}",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o StrictHostKeyChecking=yes",
            "-o UpdateHostKeys=no",
            "-o BatchMode=yes",
            "-o IdentitiesOnly=yes",
            "-o IdentityAgent=none",
            f"-i {client_key}",
            f"-p {port}",
        ]
    )


async def run_nix(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str],
    on_line: LineCallback,
    timeout: float,
    kill_grace: float = KILL_GRACE,
) -> Finished:
    """Run nix; each line (printable, bounded) goes to ``on_line`` as it comes, the last
    :data:`KEPT_LINES` are kept. NixError when it cannot start or outlives ``timeout``."""
    kept: list[str] = []

    def line(text: str) -> None:
        shown = printable(text, MAX_LINE)
        kept.append(shown)
        del kept[:-KEPT_LINES]
        on_line(shown)

    try:
        code = await run_process(
            Child(argv, what, "DEPLOYBOT_NIX"),
            on_line=line,
            env=env,
            timeout=timeout,
            max_line=MAX_LINE,
            kill_grace=kill_grace,
        )
    except ProcessError as exc:
        raise NixError(str(exc)) from None
    return Finished(code, kept)
