"""Checking a policy file's values key by key: a problem becomes one line naming the file,
the line and the key."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.core.errors import PolicyError
from orchestrator.core.protection import budget_problem

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

KeyPath = tuple[str | int, ...]


def _key_text(part: str | int) -> str:
    """A key as it can be printed on one line: odd ones (spaces, newlines, empty) quoted."""
    text = str(part)
    return text if re.fullmatch(r"[\w.%+-]+", text) else repr(text)



class Checker:
    """Turns a problem at a key path into one line: file:line: key: what is wrong."""

    def __init__(self, source: str, lines: dict[tuple[str | int, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: tuple[str | int, ...], problem: str) -> PolicyError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        key = ".".join(_key_text(p) for p in path) or "top level"
        return PolicyError(f"{self.source}:{line}: {key}: {problem}")

    def mapping(self, value: Any, path: tuple[str | int, ...], allowed: set[str]
                ) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping of keys to values")
        for key in value:
            if str(key) not in allowed:
                raise self.fail((*path, str(key)),
                                f"unknown key; known keys: {', '.join(sorted(allowed))}")
        return value

    def number(self, value: Any, path: tuple[str | int, ...], lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(path, f"must be a number from {lo:g} to {hi:g}")
        return float(value)

    def budget(self, value: Any, path: tuple[str | int, ...]) -> int | str:
        """A protection budget: a whole number of hosts, or a share of the fleet ("1%")."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(path, "must be a number of hosts (3) or a share of the fleet "
                                  "(\"1%\")")
        if (problem := budget_problem(str(value))) is not None:
            raise self.fail(path, problem)
        return value if isinstance(value, int) else str(value).strip()

    def integer(self, value: Any, path: tuple[str | int, ...], lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(path, f"must be a whole number from {lo} to {hi}")
        return value

    def names(self, value: Any, path: tuple[str | int, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(path, "must be a list of inventory group names")
        return tuple(value)

    def zone(self, value: Any, path: tuple[str | int, ...]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "must be a time zone name like America/New_York")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(path, f"unknown time zone {value!r}; use a name like "
                                  "America/New_York or UTC") from None
        return value

    def clock(self, value: Any, path: tuple[str | int, ...]) -> time:
        if isinstance(value, int):
            raise self.fail(path, 'write the time in quotes, like "22:00" (YAML reads '
                                  "22:00 unquoted as a number)")
        match = _TIME.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise self.fail(path, 'must be a time of day like "22:00"')
        return time(int(match.group(1)), int(match.group(2)))

    def day(self, value: Any, path: tuple[str | int, ...]) -> date:
        if isinstance(value, datetime):
            raise self.fail(path, "must be a date like 2026-12-24, without a time")
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise self.fail(path, "must be a date like 2026-12-24") from None
