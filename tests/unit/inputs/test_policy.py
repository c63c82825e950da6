"""The policy file: parsing with file:line:key errors, windows, blackouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.core.errors import PolicyError
from orchestrator.inputs import policy

EXAMPLE = Path(__file__).resolve().parents[3] / "inventory" / "policy.example.yml"


def test_the_documented_example_loads() -> None:
    p = policy.load(EXAMPLE)
    assert p.canary == 2
    assert p.first == ("workstations",)
    assert p.last == ("servers", "critical")
    assert [w.group for w in p.windows] == ["workstations", "servers"]
    assert p.require_approval is True
    assert p.soak_seconds == 30 * 60
    # A plain date means the end of that day in the policy's time zone (EST: UTC-5).
    assert p.deadline == datetime(2027, 1, 1, 4, 59, 59, tzinfo=UTC)


def test_a_policy_survives_the_round_trip_through_a_plan_file() -> None:
    p = policy.load(EXAMPLE)
    assert policy.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        ("waves:\n  canary: 2\n  grwoth: 3\n", 3, "waves.grwoth", "unknown key"),
        ("windows:\n  servers:\n    slots:\n      - {days: [sat], start: 22:00, end: \"04:00\"}\n",
         4, "windows.servers.slots.0.start", "in quotes"),
        ("windows:\n  servers:\n    slots:\n      - {days: [sat, funday], start: \"22:00\", "
         "end: \"04:00\"}\n", 4, "windows.servers.slots.0.days", "list of days"),
        ("timezone: Mars/Olympus\n", 1, "timezone", "unknown time zone"),
        ("blackout:\n  - 2026-12-24\n  - {from: 2027-01-02, to: 2027-01-01}\n", 3,
         "blackout.1.to", "ends before it starts"),
        ("blackout:\n  - 24/12/2026\n", 2, "blackout.0", "date like"),
        ("waves:\n  canary: \"150%\"\n", 2, "waves.canary", "percentage"),
        ("protection:\n  strategy: yolo\n", 2, "protection.strategy", "one of"),
        ("gates:\n  max_failed_percent: 120\n", 2, "gates.max_failed_percent", "from 0 to 100"),
        ("order:\n  first: [servers]\n  last: [servers]\n", 3, "order.last",
         "both first and last"),
        ("deadline: soon\n", 1, "deadline", "must be a date"),
        ("approvals:\n  required: \"yes\"\n", 2, "approvals.required", "true or false"),
        ("windows:\n  servers:\n    timezone: UTC\n", 2, "windows.servers.slots",
         "at least one slot"),
    ],
)
def test_an_invalid_policy_names_file_line_and_key(tmp_path: Path, text: str, line: int,
                                                  key: str, problem: str) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        policy.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("waves:\n  canary: 2\n growth: [\n")
    with pytest.raises(PolicyError, match=rf"^{path}:\d+: not valid YAML"):
        policy.load(path)


def test_a_missing_policy_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist; pass --policy"):
        policy.load(tmp_path / "nope.yml")


def overnight() -> policy.Policy:
    return policy.parse({
        "timezone": "America/New_York",
        "windows": {"servers": {"slots": [{"days": ["fri"], "start": "22:00", "end": "04:00"}]}},
        "blackout": ["2026-12-25"],
    }, "p.yml")


def test_an_overnight_window_runs_into_the_next_day() -> None:
    p = overnight()
    w = p.window_named("servers")
    assert w is not None
    start = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # a Friday
    (a, b), *_ = w.intervals(start, start + timedelta(days=7))
    # Friday 22:00 EST is Saturday 03:00 UTC; it closes Saturday 04:00 EST = 09:00 UTC.
    assert (a, b) == (datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
                      datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    assert p.closed_reason(w, a) is None
    assert p.closed_reason(w, b - timedelta(seconds=1)) is None
    closed = p.closed_reason(w, b)
    assert closed is not None
    assert "opens 2026-12-04 22:00 EST" in closed


def test_a_blackout_day_closes_every_window() -> None:
    p = overnight()
    christmas_noon = datetime(2026, 12, 25, 17, 0, tzinfo=UTC)
    assert p.closed_reason(None, christmas_noon) == "2026-12-25 is a blackout date"
    assert p.closed_reason(None, christmas_noon + timedelta(days=1)) is None
    # The Friday window of Christmas day is cut where the blackout ends (midnight EST).
    w = p.window_named("servers")
    opens = p.open_intervals(w, datetime(2026, 12, 25, tzinfo=UTC),
                             datetime(2026, 12, 27, tzinfo=UTC))
    assert opens == [(datetime(2026, 12, 26, 5, 0, tzinfo=UTC),
                      datetime(2026, 12, 26, 9, 0, tzinfo=UTC))]


def test_earliest_start_needs_the_whole_duration_inside_one_opening() -> None:
    p = overnight()
    w = p.window_named("servers")
    after = datetime(2026, 11, 27, tzinfo=UTC)
    assert p.earliest_start(w, after, timedelta(hours=6)) == datetime(2026, 11, 28, 3, 0,
                                                                      tzinfo=UTC)
    assert p.earliest_start(w, after, timedelta(hours=7)) is None


def test_a_date_that_does_not_exist_is_one_line_with_its_line(tmp_path: Path) -> None:
    """Found by the fuzzer: YAML reads 2026-12-37 as a date and PyYAML raises ValueError."""
    path = tmp_path / "policy.yml"
    path.write_text("version: 1\ntimezone: UTC\ndeadline: 2026-12-37\n")
    with pytest.raises(PolicyError, match=rf"^{path}:3: day is out of range for month"):
        policy.load(path)
