"""The lab: simulated NixOS targets behind real OpenSSH and real LUKS headers, and a
stand-in ``nixos-anywhere``. See ``Lab`` and ``LabHost``; fixtures in ``fixtures.py``;
the guide in README.md.

Names are imported lazily: the lab shell runs inside this package on every simulated
SSH command and must not pay for asyncio and the rest of the lab at each start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.lab.generations import LabConfig
    from tests.lab.host import LabHost, PassphraseAttempt
    from tests.lab.lab import Lab
    from tests.lab.model import PHASES, Initrd, OsKind, Stage
    from tests.lab.sops import SopsSecrets, make_sops_secrets

_WHERE = {
    "LabConfig": "tests.lab.generations",
    "LabHost": "tests.lab.host",
    "PassphraseAttempt": "tests.lab.host",
    "Lab": "tests.lab.lab",
    "PHASES": "tests.lab.model",
    "Initrd": "tests.lab.model",
    "OsKind": "tests.lab.model",
    "Stage": "tests.lab.model",
    "SopsSecrets": "tests.lab.sops",
    "make_sops_secrets": "tests.lab.sops",
}

__all__ = [
    "PHASES",
    "Initrd",
    "Lab",
    "LabConfig",
    "LabHost",
    "OsKind",
    "PassphraseAttempt",
    "SopsSecrets",
    "Stage",
    "make_sops_secrets",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tests.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
