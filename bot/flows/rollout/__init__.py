"""Rollouts: many machines updated in one job, a canary first, then waves."""
