"""Nix and systemd tools for the service tests and the service benchmark.

``nix-instantiate`` evaluates ``nix/module.nix`` with nixpkgs' own module system; the nixpkgs
``lib/`` comes from ``shared/third_party/nixpkgs-lib`` beside the checkout (CI places it
there). ``systemd-analyze`` checks the units offline. Without a tool the tests skip, saying
why; under ``CI=true`` they fail instead, so a missing tool never passes unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NIX_DIR = ROOT / "tests" / "nix"
CONTRIB_UNIT = ROOT / "contrib" / "deploybot.service"
LIB_SUBPATH = Path("shared/third_party/nixpkgs-lib/lib")
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def unavailable(reason: str) -> None:
    """Skip outside CI; fail under CI=true, where every tool must be present."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the tests need it; `make test` installs it)")
    pytest.skip(reason)


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} not found (Debian package {package})")
        raise AssertionError("unreachable")
    return found


def nixpkgs_lib() -> Path:
    """``<repo>/../shared/third_party/nixpkgs-lib/lib`` (or a nearer ancestor's), or skip."""
    for base in ROOT.parents:
        candidate = base / LIB_SUBPATH
        if (candidate / "default.nix").is_file():
            return candidate
    unavailable(f"nixpkgs lib not found at {ROOT.parent / LIB_SUBPATH}")
    raise AssertionError("unreachable")


class NixError(Exception):
    """nix-instantiate refused: the message is its stderr."""


def nix_eval(file: Path, **args: str) -> Any:
    """Evaluate ``file`` (a function of string arguments) strictly, as JSON."""
    argv = [tool("nix-instantiate", "nix-bin"), "--eval", "--strict", "--json", str(file)]
    argv += ["--argstr", "nixpkgsLib", str(nixpkgs_lib())]
    for name, value in args.items():
        argv += ["--argstr", name, value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise NixError(done.stderr)
    return json.loads(done.stdout)


def evaluate_module(config: Mapping[str, Any]) -> dict[str, Any]:
    """``nix/module.nix`` evaluated with ``config`` (the NixOS configuration) and stubs."""
    result: dict[str, Any] = nix_eval(NIX_DIR / "eval.nix", config=json.dumps(config))
    return result


def _unit_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_unit(service: Mapping[str, Any], executables: Mapping[str, str]) -> str:
    """A NixOS ``systemd.services.<name>`` as the unit file NixOS writes for it.

    ``executables`` replaces store paths (absent here) with existing programs, so that
    ``systemd-analyze verify`` can check the command lines too.
    """
    lines = ["[Unit]", f"Description={service['description']}"]
    for key in ("wants", "after", "before", "requires"):
        if service[key]:
            lines.append(f"{key.capitalize()}={' '.join(service[key])}")
    lines += ["", "[Service]"]
    for name, value in sorted(service["environment"].items()):
        lines.append(f'Environment="{name}={value}"')
    for key, value in service["serviceConfig"].items():
        for item in value if isinstance(value, list) else [value]:
            text = _unit_value(item)
            for old, new in executables.items():
                text = text.replace(old, new)
            lines.append(f"{key}={text}")
    lines += ["", "[Install]", f"WantedBy={' '.join(service['wantedBy'])}", ""]
    return "\n".join(lines)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file: every key's values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def runnable_contrib_unit() -> str:
    """contrib/deploybot.service with ExecStart on a program that exists here."""
    text = CONTRIB_UNIT.read_text(encoding="utf-8")
    return text.replace("ExecStart=/opt/deploybot/bin/deploybot", "ExecStart=/bin/true")


def analyze(unit_text: str, *command: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze <command> … deploybot.service`` on a copy of ``unit_text``."""
    analyzer = tool("systemd-analyze", "systemd")
    with tempfile.TemporaryDirectory(prefix="deploybot-unit-") as tmp:
        unit = Path(tmp) / "deploybot.service"
        unit.write_text(unit_text, encoding="utf-8")
        return subprocess.run(
            [analyzer, *command, str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def verify(unit_text: str) -> subprocess.CompletedProcess[str]:
    return analyze(unit_text, "verify", "--man=no")


def exposure(unit_text: str) -> float:
    """The overall exposure ``systemd-analyze security --offline=true`` gives the unit."""
    done = analyze(unit_text, "security", "--offline=true", "--no-pager")
    found = EXPOSURE.search(done.stdout + done.stderr)
    if found is None:
        raise AssertionError(f"no exposure level in:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))
