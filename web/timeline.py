"""Records by day, newest first, and the bar heights of a small per-day chart.

A duty officer opening the console asks "what came in lately, and is today unusual": a list by
day answers the first, a bar per day (scaled to the busiest day shown) the second. Days are UTC
dates, as every time on the bus is UTC. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One record on the timeline: when it happened (UTC-aware) and what to call it."""

    record_id: str
    kind: str
    when: datetime
    title: str


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day: its items, newest first, and how many of each kind."""

    date: date
    items: tuple[TimelineItem, ...]
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        """How many records that day."""
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Bar:
    """A day's bar: its height in pixels (of ``height``) and the count it stands for."""

    date: date
    height: float
    count: int


def timeline(items: Iterable[TimelineItem]) -> list[Day]:
    """``items`` grouped by UTC day, newest day first, each day newest first (ties by id).

    A naive ``when`` is taken as UTC (nothing on the bus is naive; a caller's slip should not
    raise in a page).
    """
    by_day: dict[date, list[TimelineItem]] = {}
    for item in items:
        when = _utc(item.when)
        by_day.setdefault(when.date(), []).append(item)
    days = []
    for day in sorted(by_day, reverse=True):
        ordered = sorted(by_day[day], key=lambda i: (_utc(i.when), i.record_id), reverse=True)
        counts = Counter(i.kind for i in ordered)
        days.append(Day(day, tuple(ordered), MappingProxyType(dict(sorted(counts.items())))))
    return days


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def bars(days: Sequence[Day], height: float) -> list[Bar]:
    """A bar per day, oldest first (left to right), the busiest day ``height`` tall.

    Every day with a record gets at least one pixel, so a quiet day is still visibly not empty.
    """
    if not days:
        return []
    most = max(d.total for d in days)
    out = []
    for d in sorted(days, key=lambda d: d.date):
        h = height * d.total / most if most else 0.0
        out.append(Bar(d.date, max(h, 1.0) if d.total else 0.0, d.total))
    return out
