"""Schema history. Append new migrations; never edit one that has shipped."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("deploybot")


@migrations()
def m001_initial(db: Database) -> None:
    """Machines' last known state, jobs and their events, and the audit log."""
    db.table("machines").create(
        {
            "name": str,
            "state": str,
            "state_since": str,
            "last_probe_at": str,
            "detail": str,
            "boot_id": str,
            "host_key": str,
            "initrd_host_key": str,
            "installer_host_key": str,
            "installed_at": str,
        },
        pk="name",
    )
    db.table("jobs").create(
        {
            "id": int,
            "kind": str,
            "machine": str,
            "state": str,
            "phase": str,
            "user_id": int,
            "chat_id": int,
            "progress_message_id": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "result": str,
            "log_path": str,
        },
        pk="id",
        not_null={"kind", "machine", "state", "created_at"},
    )
    db.table("jobs").create_index(["machine", "state"])
    db.table("job_events").create(
        {"id": int, "job_id": int, "at": str, "kind": str, "text": str},
        pk="id",
        foreign_keys=[("job_id", "jobs", "id")],
        not_null={"job_id", "at", "kind"},
    )
    db.table("job_events").create_index(["job_id"])
    db.table("audit").create(
        {
            "id": int,
            "at": str,
            "user_id": int,
            "username": str,
            "action": str,
            "machine": str,
            "decision": str,
            "detail": str,
        },
        pk="id",
        not_null={"at", "action", "decision"},
    )
    db.table("audit").create_index(["at"])


@migrations()
def m002_health(db: Database) -> None:
    """Probe counts per hour (uptime share), last health check, incidents, reboot tests."""
    db.table("probe_hours").create(
        {"machine": str, "hour": str, "probes": int, "up": int},
        pk=("machine", "hour"),
        not_null={"machine", "hour"},
    )
    db.table("health_checks").create(
        {"machine": str, "at": str, "state": str, "ok": int, "summary": str},
        pk="machine",
    )
    db.table("incidents").create(
        {
            "id": int,
            "machine": str,
            "started_at": str,
            "alerted_at": str,
            "ended_at": str,
            "problem": str,
        },
        pk="id",
        not_null={"machine", "started_at", "problem"},
    )
    db.table("incidents").create_index(["machine", "ended_at"])
    db.table("reboot_tests").create(
        {
            "id": int,
            "machine": str,
            "job_id": int,
            "trigger": str,
            "started_at": str,
            "finished_at": str,
            "ok": int,
            "stage": str,
            "stages": str,
            "summary": str,
        },
        pk="id",
        not_null={"machine", "started_at"},
    )
    db.table("reboot_tests").create_index(["machine", "id"])


@migrations()
def m003_key_sources(db: Database) -> None:
    """Where each recorded host key came from (a deploy, /adopt, the booted system)."""
    db.table("machines").add_column("host_key_source", str)
    db.table("machines").add_column("initrd_host_key_source", str)


@migrations()
def m004_report_events(db: Database) -> None:
    """What the weekly report counts that no other table keeps: unexpected reboots the
    watcher saw and how long each unlock waited (docs/report.md)."""
    db.table("machine_events").create(
        {"id": int, "machine": str, "at": str, "kind": str, "seconds": float, "detail": str},
        pk="id",
        not_null={"machine", "at", "kind"},
    )
    db.table("machine_events").create_index(["at"])


@migrations()
def m005_remembered(db: Database) -> None:
    """What must outlive a restart: systemd tries per boot, and the paged answers' views."""
    db.table("systemd_tries").create(
        {"machine": str, "boot_id": str, "query": str, "tries": int, "at": str},
        pk=("machine", "boot_id", "query"),
        not_null={"machine", "boot_id", "query", "tries", "at"},
    )
    db.table("page_views").create(
        {
            "token": str,
            "user_id": int,
            "chat_id": int,
            "message_id": int,
            "created": float,
            "pages": str,
        },
        pk="token",
        not_null={"token", "user_id", "chat_id", "message_id", "created", "pages"},
    )
    db.table("page_views").create_index(["created"])
