"""Health verdicts from command output, and the watcher's records in the store."""

from __future__ import annotations

from pathlib import Path

from bot.remote.health import CheckResult, Health, _disks, _judge
from bot.remote.ssh import CommandResult
from store import Store
from store.health import HealthStore

DF = """Filesystem          1K-blocks     Used Available Use% Mounted on
tmpfs                 1048576     4096   1044480   1% /
/dev/mapper/crypted  20971520 19922944   1048576  95% /nix
"""


def result(status: int, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(status, out.encode(), err.encode())


def test_disks_and_problems() -> None:
    disks = _disks(DF)
    assert disks == (("/", 1), ("/nix", 95))
    health = Health(boot_id="b", system="degraded", failed_units=("nginx.service",), disks=disks)
    assert health.problems() == ["system degraded: failed nginx.service", "/nix 95% full"]
    assert not health.ok
    assert Health(boot_id="b", system="running", disks=(("/", 1),)).ok


def test_check_verdicts() -> None:
    assert _judge("tcp:443", result(0)) == CheckResult("tcp:443", True, "open")
    assert not _judge("tcp:443", result(1)).ok
    assert "nc is missing" in _judge("tcp:443", result(127, err="nc: not found")).detail
    url = "http://127.0.0.1/health"
    assert _judge(url, result(0, "204")).ok
    assert _judge(url, result(0, "503")).detail == "HTTP 503"
    refused = _judge(url, result(7, "000", "curl: (7) Failed to connect"))
    assert not refused.ok
    assert refused.detail.startswith("no answer")


async def test_records(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        records = HealthStore(store)
        assert await records.uptime_share("web") is None
        for up in (True, True, True, False):
            await records.record_probe("web", up=up)
        assert await records.uptime_share("web") == 0.75
        incident = await records.open_incident("web", "down", started_at="2025-01-01T00:00:00")
        assert (await records.open_incidents())["web"].id == incident.id
        await records.close_incident(incident.id)
        assert await records.open_incidents() == {}
        test_id = await records.start_reboot_test("web", job_id=None, trigger="scheduled")
        assert await records.last_reboot_test("web") is None
        await records.finish_reboot_test(
            test_id, ok=False, stage="boot", stages={"reboot": 0.1}, summary="stalled"
        )
        last = await records.last_reboot_test("web")
        assert last is not None
        assert (last.ok, last.stage, last.stages) == (False, "boot", {"reboot": 0.1})
    finally:
        await store.close()


def test_only_problems_that_were_not_there_before_are_new() -> None:
    check = "http://127.0.0.1/health"
    before = Health(
        boot_id="b",
        system="degraded",
        failed_units=("backup.service",),
        disks=(("/", 95), ("/persist", 10)),
        checks=(CheckResult(check, False, "HTTP 503"),),
    )
    same = Health(
        boot_id="b",
        system="degraded",
        failed_units=("backup.service",),
        disks=(("/", 96), ("/persist", 10)),
        checks=(CheckResult(check, False, "HTTP 502"),),
    )
    assert same.problems()
    assert same.problems_since(before) == []
    worse = Health(
        boot_id="b",
        system="degraded",
        failed_units=("backup.service", "nginx.service"),
        disks=(("/", 96), ("/persist", 99)),
        checks=(CheckResult(check, True, "HTTP 200"), CheckResult("tcp:22", False, "closed")),
    )
    assert worse.problems_since(before) == [
        "system degraded: failed nginx.service",
        "/persist 99% full",
        "tcp:22 closed",
    ]
    starting = Health(boot_id="b", system="starting", failed_units=("backup.service",))
    assert starting.problems_since(before) == ["system starting"]
    assert worse.problems_since(None) == worse.problems()
