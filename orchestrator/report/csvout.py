"""plan.csv and the evidence report's CSV, byte for byte what `csv.writer` writes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from orchestrator.report.timefmt import ts

PLAN_CSV_COLUMNS = ("wave", "host", "groups", "window", "estimated_start", "estimated_end",
                    "os", "banned", "signatures", "signature_age_days", "strategy", "replacement",
                    "state", "risks")
REPORT_CSV_COLUMNS = ("host", "state", "protected_by", "strategy", "wave", "banned_found",
                      "banned_signatures", "gap_seconds", "reason")

_CSV_SPECIAL = frozenset(',"\r\n')


def csv_field(value: Any) -> str:
    """One field as `csv.writer` writes it (QUOTE_MINIMAL, the default dialect)."""
    text = "" if value is None else str(value)
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


def plan_csv(view: dict[str, Any]) -> str:
    return "".join(plan_csv_chunks(view))


def plan_csv_chunks(view: dict[str, Any]) -> Iterator[str]:
    """plan.csv, a wave at a time: what `csv.writer` would write, built from parts shared by
    many hosts (the same groups, findings, strategy, state and risks) so 100,000 rows take
    a tenth of a second; `test_reports` checks it against `csv.writer`."""
    yield ",".join(PLAN_CSV_COLUMNS) + "\r\n"
    tails: dict[tuple[Any, ...], str] = {}
    heads: dict[str, str] = {}
    for w in view["waves"]:
        wave = csv_field(w["number"])
        middle = ",".join(csv_field(v) for v in (w["window"], ts(w["start"]), ts(w["end"])))
        # Checked names (RFC 1123) never need quotes: the wave's are checked all at once.
        plain_names = _CSV_SPECIAL.isdisjoint("".join(h.host for h in w["hosts"]))
        lines = []
        for h in w["hosts"]:
            key = h[2:10]  # os .. risks: the fields many hosts share
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = ",".join(csv_field(v) for v in key)
            groups = heads.get(h.groups)
            if groups is None:
                groups = heads[h.groups] = csv_field(h.groups)
            host = h.host if plain_names else csv_field(h.host)
            lines.append(f"{wave},{host},{groups},{middle},{tail}\r\n")
        yield "".join(lines)


def report_csv(data: dict[str, Any]) -> str:
    """The evidence report's hosts, one row each."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(REPORT_CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in data["hosts"]:
        writer.writerow(row)
    return buf.getvalue()
