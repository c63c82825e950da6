"""Weekly maintenance windows and the interval arithmetic of a policy's calendar (UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class Slot:
    """A weekly opening: on these weekdays from start to end (end <= start: past midnight)."""

    days: tuple[int, ...]
    start: time
    end: time


@dataclass(frozen=True)
class Window:
    """The maintenance window of one inventory group, in its own time zone."""

    group: str
    timezone: str
    slots: tuple[Slot, ...]

    def intervals(self, start: datetime, end: datetime) -> list[Interval]:
        """The window's openings (UTC) that overlap [start, end)."""
        tz = ZoneInfo(self.timezone)
        day = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date()
        found: list[Interval] = []
        while day <= last:
            for slot in self.slots:
                if day.weekday() not in slot.days:
                    continue
                closes_on = day if slot.end > slot.start else day + timedelta(days=1)
                a = datetime.combine(day, slot.start, tz).astimezone(UTC)
                b = datetime.combine(closes_on, slot.end, tz).astimezone(UTC)
                if b > start and a < end:
                    found.append((a, b))
            day += timedelta(days=1)
        return merge(found)

    def describe(self) -> str:
        parts = []
        for s in self.slots:
            days = ",".join(DAYS[d] for d in s.days)
            parts.append(f"{days} {s.start:%H:%M}-{s.end:%H:%M}")
        return f"{'; '.join(parts)} ({self.timezone})"


def merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(base: list[Interval], holes: list[Interval]) -> list[Interval]:
    out = []
    for a, b in base:
        pieces = [(a, b)]
        for ha, hb in holes:
            nxt = []
            for pa, pb in pieces:
                if hb <= pa or ha >= pb:
                    nxt.append((pa, pb))
                    continue
                if pa < ha:
                    nxt.append((pa, ha))
                if hb < pb:
                    nxt.append((hb, pb))
            pieces = nxt
        out.extend(pieces)
    return out
