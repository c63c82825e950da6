"""How times and durations read in every report, listing and page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def ts(t: float | None) -> str:
    """A timestamp as UTC text; empty for none."""
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Seconds as H:MM:SS; "-" for none."""
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(float(seconds))))
