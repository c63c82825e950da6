"""Operations on the hosts and the state that change no host: discover, sweep, status,
budget."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.api.workspace import Observer, Settings, Silent, Workspace, operator_name
from orchestrator.core.errors import ExitCode, UsageError
from orchestrator.core.lazy import lazy
from orchestrator.core.models import HostRecord, HostState, exit_code_for_states
from orchestrator.core.protection import resolve_budget
from orchestrator.inputs.sources import Given
from orchestrator.store.sqlstore import SqlStore

if TYPE_CHECKING:
    from orchestrator.core.catalogue import Catalogue
    from orchestrator.engine import session as session_mod
    from orchestrator.execute import sweep as sweep_mod
    from orchestrator.inputs import inventory
    from orchestrator.inputs import policy as policy_mod
    from orchestrator.plan import choice as choice_mod
else:
    # Imported when first used: `avmigrate status` needs none of them.
    choice_mod = lazy("orchestrator.plan.choice")
    inventory = lazy("orchestrator.inputs.inventory")
    policy_mod = lazy("orchestrator.inputs.policy")
    session_mod = lazy("orchestrator.engine.session")
    sweep_mod = lazy("orchestrator.execute.sweep")

STATUS_TABLE_MAX = 100  # above this many hosts, `status` gives counts and what needs attention
ATTENTION = (HostState.UNPROTECTED, HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
             HostState.INTERRUPTED, HostState.INSTALLING, HostState.STAGING,
             HostState.REMOVING, HostState.SWAPPING, HostState.REBOOT_PENDING)


def records_of(store: SqlStore, names: Iterable[str] | None = None) -> list[HostRecord]:
    """The state's records of these hosts (None: of every host)."""
    records = store.all()
    if names is not None:
        wanted = set(names)
        records = [r for r in records if r.name in wanted]
    return records


# ---- sweep ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Swept:
    """Every host's answer to the sweep, how long it took, and the exit code it means."""

    results: tuple[sweep_mod.SweepResult, ...]
    seconds: float

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(r.ok for r in self.results) else ExitCode.HOSTS_LEFT


def sweep(inventory_path: Given, workers: int = 64, timeout: float = 5.0,
          ws: Workspace | None = None) -> Swept:
    """Does every host answer SSH with the key recorded in known_hosts? No login, no Ansible,
    nothing recorded."""
    ws = ws or Workspace(Settings())
    inv = inventory.load(ws.sources(inventory_path))
    start = time.monotonic()
    results = sweep_mod.sweep(inv.hosts, workers=workers, timeout=timeout,
                              ssh_args=ws.ansible().ssh_args)
    return Swept(tuple(results), time.monotonic() - start)


# ---- discover ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The hosts an operation works on, the product they move to, and Ansible's forks."""

    inventory: Given  # a path, several, or Sources (-i, --limit, vault ids, prompts)
    # The default replacement (None: the policy's, else clamav); see plan/choice.py.
    replacement: str | None = None
    forks: int | None = None  # None: ansible.cfg's forks, else 10


@dataclass(frozen=True)
class Discovered:
    records: tuple[HostRecord, ...]


def choose(inv: inventory.Inventory, cat: Catalogue, target: Target,
           pol: policy_mod.Policy | Path | None) -> choice_mod.Choice:
    """Each host's replacement: inventory variable, policy groups, default."""
    if not isinstance(pol, policy_mod.Policy):
        pol = policy_mod.Policy() if pol is None else policy_mod.load(pol)
    return choice_mod.choose(inv, pol, cat, target.replacement)


def require_enrolment(ws: Workspace, cat: Catalogue, choice: choice_mod.Choice,
                      inv: inventory.Inventory, names: Iterable[str]) -> None:
    """Refuse, before anything starts, a run whose hosts' replacements need an enrolment
    credential the credentials file does not hold (each host's on its platform: Defender's
    Windows onboarding script is not its Linux onboarding file)."""
    from orchestrator.core.catalogue import inventory_platform, platform_of  # noqa: PLC0415

    facts = {r.name: r.facts for r in ws.store().all() if r.facts is not None}
    needed: dict[str, tuple[str, str]] = {}
    for name in names:
        rid = choice.of(name)
        found = facts.get(name)
        platform = ((platform_of(found.os_family) if found is not None else "")
                    or inventory_platform(inv.get(name).vars))
        if (secret := cat.enrol_secret(rid, platform)) is not None:
            needed.setdefault(secret, (rid, platform))
    if not needed:
        return
    have = set(ws.secrets().values)
    for secret, (rid, platform) in sorted(needed.items()):
        if secret not in have:
            entry = cat.entry("replacements", rid, platform)
            what = entry["enrol"].get("what", "its enrolment secret")
            where = (f"the credentials file {ws.settings.credentials}"
                     if ws.settings.credentials else "a credentials file (--credentials)")
            on = f" on {platform}" if platform else ""
            raise UsageError(f"{entry['name']}{on} needs the credential {secret} "
                             f"({what}): add it to {where}")


def discover(ws: Workspace, target: Target, observer: Observer | None = None,
             policy: Path | None = None) -> Discovered:
    """Probe every host read-only and record what it runs (`policy`: its replacement
    choices)."""
    observer = observer or Silent()
    inv = inventory.load(ws.sources(target.inventory))
    cat = ws.catalogue()
    choice = choose(inv, cat, target, policy)
    executor = ws.executor(inv, target.forks, observer)
    spec = session_mod.SessionSpec("discover", hosts=inv.names())
    with ws.session(inv, executor, spec, observer) as session:
        engine = session.engine(cat, choice, None, observer.log)
        engine.discover(list(session.inventory.names()))
    return Discovered(tuple(records_of(ws.store(), session.inventory.names())))


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


# ---- budget --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetView:
    """The fleet's protection budget (spec None: not set, each run keeps to its own), the
    hosts it allows at once in a fleet of fleet_size, and the hosts holding a slot now."""

    spec: str | None
    hosts: int | None  # the spec resolved for the fleet's size (None: not set)
    fleet_size: int
    set_by: str | None
    holders: tuple[HostRecord, ...]


def budget(ws: Workspace, set_to: str | None = None) -> BudgetView:
    """The fleet's budget and its slot holders, after setting it to `set_to` if given (a
    count, or a share like 1%) in the name of the operator."""
    store = ws.existing_store() if set_to is None else ws.store()
    if set_to is not None:
        store.set_fleet_budget(set_to, operator_name())
    now = store.budget()
    hosts = None if now.fleet_spec is None else resolve_budget(now.fleet_spec, now.fleet_size)
    return BudgetView(now.fleet_spec, hosts, now.fleet_size, now.set_by,
                      tuple(store.slot_holders()))
