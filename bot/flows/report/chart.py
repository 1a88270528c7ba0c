"""The report's picture: one row per machine, four panels, drawn with matplotlib's Agg.

Made for a phone: a picture about 1600 pixels wide, type of 16 to 24 points, at most
``LIMIT`` machines (the worst; the title counts the rest), and always inside sendPhoto's
limits (docs/telegram-limits.md): width + height stays under 3400 pixels, the sides'
ratio under 6, the PNG a few hundred kilobytes. It runs on a worker thread
(``asyncio.to_thread``): it uses no pyplot state, only its own Figure.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bot.flows.report.week import LIMIT, MachineWeek, Week

__all__ = ["LIMIT", "Chart", "render"]
DPI = 100
WIDTH_IN = 16.0
ROW_IN = 0.5
HEAD_IN = 2.4
MIN_HEIGHT_IN = 4.5
FONT = 20
NAME_CHARS = 18
GOOD, FAIR, BAD, NONE = "#2e7d32", "#ef6c00", "#c62828", "#9e9e9e"
REBOOT_COLOUR, OUTAGE_COLOUR = "#1565c0", "#c62828"


@dataclass(frozen=True)
class Chart:
    """The PNG and what it shows: the machines drawn (in order) and how many were left out."""

    png: bytes
    shown: tuple[MachineWeek, ...]
    more: int
    width: int
    height: int


def share_colour(share: float | None) -> str:
    if share is None:
        return NONE
    if share >= 0.99:
        return GOOD
    return FAIR if share >= 0.9 else BAD


def _name(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def _minutes(seconds: float) -> float:
    return seconds / 60.0


def short(seconds: float) -> str:
    """A duration in at most five characters: ``42s``, ``5m07``, ``2h05``, ``3d``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}"
    return f"{whole // 86400}d"


def title(week: Week, shown: int, more: int) -> str:
    start, end = week.start, week.end
    span = f"{start.day} {start:%b} – {end.day} {end:%b %Y}"
    count = len(week.machines)
    noun = "machine" if count == 1 else "machines"
    if more:
        return f"deploybot · {span} · {count} {noun}, the {shown} worst shown, {more} more"
    return f"deploybot · {span} · {count} {noun}"


def render(week: Week, *, limit: int = LIMIT) -> Chart:
    """Draw the week's worst ``limit`` machines; blocking, so call it off the event loop."""
    shown = week.machines[:limit]
    more = len(week.machines) - len(shown)
    rows = max(len(shown), 1)
    height_in = max(MIN_HEIGHT_IN, HEAD_IN + ROW_IN * rows)
    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    top = 1 - 1.5 / height_in
    bottom = 0.55 / height_in
    grid = figure.add_gridspec(
        1,
        4,
        left=0.16,
        right=0.985,
        top=top,
        bottom=bottom,
        wspace=0.12,
        width_ratios=[1.35, 0.85, 1.0, 1.0],
    )
    axes = [figure.add_subplot(grid[0, i]) for i in range(4)]
    figure.suptitle(title(week, len(shown), more), fontsize=FONT + 4, y=1 - 0.35 / height_in)
    y = list(range(len(shown)))
    names = [_name(m.name) for m in shown]
    for ax in axes:
        ax.set_ylim(rows - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=FONT - 4)
        ax.grid(axis="x", alpha=0.3)
        for row in range(0, len(shown), 2):
            ax.axhspan(row - 0.5, row + 0.5, color="#000000", alpha=0.04, linewidth=0)
        ax.set_yticks(y)
        ax.set_yticklabels([])
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_yticklabels(names, fontsize=FONT)
    if not shown:
        axes[0].text(50, 0, "no machines", ha="center", va="center", fontsize=FONT)
    _uptime(axes[0], shown)
    _reboots(axes[1], shown)
    _tests(axes[2], shown)
    _waits(axes[3], shown)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    width, height = figure.canvas.get_width_height()
    return Chart(out.getvalue(), tuple(shown), more, int(width), int(height))


def _label(ax: Axes, x: float, row: int, text: str, colour: str = "#212121") -> None:
    ax.text(x, row, " " + text, va="center", ha="left", fontsize=FONT - 2, color=colour)


def _uptime(ax: Axes, shown: tuple[MachineWeek, ...]) -> None:
    ax.set_title("Up (share of probes)", fontsize=FONT, loc="left")
    ax.set_xlim(0, 135)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xticklabels(["0", "25", "50", "75", "100 %"])
    for row, m in enumerate(shown):
        share = m.share
        value = 0.0 if share is None else share * 100
        ax.barh(row, value, color=share_colour(share), height=0.7)
        _label(ax, value, row, "no probes" if share is None else f"{value:.1f} %")


def _reboots(ax: Axes, shown: tuple[MachineWeek, ...]) -> None:
    # The title is the legend: each word in its bars' colour.
    ax.text(0, 1.012, "Reboots", color=REBOOT_COLOUR, fontsize=FONT, transform=ax.transAxes)
    ax.text(0.52, 1.012, "outages", color=OUTAGE_COLOUR, fontsize=FONT, transform=ax.transAxes)
    top = max([1, *(max(m.reboots, m.outages) for m in shown)])
    ax.set_xlim(0, top * 1.8 + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for row, m in enumerate(shown):
        ax.barh(row - 0.18, m.reboots, color=REBOOT_COLOUR, height=0.34)
        ax.barh(row + 0.18, m.outages, color=OUTAGE_COLOUR, height=0.34)
        if m.reboots or m.outages:
            _label(ax, max(m.reboots, m.outages), row, f"{m.reboots} · {m.outages}")
        else:
            _label(ax, 0, row, "none", NONE)


def _tests(ax: Axes, shown: tuple[MachineWeek, ...]) -> None:
    ax.set_title("Last reboot test (min)", fontsize=FONT, loc="left")
    longest = max([1.0, *(_minutes(t.seconds) for m in shown for t in m.tests[-1:])])
    ax.set_xlim(0, longest * 2.2)
    for row, m in enumerate(shown):
        if not m.tests:
            _label(ax, 0, row, "none", NONE)
            continue
        last = m.tests[-1]
        ax.barh(row, _minutes(last.seconds), color=GOOD if last.passed else BAD, height=0.7)
        verdict = "ok" if last.passed else "failed"
        runs = f" ×{len(m.tests)}" if len(m.tests) > 1 else ""
        _label(ax, _minutes(last.seconds), row, f"{short(last.seconds)} {verdict}{runs}")


def _waits(ax: Axes, shown: tuple[MachineWeek, ...]) -> None:
    ax.set_title("Longest unlock (min)", fontsize=FONT, loc="left")
    longest = max([1.0, *(_minutes(m.longest_wait or 0.0) for m in shown)])
    ax.set_xlim(0, longest * 2.0)
    for row, m in enumerate(shown):
        wait = m.longest_wait
        if wait is None:
            _label(ax, 0, row, "none", NONE)
            continue
        ax.barh(row, _minutes(wait), color=FAIR if wait > 600 else REBOOT_COLOUR, height=0.7)
        times = f" ×{len(m.unlock_waits)}" if len(m.unlock_waits) > 1 else ""
        _label(ax, _minutes(wait), row, f"{short(wait)}{times}")
