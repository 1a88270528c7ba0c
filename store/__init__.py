"""Persistence: the only package that writes SQL."""

from store.database import Store
from store.jobs import JobConflict
from store.records import AuditEntry, Job, JobEvent, MachineState, utcnow

__all__ = ["AuditEntry", "Job", "JobConflict", "JobEvent", "MachineState", "Store", "utcnow"]
