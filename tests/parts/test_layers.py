"""The layers contract of pyproject.toml holds, and really fails on an import that breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in ("bot", "handlers", "store"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_layers_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_engine_module_importing_the_chat_surface_breaks_the_contract(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    leaf = tree / "bot" / "core" / "durations.py"
    leaf.write_text(leaf.read_text() + "\nimport handlers.plumbing.gate  # noqa: E402, F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "bot.core.durations -> handlers.plumbing.gate" in result.stdout


def test_a_primitive_importing_a_flow_breaks_the_layers(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    leaf = tree / "bot" / "remote" / "ssh.py"
    leaf.write_text(leaf.read_text() + "\nimport bot.flows.engine  # noqa: E402, F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "bot.remote.ssh -> bot.flows.engine" in result.stdout


def test_plumbing_importing_a_command_family_breaks_the_handlers_layers(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    leaf = tree / "handlers" / "plumbing" / "paging.py"
    leaf.write_text(leaf.read_text() + "\nimport handlers.commands.jobs  # noqa: E402, F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "Command families stand on the plumbing, never the other way BROKEN" in result.stdout
    assert "handlers.plumbing.paging -> handlers.commands.jobs" in result.stdout
