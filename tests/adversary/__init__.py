"""Attacks: hostile people, targets, inventories and inputs, and secrets that must stay nowhere."""
