"""Updating installed machines: build, copy, activate behind a rollback guard, confirm."""
