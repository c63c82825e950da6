"""The plan's timeline as an SVG drawing: one bar per wave, the deadline, blackout days shaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

_W, _LEFT, _RIGHT, _ROW, _TOP = 960, 110, 20, 26, 34


def _ticks(lo: float, hi: float) -> list[float]:
    span = max(hi - lo, 60.0)
    for step in (300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400,
                 30 * 86400, 91 * 86400):
        if span / step <= 10:
            break
    first = (int(lo) // step + 1) * step
    return [float(t) for t in range(first, int(hi) + 1, step)]


def _label(t: float, span: float) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%H:%M" if span <= 86400 else "%b %d %H:%M" if span <= 7 * 86400
                           else "%Y-%m-%d")


def render(estimate: dict[str, Any], blackouts: list[tuple[float, float]]) -> str:
    """SVG text for the waves in `estimate` (from planner.schedule). Times are UTC."""
    waves = estimate.get("waves", [])
    verdict = estimate.get("deadline", {})
    placed = [w for w in waves if w.get("start") is not None]
    start = float(estimate.get("started_from", 0.0))
    ends = [float(w["end"]) for w in placed]
    deadline = verdict.get("deadline")
    work_end = max([*ends, start + 600.0])
    # A deadline far beyond the work would squeeze every bar to the left edge: then it is
    # written at the right edge instead of drawn to scale.
    far = bool(deadline) and float(deadline) - start > 3 * (work_end - start)
    hi = work_end if far or not deadline else max(work_end, float(deadline))
    hi += (hi - start) * 0.04
    span = hi - start
    height = _TOP + _ROW * max(1, len(waves)) + 30

    def x(t: float) -> float:
        return _LEFT + (t - start) / span * (_W - _LEFT - _RIGHT)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
           f'width="{_W}" height="{height}" role="img" aria-label="Estimated timeline of the '
           'waves" font-family="sans-serif" font-size="12">',
           f'<rect x="0" y="0" width="{_W}" height="{height}" fill="#ffffff"/>']
    for lo, up in blackouts:
        a, b = max(lo, start), min(up, hi)
        if b > a:
            out.append(f'<rect x="{x(a):.1f}" y="{_TOP - 8}" width="{x(b) - x(a):.1f}" '
                       f'height="{height - _TOP - 14}" fill="#e5e5e5"><title>blackout</title>'
                       '</rect>')
    for t in _ticks(start, hi):
        out.append(f'<line x1="{x(t):.1f}" y1="{_TOP - 8}" x2="{x(t):.1f}" '
                   f'y2="{height - 22}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle" '
                   f'fill="#444">{escape(_label(t, span))}</text>')
    for i, w in enumerate(waves):
        y = _TOP + i * _ROW
        name = "canary" if w["wave"] == 0 else f"wave {w['wave']}"
        out.append(f'<text x="{_LEFT - 8}" y="{y + 14}" text-anchor="end">'
                   f'{escape(name)} ({w["hosts"]})</text>')
        if w.get("start") is None:
            out.append(f'<text x="{_LEFT + 4}" y="{y + 14}" fill="#b00020">fits in no '
                       'opening of its window</text>')
            continue
        a, b = float(w["start"]), float(w["end"])
        width = max(2.0, x(b) - x(a))
        tip = (f"{name}: {_label(a, 2 * 86400)} to {_label(b, 2 * 86400)} UTC, "
               f"{timedelta(seconds=round(b - a))}, window {w.get('window_text', '')}")
        out.append(f'<rect x="{x(a):.1f}" y="{y + 3}" width="{width:.1f}" height="16" rx="3" '
                   f'fill="{"#f0a202" if w["wave"] == 0 else "#2b6cb0"}">'
                   f'<title>{escape(tip)}</title></rect>')
    if deadline and far:
        days = (float(deadline) - work_end) / 86400
        out.append(f'<text x="{_W - _RIGHT}" y="{_TOP - 18}" fill="#2f855a" text-anchor="end">'
                   f'deadline {escape(_label(float(deadline), 8 * 86400))} UTC, '
                   f'{days:.0f} days after the estimated finish →</text>')
    elif deadline:
        colour = "#b00020" if not verdict.get("feasible", True) else "#2f855a"
        dx = x(float(deadline))
        out.append(f'<line x1="{dx:.1f}" y1="{_TOP - 14}" x2="{dx:.1f}" y2="{height - 22}" '
                   f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/>')
        out.append(f'<text x="{min(dx, _W - 60):.1f}" y="{_TOP - 18}" fill="{colour}" '
                   'text-anchor="middle">deadline</text>')
    out.append("</svg>")
    return "\n".join(out)
