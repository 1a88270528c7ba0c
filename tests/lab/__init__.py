"""The lab: simulated NixOS targets behind real OpenSSH and real LUKS headers, and a
stand-in ``nixos-anywhere``. See ``Lab`` and ``LabHost``; fixtures in ``fixtures.py``."""

from tests.lab.host import LabHost, PassphraseAttempt
from tests.lab.lab import Lab
from tests.lab.model import PHASES, Initrd, OsKind, Stage
from tests.lab.sops import SopsSecrets, make_sops_secrets

__all__ = [
    "PHASES",
    "Initrd",
    "Lab",
    "LabHost",
    "OsKind",
    "PassphraseAttempt",
    "SopsSecrets",
    "Stage",
    "make_sops_secrets",
]
