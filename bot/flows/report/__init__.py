"""The fleet's week in one picture: /report and the weekly report to the admins."""

from bot.flows.report.reporter import Reporter
from bot.flows.report.week import MachineWeek, Week, read_week

__all__ = ["MachineWeek", "Reporter", "Week", "read_week"]
