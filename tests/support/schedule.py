"""Operators as cooperative threads over one state and one simulated fleet, for the oracle.

Each operator runs what a command of the CLI runs (lease its hosts, discover, plan, run; or
remediate) in a thread of its own, but only when the test gives it the baton: it runs until its
next yield point (every step boundary of the simulated fleet, every commit, every sleep) and
hands the baton back. The test thus decides, deterministically, which operator moves when, and
can kill one at any yield point (`Crash`: its process died there; its lease is judged dead by
the store at once, as for a dead process on the same machine).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sqlite3
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core import procs
from orchestrator.core.errors import Aborted, AvmigrateError
from orchestrator.core.models import SLOT_STATES, UNTOUCHED, HostState, InventoryHost
from orchestrator.engine.engine import Engine
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs import catalogue
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.inputs.policy import Policy
from orchestrator.plan import planner
from orchestrator.store.errors import LeaseHeld
from orchestrator.store.records import Budget, LeaseHolder
from orchestrator.store.sqlite import SqliteStore

from .sim import Crash, SimFleet, SimHost

MAIN = -1
PIDS = itertools.count(3_000_000)


class Stuck(AssertionError):
    """An operator did not hand the baton back: the engine is stuck somewhere."""


class Baton:
    """Only one thread runs at a time: the test (MAIN) or the operator it names."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.turn = MAIN
        self.parked: set[int] = set()  # operators waiting for their turn

    def give(self, op: int, timeout: float = 20.0) -> None:
        with self.cv:
            self.turn = op
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: self.turn == MAIN, timeout):
                raise Stuck(f"operator {op} did not yield within {timeout}s")

    def back(self, op: int) -> None:
        """From operator `op`'s thread: hand the baton back and wait for it again."""
        with self.cv:
            self.turn = MAIN
            self.parked.add(op)
            self.cv.notify_all()
            self.cv.wait_for(lambda: self.turn == op)
            self.parked.discard(op)

    def wait_parked(self, op: int, timeout: float = 20.0) -> None:
        with self.cv:
            if not self.cv.wait_for(lambda: op in self.parked, timeout):
                raise Stuck(f"operator {op} did not start")

    def done(self) -> None:
        with self.cv:
            self.turn = MAIN
            self.cv.notify_all()


@dataclass
class Operator:
    """One operator process: its thread, lease identity and what it was asked to do."""

    index: int
    hosts: list[str]
    command: str  # "run" or "remediate"
    policy: RunPolicy
    pid: int = field(default_factory=lambda: next(PIDS))
    thread: threading.Thread | None = None
    engine: Engine | None = None
    finished: bool = False
    crashed: bool = False
    kill: bool = False  # crash at the next yield point
    aborted: bool = False  # the second Ctrl-C: its running step is aborted
    kill_at: int | None = None  # crash at this yield point (every boundary may be drawn)
    # At the n-th of its yield points at which some host is without protection: crash, or
    # lose the execution node of those hosts (which then do not answer for a while).
    window_event: tuple[str, int] | None = None
    window_yields: int = 0
    outcome: str = ""
    error: str = ""  # a traceback: the engine failed in a way no command should
    yields: int = 0
    clock: float = 0.0


class Schedule:
    """One state file, one simulated fleet, up to three operators moved one yield at a time."""

    def __init__(self, directory: Path, hosts: dict[str, SimHost]) -> None:
        self.path = directory / "state.db"
        self.fleet = SimFleet(hosts)
        self.fleet.hook = self._hook
        self.fleet.cancel = self._cancelled
        self.cat = catalogue.load()
        names = tuple(InventoryHost(n, ("all",), {}) for n in hosts)
        self.inventory = Inventory("sim", names, digest_of(names))
        self.baseline = {n for n, h in hosts.items() if h.protected}
        self.baton = Baton()
        self.ops: dict[int, Operator] = {}
        self.local = threading.local()
        self.dead: set[int] = set()  # pids of operators that crashed
        self.reader = SqliteStore(self.path)
        self.reader.ensure_hosts(list(hosts))
        # Read from whichever thread holds the baton (only one runs at a time).
        self.reader.db.close()
        self.reader.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30,
                                         check_same_thread=False)
        self.log: list[str] = []
        self.seen: collections.Counter[str] = collections.Counter()  # what the schedule did
        # Judged at every yield point of every operator, not only between the test's events.
        self.peak = 0
        self.reboot_pending_seen = False
        # While hosts broken on their own fill the budget: (removals begun then, who is bare)
        self._full_since: tuple[int, list[str]] | None = None
        self.violations: list[str] = []
        self.budget = 1

    # ---- the operators' side --------------------------------------------------------------
    def _alive(self, pid: int, _started: int) -> bool:
        return pid not in self.dead

    def _cancelled(self) -> bool:
        op = getattr(self.local, "op", None)
        return op is not None and op.aborted

    def _yield(self) -> None:
        op: Operator | None = getattr(self.local, "op", None)
        if op is None:
            return
        op.yields += 1
        self.judge(f"op{op.index} yield {op.yields}")
        if op.yields == op.kill_at:
            self.seen["crash" + (" inside a window" if self.unprotected() else "")] += 1
            raise Crash
        bare = self.unprotected()
        if bare and op.window_event is not None:
            op.window_yields += 1
            kind, n = op.window_event
            if op.window_yields == n:
                self.seen[f"{kind} inside a window"] += 1
                if kind == "crash":
                    raise Crash
                self.fleet.lose_next.update(bare)
                for name in bare:
                    self.fleet.hosts[name].unreachable_for = 2
        self.baton.back(op.index)
        if op.kill:
            raise Crash

    def _committed(self, record: Any) -> None:
        self.fleet.recorded(record.name)
        self._yield()

    def _hook(self, _step: str, _point: str, _host: str | None, _book: str) -> None:
        self._yield()

    def _sleep(self, op: Operator, seconds: float) -> None:
        op.clock += seconds
        self._yield()

    def _body(self, op: Operator) -> None:  # noqa: PLR0915 - one operator's life, start to exit, as the CLI lives it
        self.local.op = op
        self.baton.back(op.index)  # wait for the first turn
        store = None
        try:
            if op.kill:
                raise Crash  # noqa: TRY301 - killed before it began
            store = SqliteStore(self.path)
            store.alive = self._alive
            read_budget = store.budget

            def budget() -> Budget:
                seen = read_budget()
                self._yield()  # a real process may lose the CPU between reading and writing
                return seen

            store.budget = budget  # type: ignore[method-assign]
            holder = LeaseHolder(f"op{op.index}", "sim", op.pid, procs.machine_identity())
            store.acquire_lease(holder, 3600, op.hosts)
            inv = self.inventory.only(store.claimed or ())
            run_id = store.begin_run(op.command, f"op{op.index}", None)
            engine = Engine(store, self.fleet, self.cat, inv, "clamav",
                            log=self.log.append, policy=op.policy, run_id=run_id,
                            sleep=lambda s: self._sleep(op, s), monotonic=lambda: op.clock,
                            on_change=self._committed,
                            # An operator's remediate names no policy: the replacement
                            # each host's migration began with must still be the one used.
                            choice={} if op.command == "remediate" else {
                                n: h.product for n, h in self.fleet.hosts.items()
                                if h.product != "clamav"})
            op.engine = engine
            names = list(inv.names())
            engine.discover(names)
            if op.command == "remediate":
                engine.remediate([n for n in names if (r := store.get(n)) is not None
                                  and r.state == HostState.UNPROTECTED])
                op.outcome = "remediated"
            else:
                records = {r.name: r for r in store.all()}
                plan = planner.make_plan(inv, self.cat, "clamav", records,
                                         Policy(canary=1, growth=2.0))
                op.outcome = f"exit {engine.run(plan).exit_code}"
            store.finish_run(run_id, op.outcome)
            store.release_lease(store.fence_epoch or 0)
        except Crash:
            op.crashed = True
            self.dead.add(op.pid)
            op.outcome = "crashed"
        except LeaseHeld as exc:
            op.outcome = f"refused: {exc}"
        except (Aborted, AvmigrateError) as exc:
            # A run that stopped with an error: its process ends, its lease is let go as the
            # CLI's context managers would.
            op.outcome = f"{type(exc).__name__}: {exc}"
            if store is not None and store.fence_epoch is not None:
                with contextlib.suppress(AvmigrateError):
                    store.release_lease(store.fence_epoch)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            op.error = traceback.format_exc()
            op.outcome = "error"
        finally:
            if store is not None:
                store.close()
            op.finished = True
            self.baton.done()

    # ---- the test's side ------------------------------------------------------------------
    def start(  # noqa: PLR0913, PLR0917 - an operator's session, field by field as drawn
            self, index: int, hosts: list[str], command: str, policy: RunPolicy,
            kill_at: int | None = None, window_event: tuple[str, int] | None = None) -> bool:
        current = self.ops.get(index)
        if current is not None and not current.finished:
            return False
        op = Operator(index, hosts, command, policy, kill_at=kill_at,
                      window_event=window_event)
        self.ops[index] = op
        op.thread = threading.Thread(target=self._body, args=(op,), daemon=True,
                                     name=f"operator-{index}")
        op.thread.start()
        self.baton.wait_parked(index)
        return True

    def step(self, index: int) -> None:
        op = self.ops.get(index)
        if op is not None and not op.finished:
            self.baton.give(index)

    def finish(self, index: int, limit: int = 2000) -> None:
        op = self.ops.get(index)
        for _ in range(limit):
            if op is None or op.finished:
                return
            self.baton.give(index)
        raise Stuck(f"operator {index} did not finish in {limit} yields")

    def crash(self, index: int) -> None:
        op = self.ops.get(index)
        if op is not None and not op.finished:
            self.seen["crash" + (" inside a window" if self.unprotected() else "")] += 1
            op.kill = True
            self.baton.give(index)
            if op.thread is not None:
                op.thread.join(timeout=10)

    def interrupt(self, index: int, twice: bool) -> None:
        op = self.ops.get(index)
        if op is None or op.finished or op.engine is None:
            return
        op.engine.stop.set()
        op.aborted = twice

    def close(self) -> None:
        for index in list(self.ops):
            self.crash(index)
        self.reader.close()

    # ---- the oracle ---------------------------------------------------------------------
    def judge(self, where: str) -> None:
        """The oracle, at one moment: at most `budget` hosts bare; every record true. Hosts
        whose replacement broke on its own do not count, but once the engine has seen them,
        no removal may start while they and the engine's own windows fill the budget."""
        fleet = self.fleet
        fleet.broke_alone -= {n for n in fleet.broke_alone if fleet.hosts[n].protected}
        bare = self.unprotected()
        self.peak = max(self.peak, len(bare))
        self.reboot_pending_seen |= any(h.reboot_pending for h in fleet.hosts.values())
        if len(bare) > self.budget:
            self.violations.append(f"{where}: {len(bare)} hosts without protection: {bare}")
        self.violations += [f"{where}: {p}" for p in self.untrue()]
        if fleet.broke_alone or self._full_since is not None:
            started = self._removals_started()
            if self._full_since is not None and started > self._full_since[0]:
                self.violations.append(f"{where}: a removal started while the budget was "
                                       f"full ({self._full_since[1]})")
            seen = sorted(fleet.broke_alone - fleet.unseen_breaks)
            full = len(bare) + len(seen) >= self.budget and seen
            self._full_since = (started, bare + seen) if full else None

    def _removals_started(self) -> int:
        """Removals begun so far: a host entering a window (not a host found bare)."""
        assert {s.value for s in SLOT_STATES} == {"removing", "swapping", "reboot_pending",
                                                  "unprotected"}
        row = self.reader.db.execute(
            "SELECT COUNT(*) FROM transitions WHERE to_state IN ('removing', 'swapping') "
            "AND from_state NOT IN ('removing', 'swapping', 'reboot_pending', 'unprotected')"
        ).fetchone()
        return int(row[0])

    def unprotected(self) -> list[str]:
        """Hosts protected when the schedule began that are not now: the hosts' truth (but
        for a replacement that broke on its own: see `judge`)."""
        return sorted(n for n in self.baseline if not self.fleet.hosts[n].protected
                      and n not in self.fleet.broke_alone)

    def records(self) -> dict[str, Any]:
        return {r.name: r for r in self.reader.all()}

    def untrue(self) -> list[str]:
        """Records the hosts' truth contradicts."""
        problems = []
        states = {str(n): HostState(s) for n, s in
                  self.reader.db.execute("SELECT name, state FROM hosts").fetchall()}
        for name, host in self.fleet.hosts.items():
            state = states.get(name)
            if state is None or name in self.fleet.unseen_breaks:
                continue
            if name in self.baseline and not host.protected and state not in SLOT_STATES:
                problems.append(f"{name} is unprotected but recorded {state.value}")
            if state == HostState.MIGRATED and (host.banned_present or not host.protected):
                problems.append(f"{name} recorded migrated but {host}")
            if host.wrong_product:
                problems.append(f"{name}: a step installed another replacement than its own")
            if host.conflicted:
                problems.append(f"{name}: its passive-only replacement ran active beside a "
                                "running KESL")
            if state in UNTOUCHED and host.touched:
                problems.append(f"{name} recorded {state.value} (untouched) but a step changed it")
            if state in (HostState.VERIFIED, HostState.REMOVE_FAILED) and not (
                    host.clamav_running and host.clamav_works):
                problems.append(f"{name} recorded {state.value} but its replacement is {host}")
        return problems


def run_quietly(fn: Callable[[], None]) -> None:
    with contextlib.suppress(Stuck):
        fn()
