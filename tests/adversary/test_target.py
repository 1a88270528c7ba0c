"""Hostile targets and hostile files: output without limits, escapes, echoed secrets, and
what the bot writes to disk. Each test performs the attack on the real module."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from bot.core.secret import Secret
from bot.core.text import printable
from bot.jobs.joblog import MAX_LOG_BYTES, JobLog
from bot.logs import RedactTokens
from bot.setup_check import Row, render
from store import Store

TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
ESCAPES = "\x1b[2J\x1b[Hall good\u202e\x07\x9b31m"


def test_a_token_in_a_bot_api_url_is_masked() -> None:
    record = logging.LogRecord(
        "telegram",
        logging.DEBUG,
        __file__,
        1,
        "POST https://api.telegram.org/bot%s/getUpdates",
        (TOKEN,),
        None,
    )
    RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()
    assert "/bot<token>/getUpdates" in record.getMessage()


def test_the_configured_token_is_masked_whatever_its_shape() -> None:
    odd = "not-shaped-like-a-token-0000"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "url=/bot%s/x", (odd,), None)
    RedactTokens([odd]).filter(record)
    assert odd not in record.getMessage()


async def test_a_machine_printing_150_mb_does_not_fill_the_database(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        await store.update_machine("web", detail=ESCAPES + "x" * 20_000_000)
        job = await store.create_job(kind="deploy", machine="web", user_id=1, chat_id=1)
        await store.update_job(job.id, result="y" * 5_000_000)
        await store.add_event(job.id, "note", "z" * 5_000_000 + ESCAPES)
        known = await store.machine("web")
        assert len(known.detail) <= 2000
        assert "\x1b" not in known.detail
        assert "\u202e" not in known.detail
        ended = await store.job(job.id)
        assert ended is not None
        assert len(ended.result) <= 4000
        events = await store.events(job.id)
        assert all(len(e.text) <= 2000 and "\x1b" not in e.text for e in events)
    finally:
        await store.close()
    assert (tmp_path / "db.sqlite3").stat().st_size < 1_000_000


async def test_the_database_and_state_are_private(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path)
    try:
        await store.update_machine("web", detail="x")
        for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
    finally:
        await store.close()


def test_a_flooding_installer_cannot_write_a_huge_job_log(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "jobs" / "1.log")
    line = "building '/nix/store/" + "a" * 3000
    count = MAX_LOG_BYTES // 3000 + 5000
    for n in range(count):
        log.write(f"{n} {line}")
    log.write("the last line: where the failure is")
    log.close()
    size = log.path.stat().st_size
    assert size < MAX_LOG_BYTES + 2_000_000
    text = log.path.read_text()
    assert text.startswith("0 building")
    assert "lines dropped: the log passed" in text
    assert text.rstrip().endswith("the last line: where the failure is")
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700


def test_a_secret_stays_redacted_after_it_is_wiped(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "1.log")
    answer = Secret("tr0ub4dor&3 hunter2")
    log.hide(answer)
    answer.wipe()  # relayed, wiped: an initrd that echoes it comes after
    shown = log.write("cryptsetup: got 'tr0ub4dor&3 hunter2'")
    log.close()
    assert "tr0ub4dor" not in shown
    assert "tr0ub4dor" not in log.path.read_text()


def test_target_text_loses_escapes_and_bidi() -> None:
    assert printable(ESCAPES) == "all good31m"
    assert printable("a\nb", newlines=True) == "a\nb"
    assert printable("x" * 50, 10) == "x" * 9 + "…"


def test_deploybot_check_prints_no_terminal_escapes() -> None:
    table = render([Row("web: \x1b[2Jkey", "FAIL", "sops said: \x1b[1A\x1b[2Kall good\u202e")])
    assert "\x1b" not in table
    assert "\u202e" not in table
