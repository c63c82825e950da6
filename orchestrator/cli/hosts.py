"""Commands that look at hosts and the state: discover, sweep, status, budget."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator import api
from orchestrator.cli.base import FORKS, INVENTORY, POLICY, REPLACEMENT, Context, command
from orchestrator.cli.display import ConsoleObserver, out, print_status, print_summary
from orchestrator.core.lazy import lazy
from orchestrator.core.models import HostState

if TYPE_CHECKING:
    from orchestrator.inputs import inventory
    from orchestrator.report import evidence
else:
    # Imported when first used: `avmigrate status` without --json needs neither.
    evidence = lazy("orchestrator.report.evidence")
    inventory = lazy("orchestrator.inputs.inventory")


@command()
@INVENTORY
@REPLACEMENT
@FORKS
@POLICY
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
def discover(obj: Context, inventory_path: Path, replacement: str | None, forks: int,  # noqa: PLR0913, PLR0917 - one parameter per click option
             policy_path: Path | None, as_json: bool) -> None:
    """Probe every host read-only: banned products, replacement, disk and package health."""
    found = api.discover(obj, api.Target(inventory_path, replacement, forks), ConsoleObserver(),
                         policy=policy_path)
    if as_json:
        out.print_json(json.dumps([evidence.host_row(r) for r in found.records]))
    else:
        print_status(found.records)


@command(context=False)
@INVENTORY
@click.option("--workers", default=64, show_default=True, type=click.IntRange(1, 1000),
              help="Hosts probed at once.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 120),
              help="Seconds to wait for each host.")
@click.option("--json", "as_json", is_flag=True, help="Print every host's result as JSON.")
def sweep(inventory_path: api.Sources, workers: int, timeout: float, as_json: bool) -> None:
    """Check every host answers SSH with the key recorded in known_hosts (no login, no Ansible;
    nothing is recorded). Exit 0 when all do, 3 otherwise."""
    swept = api.sweep(inventory_path, workers, timeout)
    results, took = swept.results, swept.seconds
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        out.print(f"swept {len(results)} host(s) in {took:.1f}s: "
                  + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), markup=False)
        for r in results:
            if not r.ok:
                out.print(f"  {r.host} ({r.address}:{r.port}): {r.status}: {r.detail}",
                          markup=False, soft_wrap=True)
    sys.exit(swept.exit_code)


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help=f"List every host, even in a fleet of more than {api.STATUS_TABLE_MAX}.")
@click.option("--only", multiple=True, type=click.Choice([s.value for s in HostState]),
              help="List only the hosts in this state (repeatable).")
def status(obj: Context, as_json: bool, show_all: bool, only: tuple[str, ...]) -> None:
    """Show every host's state, strategy and protection gap (exit code as for run).

    In a fleet of more than a hundred hosts it prints how many hosts are in each state and
    lists the ones that need attention; --all or --only list hosts.
    """
    view = api.status(obj, [HostState(s) for s in only], every=as_json or show_all)
    if view.records is None:
        print_summary(view, api.ATTENTION)
    elif as_json:
        out.print_json(json.dumps([evidence.host_row(r) for r in view.records]))
    else:
        print_status(view.records)
    sys.exit(view.exit_code)


@command()
@click.option("--set", "spec", metavar="N|P%",
              help="Set the fleet's budget, which every run on this state keeps to (the "
                   "smaller of it and the run's own applies): a count, or a share like 1%.")
def budget(obj: Context, spec: str | None) -> None:
    """Show the fleet's protection budget and the hosts holding its slots (or set it)."""
    now = api.budget(obj, spec)
    if now.spec is None:
        out.print("fleet budget: not set; each run keeps to its own --max-unprotected "
                  "(default 1)", markup=False)
    else:
        out.print(f"fleet budget: {now.spec} ({now.hosts} host(s) of {now.fleet_size} at "
                  f"once; set by {now.set_by}); a run that asks for less keeps to its own",
                  markup=False)
    holders = now.holders
    out.print(f"{len(holders)} host(s) hold a slot now (protection unproven)"
              + (": " + ", ".join(f"{r.name} ({r.state.value})" for r in holders[:20])
                 if holders else ""), markup=False, soft_wrap=True)
