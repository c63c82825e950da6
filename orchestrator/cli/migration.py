"""Commands that plan and change hosts: plan, approve, run, remediate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator import api
from orchestrator.cli.base import (
    FORKS,
    INVENTORY,
    POLICY,
    PROTECT_UNPROTECTED,
    REPLACEMENT,
    YES,
    Context,
    command,
)
from orchestrator.cli.display import ConsoleObserver, err, out, print_status
from orchestrator.core.lazy import lazy
from orchestrator.core.models import STRATEGY_NAMES

if TYPE_CHECKING:
    from orchestrator.plan import planfile
else:
    planfile = lazy("orchestrator.plan.planfile")  # for `plan --json` only


@command()
@INVENTORY
@REPLACEMENT
@FORKS
@POLICY
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("avmigrate-plan"),
              show_default=True, help="Directory for plan.json, plan.html, plan.md, plan.csv.")
@click.option("--canary", type=click.IntRange(1),
              help="Hosts in the canary wave (overrides the policy).")
@click.option("--growth", type=click.FloatRange(1.1, 100),
              help="How much larger each wave is than the one before (overrides the policy).")
@click.option("--check", "check_mode", is_flag=True,
              help="Also run preflight and the playbooks in Ansible check mode on the hosts "
                   "(still changes nothing) and put the findings in the plan.")
@click.option("--no-discover", is_flag=True,
              help="Plan from the last discovery in the state instead of probing hosts.")
@PROTECT_UNPROTECTED
@click.option("--json", "as_json", is_flag=True, help="Print the plan file's JSON.")
def plan(obj: Context, inventory_path: Path, replacement: str | None, forks: int,  # noqa: PLR0913, PLR0917 - one parameter per click option
         policy_path: Path | None, out_dir: Path, canary: int | None, growth: float | None,
         check_mode: bool, no_discover: bool, protect_unprotected: bool | None,
         as_json: bool) -> None:
    """Make the wave plan. A dry run: hosts are only read, never changed."""
    made = api.make_plan(obj, api.PlanOptions(
        api.Target(inventory_path, replacement, forks), policy=policy_path, out_dir=out_dir,
        canary=canary, growth=growth, check=check_mode, discover=not no_discover,
        protect_unprotected=protect_unprotected), ConsoleObserver())
    the_plan = made.plan
    if as_json:
        click.echo(json.dumps(planfile.plan_to_json(the_plan), indent=2))
        return
    sizes = ", ".join(str(len(w.hosts)) for w in the_plan.waves) or "none"
    out.print(f"plan: {len(the_plan.hosts)} host(s) in waves of {sizes}; "
              f"{len(the_plan.skipped)} need no wave", markup=False)
    verdict = the_plan.estimate.get("deadline", {})
    colour = "green" if verdict.get("feasible", True) else "bold red"
    out.print(f"[{colour}]deadline: {verdict.get('text', '')}[/]")
    if made.checks:
        out.print(f"check mode: {made.checks['summary']}", markup=False)
    out.print(f"wrote {', '.join(str(p) for p in made.files)}", markup=False)


@command()
@click.option("--wave", "wave_number", required=True, type=click.IntRange(1),
              help="The wave to approve (the canary, wave 0, needs none).")
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path),
              help="The plan file the approval is for.")
def approve(obj: Context, wave_number: int, plan_path: Path) -> None:
    """Approve a wave of a plan; `run --require-approval` starts no unapproved wave."""
    done = api.approve(obj, wave_number, plan_path)
    out.print(f"wave {done.wave} of {done.plan_path} approved by {done.operator}")


@command()
@INVENTORY
@REPLACEMENT
@FORKS
@POLICY
@click.option("--plan", "plan_path", type=click.Path(path_type=Path),
              help="Execute this plan file exactly (from `avmigrate plan`), with its policy.")
@YES
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES),
              help="auto (default): make-before-break where the catalogue says the products "
                   "coexist, else swap.")
@click.option("--max-unprotected", metavar="N|P%",
              help="Protection budget: hosts whose protection may be unproven at once, from "
                   "a removal to its verification (both strategies, every operator of the "
                   "state): a count, or a share of the fleet such as 1%. Default 1.")
@click.option("--reconnect-window", "reconnect_seconds", type=click.FloatRange(0, 86400),
              help="Seconds a host in its protection window that does not answer is retried "
                   "before it is declared unprotected. Default 600.")
@click.option("--max-failed-percent", type=float,
              help="Wave gate: stop when more than this percent of a wave failed "
                   "(unreachable counts as failed). Default 0.")
@click.option("--soak", "soak_seconds", type=float,
              help="Seconds to wait after each wave, then re-verify it, before the next.")
@click.option("--require-approval", is_flag=True, default=None,
              help="Every wave after the canary needs `avmigrate approve` (needs --plan).")
@PROTECT_UNPROTECTED
@click.option("--progress/--no-progress", default=None,
              help="Live progress bars (default: on when standard error is a terminal).")
def run(obj: Context, inventory_path: Path, replacement: str | None, forks: int,  # noqa: PLR0913, PLR0917 - one parameter per click option
        policy_path: Path | None, plan_path: Path | None, yes: bool, strategy: str | None,
        max_unprotected: str | None, reconnect_seconds: float | None,
        max_failed_percent: float | None, soak_seconds: float | None,
        require_approval: bool | None, protect_unprotected: bool | None,
        progress: bool | None) -> None:
    """Migrate the hosts: install and verify the replacement, then remove the banned product."""
    overrides = api.Overrides(strategy, max_unprotected, reconnect_seconds, max_failed_percent,
                              soak_seconds, require_approval, protect_unprotected)
    observer = ConsoleObserver(yes=yes, verb="run",
                               live=err.is_terminal if progress is None else progress)
    done = api.migrate(obj, api.RunOptions(api.Target(inventory_path, replacement, forks),
                                           policy=policy_path, plan=plan_path,
                                           overrides=overrides), observer)
    print_status(done.records)
    summary = done.summary
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    out.print(f"run {done.run_id} finished in {done.seconds:.0f}s: {counts}")
    if summary.stopped_early:
        out.print(f"[red]{summary.stopped_early}[/]")
    sys.exit(summary.exit_code)


@command()
@INVENTORY
@REPLACEMENT
@FORKS
@POLICY
@YES
def remediate(obj: Context, inventory_path: Path, replacement: str | None, forks: int,  # noqa: PLR0913, PLR0917 - one parameter per click option
              policy_path: Path | None, yes: bool) -> None:
    """Bring unprotected hosts back under protection: install and verify the replacement."""
    done = api.remediate(obj, api.Target(inventory_path, replacement, forks),
                         ConsoleObserver(yes=yes, verb="remediate"), policy=policy_path)
    if done.records is None:
        out.print("no unprotected host: nothing to remediate")
        return
    print_status(done.records)
    sys.exit(done.exit_code)
