"""Driving nixos-anywhere: its argv, its output, and the process itself.

nixos-anywhere is a bash script that talks in ``### step ###`` lines and may exit 0 after
a failed bootloader install (nixos-anywhere #291), so the outcome is judged from both the
exit code and what was printed. The disk passphrase reaches it through a pipe named
``/dev/fd/N`` (like ``<(echo …)``), never through a file or argv, and every output line is
redacted before anyone sees it.
"""

from bot.flows.deploy.nixos_anywhere.argv import (
    DEFAULT_PREFIX,
    DISK_KEY_FD_AUTO,
    DISK_KEY_REMOTE,
    DISK_KEY_SOURCE,
    build_argv,
    parse_prefix,
)
from bot.flows.deploy.nixos_anywhere.output import (
    ErrorSeen,
    Event,
    Outcome,
    OutputLine,
    OutputParser,
    Phase,
    PhaseChanged,
    clean_line,
)
from bot.flows.deploy.nixos_anywhere.process import (
    NixosAnywhereError,
    NixosAnywhereStopped,
    NixosAnywhereTimeout,
    run_nixos_anywhere,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DISK_KEY_FD_AUTO",
    "DISK_KEY_REMOTE",
    "DISK_KEY_SOURCE",
    "ErrorSeen",
    "Event",
    "NixosAnywhereError",
    "NixosAnywhereStopped",
    "NixosAnywhereTimeout",
    "Outcome",
    "OutputLine",
    "OutputParser",
    "Phase",
    "PhaseChanged",
    "build_argv",
    "clean_line",
    "parse_prefix",
    "run_nixos_anywhere",
]
