"""A simulated fleet, a real state database and engines over them, for the promise tests.

`World` holds the hosts' truth (a `SimFleet`) and one SQLite state; `engine()` gives a fresh
Engine on a fresh connection, as a restarted orchestrator would have. Every step boundary is
sampled: `peak` is the most hosts (protected when the test began) seen without protection at
once, judged from the simulated hosts, never from the state.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.core.models import HostState, InventoryHost, Plan
from orchestrator.engine.engine import Engine
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs import catalogue
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.inputs.policy import Policy
from orchestrator.plan import planner
from orchestrator.store.sqlite import SqliteStore

from .sim import Hook, SimFleet, SimHost, baseline, unprotected_now

NO_BANNED_STATES = (HostState.CLEAN,)


class FakeClock:
    """Monotonic time that moves only when the engine sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


class World:
    """Simulated hosts h0..hN-1 with one state file; engines made on demand."""

    def __init__(self, tmp_path: Path, n: int, **host: Any) -> None:
        self.dir = tmp_path
        self.path = tmp_path / "state.db"
        self.fleet = SimFleet({f"h{i}": SimHost(**host) for i in range(n)})
        hosts = tuple(InventoryHost(f"h{i}", ("all",), {}) for i in range(n))
        self.inventory = Inventory("sim", hosts, digest_of(hosts))
        self.cat = catalogue.load()
        self.baseline = baseline(self.fleet)
        self.peak = 0
        self.moments: list[tuple[str, str, list[str]]] = []
        self.hooks: list[Hook] = []
        self.lock = threading.Lock()
        self.clock = FakeClock()
        self.fleet.hook = self._hook

    # ---- sampling ---------------------------------------------------------------------------
    def _hook(self, step: str, point: str, host: str | None, book: str) -> None:
        self.sample(f"{step}:{point}:{host or ''}")
        for hook in list(self.hooks):
            hook(step, point, host, book)
        self.sample(f"{step}:{point}:{host or ''}+")

    def sample(self, where: str) -> None:
        with self.lock:
            bare = unprotected_now(self.fleet, self.baseline)
            if len(bare) > self.peak:
                self.peak = len(bare)
                self.moments.append((where, "peak", bare))

    # ---- engines ----------------------------------------------------------------------------
    def store(self) -> SqliteStore:
        return SqliteStore(self.path)

    def engine(self, policy: RunPolicy | None = None, names: list[str] | None = None,
               store: SqliteStore | None = None, **kw: Any) -> Engine:
        inv = self.inventory if names is None else self.inventory.only(names)
        # Injected time, and a sample of the fleet at every committed transition.
        return Engine(store or self.store(), self.fleet, self.cat, inv, "clamav",
                      log=lambda _m: None, policy=policy or RunPolicy(),
                      sleep=self.clock.sleep, monotonic=self.clock.monotonic,
                      on_change=lambda _rec: self.sample("commit"), **kw)

    def plan(self, engine: Engine, policy: Policy | None = None) -> Plan:
        records = {r.name: r for r in engine.store.all()}
        return planner.make_plan(engine.inventory, self.cat, "clamav", records,
                                 policy or Policy(canary=len(engine.inventory.hosts)))

    def run(self, engine: Engine, policy: Policy | None = None) -> Any:
        """What `avmigrate run` does after its lease: discover, plan, run."""
        names = list(engine.inventory.names())
        engine.discover(names)
        return engine.run(self.plan(engine, policy))

    def states(self) -> dict[str, HostState]:
        store = self.store()
        try:
            return {r.name: r.state for r in store.all()}
        finally:
            store.close()

    def record(self, name: str) -> Any:
        store = self.store()
        try:
            return store.get(name)
        finally:
            store.close()

    def host(self, name: str) -> SimHost:
        return self.fleet.hosts[name]

    def when(self, book: str, point: str, host: str | None, act: Callable[[], None],
             times: int = 1) -> None:
        """Call `act` the first `times` times playbook `book` reaches `point` (on `host`)."""
        left = [times]

        def hook(_step: str, p: str, h: str | None, b: str) -> None:
            if b == book and p == point and (host is None or h == host) and left[0] > 0:
                left[0] -= 1
                act()

        self.hooks.append(hook)


def untrue_records(world: World) -> list[str]:
    """Records that say something the hosts' truth contradicts (for settled states)."""
    problems = []
    for name, state in world.states().items():
        h = world.host(name)
        if state == HostState.MIGRATED and (h.banned_present or not h.protected):
            problems.append(f"{name}: migrated but {dataclasses.asdict(h)}")
        if state in (HostState.CLEAN, HostState.BLOCKED, HostState.UNREACHABLE,
                     HostState.PENDING) and h.touched:
            problems.append(f"{name}: {state.value} but a step changed it")
        if (state in (HostState.INSTALL_FAILED, HostState.STAGED, HostState.VERIFIED,
                      HostState.REMOVE_FAILED, HostState.INTERRUPTED)
                and not h.protected):
            problems.append(f"{name}: {state.value} (protected) but it is not")
    return problems
