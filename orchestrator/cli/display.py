"""What the command line prints: the consoles, the host table, the status summary, and the
observer that shows a run's progress and asks for confirmation."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import click

from orchestrator.core.errors import Aborted, ExitCode
from orchestrator.core.lazy import lazy
from orchestrator.core.models import HostRecord, HostState, Plan

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator import api
    from orchestrator.cli import progress as progress_mod
    from orchestrator.report import evidence
else:
    progress_mod = lazy("orchestrator.cli.progress")
    evidence = lazy("orchestrator.report.evidence")

# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns; give them room.
_WIDTH = None if sys.stdout.isatty() else 200


class _LazyConsole:
    """A rich Console made on first use: `status` of a large state prints two plain lines
    (click.echo) and need not import rich, a sixth of its time."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(stderr=self._stderr, highlight=False, width=_WIDTH)
        return getattr(self._console, name)


err = cast("Console", _LazyConsole(stderr=True))
out = cast("Console", _LazyConsole(stderr=False))

STATE_COLOURS = {
    "migrated": "green", "clean": "green", "verified": "cyan", "pending": "white",
    "installing": "yellow", "removing": "yellow", "reboot_pending": "yellow",
    "unreachable": "magenta",
    "blocked": "magenta", "install_failed": "red", "remove_failed": "red",
    "unprotected": "bold red",
}


def print_status(records: list[HostRecord] | tuple[HostRecord, ...]) -> None:
    """The host table: state, protection, strategy, wave, banned products, gap, reason."""
    from rich.table import Table  # noqa: PLC0415 - not needed for counts alone

    table = Table(title="avmigrate: host states", show_lines=False)
    for col in ("host", "state", "protected by", "strategy", "wave", "banned found", "gap",
                "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        row = evidence.host_row(r)
        colour = STATE_COLOURS.get(r.state.value, "white")
        table.add_row(r.name, f"[{colour}]{r.state.value}[/]", row["protected_by"],
                      row["strategy"], str(row["wave"]), row["banned_found"],
                      "-" if row["gap_seconds"] is None else f"{row['gap_seconds']:.0f}s",
                      r.reason)
    out.print(table)


def print_summary(view: api.StatusView, attention: tuple[HostState, ...]) -> None:
    """Counts by state, then the hosts that need attention (the first of them)."""
    counts = view.counts
    total = sum(counts.values())
    parts = ", ".join(f"{s.value} {counts[s]}" for s in HostState if counts.get(s))
    click.echo(f"{total} hosts: {parts}")
    if not view.needing:
        click.echo("no host needs attention")
        return
    print_status(view.attention)
    if view.needing > len(view.attention):
        states = " ".join(f"--only {s.value}" for s in attention if counts.get(s))
        out.print(f"and {view.needing - len(view.attention)} more that need attention: "
                  f"avmigrate status {states}", markup=False)


class ConsoleObserver:
    """Progress on standard error (live bars during a run, if `live`); asks before changing
    hosts unless `yes`, and refuses to ask without a terminal."""

    def __init__(self, *, yes: bool = True, verb: str = "run", live: bool = False) -> None:
        self.yes = yes
        self.verb = verb  # as in "pass --yes to <verb> without a terminal"
        self.live = live
        self._bars: progress_mod.RunProgress | None = None

    def log(self, message: str) -> None:
        if self._bars is not None:
            self._bars.log(message)
        else:
            err.print(message, markup=False)

    def notice(self, message: str) -> None:
        err.print(message, markup=False, soft_wrap=True)

    def confirm(self, question: str) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise Aborted(f"not confirmed: pass --yes to {self.verb} without a terminal",
                          exit_code=ExitCode.BAD_INPUT)
        click.confirm(question, abort=True)

    def changed(self, record: HostRecord) -> None:
        if self._bars is not None:
            self._bars.update(record)

    @contextlib.contextmanager
    def watching(self, the_plan: Plan, records: dict[str, HostRecord]) -> Iterator[object]:
        if not self.live:
            yield None
            return
        with progress_mod.RunProgress(err, the_plan, records) as bars:
            self._bars = bars
            try:
                yield bars
            finally:  # what is said after the live view ends goes to the terminal again
                self._bars = None
