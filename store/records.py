"""Plain records the store hands out; nothing else needs to know the column layout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JOB_ACTIVE_STATES = ("queued", "running")
JOB_FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")


def utcnow() -> str:
    """Timestamps are stored as ISO 8601 UTC text, which sorts as time does."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditEntry:
    """One decision of the access gate or one security-relevant act."""

    id: int
    at: str
    user_id: int | None
    username: str
    action: str
    machine: str
    decision: str
    detail: str


@dataclass(frozen=True)
class MachineState:
    """What the bot last knew of a machine, and the host keys it pinned."""

    name: str
    state: str = "unknown"
    state_since: str = ""
    last_probe_at: str = ""
    detail: str = ""
    boot_id: str = ""
    host_key: str = ""
    initrd_host_key: str = ""
    installer_host_key: str = ""
    installed_at: str = ""
    host_key_source: str = ""
    initrd_host_key_source: str = ""


@dataclass(frozen=True)
class Job:
    """A background job (deploy, reinstall, reboot test …) and where its progress is shown."""

    id: int
    kind: str
    machine: str
    state: str
    phase: str
    user_id: int | None
    chat_id: int | None
    progress_message_id: int | None
    created_at: str
    started_at: str
    finished_at: str
    result: str
    log_path: str

    @property
    def active(self) -> bool:
        return self.state in JOB_ACTIVE_STATES


@dataclass(frozen=True)
class JobEvent:
    """One step of a job: a phase change, a warning, the result."""

    id: int
    job_id: int
    at: str
    kind: str
    text: str


def _clean(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: ("" if row.get(name) is None and name not in _NULLABLE else row.get(name))
        for name in fields
    }


_NULLABLE = {"user_id", "chat_id", "progress_message_id"}


def audit_from_row(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(**_clean(row, tuple(AuditEntry.__dataclass_fields__)))


def machine_from_row(row: dict[str, Any]) -> MachineState:
    fields = _clean(row, tuple(MachineState.__dataclass_fields__))
    fields["state"] = fields["state"] or "unknown"  # a row made by pinning keys only
    return MachineState(**fields)


def job_from_row(row: dict[str, Any]) -> Job:
    return Job(**_clean(row, tuple(Job.__dataclass_fields__)))


def event_from_row(row: dict[str, Any]) -> JobEvent:
    return JobEvent(**_clean(row, tuple(JobEvent.__dataclass_fields__)))
