"""The avmigrate command line: parse options, call the library, print, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from orchestrator import __version__
from orchestrator.core.errors import (
    Aborted,
    AuditError,
    AvmigrateError,
    ExitCode,
    PlanError,
    UsageError,
)
from orchestrator.core.models import (
    STRATEGY_NAMES,
    HostRecord,
    HostState,
    Plan,
    exit_code_for_states,
)
from orchestrator.core.protection import resolve_budget
from orchestrator.store.state import SqlStore, StateStore, open_store


def _lazy(name: str) -> Any:
    """A module loaded on its first use: `status`, `--help` and bad input need none of the
    heavy ones (Ansible, paramiko, jinja2), and start in a fraction of the time."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - our own modules
        raise ImportError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.cli import progress as progress_mod
    from orchestrator.core.catalogue import Catalogue
    from orchestrator.engine import engine as engine_mod
    from orchestrator.engine.engine import Engine, RunPolicy
    from orchestrator.execute import executor as executor_mod
    from orchestrator.execute import nodes as nodes_mod
    from orchestrator.execute import stepguard
    from orchestrator.inputs import catalogue, inventory
    from orchestrator.inputs import policy as policy_mod
    from orchestrator.inputs import secrets as secretlib
    from orchestrator.plan import planner
    from orchestrator.report import reports
    from orchestrator.store import lease as lease_mod
    from orchestrator.store.lease import LeaseKeeper
else:
    catalogue = _lazy("orchestrator.inputs.catalogue")
    inventory = _lazy("orchestrator.inputs.inventory")
    planner = _lazy("orchestrator.plan.planner")
    reports = _lazy("orchestrator.report.reports")
    engine_mod = _lazy("orchestrator.engine.engine")
    executor_mod = _lazy("orchestrator.execute.executor")
    lease_mod = _lazy("orchestrator.store.lease")
    nodes_mod = _lazy("orchestrator.execute.nodes")
    policy_mod = _lazy("orchestrator.inputs.policy")
    progress_mod = _lazy("orchestrator.cli.progress")
    secretlib = _lazy("orchestrator.inputs.secrets")
    stepguard = _lazy("orchestrator.execute.stepguard")


F = TypeVar("F", bound=Callable[..., Any])
# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns; give them room.
_WIDTH = None if sys.stdout.isatty() else 200


class _LazyConsole:
    """A rich Console made on first use: `status` of a large state prints two plain lines
    (click.echo) and need not import rich, a sixth of its time."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(**self._options)
        return getattr(self._console, name)


err = cast("Console", _LazyConsole(stderr=True, highlight=False, width=_WIDTH))
out = cast("Console", _LazyConsole(highlight=False, width=_WIDTH))

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
            err.print(f"avmigrate: error: {exc}", markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("avmigrate: interrupted; state is saved, run the command again to resume")
            sys.exit(ExitCode.INTERRUPTED)
        except Exception:  # noqa: BLE001 - the boundary: log it, say where, exit 70
            fd, path = tempfile.mkstemp(prefix="avmigrate-crash-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                fh.write(traceback.format_exc())
            err.print(f"avmigrate: internal error; the traceback is in {path}. Please report it.")
            sys.exit(ExitCode.INTERNAL)

    return wrapper  # type: ignore[return-value]


class Context:
    """Options shared by every command, resolved once."""

    def __init__(self, state: str, catalogue_path: Path | None, verbose: int,
                 credentials: Path | None = None, vault_password_file: Path | None = None
                 ) -> None:
        self.state_url = state
        self.catalogue_path = catalogue_path
        self.verbose = verbose
        self.credentials = credentials
        self.vault_password_file = vault_password_file
        self._store: SqlStore | None = None

    def secrets(self) -> secretlib.Secrets:
        if self.credentials is None:
            return secretlib.Secrets()
        return secretlib.load(self.credentials, self.catalogue().secret_names(),
                              self.vault_password_file)

    def store(self) -> SqlStore:
        if self._store is None:
            self._store = open_store(self.state_url)
        return self._store

    def catalogue(self) -> Catalogue:
        return catalogue.load(self.catalogue_path)

    def engine(self, inv: inventory.Inventory, replacement: str, forks: int,
               policy: RunPolicy | None = None) -> Engine:
        cfg = executor_mod.ExecConfig(
            artifacts_dir=executor_mod.default_artifacts_dir(self.state_url), forks=forks,
            verbosity=self.verbose, state_key=stepguard.state_key(self.state_url))
        nodes = [nodes_mod.ExecutionNode.from_host(h) for h in inv.nodes]
        if nodes:
            err.print(f"execution nodes: {', '.join(n.name for n in nodes)}", markup=False)
        executor = executor_mod.RunnerExecutor(cfg, self.secrets(), nodes)
        engine = engine_mod.Engine(self.store(), executor, self.catalogue(), inv, replacement,
                        log=lambda m: err.print(m, markup=False), policy=policy)
        # Through the engine: its log becomes the progress view's during a run.
        executor.log = lambda m: engine.log(m)  # noqa: PLW0108
        return engine

    def lease(self, hosts: Sequence[str] | None = None, engine: Engine | None = None
              ) -> LeaseKeeper:
        """Every command that changes hosts or their state holds a lease on them: on `hosts`
        (those another live run holds are left to it), or on the whole state. If the lease
        cannot be kept, `engine` starts no further step and its running step is aborted
        before the lease could expire."""
        def lost(why: str) -> None:
            if engine is not None:
                err.print(f"avmigrate: the lease is lost ({why}); aborting the running step",
                          markup=False, soft_wrap=True)
                engine.stop.set()
                if isinstance(engine.executor, executor_mod.RunnerExecutor):
                    engine.executor.cancel.set()

        keeper = lease_mod.LeaseKeeper(self.store(), lambda: open_store(self.state_url),
                                       operator_name(), hosts=hosts, on_lost=lost)
        if engine is not None:
            engine.guard = keeper.problem
        return keeper


def end_orphans(engine: Engine) -> None:
    """Before any host is probed: end the step processes a dead run of this state left
    running on this machine (their guard could not), and say so."""
    if isinstance(engine.executor, executor_mod.RunnerExecutor):
        engine.executor.end_orphans()


def narrowed(keeper: LeaseKeeper, inv: inventory.Inventory) -> inventory.Inventory:
    """The inventory's hosts this run holds; says which are left to another run."""
    claimed = keeper.claimed
    if claimed is None or len(claimed) == len(inv.hosts):
        return inv
    held = keeper.held_elsewhere
    holders = sorted(set(held.values()))
    err.print(f"{len(held)} host(s) are held by another run and left to it: "
              f"{_few(sorted(held))} (held by {holders[0]}"
              + (f" and {len(holders) - 1} other run(s))" if len(holders) > 1 else ")"),
              markup=False, soft_wrap=True)
    return inv.only(claimed)


def narrowed_plan(the_plan: Plan, inv: inventory.Inventory) -> Plan:
    """The plan's waves with only the hosts of `inv` (this run's); empty waves dropped."""
    keep = set(inv.names())
    waves = tuple(dataclasses.replace(w, hosts=tuple(h for h in w.hosts if h in keep))
                  for w in the_plan.waves)
    return dataclasses.replace(the_plan, waves=tuple(w for w in waves if w.hosts))


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
@click.option("--credentials", type=click.Path(path_type=Path), envvar="AVMIGRATE_CREDENTIALS",
              help="YAML file of credentials (uninstall passwords, become_password), mode 0600 "
                   "or ansible-vault encrypted (env AVMIGRATE_CREDENTIALS).")
@click.option("--vault-password-file", type=click.Path(path_type=Path),
              envvar="AVMIGRATE_VAULT_PASSWORD_FILE",
              help="Vault password file for vault-encrypted credentials, mode 0600.")
@click.pass_context
def cli(ctx: click.Context, state: str, catalogue_path: Path | None, verbose: int,
        credentials: Path | None, vault_password_file: Path | None) -> None:
    """Move a fleet off a banned antivirus product without leaving any host unprotected."""
    ctx.obj = Context(state, catalogue_path, verbose, credentials, vault_password_file)


INVENTORY = click.option("-i", "--inventory", "inventory_path", required=True,
                         type=click.Path(path_type=Path), help="Ansible inventory file.")
REPLACEMENT = click.option("--replacement", default="clamav", show_default=True,
                           help="Replacement product id from the catalogue.")
FORKS = click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 500),
                     help="Hosts Ansible works on at once.")


def _records(store: SqlStore, names: tuple[str, ...] | None = None) -> list[HostRecord]:
    records = store.all()
    if names is not None:
        wanted = set(names)
        records = [r for r in records if r.name in wanted]
    return records


def print_status(records: list[HostRecord]) -> None:
    from rich.table import Table  # noqa: PLC0415 - not needed for counts alone

    table = Table(title="avmigrate: host states", show_lines=False)
    for col in ("host", "state", "protected by", "strategy", "wave", "banned found", "gap",
                "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        row = reports.host_row(r)
        colour = STATE_COLOURS.get(r.state.value, "white")
        table.add_row(r.name, f"[{colour}]{r.state.value}[/]", row["protected_by"],
                      row["strategy"], str(row["wave"]), row["banned_found"],
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
    with obj.lease(inv.names(), engine) as keeper:
        end_orphans(engine)
        inv = engine.inventory = narrowed(keeper, inv)
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
@click.option("--workers", default=64, show_default=True, type=click.IntRange(1, 1000),
              help="Hosts probed at once.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 120),
              help="Seconds to wait for each host.")
@click.option("--json", "as_json", is_flag=True, help="Print every host's result as JSON.")
@boundary
def sweep(inventory_path: Path, workers: int, timeout: float, as_json: bool) -> None:
    """Check every host answers SSH with the key recorded in known_hosts (no login, no Ansible;
    nothing is recorded). Exit 0 when all do, 3 otherwise."""
    from orchestrator.execute import sweep as sweeper  # noqa: PLC0415

    inv = inventory.load(inventory_path)
    start = time.monotonic()
    results = sweeper.sweep(inv.hosts, workers=workers, timeout=timeout)
    took = time.monotonic() - start
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
    sys.exit(ExitCode.OK if all(r.ok for r in results) else ExitCode.HOSTS_LEFT)


POLICY = click.option("--policy", "policy_path", type=click.Path(path_type=Path),
                      help="Policy YAML: waves, order, windows, blackouts, deadline, budget, "
                           "gates, approvals (see inventory/policy.example.yml).")


def _load_policy(path: Path | None) -> policy_mod.Policy:
    return policy_mod.Policy() if path is None else policy_mod.load(path)


def write_plan_files(out_dir: Path, the_plan: Plan, view: dict[str, Any]) -> list[Path]:
    """plan.json (what `run --plan` executes) and its renderings, each written atomically,
    one after the other (a 100k-host plan's texts are not all held at once)."""
    files: dict[str, Callable[[], str | Iterable[str]]] = {
        # Indented for reading when small; a 100k-host plan is written compact (3x faster).
        "plan.json": lambda: reports.plan_json_text(
            the_plan, indent=2 if len(the_plan.hosts) <= 1000 else None),
        "plan.html": lambda: reports.render_plan(view, "html"),
        "plan.md": lambda: reports.render_plan(view, "md"),
        "plan.csv": lambda: reports.plan_csv_chunks(view),
    }
    for name, render in files.items():
        reports.write_atomic(out_dir / name, render())
    return [out_dir / n for n in files]


@cli.command()
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
@click.option("--json", "as_json", is_flag=True, help="Print the plan file's JSON.")
@pass_ctx
@boundary
def plan(obj: Context, inventory_path: Path, replacement: str, forks: int,
         policy_path: Path | None, out_dir: Path, canary: int | None, growth: float | None,
         check_mode: bool, no_discover: bool, as_json: bool) -> None:
    """Make the wave plan. A dry run: hosts are only read, never changed."""
    contacts_hosts = not no_discover or check_mode
    # With no host to contact, the state is read while a child process reads the inventory.
    loading = (inventory.load_in_background(inventory_path) if not contacts_hosts
               else None)
    if loading is not None:  # whatever happens next, no child is left behind
        click.get_current_context().call_on_close(loading.close)
    inv = inventory.load(inventory_path) if loading is None else None
    cat = obj.catalogue()
    cat.replacement(replacement)
    pol = _load_policy(policy_path)
    if canary is not None:
        pol = dataclasses.replace(pol, canary=canary, canary_percent=None,
                                  raw=pol.raw | {"waves": pol.raw.get("waves", {})
                                                 | {"canary": canary}})
    if growth is not None:
        pol = dataclasses.replace(pol, growth=growth,
                                  raw=pol.raw | {"waves": pol.raw.get("waves", {})
                                                 | {"growth": growth}})
    store = obj.store()
    checks: dict[str, Any] = {}
    if inv is not None:  # discovery or check mode
        engine = obj.engine(inv, replacement, forks,
                            engine_mod.RunPolicy(strategy=pol.strategy))
        with obj.lease(inv.names(), engine) as keeper:
            end_orphans(engine)
            inv = engine.inventory = narrowed(keeper, inv)
            run_id = store.begin_run("plan --check" if check_mode else "plan", operator_name(),
                                     None)
            engine.run_id = run_id
            if not no_discover:
                engine.discover(list(inv.names()))
            records = {r.name: r for r in _records(store, inv.names())}
            the_plan = planner.make_plan(inv, cat, replacement, records, pol,
                                         planner.estimates_from(store.step_spans()), forks)
            if check_mode:
                err.print(f"check mode on {len(the_plan.hosts)} planned host(s)")
                checks = engine.check(list(the_plan.hosts))
            store.finish_run(run_id, "done")
    with inventory.bulk():  # many short-lived acyclic objects: no GC passes over them
        # All that needs only the state is done before waiting for the inventory; hosts of
        # the state that the inventory does not name are never looked up.
        now = time.time()
        records = {r.name: r for r in store.all()}
        estimates = planner.estimates_from(store.step_spans())
        lines = reports.host_lines(records.values(), cat, replacement, now, pol.strategy)
        reports.compile_plan_templates()
        if loading is not None:
            inv = loading()
        assert inv is not None  # noqa: S101 - loaded above, one way or the other
        the_plan = planner.make_plan(inv, cat, replacement, records, pol, estimates, forks,
                                     now=now)
        if checks:
            the_plan = dataclasses.replace(the_plan, checks=checks)
        view = reports.plan_view(the_plan, records, inv, cat, lines)
        del records, lines  # the view has what the files need: free 100k records first
        written = write_plan_files(out_dir, the_plan, view)
    if as_json:
        click.echo(json.dumps(reports.plan_to_json(the_plan), indent=2))
        return
    sizes = ", ".join(str(len(w.hosts)) for w in the_plan.waves) or "none"
    out.print(f"plan: {len(the_plan.hosts)} host(s) in waves of {sizes}; "
              f"{len(the_plan.skipped)} need no wave", markup=False)
    verdict = the_plan.estimate.get("deadline", {})
    colour = "green" if verdict.get("feasible", True) else "bold red"
    out.print(f"[{colour}]deadline: {verdict.get('text', '')}[/]")
    if checks:
        out.print(f"check mode: {checks['summary']}", markup=False)
    out.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)


def plan_changes(the_plan: Plan, inv: inventory.Inventory, cat: Catalogue,
                 source: Path) -> str | None:
    """What changed in the inventory or catalogue since the plan was made, or None."""
    parts = []
    if the_plan.inventory_digest != inv.digest:
        now = inv.host_digests()
        then = the_plan.host_digests
        added = sorted(set(now) - set(then)) if then else []
        removed = sorted(set(then) - set(now))
        changed = sorted(h for h in set(now) & set(then) if now[h] != then[h])
        bits = [f"{label} {_few(names)}" for label, names in
                (("hosts added:", added), ("hosts removed:", removed),
                 ("groups or variables changed on", changed)) if names]
        parts.append("the inventory changed (" + ("; ".join(bits) or "its content") + ")")
    if the_plan.catalogue_digest != cat.digest:
        now = cat.part_digests()
        then = the_plan.catalogue_digests
        diff = (sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
                if then else [])
        parts.append("the catalogue changed (" + (_few(diff) or "its content") + ")")
    if not parts:
        return None
    return f"{' and '.join(parts)} since plan {source} was made; make a new plan"


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@cli.command()
@INVENTORY
@REPLACEMENT
@FORKS
@POLICY
@click.option("--plan", "plan_path", type=click.Path(path_type=Path),
              help="Execute this plan file exactly (from `avmigrate plan`), with its policy.")
@click.option("--yes", "-y", is_flag=True, envvar="AVMIGRATE_YES",
              help="Do not ask for confirmation (env AVMIGRATE_YES).")
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
@click.option("--progress/--no-progress", default=None,
              help="Live progress bars (default: on when standard error is a terminal).")
@pass_ctx
@boundary
def run(obj: Context, inventory_path: Path, replacement: str, forks: int,
        policy_path: Path | None, plan_path: Path | None, yes: bool, strategy: str | None,
        max_unprotected: str | None, reconnect_seconds: float | None,
        max_failed_percent: float | None, soak_seconds: float | None,
        require_approval: bool | None, progress: bool | None) -> None:
    """Migrate the hosts: install and verify the replacement, then remove the banned product."""
    inv = inventory.load(inventory_path)
    cat = obj.catalogue()
    overrides = {"strategy": strategy, "max_unprotected": max_unprotected,
                 "reconnect_seconds": reconnect_seconds,
                 "max_failed_percent": max_failed_percent, "soak_seconds": soak_seconds,
                 "require_approval": require_approval}
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    the_plan: Plan | None = None
    if plan_path is not None:
        if policy_path is not None or given:
            names = ", ".join(f"--{k.replace('_', '-')}" for k in given) or "--policy"
            raise UsageError(f"{names} cannot be used with --plan: a plan runs with the policy "
                             "it was made with; make a new plan to change it")
        the_plan = reports.load_plan(plan_path)
        if (changed := plan_changes(the_plan, inv, cat, plan_path)) is not None:
            raise PlanError(changed)
        replacement = the_plan.replacement
        pol = reports.policy_from_plan(the_plan)
    else:
        pol = dataclasses.replace(_load_policy(policy_path), **given)
        if pol.require_approval:
            raise UsageError("--require-approval needs --plan: approvals are given for a "
                             "plan file; make one with `avmigrate plan`")
    policy = engine_mod.RunPolicy(
        strategy=pol.strategy, max_unprotected=pol.max_unprotected,
        reconnect_seconds=pol.reconnect_seconds, max_failed_percent=pol.max_failed_percent,
        soak_seconds=pol.soak_seconds, require_approval=pol.require_approval,
        plan_key=planner.plan_key(the_plan) if the_plan is not None else "", windows=pol)
    engine = obj.engine(inv, replacement, forks, policy)
    store = obj.store()
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted("not confirmed: pass --yes to run without a terminal",
                          exit_code=ExitCode.BAD_INPUT)
        click.confirm(f"Migrate up to {len(inv.hosts)} host(s) to {replacement}?", abort=True)
    t0 = time.monotonic()
    live = err.is_terminal if progress is None else progress
    with obj.lease(inv.names(), engine) as keeper, interrupts(engine):
        end_orphans(engine)
        inv = engine.inventory = narrowed(keeper, inv)
        if the_plan is not None:
            the_plan = narrowed_plan(the_plan, inv)
        run_id = store.begin_run("run", operator_name(),
                                 None if plan_path is None else str(plan_path))
        engine.run_id = run_id
        err.print(f"discovering {len(inv.hosts)} host(s)")
        engine.discover(list(inv.names()))
        records = {r.name: r for r in _records(store, inv.names())}
        if the_plan is None:
            the_plan = planner.make_plan(inv, cat, replacement, records, pol,
                                         planner.estimates_from(store.step_spans()), forks)
        if live:
            with progress_mod.RunProgress(err, the_plan, records) as bars:
                engine.on_change = bars.update
                engine.log = bars.log
                summary = engine.run(the_plan)
        else:
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
            if isinstance(executor, executor_mod.RunnerExecutor):
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
                          exit_code=ExitCode.BAD_INPUT)
        click.confirm(f"Install and verify {replacement} on {', '.join(names)}?", abort=True)
    engine = obj.engine(inv, replacement, forks)
    with obj.lease(names, engine) as keeper, interrupts(engine):
        end_orphans(engine)
        engine.inventory = narrowed(keeper, inv.only(names))
        names = list(engine.inventory.names())
        run_id = store.begin_run("remediate", operator_name(), None)
        engine.run_id = run_id
        # Read first: a host whose protecting product runs again, or whose replacement
        # verifies, leaves its slot on that evidence; the others are remediated.
        engine.discover(names)
        engine.remediate([n for n in names if (r := store.get(n)) is not None
                          and r.state == HostState.UNPROTECTED])
        records = [r for r in _records(store, inv.names()) if r.name in names]
        store.finish_run(run_id, f"exit {engine_mod.exit_code_for(records)}")
    print_status(records)
    sys.exit(engine_mod.exit_code_for(records))


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
    obj.store().add_approval(planner.plan_key(the_plan), wave_number, operator_name(),
                             str(plan_path))
    out.print(f"wave {wave_number} of {plan_path} approved by {operator_name()}")


@cli.command()
@click.option("--set", "spec", metavar="N|P%",
              help="Set the fleet's budget, which every run on this state keeps to (the "
                   "smaller of it and the run's own applies): a count, or a share like 1%.")
@pass_ctx
@boundary
def budget(obj: Context, spec: str | None) -> None:
    """Show the fleet's protection budget and the hosts holding its slots (or set it)."""
    store = _existing_store(obj) if spec is None else obj.store()
    if spec is not None:
        store.set_fleet_budget(spec, operator_name())
    now = store.budget()
    if now.fleet_spec is None:
        out.print("fleet budget: not set; each run keeps to its own --max-unprotected "
                  "(default 1)", markup=False)
    else:
        hosts = resolve_budget(now.fleet_spec, now.fleet_size)
        out.print(f"fleet budget: {now.fleet_spec} ({hosts} host(s) of {now.fleet_size} at "
                  f"once; set by {now.set_by}); a run that asks for less keeps to its own",
                  markup=False)
    holders = store.slot_holders()
    out.print(f"{len(holders)} host(s) hold a slot now (protection unproven)"
              + (": " + ", ".join(f"{r.name} ({r.state.value})" for r in holders[:20])
                 if holders else ""), markup=False, soft_wrap=True)


STATUS_TABLE_MAX = 100  # above this many hosts, `status` prints counts and what needs attention
ATTENTION = (HostState.UNPROTECTED, HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
             HostState.INTERRUPTED, HostState.INSTALLING, HostState.STAGING,
             HostState.REMOVING, HostState.SWAPPING)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
@click.option("--all", "show_all", is_flag=True,
              help=f"List every host, even in a fleet of more than {STATUS_TABLE_MAX}.")
@click.option("--only", multiple=True, type=click.Choice([s.value for s in HostState]),
              help="List only the hosts in this state (repeatable).")
@pass_ctx
@boundary
def status(obj: Context, as_json: bool, show_all: bool, only: tuple[str, ...]) -> None:
    """Show every host's state, strategy and protection gap (exit code as for run).

    In a fleet of more than a hundred hosts it prints how many hosts are in each state and
    lists the ones that need attention; --all or --only list hosts.
    """
    store = _existing_store(obj)
    counts = store.counts()
    code = exit_code_for_states(set(counts)) if counts else ExitCode.OK
    if only:
        records = store.in_states([HostState(s) for s in only])
    elif as_json or show_all or sum(counts.values()) <= STATUS_TABLE_MAX:
        records = _records(store)
    else:
        print_summary(store, counts)
        sys.exit(code)
    if as_json:
        out.print_json(json.dumps([reports.host_row(r) for r in records]))
    else:
        print_status(records)
    sys.exit(code)


def print_summary(store: StateStore, counts: dict[HostState, int], limit: int = 50) -> None:
    """Counts by state, then the hosts that need attention (at most `limit`)."""
    total = sum(counts.values())
    parts = ", ".join(f"{s.value} {counts[s]}" for s in HostState if counts.get(s))
    click.echo(f"{total} hosts: {parts}")
    needing = sum(counts.get(s, 0) for s in ATTENTION)
    if not needing:
        click.echo("no host needs attention")
        return
    shown = store.in_states(ATTENTION, limit)
    print_status(shown)
    if needing > len(shown):
        states = " ".join(f"--only {s.value}" for s in ATTENTION if counts.get(s))
        out.print(f"and {needing - len(shown)} more that need attention: "
                  f"avmigrate status {states}", markup=False)


def _existing_store(obj: Context) -> SqlStore:
    path = Path(obj.state_url)
    if "://" not in obj.state_url and not path.exists():
        raise AvmigrateError(f"no state at {path}; run `avmigrate discover` or pass --state")
    return obj.store()


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["html", "md", "csv", "json"]), default="md",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output.")
@pass_ctx
@boundary
def report(obj: Context, fmt: str, as_json: bool, out_file: Path | None) -> None:
    """Evidence: every host's before and after, its transitions with times and operators,
    its gap, the approvals, a BOD 17-01 summary and the audit log's head."""
    store = _existing_store(obj)
    data = reports.report_data(store.all(), store.history(), store.runs(),
                               store.all_approvals(), store.facts_before(),
                               store.audit_verify())
    text = reports.render_report(data, "json" if as_json else fmt)
    if out_file is None:
        click.echo(text, nl=False)
    else:
        reports.write_atomic(out_file, text)
        out.print(f"wrote {out_file}", markup=False)


@cli.group()
def audit() -> None:
    """The append-only, hash-chained audit log of every run, transition, approval and lease."""


@audit.command("verify")
@pass_ctx
@boundary
def audit_verify(obj: Context) -> None:
    """Check the chain and that every recorded fact has its entry (exit 9 if not)."""
    verdict = _existing_store(obj).audit_verify()
    if not verdict.ok:
        for problem in verdict.problems:
            err.print(f"audit: {problem}", markup=False)
        raise AuditError(f"the audit log failed verification: {len(verdict.problems)} "
                         "problem(s) above; keep this state file as evidence")
    out.print(f"audit log intact: {verdict.entries} entries, head {verdict.head}",
              markup=False)


@audit.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@pass_ctx
@boundary
def audit_show(obj: Context, as_json: bool) -> None:
    """Print the audit log's entries."""
    entries = _existing_store(obj).audit_entries()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
        return
    for e in entries:
        click.echo(f"{e.seq:6d} {reports.ts(e.at)} {e.kind:<10} {e.host or '-':<20} "
                   f"run {e.run_id or '-'} {json.dumps(e.detail, sort_keys=True)}")


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
@click.option("--nodes", default=0, show_default=True, type=int,
              help="Execution nodes (group execution_nodes) that run `ansible-runner worker`.")
@boundary
def lab_up(lab_name: str, count: int, scenario_file: Path | None, nodes: int) -> None:
    """Build the lab (cleaning up what an earlier one left) and boot its hosts."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    log: list[str] = []
    t0 = time.monotonic()
    try:
        info = Lab(lab_name).up(count, scenario_file, log, nodes=nodes)
    finally:
        for line in log:
            err.print(line, markup=False)
    out.print(f"lab {info.name}: {len(info.hosts)} hosts"
              + (f" and {len(info.nodes)} execution nodes" if info.nodes else "")
              + f" up in {time.monotonic() - t0:.0f}s")
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
    from rich.table import Table  # noqa: PLC0415

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
