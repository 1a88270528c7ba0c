"""Persistence: the only package that writes SQL."""

from store.database import JobConflict, Store, utcnow
from store.records import AuditEntry, Job, JobEvent, MachineState

__all__ = ["AuditEntry", "Job", "JobConflict", "JobEvent", "MachineState", "Store", "utcnow"]
