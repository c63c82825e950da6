"""The library behind the avmigrate command: discover, plan, migrate, remediate and read the
state from a script, without click. Options and results are frozen dataclasses."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.api.workspace import (
    Observer,
    Settings,
    Silent,
    Workspace,
    lazy,
)
from orchestrator.core.errors import ExitCode, PlanError, UsageError
from orchestrator.core.models import HostRecord, HostState, Plan, exit_code_for_states
from orchestrator.store.sqlstore import SqlStore

if TYPE_CHECKING:
    from orchestrator.core.catalogue import Catalogue
    from orchestrator.engine import policy as engine_policy
    from orchestrator.engine import session as session_mod
    from orchestrator.engine.policy import RunPolicy, RunSummary
    from orchestrator.inputs import inventory
    from orchestrator.inputs import policy as policy_mod
    from orchestrator.plan import changes, estimate, planfile, planner
    from orchestrator.report import csvout, render, views
else:
    # Imported when first used: `avmigrate status` needs none of them (nor jinja2).
    changes = lazy("orchestrator.plan.changes")
    csvout = lazy("orchestrator.report.csvout")
    engine_policy = lazy("orchestrator.engine.policy")
    estimate = lazy("orchestrator.plan.estimate")
    inventory = lazy("orchestrator.inputs.inventory")
    planfile = lazy("orchestrator.plan.planfile")
    planner = lazy("orchestrator.plan.planner")
    policy_mod = lazy("orchestrator.inputs.policy")
    render = lazy("orchestrator.report.render")
    session_mod = lazy("orchestrator.engine.session")
    views = lazy("orchestrator.report.views")

# A script needs only this module: a Workspace (from Settings), the options, an Observer
# (Silent by default), the operations and their results.
__all__ = [
    "ATTENTION", "STATUS_TABLE_MAX", "Discovered", "Migrated", "Observer", "Overrides",
    "PlanOptions", "Planned", "Remediated", "RunOptions", "Settings", "Silent", "StatusView",
    "Target", "Workspace", "discover", "make_plan", "migrate", "remediate", "run_policy",
    "status", "with_waves",
]

STATUS_TABLE_MAX = 100  # above this many hosts, `status` gives counts and what needs attention
ATTENTION = (HostState.UNPROTECTED, HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
             HostState.INTERRUPTED, HostState.INSTALLING, HostState.STAGING,
             HostState.REMOVING, HostState.SWAPPING)


def _records(store: SqlStore, names: Iterable[str] | None = None) -> list[HostRecord]:
    records = store.all()
    if names is not None:
        wanted = set(names)
        records = [r for r in records if r.name in wanted]
    return records


# ---- discover ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The hosts an operation works on, the product they move to, and Ansible's forks."""

    inventory: Path
    replacement: str = "clamav"
    forks: int = 10


@dataclass(frozen=True)
class Discovered:
    records: tuple[HostRecord, ...]


def discover(ws: Workspace, target: Target, observer: Observer | None = None) -> Discovered:
    """Probe every host read-only and record what it runs."""
    observer = observer or Silent()
    inv = inventory.load(target.inventory)
    executor = ws.executor(inv, target.forks, observer)
    cat = ws.catalogue()
    spec = session_mod.SessionSpec("discover", hosts=inv.names())
    with ws.session(inv, executor, spec, observer) as session:
        engine = session.engine(cat, target.replacement, None, observer.log)
        engine.discover(list(session.inventory.names()))
    return Discovered(tuple(_records(ws.store(), session.inventory.names())))


# ---- status --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusView:
    """The state's exit code and counts; the hosts listed, or (a large fleet) the first
    of those that need attention and how many do."""

    exit_code: int
    counts: dict[HostState, int]
    records: tuple[HostRecord, ...] | None
    attention: tuple[HostRecord, ...] = ()
    needing: int = 0


def status(ws: Workspace, only: Iterable[HostState] = (), every: bool = False,
           limit: int = 50) -> StatusView:
    """Every host (or those in `only`); beyond STATUS_TABLE_MAX hosts, unless `every`, the
    counts and at most `limit` of the hosts that need attention."""
    store = ws.existing_store()
    counts = store.counts()
    code = exit_code_for_states(set(counts)) if counts else ExitCode.OK
    wanted = list(only)
    if wanted:
        return StatusView(code, counts, tuple(store.in_states(wanted)))
    if every or sum(counts.values()) <= STATUS_TABLE_MAX:
        return StatusView(code, counts, tuple(store.all()))
    needing = sum(counts.get(s, 0) for s in ATTENTION)
    shown = tuple(store.in_states(ATTENTION, limit)) if needing else ()
    return StatusView(code, counts, None, shown, needing)


# ---- policies ------------------------------------------------------------------------------
def load_policy(path: Path | None) -> policy_mod.Policy:
    return policy_mod.Policy() if path is None else policy_mod.load(path)


def with_waves(pol: policy_mod.Policy, canary: int | None, growth: float | None
               ) -> policy_mod.Policy:
    """The policy with the plan command's canary size and growth, where given."""
    if canary is not None:
        pol = dataclasses.replace(pol, canary=canary, canary_percent=None,
                                  raw=pol.raw | {"waves": pol.raw.get("waves", {})
                                                 | {"canary": canary}})
    if growth is not None:
        pol = dataclasses.replace(pol, growth=growth,
                                  raw=pol.raw | {"waves": pol.raw.get("waves", {})
                                                 | {"growth": growth}})
    return pol


def run_policy(pol: policy_mod.Policy, the_plan: Plan | None) -> RunPolicy:
    """How the engine runs: the policy's strategy, budget and gates; its windows."""
    return engine_policy.RunPolicy(
        strategy=pol.strategy, max_unprotected=pol.max_unprotected,
        reconnect_seconds=pol.reconnect_seconds, max_failed_percent=pol.max_failed_percent,
        soak_seconds=pol.soak_seconds, require_approval=pol.require_approval,
        plan_key=planner.plan_key(the_plan) if the_plan is not None else "", windows=pol)


# ---- plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanOptions:
    """`avmigrate plan`: the policy and its overrides, where to write, what to probe."""

    target: Target
    policy: Path | None = None
    out_dir: Path = Path("avmigrate-plan")
    canary: int | None = None
    growth: float | None = None
    check: bool = False  # also preflight and the playbooks in Ansible check mode
    discover: bool = True  # False: plan from the last discovery in the state


@dataclass(frozen=True)
class Planned:
    plan: Plan
    files: tuple[Path, ...]
    checks: dict[str, Any]


def write_plan_files(out_dir: Path, the_plan: Plan, view: dict[str, Any]) -> list[Path]:
    """plan.json (what `run --plan` executes) and its renderings, each written atomically,
    one after the other (a 100k-host plan's texts are not all held at once)."""
    files: dict[str, Callable[[], str | Iterable[str]]] = {
        # Indented for reading when small; a 100k-host plan is written compact (3x faster).
        "plan.json": lambda: planfile.plan_json_text(
            the_plan, indent=2 if len(the_plan.hosts) <= 1000 else None),
        "plan.html": lambda: render.render_plan(view, "html"),
        "plan.md": lambda: render.render_plan(view, "md"),
        "plan.csv": lambda: csvout.plan_csv_chunks(view),
    }
    for name, text in files.items():
        planfile.write_atomic(out_dir / name, text())
    return [out_dir / n for n in files]


def _probe_for_plan(ws: Workspace, opts: PlanOptions, inv: inventory.Inventory,
                    pol: policy_mod.Policy, observer: Observer
                    ) -> tuple[inventory.Inventory, dict[str, Any]]:
    """Discovery and check mode under a session; the inventory held and the checks."""
    t = opts.target
    executor = ws.executor(inv, t.forks, observer)
    cat = ws.catalogue()
    spec = session_mod.SessionSpec("plan --check" if opts.check else "plan", hosts=inv.names())
    checks: dict[str, Any] = {}
    with ws.session(inv, executor, spec, observer) as session:
        inv = session.inventory
        engine = session.engine(cat, t.replacement,
                                engine_policy.RunPolicy(strategy=pol.strategy), observer.log)
        if opts.discover:
            engine.discover(list(inv.names()))
        if opts.check:
            store = ws.store()
            records = {r.name: r for r in _records(store, inv.names())}
            the_plan = planner.make_plan(inv, cat, t.replacement, records, pol,
                                         estimate.estimates_from(store.step_spans()), t.forks)
            observer.log(f"check mode on {len(the_plan.hosts)} planned host(s)")
            checks = engine.check(list(the_plan.hosts))
    return inv, checks


def make_plan(ws: Workspace, opts: PlanOptions, observer: Observer | None = None) -> Planned:
    """The wave plan, written to opts.out_dir. A dry run: hosts are only read."""
    observer = observer or Silent()
    t = opts.target
    contacts_hosts = opts.discover or opts.check
    # With no host to contact, the state is read while a child process reads the inventory.
    loading = None if contacts_hosts else inventory.load_in_background(t.inventory)
    try:
        inv = inventory.load(t.inventory) if loading is None else None
        cat = ws.catalogue()
        cat.replacement(t.replacement)
        pol = with_waves(load_policy(opts.policy), opts.canary, opts.growth)
        store = ws.store()
        checks: dict[str, Any] = {}
        if inv is not None:  # discovery or check mode
            inv, checks = _probe_for_plan(ws, opts, inv, pol, observer)
        with inventory.bulk():  # many short-lived acyclic objects: no GC passes over them
            # All that needs only the state is done before waiting for the inventory; hosts
            # of the state that the inventory does not name are never looked up.
            now = time.time()
            records = {r.name: r for r in store.all()}
            estimates = estimate.estimates_from(store.step_spans())
            lines = views.host_lines(records.values(), cat, t.replacement, now, pol.strategy)
            render.compile_plan_templates()
            if loading is not None:
                inv = loading()
            assert inv is not None  # noqa: S101 - loaded above, one way or the other
            the_plan = planner.make_plan(inv, cat, t.replacement, records, pol, estimates,
                                         t.forks, now=now)
            if checks:
                the_plan = dataclasses.replace(the_plan, checks=checks)
            view = views.plan_view(the_plan, records, inv, cat, lines)
            del records, lines  # the view has what the files need: free 100k records first
            written = write_plan_files(opts.out_dir, the_plan, view)
    finally:
        if loading is not None:  # whatever happened, no child is left behind
            loading.close()
    return Planned(the_plan, tuple(written), checks)


# ---- run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overrides:
    """Run options that override the policy file (None: the policy's own)."""

    strategy: str | None = None
    max_unprotected: str | None = None
    reconnect_seconds: float | None = None
    max_failed_percent: float | None = None
    soak_seconds: float | None = None
    require_approval: bool | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RunOptions:
    """`avmigrate run`: a plan file to execute exactly, or a policy and its overrides."""

    target: Target
    policy: Path | None = None
    plan: Path | None = None
    overrides: Overrides = Overrides()


@dataclass(frozen=True)
class Migrated:
    run_id: int
    summary: RunSummary
    records: tuple[HostRecord, ...]
    seconds: float


def _plan_and_policy(opts: RunOptions, inv: inventory.Inventory, cat: Catalogue
                     ) -> tuple[Plan | None, str, policy_mod.Policy]:
    """The plan to execute (None: made after discovery), its replacement and policy."""
    given = opts.overrides.given()
    if opts.plan is None:
        pol = dataclasses.replace(load_policy(opts.policy), **given)
        if pol.require_approval:
            raise UsageError("--require-approval needs --plan: approvals are given for a "
                             "plan file; make one with `avmigrate plan`")
        return None, opts.target.replacement, pol
    if opts.policy is not None or given:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in given) or "--policy"
        raise UsageError(f"{names} cannot be used with --plan: a plan runs with the policy "
                         "it was made with; make a new plan to change it")
    the_plan = planfile.load_plan(opts.plan)
    if (changed := changes.plan_changes(the_plan, inv, cat, opts.plan)) is not None:
        raise PlanError(changed)
    return the_plan, the_plan.replacement, planfile.policy_from_plan(the_plan)


def migrate(ws: Workspace, opts: RunOptions, observer: Observer | None = None) -> Migrated:
    """Discover, plan (unless given a plan) and migrate the hosts wave by wave."""
    observer = observer or Silent()
    inv = inventory.load(opts.target.inventory)
    cat = ws.catalogue()
    the_plan, replacement, pol = _plan_and_policy(opts, inv, cat)
    policy = run_policy(pol, the_plan)
    executor = ws.executor(inv, opts.target.forks, observer)
    store = ws.store()
    observer.confirm(f"Migrate up to {len(inv.hosts)} host(s) to {replacement}?")
    t0 = time.monotonic()
    spec = session_mod.SessionSpec("run", hosts=inv.names(), interrupts=True,
                                   plan_source=None if opts.plan is None else str(opts.plan))
    with ws.session(inv, executor, spec, observer) as session:
        inv = session.inventory
        if the_plan is not None:
            the_plan = changes.narrowed_plan(the_plan, inv)
        engine = session.engine(cat, replacement, policy, observer.log, observer.changed)
        observer.log(f"discovering {len(inv.hosts)} host(s)")
        engine.discover(list(inv.names()))
        records = {r.name: r for r in _records(store, inv.names())}
        if the_plan is None:
            the_plan = planner.make_plan(inv, cat, replacement, records, pol,
                                         estimate.estimates_from(store.step_spans()),
                                         opts.target.forks)
        with observer.watching(the_plan, records):
            summary = engine.run(the_plan)
        session.outcome = f"exit {summary.exit_code}"
    assert session.run_id is not None  # noqa: S101 - begun on entering the session
    return Migrated(session.run_id, summary, tuple(_records(store, inv.names())),
                    time.monotonic() - t0)


# ---- remediate -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Remediated:
    """The hosts remediated and where they stand (None: no host was unprotected)."""

    records: tuple[HostRecord, ...] | None
    exit_code: int


def remediate(ws: Workspace, target: Target, observer: Observer | None = None) -> Remediated:
    """Bring unprotected hosts back under protection: install and verify the replacement."""
    observer = observer or Silent()
    inv = inventory.load(target.inventory)
    store = ws.store()
    names = [r.name for r in _records(store, inv.names()) if r.state == HostState.UNPROTECTED]
    if not names:
        return Remediated(None, ExitCode.OK)
    observer.confirm(f"Install and verify {target.replacement} on {', '.join(names)}?")
    executor = ws.executor(inv, target.forks, observer)
    cat = ws.catalogue()
    spec = session_mod.SessionSpec("remediate", hosts=names, interrupts=True)
    with ws.session(inv.only(names), executor, spec, observer) as session:
        names = list(session.inventory.names())
        engine = session.engine(cat, target.replacement, None, observer.log)
        # Read first: a host whose protecting product runs again, or whose replacement
        # verifies, leaves its slot on that evidence; the others are remediated.
        engine.discover(names)
        engine.remediate([n for n in names if (r := store.get(n)) is not None
                          and r.state == HostState.UNPROTECTED])
        records = [r for r in _records(store, inv.names()) if r.name in names]
        code = engine_policy.exit_code_for(records)
        session.outcome = f"exit {code}"
    return Remediated(tuple(records), code)

