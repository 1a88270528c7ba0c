"""pytest plugin: ``pytest_plugins = ["tests.lab.fixtures"]``.

Every fixture here tears down completely (processes, addresses, folders) even when the
test fails; the ``lab`` fixture checks that no process of the lab survived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.lab.host import LabHost
from tests.lab.lab import Lab
from tests.lab.proc import lab_processes
from tests.lab.sops import SopsSecrets, make_sops_secrets


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab; start hosts with ``lab.start_host(...)``."""
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()
    survivors = lab_processes(the_lab.dir)
    assert not survivors, f"lab processes survived teardown: {survivors}"


@pytest.fixture
def lab_flake(lab: Lab) -> Path:
    """A lab flake with ``clawsiecats-luks`` and ``clawsiecats``: pass it as DEPLOYBOT_FLAKE."""
    return lab.make_flake(["clawsiecats-luks", "clawsiecats"])


@pytest.fixture
def lab_installer_host(lab: Lab) -> LabHost:
    """A host booted into a NixOS installer, ready for the stand-in."""
    return lab.start_host("installer")


@pytest.fixture
def lab_debian_host(lab: Lab) -> LabHost:
    """A host running Debian with 2 GiB: the stand-in kexecs it into an installer."""
    return lab.start_host("debian", os="debian")


@pytest.fixture
def lab_askpass_host(lab: Lab) -> LabHost:
    """An installed host waiting in a scripted initrd (``cryptsetup-askpass``)."""
    return lab.start_installed_host("askpass", initrd="askpass")


@pytest.fixture
def lab_systemd_host(lab: Lab) -> LabHost:
    """An installed host waiting in a systemd initrd (``systemd-tty-ask-password-agent``)."""
    return lab.start_installed_host("systemd", initrd="systemd")


@pytest.fixture
def lab_booted_host(lab: Lab) -> LabHost:
    """An installed, unlocked, running host."""
    return lab.start_installed_host("booted", stage="booted")


@pytest.fixture
def make_sops(tmp_path: Path) -> Callable[[Mapping[str, str]], SopsSecrets]:
    """``make_sops({"key": "value"})``: an age key and a sops YAML file encrypted for it."""
    counter = iter(range(1_000_000))

    def make(data: Mapping[str, str]) -> SopsSecrets:
        directory = tmp_path / f"sops-{next(counter)}"
        directory.mkdir()
        return make_sops_secrets(directory, data)

    return make
