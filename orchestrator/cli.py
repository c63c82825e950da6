"""The avmigrate command line: parse options, call the library, print, map errors to exit codes."""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from orchestrator import __version__, catalogue, inventory, planner, reports
from orchestrator.engine import STRATEGIES, Engine, RunPolicy, exit_code_for
from orchestrator.errors import Aborted, AvmigrateError, PlanError, UsageError
from orchestrator.executor import ExecConfig, RunnerExecutor, default_artifacts_dir
from orchestrator.lease import LeaseKeeper
from orchestrator.models import HostRecord, HostState
from orchestrator.state import SqliteStore, open_store

F = TypeVar("F", bound=Callable[..., Any])
# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns; give them room.
_WIDTH = None if sys.stdout.isatty() else 200
err = Console(stderr=True, highlight=False, width=_WIDTH)
out = Console(highlight=False, width=_WIDTH)

STATE_COLOURS = {
    "migrated": "green", "clean": "green", "verified": "cyan", "pending": "white",
    "installing": "yellow", "removing": "yellow", "unreachable": "magenta",
    "blocked": "magenta", "install_failed": "red", "remove_failed": "red",
    "unprotected": "bold red",
}


def boundary(fn: F) -> F:
    """Expected errors: one line and their exit code. Unexpected: traceback to a file."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AvmigrateError as exc:
            err.print(f"avmigrate: error: {exc}", markup=False)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("avmigrate: interrupted; state is saved, run the command again to resume")
            sys.exit(130)
        except Exception:  # noqa: BLE001 - the boundary: log it, say where, exit 70
            fd, path = tempfile.mkstemp(prefix="avmigrate-crash-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                fh.write(traceback.format_exc())
            err.print(f"avmigrate: internal error; the traceback is in {path}. Please report it.")
            sys.exit(70)

    return wrapper  # type: ignore[return-value]


class Context:
    """Options shared by every command, resolved once."""

    def __init__(self, state: str, catalogue_path: Path | None, verbose: int) -> None:
        self.state_url = state
        self.catalogue_path = catalogue_path
        self.verbose = verbose
        self._store: SqliteStore | None = None

    def store(self) -> SqliteStore:
        if self._store is None:
            self._store = open_store(self.state_url)
        return self._store

    def catalogue(self) -> catalogue.Catalogue:
        return catalogue.load(self.catalogue_path)

    def engine(self, inv: inventory.Inventory, replacement: str, forks: int,
               policy: RunPolicy | None = None) -> Engine:
        cfg = ExecConfig(artifacts_dir=default_artifacts_dir(self.state_url), forks=forks,
                         verbosity=self.verbose)
        return Engine(self.store(), RunnerExecutor(cfg), self.catalogue(), inv, replacement,
                      log=lambda m: err.print(m, markup=False), policy=policy)

    def lease(self) -> LeaseKeeper:
        """One operator at a time: every command that changes hosts or their state holds it."""
        return LeaseKeeper(self.store(), lambda: open_store(self.state_url), operator_name())


pass_ctx = click.make_pass_decorator(Context)


def operator_name() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="avmigrate")
@click.option("--state", envvar="AVMIGRATE_STATE", default="avmigrate.db", show_default=True,
              help="State database file (env AVMIGRATE_STATE).")
@click.option("--catalogue", "catalogue_path", type=click.Path(path_type=Path),
              help="Product catalogue YAML (default: the built-in one).")
@click.option("-v", "--verbose", count=True, help="More Ansible output in the artifacts.")
@click.pass_context
def cli(ctx: click.Context, state: str, catalogue_path: Path | None, verbose: int) -> None:
    """Move a fleet off a banned antivirus product without leaving any host unprotected."""
    ctx.obj = Context(state, catalogue_path, verbose)


INVENTORY = click.option("-i", "--inventory", "inventory_path", required=True,
                         type=click.Path(path_type=Path), help="Ansible inventory file.")
REPLACEMENT = click.option("--replacement", default="clamav", show_default=True,
                           help="Replacement product id from the catalogue.")
FORKS = click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 500),
                     help="Hosts Ansible works on at once.")


def _records(store: SqliteStore, names: tuple[str, ...] | None = None) -> list[HostRecord]:
    records = store.all()
    if names is not None:
        wanted = set(names)
        records = [r for r in records if r.name in wanted]
    return records


def print_status(records: list[HostRecord]) -> None:
    table = Table(title="avmigrate: host states", show_lines=False)
    for col in ("host", "state", "strategy", "wave", "banned found", "gap", "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        row = reports.host_row(r)
        colour = STATE_COLOURS.get(r.state.value, "white")
        table.add_row(r.name, f"[{colour}]{r.state.value}[/]", row["strategy"], str(row["wave"]),
                      row["banned_found"],
                      "-" if row["gap_seconds"] is None else f"{row['gap_seconds']:.0f}s",
                      r.reason)
    out.print(table)


@cli.command()
@INVENTORY
@REPLACEMENT
@FORKS
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
@pass_ctx
@boundary
def discover(obj: Context, inventory_path: Path, replacement: str, forks: int,
             as_json: bool) -> None:
    """Probe every host read-only: banned products, replacement, disk and package health."""
    inv = inventory.load(inventory_path)
    engine = obj.engine(inv, replacement, forks)
    with obj.lease():
        run_id = obj.store().begin_run("discover", operator_name(), None)
        engine.run_id = run_id
        engine.discover(list(inv.names()))
        obj.store().finish_run(run_id, "done")
    records = _records(obj.store(), inv.names())
    if as_json:
        out.print_json(json.dumps([reports.host_row(r) for r in records]))
    else:
        print_status(records)


@cli.command()
@INVENTORY
@REPLACEMENT
@FORKS
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("avmigrate-plan"),
              show_default=True, help="Directory for plan.json and plan.md.")
@click.option("--canary", default=1, show_default=True, type=click.IntRange(1),
              help="Hosts in the canary wave.")
@click.option("--growth", default=2.0, show_default=True, type=click.FloatRange(1.1, 100),
              help="How much larger each wave is than the one before.")
@click.option("--no-discover", is_flag=True,
              help="Plan from the last discovery in the state instead of probing hosts.")
@pass_ctx
@boundary
def plan(obj: Context, inventory_path: Path, replacement: str, forks: int, out_dir: Path,
         canary: int, growth: float, no_discover: bool) -> None:
    """Make the wave plan (dry run: discovery only reads hosts; nothing is changed)."""
    inv = inventory.load(inventory_path)
    cat = obj.catalogue()
    cat.replacement(replacement)
    if not no_discover:
        engine = obj.engine(inv, replacement, forks)
        with obj.lease():
            run_id = obj.store().begin_run("plan", operator_name(), None)
            engine.run_id = run_id
            engine.discover(list(inv.names()))
            obj.store().finish_run(run_id, "done")
    records = {r.name: r for r in _records(obj.store(), inv.names())}
    the_plan = planner.make_plan(inv, cat, replacement, records, canary=canary, growth=growth)
    reports.write_atomic(out_dir / "plan.json",
                         json.dumps(reports.plan_to_json(the_plan), indent=2) + "\n")
    reports.write_atomic(out_dir / "plan.md", reports.render_plan_md(the_plan, records))
    sizes = ", ".join(str(len(w.hosts)) for w in the_plan.waves) or "none"
    out.print(f"plan: {len(the_plan.hosts)} host(s) in waves of {sizes}; "
              f"{len(the_plan.skipped)} need no wave")
    out.print(f"wrote {out_dir / 'plan.json'} and {out_dir / 'plan.md'}")


@cli.command()
@INVENTORY
@REPLACEMENT
@FORKS
@click.option("--plan", "plan_path", type=click.Path(path_type=Path),
              help="Execute this plan file exactly (from `avmigrate plan`).")
@click.option("--yes", "-y", is_flag=True, envvar="AVMIGRATE_YES",
              help="Do not ask for confirmation (env AVMIGRATE_YES).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="auto: make-before-break where the catalogue says the products coexist, "
                   "else swap.")
@click.option("--max-unprotected", default=1, show_default=True, type=int,
              help="Protection budget: hosts that may be without protection at once (swap).")
@click.option("--max-failed-percent", default=0.0, show_default=True, type=float,
              help="Wave gate: stop when more than this percent of a wave failed "
                   "(unreachable counts as failed).")
@click.option("--soak", "soak_seconds", default=0.0, show_default=True, type=float,
              help="Seconds to wait after each wave, then re-verify it, before the next.")
@click.option("--require-approval", is_flag=True,
              help="Every wave after the canary needs `avmigrate approve` (needs --plan).")
@pass_ctx
@boundary
def run(obj: Context, inventory_path: Path, replacement: str, forks: int,
        plan_path: Path | None, yes: bool, strategy: str, max_unprotected: int,
        max_failed_percent: float, soak_seconds: float, require_approval: bool) -> None:
    """Migrate the hosts: install and verify the replacement, then remove the banned product."""
    inv = inventory.load(inventory_path)
    cat = obj.catalogue()
    if plan_path is not None:
        the_plan = reports.load_plan(plan_path)
        if the_plan.inventory_digest != inv.digest:
            raise PlanError(f"the inventory changed since plan {plan_path} was made; "
                            "make a new plan")
        if the_plan.catalogue_digest != cat.digest:
            raise PlanError(f"the catalogue changed since plan {plan_path} was made; "
                            "make a new plan")
        replacement = the_plan.replacement
    elif require_approval:
        raise UsageError("--require-approval needs --plan: approvals are given for a plan")
    policy = RunPolicy(strategy=strategy, max_unprotected=max_unprotected,
                       max_failed_percent=max_failed_percent, soak_seconds=soak_seconds,
                       require_approval=require_approval,
                       plan_key=planner.plan_key(the_plan) if plan_path is not None else "")
    engine = obj.engine(inv, replacement, forks, policy)
    store = obj.store()
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted("not confirmed: pass --yes to run without a terminal", exit_code=2)
        click.confirm(f"Migrate up to {len(inv.hosts)} host(s) to {replacement}?", abort=True)
    t0 = time.monotonic()
    with obj.lease(), interrupts(engine):
        run_id = store.begin_run("run", operator_name(),
                                 None if plan_path is None else str(plan_path))
        engine.run_id = run_id
        err.print(f"discovering {len(inv.hosts)} host(s)")
        engine.discover(list(inv.names()))
        if plan_path is None:
            records = {r.name: r for r in _records(store, inv.names())}
            the_plan = planner.make_plan(inv, cat, replacement, records)
        summary = engine.run(the_plan)
        store.finish_run(run_id, f"exit {summary.exit_code}")
    print_status(_records(store, inv.names()))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    out.print(f"run {run_id} finished in {time.monotonic() - t0:.0f}s: {counts}")
    if summary.stopped_early:
        out.print(f"[red]{summary.stopped_early}[/]")
    sys.exit(summary.exit_code)


@contextlib.contextmanager
def interrupts(engine: Engine) -> Iterator[None]:
    """First Ctrl-C: start no new step. Second: abort the running one."""
    count = 0

    def handler(signum: int, frame: object) -> None:
        del signum, frame
        nonlocal count
        count += 1
        if count == 1:
            engine.stop.set()
            err.print("stopping: running steps finish and are recorded; Ctrl-C again to abort")
        else:
            executor = engine.executor
            if isinstance(executor, RunnerExecutor):
                executor.cancel.set()
            err.print("aborting the running step")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@cli.command()
@INVENTORY
@REPLACEMENT
@FORKS
@click.option("--yes", "-y", is_flag=True, envvar="AVMIGRATE_YES",
              help="Do not ask for confirmation (env AVMIGRATE_YES).")
@pass_ctx
@boundary
def remediate(obj: Context, inventory_path: Path, replacement: str, forks: int,
              yes: bool) -> None:
    """Bring unprotected hosts back under protection: install and verify the replacement."""
    inv = inventory.load(inventory_path)
    store = obj.store()
    names = [r.name for r in _records(store, inv.names()) if r.state == HostState.UNPROTECTED]
    if not names:
        out.print("no unprotected host: nothing to remediate")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted("not confirmed: pass --yes to remediate without a terminal",
                          exit_code=2)
        click.confirm(f"Install and verify {replacement} on {', '.join(names)}?", abort=True)
    engine = obj.engine(inv, replacement, forks)
    with obj.lease(), interrupts(engine):
        run_id = store.begin_run("remediate", operator_name(), None)
        engine.run_id = run_id
        engine.remediate(names)
        records = _records(store, inv.names())
        store.finish_run(run_id, f"exit {exit_code_for(records)}")
    print_status([r for r in records if r.name in names])
    sys.exit(exit_code_for([r for r in records if r.name in names]))


@cli.command()
@click.option("--wave", "wave_number", required=True, type=click.IntRange(1),
              help="The wave to approve (the canary, wave 0, needs none).")
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path),
              help="The plan file the approval is for.")
@pass_ctx
@boundary
def approve(obj: Context, wave_number: int, plan_path: Path) -> None:
    """Approve a wave of a plan; `run --require-approval` starts no unapproved wave."""
    the_plan = reports.load_plan(plan_path)
    if wave_number >= len(the_plan.waves):
        raise UsageError(f"plan {plan_path} has waves 0 to {len(the_plan.waves) - 1}")
    obj.store().add_approval(planner.plan_key(the_plan), wave_number, operator_name())
    out.print(f"wave {wave_number} of {plan_path} approved by {operator_name()}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
@pass_ctx
@boundary
def status(obj: Context, as_json: bool) -> None:
    """Show every host's state, strategy and protection gap (exit code as for run)."""
    path = Path(obj.state_url)
    if "://" not in obj.state_url and not path.exists():
        raise AvmigrateError(f"no state at {path}; run `avmigrate discover` or pass --state")
    records = _records(obj.store())
    if as_json:
        out.print_json(json.dumps([reports.host_row(r) for r in records]))
    else:
        print_status(records)
    sys.exit(exit_code_for(records) if records else 0)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["md", "json", "csv"]), default="md",
              show_default=True)
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output.")
@pass_ctx
@boundary
def report(obj: Context, fmt: str, out_file: Path | None) -> None:
    """Evidence: every host's before and after, its transitions with times, and its gap."""
    path = Path(obj.state_url)
    if "://" not in obj.state_url and not path.exists():
        raise AvmigrateError(f"no state at {path}; run `avmigrate discover` or pass --state")
    store = obj.store()
    text = reports.render_report(reports.report_data(store.all(), store.history(),
                                                     store.runs()), fmt)
    if out_file is None:
        click.echo(text, nl=False)
    else:
        reports.write_atomic(out_file, text)
        out.print(f"wrote {out_file}")


# ---- the lab ------------------------------------------------------------------------------
@cli.group()
def lab() -> None:
    """Real Debian hosts on this machine (systemd-nspawn), for demos and tests."""


LAB_NAME = click.option("--lab", "lab_name", default="demo", show_default=True,
                        envvar="AVMIGRATE_LAB", help="Lab name (env AVMIGRATE_LAB).")


@lab.command("up")
@LAB_NAME
@click.option("--hosts", "count", default=12, show_default=True, type=int,
              help="How many hosts.")
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path),
              help="Scenario YAML (default: the built-in fleet mix).")
@boundary
def lab_up(lab_name: str, count: int, scenario_file: Path | None) -> None:
    """Build the lab (cleaning up what an earlier one left) and boot its hosts."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    log: list[str] = []
    t0 = time.monotonic()
    try:
        info = Lab(lab_name).up(count, scenario_file, log)
    finally:
        for line in log:
            err.print(line, markup=False)
    out.print(f"lab {info.name}: {len(info.hosts)} hosts up in {time.monotonic() - t0:.0f}s")
    out.print(f"inventory: {info.inventory}")
    out.print(f"known_hosts: {info.known_hosts}")


@lab.command("status")
@LAB_NAME
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@boundary
def lab_status(lab_name: str, as_json: bool) -> None:
    """Show the lab's hosts, addresses and how to log in to them."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    data = Lab(lab_name).status()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"lab {data['lab']} ({data['inventory']})")
    for col in ("host", "address", "profile", "running", "ssh"):
        table.add_column(col)
    for h in data["hosts"]:
        table.add_row(h["name"], h["address"], h["profile"], str(h["running"]),
                      "open" if h["ssh_port_open"] else "closed")
    out.print(table)


@lab.command("down")
@LAB_NAME
@boundary
def lab_down(lab_name: str) -> None:
    """Stop the lab's hosts and remove its mounts, namespaces, links and files."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    lab_obj = Lab(lab_name)
    log: list[str] = []
    lab_obj.down(log)
    left = lab_obj.leftovers()
    for line in log:
        err.print(line, markup=False)
    if left:
        raise AvmigrateError(f"lab {lab_name} left behind: {', '.join(left)}")
    out.print(f"lab {lab_name} is down; nothing left behind")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
