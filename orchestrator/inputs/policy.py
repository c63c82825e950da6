"""The migration policy: waves, ordering, maintenance windows, blackouts, deadline, protection
budget, gates and approvals. Read from YAML and checked key by key; an error names the file,
the line and the key. Pure: times are computed, never waited for here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator.core.errors import PolicyError
from orchestrator.core.models import STRATEGY_NAMES, Strategy
from orchestrator.inputs.policycheck import Checker, KeyPath
from orchestrator.inputs.windows import DAYS, Interval, Slot, Window, merge, subtract
from orchestrator.inputs.yamlfile import load_yaml_located


@dataclass(frozen=True)
class Policy:
    """How the migration may proceed. The defaults are the command-line defaults."""

    source: str = "defaults"
    canary: int = 1
    canary_percent: float | None = None
    growth: float = 2.0
    max_wave: int = 500
    first: tuple[str, ...] = ()
    last: tuple[str, ...] = ()
    timezone: str = "UTC"
    windows: tuple[Window, ...] = ()
    blackouts: tuple[tuple[date, date], ...] = ()
    deadline: datetime | None = None
    strategy: str = Strategy.AUTO
    # The protection budget: hosts at once whose protection is unproven (from a removal's
    # intent to its verification), fleet-wide: a count (3) or a share of the fleet ("1%").
    max_unprotected: int | str = 1
    # How long a host in its protection window that does not answer is retried.
    reconnect_seconds: float = 600.0
    max_failed_percent: float = 0.0
    soak_seconds: float = 0.0
    require_approval: bool = False
    # The replacement: the default (None: the command line's, else clamav) and, in order,
    # the inventory groups that get another (the first group listed that a host is in wins;
    # a host's own inventory variable avmigrate_replacement wins over both).
    replacement: str | None = None
    replacement_groups: tuple[tuple[str, str], ...] = ()
    # Hosts with no protection at all (no banned product, no replacement): protect them too.
    protect_unprotected: bool = False
    # A removal that completes at the next reboot (Windows): `window` reboots the host in its
    # maintenance window (at once where no window is set), `never` leaves it to its
    # administrator (the host waits, holding its budget slot, until a run sees it rebooted).
    reboot: str = "window"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---- waves -----------------------------------------------------------------------------
    def canary_size(self, total: int) -> int:
        if total <= 0:
            return 0
        if self.canary_percent is not None:
            return max(1, min(total, math.ceil(total * self.canary_percent / 100)))
        return max(1, min(total, self.canary))

    def rank(self, groups: tuple[str, ...]) -> tuple[int, int]:
        """Order key of a host: `first` groups, then the rest, then `last` groups (in order)."""
        for i, g in enumerate(self.last):
            if g in groups:
                return (2, i)
        for i, g in enumerate(self.first):
            if g in groups:
                return (0, i)
        return (1, 0)

    def window_for(self, groups: tuple[str, ...]) -> Window | None:
        """The first window listed whose group the host is in; None: any time."""
        for w in self.windows:
            if w.group in groups:
                return w
        return None

    def replacement_for(self, groups: tuple[str, ...]) -> str | None:
        """The replacement the first listed group the host is in gets; None: the default."""
        for group, rid in self.replacement_groups:
            if group in groups:
                return rid
        return None

    def window_named(self, group: str | None) -> Window | None:
        for w in self.windows:
            if w.group == group:
                return w
        return None

    # ---- time ------------------------------------------------------------------------------
    def blackout_intervals(self, start: datetime, end: datetime) -> list[Interval]:
        tz = ZoneInfo(self.timezone)
        found = []
        for a, b in self.blackouts:
            lo = datetime.combine(a, time(0), tz).astimezone(UTC)
            hi = datetime.combine(b + timedelta(days=1), time(0), tz).astimezone(UTC)
            if hi > start and lo < end:
                found.append((lo, hi))
        return merge(found)

    def open_intervals(self, window: Window | None, start: datetime, end: datetime
                       ) -> list[Interval]:
        """When a wave of this window may run within [start, end): openings minus blackouts."""
        base = [(start, end)] if window is None else window.intervals(start, end)
        return subtract(base, self.blackout_intervals(start, end))

    def earliest_start(self, window: Window | None, after: datetime, duration: timedelta,
                       horizon: timedelta = timedelta(days=800)) -> datetime | None:
        """First moment from `after` at which `duration` fits in one opening; None: never."""
        for a, b in self.open_intervals(window, after, after + horizon):
            begin = max(a, after)
            if begin + duration <= b:
                return begin
        return None

    def closed_reason(self, window: Window | None, at: datetime) -> str | None:
        """Why a wave of this window may not start at `at`, or None when it may."""
        for a, b in self.blackout_intervals(at, at + timedelta(seconds=1)):
            if a <= at < b:
                return f"{at.astimezone(ZoneInfo(self.timezone)):%Y-%m-%d} is a blackout date"
        if window is None:
            return None
        if any(a <= at < b for a, b in window.intervals(at, at + timedelta(seconds=1))):
            return None
        nxt = self.earliest_start(window, at, timedelta(0))
        when = ("never" if nxt is None else
                f"{nxt.astimezone(ZoneInfo(window.timezone)):%Y-%m-%d %H:%M %Z}")
        return f"the {window.group} window ({window.describe()}) is closed; it opens {when}"

    # ---- serialisation (a plan carries its policy) -------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, **self.raw}


# ---- parsing --------------------------------------------------------------------------------
_TOP = {"version", "timezone", "deadline", "waves", "order", "windows", "blackout",
        "protection", "gates", "approvals", "replacement", "protect_unprotected", "reboot"}


def parse(data: Any, source: str, lines: dict[KeyPath, int] | None = None) -> Policy:
    """The policy `data` (a file's YAML) says, every key checked, in the file's order of
    sections; `lines` gives each key path its line for the error messages."""
    c = Checker(source, lines or {})
    top = c.mapping(data, (), _TOP)
    if top.get("version", 1) != 1:
        raise c.fail(("version",), "must be 1")
    tz = c.zone(top.get("timezone", "UTC"), ("timezone",))
    kw: dict[str, Any] = {"source": source, "timezone": tz, **_waves(c, top),
                          **_order(c, top), "windows": _windows(c, top, tz),
                          "blackouts": _blackouts(c, top)}
    if top.get("deadline") is not None:
        kw["deadline"] = _deadline(top["deadline"], tz, c)
    kw |= _protection(c, top)
    kw |= _gates(c, top)
    kw |= _replacement(c, top)
    kw |= _reboot(c, top)
    appr = c.mapping(top.get("approvals"), ("approvals",), {"required"})
    if "required" in appr:
        if not isinstance(appr["required"], bool):
            raise c.fail(("approvals", "required"), "must be true or false")
        kw["require_approval"] = appr["required"]
    kw["raw"] = _jsonable(top)
    return Policy(**kw)


def _waves(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    waves = c.mapping(top.get("waves"), ("waves",), {"canary", "growth", "max_size"})
    kw: dict[str, Any] = {}
    if "canary" in waves:
        canary = waves["canary"]
        if isinstance(canary, str) and canary.endswith("%"):
            try:
                pct = float(canary[:-1])
            except ValueError:
                pct = -1.0
            if not 0 < pct <= 100:
                raise c.fail(("waves", "canary"), 'a percentage must be like "5%" (0-100)')
            kw["canary_percent"] = pct
        else:
            kw["canary"] = c.integer(canary, ("waves", "canary"), 1, 100000)
    if "growth" in waves:
        kw["growth"] = c.number(waves["growth"], ("waves", "growth"), 1.1, 100)
    if "max_size" in waves:
        kw["max_wave"] = c.integer(waves["max_size"], ("waves", "max_size"), 1, 100000)
    return kw


def _order(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    order = c.mapping(top.get("order"), ("order",), {"first", "last"})
    first = c.names(order.get("first", []), ("order", "first"))
    last = c.names(order.get("last", []), ("order", "last"))
    both = set(first) & set(last)
    if both:
        raise c.fail(("order", "last"), f"{sorted(both)} cannot be both first and last")
    return {"first": first, "last": last}


def _windows(c: Checker, top: dict[str, Any], tz: str) -> tuple[Window, ...]:
    windows = c.mapping(top.get("windows"), ("windows",),
                        {str(k) for k in (top.get("windows") or {})})
    parsed = []
    for group, spec in windows.items():
        path: KeyPath = ("windows", str(group))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(group)):
            raise c.fail(path, "must be an inventory group name (letters, digits, '_', '-')")
        body = c.mapping(spec, path, {"timezone", "slots"})
        wtz = c.zone(body.get("timezone", tz), (*path, "timezone"))
        slots_raw = body.get("slots")
        if not isinstance(slots_raw, list) or not slots_raw:
            raise c.fail((*path, "slots"), "needs at least one slot "
                                           '({days: [mon, tue], start: "22:00", end: "04:00"})')
        slots = tuple(_slot(c, slot, (*path, "slots", i)) for i, slot in enumerate(slots_raw))
        parsed.append(Window(group=str(group), timezone=wtz, slots=slots))
    return tuple(parsed)


def _slot(c: Checker, slot: Any, spath: KeyPath) -> Slot:
    s = c.mapping(slot, spath, {"days", "start", "end"})
    for key in ("days", "start", "end"):
        if key not in s:
            raise c.fail(spath, f"missing key {key!r}")
    days = s["days"]
    if not isinstance(days, list) or not days or any(
            str(d).lower() not in DAYS for d in days):
        raise c.fail((*spath, "days"), f"must be a list of days from {', '.join(DAYS)}")
    return Slot(days=tuple(sorted({DAYS.index(str(d).lower()) for d in days})),
                start=c.clock(s["start"], (*spath, "start")),
                end=c.clock(s["end"], (*spath, "end")))


def _blackouts(c: Checker, top: dict[str, Any]) -> tuple[tuple[date, date], ...]:
    blackout = top.get("blackout", [])
    if not isinstance(blackout, list):
        raise c.fail(("blackout",), "must be a list of dates or {from: DATE, to: DATE}")
    ranges = []
    for i, item in enumerate(blackout):
        if isinstance(item, dict):
            body = c.mapping(item, ("blackout", i), {"from", "to"})
            if "from" not in body or "to" not in body:
                raise c.fail(("blackout", i), "a range needs both from and to")
            a = c.day(body["from"], ("blackout", i, "from"))
            b = c.day(body["to"], ("blackout", i, "to"))
            if b < a:
                raise c.fail(("blackout", i, "to"), "ends before it starts")
        else:
            a = b = c.day(item, ("blackout", i))
        ranges.append((a, b))
    return tuple(ranges)


_ID = re.compile(r"[a-z][a-z0-9_-]*")
REBOOTS = ("window", "never")


def _reboot(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    """`reboot: window | never`: when a removal that completes at the next reboot gets it."""
    if "reboot" not in top:
        return {}
    if top["reboot"] not in REBOOTS:
        raise c.fail(("reboot",), f"must be one of {', '.join(REBOOTS)} (window: reboot in "
                     "the host's maintenance window; never: its administrator does)")
    return {"reboot": top["reboot"]}


def _replacement(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    """`replacement: mde`, or `replacement: {default: clamav, groups: {workstations: mde}}`;
    `protect_unprotected: true`. Ids are checked against the catalogue when it is known."""
    kw: dict[str, Any] = {}
    if "protect_unprotected" in top:
        if not isinstance(top["protect_unprotected"], bool):
            raise c.fail(("protect_unprotected",), "must be true or false")
        kw["protect_unprotected"] = top["protect_unprotected"]
    raw = top.get("replacement")
    if raw is None:
        return kw
    if isinstance(raw, str):
        raw = {"default": raw}
    spec = c.mapping(raw, ("replacement",), {"default", "groups"})
    if "default" in spec:
        if not isinstance(spec["default"], str) or not _ID.fullmatch(spec["default"]):
            raise c.fail(("replacement", "default"), "must be a replacement id of the "
                         "catalogue, such as clamav")
        kw["replacement"] = spec["default"]
    groups = spec.get("groups") or {}
    if not isinstance(groups, dict):
        raise c.fail(("replacement", "groups"), "must map inventory groups to replacement ids")
    for group, rid in groups.items():
        if not isinstance(rid, str) or not _ID.fullmatch(rid):
            raise c.fail(("replacement", "groups", str(group)),
                         "must be a replacement id of the catalogue, such as mde")
    kw["replacement_groups"] = tuple((str(g), str(r)) for g, r in groups.items())
    return kw


def _protection(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    prot = c.mapping(top.get("protection"), ("protection",),
                     {"strategy", "max_unprotected", "reconnect_minutes"})
    kw: dict[str, Any] = {}
    if "strategy" in prot:
        if prot["strategy"] not in STRATEGY_NAMES:
            raise c.fail(("protection", "strategy"), f"must be one of {', '.join(STRATEGY_NAMES)}")
        kw["strategy"] = Strategy(prot["strategy"])
    if "max_unprotected" in prot:
        kw["max_unprotected"] = c.budget(prot["max_unprotected"],
                                         ("protection", "max_unprotected"))
    if "reconnect_minutes" in prot:
        kw["reconnect_seconds"] = 60 * c.number(prot["reconnect_minutes"],
                                                ("protection", "reconnect_minutes"), 0, 24 * 60)
    return kw


def _gates(c: Checker, top: dict[str, Any]) -> dict[str, Any]:
    gates = c.mapping(top.get("gates"), ("gates",), {"max_failed_percent", "soak_minutes"})
    kw: dict[str, Any] = {}
    if "max_failed_percent" in gates:
        kw["max_failed_percent"] = c.number(gates["max_failed_percent"],
                                            ("gates", "max_failed_percent"), 0, 100)
    if "soak_minutes" in gates:
        kw["soak_seconds"] = 60 * c.number(gates["soak_minutes"], ("gates", "soak_minutes"),
                                           0, 7 * 24 * 60)
    return kw


def _deadline(value: Any, tz: str, c: Checker) -> datetime:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        value = date.fromisoformat(value.strip())
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(23, 59, 59))
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise c.fail(("deadline",), "must be a date (2026-12-31) or a date and time "
                                        "(2026-12-31T18:00:00-05:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment.astimezone(UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def load(path: Path) -> Policy:
    if not path.is_file():
        raise PolicyError(f"policy {path} does not exist; pass --policy with a policy file "
                          "(see inventory/policy.example.yml)")
    data, lines = load_yaml_located(path, PolicyError)
    return parse(data, str(path), lines)


def from_json(data: dict[str, Any]) -> Policy:
    """The policy a plan file carries (checked again: a plan file is input too)."""
    body = {k: v for k, v in data.items() if k != "source"}
    return parse(body, str(data.get("source", "plan")))
