"""Writes that arrive together share a commit, and each still succeeds or fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from store import Store


async def test_concurrent_writes_are_all_committed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        states = await asyncio.gather(
            *(store.update_machine(f"m{i}", state="up", detail=f"#{i}") for i in range(300))
        )
        assert [s.detail for s in states] == [f"#{i}" for i in range(300)]
    finally:
        await store.close()
    again = await Store.open(tmp_path / "db.sqlite3")
    try:
        known = await again.machines()
        assert sorted(known) == sorted(f"m{i}" for i in range(300))
        assert all(known[f"m{i}"].detail == f"#{i}" for i in range(300))
    finally:
        await again.close()


async def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")

    def broken() -> None:
        store.db.execute("insert into no_such_table values (1)")

    try:
        results = await asyncio.gather(
            store.update_machine("a", state="up"),
            store.write(broken),
            store.update_machine("b", state="down"),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.OperationalError)
        assert "no_such_table" in str(results[1])
        known = await store.machines()
        assert (known["a"].state, known["b"].state) == ("up", "down")
        with pytest.raises(sqlite3.OperationalError):
            await store.write(broken)
    finally:
        await store.close()
