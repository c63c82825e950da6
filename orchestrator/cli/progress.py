"""Live progress of a run on a terminal: a bar per wave and the hosts counted by state."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from orchestrator.core.models import HostRecord, HostState, Plan

# Where a host stands once this run has nothing more to do to it.
SETTLED = frozenset({
    HostState.MIGRATED, HostState.CLEAN, HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
    HostState.UNPROTECTED, HostState.BLOCKED, HostState.UNREACHABLE, HostState.INTERRUPTED,
})


class RunProgress:
    """Fed every committed transition; draws above the run's log lines."""

    def __init__(self, console: Console, plan: Plan, records: dict[str, HostRecord]) -> None:
        self.console = console
        self.states = {name: r.state for name, r in records.items()}
        self.waves = plan.waves
        self.bars = Progress(TextColumn("{task.description:<16}"), BarColumn(bar_width=40),
                             MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                             console=console)
        self.tasks: dict[int, TaskID] = {}
        for w in plan.waves:
            name = "canary" if w.is_canary else f"wave {w.number}"
            self.tasks[w.number] = self.bars.add_task(name, total=len(w.hosts), note="")
        self.live = Live(self._render(), console=console, refresh_per_second=4,
                         transient=False)
        self._refresh_bars()

    def _counts(self) -> Text:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state.value] = counts.get(state.value, 0) + 1
        text = Text("hosts: ")
        for i, (name, n) in enumerate(sorted(counts.items())):
            style = ("bold red" if name == "unprotected" else "green"
                     if name in ("migrated", "clean") else "")
            text.append(f"{'' if i == 0 else ', '}{n} {name}", style=style)
        return text

    def _render(self) -> Group:
        return Group(self._counts(), self.bars)

    def _refresh_bars(self) -> None:
        for w in self.waves:
            done = sum(1 for h in w.hosts if self.states.get(h) in SETTLED)
            failed = sum(1 for h in w.hosts if self.states.get(h) is not None
                         and self.states[h].is_failure)
            self.bars.update(self.tasks[w.number], completed=done,
                             note=f"[red]{failed} failed[/]" if failed else "")

    def update(self, record: HostRecord) -> None:
        self.states[record.name] = record.state
        self._refresh_bars()
        self.live.update(self._render())

    def log(self, message: str) -> None:
        self.live.console.print(message, markup=False, highlight=False)

    def __enter__(self) -> RunProgress:
        self.live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.live.stop()
