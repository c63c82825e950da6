"""Planning: the policy with its overrides, the wave plan and its files, the approvals."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.api.hosts import Target, choose, records_of
from orchestrator.api.workspace import Observer, Silent, Workspace, operator_name
from orchestrator.core.errors import UsageError
from orchestrator.core.lazy import lazy
from orchestrator.core.models import Plan

if TYPE_CHECKING:
    from orchestrator.engine import policy as engine_policy
    from orchestrator.engine import session as session_mod
    from orchestrator.engine.policy import RunPolicy
    from orchestrator.inputs import inventory
    from orchestrator.inputs import policy as policy_mod
    from orchestrator.plan import choice as choice_mod
    from orchestrator.plan import estimate, planfile, planner
    from orchestrator.report import csvout, render, views
else:
    choice_mod = lazy("orchestrator.plan.choice")
    # Imported when first used: `avmigrate status` needs none of them (nor jinja2).
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
        protect_unprotected=pol.protect_unprotected, reboot=pol.reboot,
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
    protect_unprotected: bool | None = None  # None: the policy's


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
    cat = ws.catalogue()
    choice = choose(inv, cat, t, pol)
    executor = ws.executor(inv, t.forks, observer)
    spec = session_mod.SessionSpec("plan --check" if opts.check else "plan", hosts=inv.names())
    checks: dict[str, Any] = {}
    with ws.session(inv, executor, spec, observer) as session:
        inv = session.inventory
        engine = session.engine(cat, choice,
                                engine_policy.RunPolicy(strategy=pol.strategy), observer.log)
        if opts.discover:
            engine.discover(list(inv.names()))
        if opts.check:
            store = ws.store()
            records = {r.name: r for r in records_of(store, inv.names())}
            the_plan = planner.make_plan(inv, cat, choice.default, records, pol,
                                         estimate.estimates_from(store.step_spans()),
                                         ws.forks(t.forks), choice=choice.others)
            observer.log(f"check mode on {len(the_plan.hosts)} planned host(s)")
            checks = engine.check(list(the_plan.hosts))
    return inv, checks


def make_plan(ws: Workspace, opts: PlanOptions, observer: Observer | None = None) -> Planned:
    """The wave plan, written to opts.out_dir. A dry run: hosts are only read."""
    observer = observer or Silent()
    t = opts.target
    contacts_hosts = opts.discover or opts.check
    # With no host to contact, the state is read while a child process reads the inventory.
    loading = None if contacts_hosts else inventory.load_in_background(ws.sources(t.inventory))
    try:
        inv = inventory.load(ws.sources(t.inventory)) if loading is None else None
        cat = ws.catalogue()
        pol = with_waves(load_policy(opts.policy), opts.canary, opts.growth)
        if opts.protect_unprotected is not None:
            pol = dataclasses.replace(pol, protect_unprotected=opts.protect_unprotected,
                                      raw=pol.raw | {"protect_unprotected":
                                                     opts.protect_unprotected})
        default = choice_mod.default_of(pol, t.replacement, cat)
        cat.replacement(default)
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
            lines = views.host_lines(records.values(), cat, default, now, pol.strategy)
            render.compile_plan_templates()
            if loading is not None:
                inv = loading()
            assert inv is not None  # noqa: S101 - loaded above, one way or the other
            choice = choose(inv, cat, t, pol)
            if choice.others:  # lines of hosts with another replacement, judged for it
                lines = views.rechosen(lines, records, cat, choice.others)
            the_plan = planner.make_plan(inv, cat, default, records, pol, estimates,
                                         ws.forks(t.forks), now=now, choice=choice.others)
            if checks:
                the_plan = dataclasses.replace(the_plan, checks=checks)
            ksc = views.ksc_view(inv, store.ksc_hosts(), store.ksc_import())
            view = views.plan_view(the_plan, records, inv, cat, lines, ksc)
            del records, lines  # the view has what the files need: free 100k records first
            written = write_plan_files(opts.out_dir, the_plan, view)
    finally:
        if loading is not None:  # whatever happened, no child is left behind
            loading.close()
    return Planned(the_plan, tuple(written), checks)


# ---- approve -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    """A wave of a plan file approved, and by whom."""

    wave: int
    plan_path: Path
    plan_key: str
    operator: str


def approve(ws: Workspace, wave: int, plan_path: Path) -> Approval:
    """Approve a wave of a plan; `run --require-approval` starts no unapproved wave."""
    the_plan = planfile.load_plan(plan_path)
    if wave >= len(the_plan.waves):
        raise UsageError(f"plan {plan_path} has waves 0 to {len(the_plan.waves) - 1}")
    store, key, operator = ws.store(), planner.plan_key(the_plan), operator_name()
    store.add_approval(key, wave, operator, str(plan_path))
    return Approval(wave, plan_path, key, operator)
