"""Changing hosts: migrate them wave by wave, remediate those left unprotected."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.api.hosts import Target, choose, records_of, require_enrolment
from orchestrator.api.plans import load_policy, run_policy
from orchestrator.api.workspace import Observer, Silent, Workspace
from orchestrator.core.errors import ExitCode, PlanError, UsageError
from orchestrator.core.lazy import lazy
from orchestrator.core.models import HostRecord, HostState, Plan

if TYPE_CHECKING:
    from orchestrator.core.catalogue import Catalogue
    from orchestrator.engine import policy as engine_policy
    from orchestrator.engine import session as session_mod
    from orchestrator.engine.policy import RunSummary
    from orchestrator.inputs import inventory
    from orchestrator.inputs import policy as policy_mod
    from orchestrator.plan import changes, estimate, planfile, planner
    from orchestrator.plan import choice as choice_mod
else:
    choice_mod = lazy("orchestrator.plan.choice")
    # Imported when first used: `avmigrate status` needs none of them.
    changes = lazy("orchestrator.plan.changes")
    engine_policy = lazy("orchestrator.engine.policy")
    estimate = lazy("orchestrator.plan.estimate")
    inventory = lazy("orchestrator.inputs.inventory")
    planfile = lazy("orchestrator.plan.planfile")
    planner = lazy("orchestrator.plan.planner")
    policy_mod = lazy("orchestrator.inputs.policy")
    session_mod = lazy("orchestrator.engine.session")


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
    protect_unprotected: bool | None = None

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
                     ) -> tuple[Plan | None, choice_mod.Choice, policy_mod.Policy]:
    """The plan to execute (None: made after discovery), its hosts' replacements and
    policy."""
    given = opts.overrides.given()
    if opts.plan is None:
        pol = dataclasses.replace(load_policy(opts.policy), **given)
        if pol.require_approval:
            raise UsageError("--require-approval needs --plan: approvals are given for a "
                             "plan file; make one with `avmigrate plan`")
        return None, choose(inv, cat, opts.target, pol), pol
    if opts.target.replacement is not None:
        given = given | {"replacement": opts.target.replacement}
    if opts.policy is not None or given:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in given) or "--policy"
        raise UsageError(f"{names} cannot be used with --plan: a plan runs with the policy "
                         "it was made with; make a new plan to change it")
    the_plan = planfile.load_plan(opts.plan)
    if (changed := changes.plan_changes(the_plan, inv, cat, opts.plan)) is not None:
        raise PlanError(changed)
    # The plan's own choice of replacements: what was read and approved is what runs.
    return (the_plan, choice_mod.Choice(the_plan.replacement, the_plan.replacements),
            planfile.policy_from_plan(the_plan))


def migrate(ws: Workspace, opts: RunOptions, observer: Observer | None = None) -> Migrated:
    """Discover, plan (unless given a plan) and migrate the hosts wave by wave."""
    observer = observer or Silent()
    inv = inventory.load(ws.sources(opts.target.inventory))
    cat = ws.catalogue()
    the_plan, choice, pol = _plan_and_policy(opts, inv, cat)
    require_enrolment(ws, cat, choice, inv, inv.names())
    policy = run_policy(pol, the_plan)
    executor = ws.executor(inv, opts.target.forks, observer)
    store = ws.store()
    to = ", ".join(f"{n} to {rid}" for rid, n in sorted(choice.counts(inv.names()).items()))
    observer.confirm(f"Migrate up to {len(inv.hosts)} host(s): {to}?")
    t0 = time.monotonic()
    spec = session_mod.SessionSpec("run", hosts=inv.names(), interrupts=True,
                                   plan_source=None if opts.plan is None else str(opts.plan))
    with ws.session(inv, executor, spec, observer) as session:
        inv = session.inventory
        if the_plan is not None:
            the_plan = changes.narrowed_plan(the_plan, inv)
        engine = session.engine(cat, choice, policy, observer.log, observer.changed)
        observer.log(f"discovering {len(inv.hosts)} host(s)")
        # The preflight checks ride on this probe: a wave starting soon needs no second one.
        engine.preflight_in_discovery = True
        engine.discover(list(inv.names()))
        engine.preflight_in_discovery = False
        records = {r.name: r for r in records_of(store, inv.names())}
        if the_plan is None:
            the_plan = planner.make_plan(inv, cat, choice.default, records, pol,
                                         estimate.estimates_from(store.step_spans()),
                                         ws.forks(opts.target.forks), choice=choice.others)
        with observer.watching(the_plan, records):
            summary = engine.run(the_plan)
        session.outcome = f"exit {summary.exit_code}"
    assert session.run_id is not None  # noqa: S101 - begun on entering the session
    return Migrated(session.run_id, summary, tuple(records_of(store, inv.names())),
                    time.monotonic() - t0)



# ---- remediate -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Remediated:
    """The hosts remediated and where they stand (None: no host was unprotected)."""

    records: tuple[HostRecord, ...] | None
    exit_code: int


def remediate(ws: Workspace, target: Target, observer: Observer | None = None,
              policy: Path | None = None) -> Remediated:
    """Bring unprotected hosts back under protection: install and verify the replacement
    (each host's, as the inventory and `policy` choose)."""
    observer = observer or Silent()
    inv = inventory.load(ws.sources(target.inventory))
    store = ws.store()
    names = [r.name for r in records_of(store, inv.names()) if r.state == HostState.UNPROTECTED]
    if not names:
        return Remediated(None, ExitCode.OK)
    cat = ws.catalogue()
    choice = choose(inv, cat, target, policy)
    require_enrolment(ws, cat, choice, inv, names)
    what = ", ".join(f"{choice.of(n)} on {n}" for n in names)
    observer.confirm(f"Install and verify {what}?")
    executor = ws.executor(inv, target.forks, observer)
    spec = session_mod.SessionSpec("remediate", hosts=names, interrupts=True)
    with ws.session(inv.only(names), executor, spec, observer) as session:
        names = list(session.inventory.names())
        engine = session.engine(cat, choice, None, observer.log)
        # Read first: a host whose protecting product runs again, or whose replacement
        # verifies, leaves its slot on that evidence; the others are remediated.
        engine.discover(names)
        engine.remediate([n for n in names if (r := store.get(n)) is not None
                          and r.state == HostState.UNPROTECTED])
        records = [r for r in records_of(store, inv.names()) if r.name in names]
        code = engine_policy.exit_code_for(records)
        session.outcome = f"exit {code}"
    return Remediated(tuple(records), code)

