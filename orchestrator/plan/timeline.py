"""The plan's timeline as an SVG drawing: one bar per wave, the deadline, blackout days shaded."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Scale:
    """The drawing's time axis: from `start` to `hi` across the width; its height in pixels."""

    start: float
    hi: float
    height: int

    @property
    def span(self) -> float:
        return self.hi - self.start

    def x(self, t: float) -> float:
        return _LEFT + (t - self.start) / self.span * (_W - _LEFT - _RIGHT)


def render(estimate: dict[str, Any], blackouts: list[tuple[float, float]]) -> str:
    """SVG text for the waves in `estimate` (from estimate.schedule). Times are UTC."""
    waves = estimate.get("waves", [])
    verdict = estimate.get("deadline", {})
    start = float(estimate.get("started_from", 0.0))
    ends = [float(w["end"]) for w in waves if w.get("start") is not None]
    deadline = verdict.get("deadline")
    work_end = max([*ends, start + 600.0])
    # A deadline far beyond the work would squeeze every bar to the left edge: then it is
    # written at the right edge instead of drawn to scale.
    far = bool(deadline) and float(deadline) - start > 3 * (work_end - start)
    hi = work_end if far or not deadline else max(work_end, float(deadline))
    hi += (hi - start) * 0.04
    scale = _Scale(start, hi, _TOP + _ROW * max(1, len(waves)) + 30)
    height = scale.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
           f'width="{_W}" height="{height}" role="img" aria-label="Estimated timeline of the '
           'waves" font-family="sans-serif" font-size="12">',
           f'<rect x="0" y="0" width="{_W}" height="{height}" fill="#ffffff"/>',
           *_shaded(scale, blackouts), *_grid(scale), *_bars(scale, waves)]
    if deadline and far:
        days = (float(deadline) - work_end) / 86400
        out.append(f'<text x="{_W - _RIGHT}" y="{_TOP - 18}" fill="#2f855a" text-anchor="end">'
                   f'deadline {escape(_label(float(deadline), 8 * 86400))} UTC, '
                   f'{days:.0f} days after the estimated finish →</text>')
    elif deadline:
        out += _deadline_line(scale, float(deadline), verdict.get("feasible", True))
    out.append("</svg>")
    return "\n".join(out)


def _shaded(scale: _Scale, blackouts: list[tuple[float, float]]) -> list[str]:
    """The blackout periods, shaded."""
    out = []
    x = scale.x
    for lo, up in blackouts:
        a, b = max(lo, scale.start), min(up, scale.hi)
        if b > a:
            out.append(f'<rect x="{x(a):.1f}" y="{_TOP - 8}" width="{x(b) - x(a):.1f}" '
                       f'height="{scale.height - _TOP - 14}" fill="#e5e5e5"><title>blackout'
                       '</title></rect>')
    return out


def _grid(scale: _Scale) -> list[str]:
    """Vertical lines at round times, each labelled at the bottom."""
    out = []
    x, height = scale.x, scale.height
    for t in _ticks(scale.start, scale.hi):
        out.append(f'<line x1="{x(t):.1f}" y1="{_TOP - 8}" x2="{x(t):.1f}" '
                   f'y2="{height - 22}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle" '
                   f'fill="#444">{escape(_label(t, scale.span))}</text>')
    return out


def _bars(scale: _Scale, waves: list[dict[str, Any]]) -> list[str]:
    """A labelled bar per wave, or why it has none."""
    out = []
    x = scale.x
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
    return out


def _deadline_line(scale: _Scale, deadline: float, feasible: bool) -> list[str]:
    """The deadline drawn to scale: green if the estimate meets it, red if not."""
    colour = "#b00020" if not feasible else "#2f855a"
    dx = scale.x(deadline)
    return [f'<line x1="{dx:.1f}" y1="{_TOP - 14}" x2="{dx:.1f}" y2="{scale.height - 22}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/>',
            f'<text x="{min(dx, _W - 60):.1f}" y="{_TOP - 18}" fill="{colour}" '
            'text-anchor="middle">deadline</text>']
