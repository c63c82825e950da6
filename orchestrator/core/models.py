"""Host states, the transitions allowed between them, and the records passed between layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from orchestrator.core.errors import ExitCode

T = TypeVar("T")


class Strategy(StrEnum):
    """How a host moves from the banned product to its replacement."""

    AUTO = "auto"  # per host, from the catalogue: make-before-break where the two coexist
    MAKE_BEFORE_BREAK = "make-before-break"  # install and verify, then remove the banned one
    SWAP = "swap"  # stage the replacement, remove the banned one, install and verify it


STRATEGY_NAMES = tuple(s.value for s in Strategy)


class HostState(StrEnum):
    """Where one host stands in its migration. Stored by value in the state database."""

    PENDING = "pending"  # has a banned product; nothing done yet
    UNREACHABLE = "unreachable"  # SSH failed; nothing done, banned product as found
    CLEAN = "clean"  # no banned product found: nothing to migrate
    BLOCKED = "blocked"  # preflight refused it (disk, package manager, platform); untouched
    INSTALLING = "installing"  # intent (make-before-break): replacement install under way
    INSTALL_FAILED = "install_failed"  # replacement did not install, stage or verify; banned on
    VERIFIED = "verified"  # replacement verified (daemon answers, EICAR detected); banned on
    STAGING = "staging"  # intent (swap): replacement packages and signatures being staged
    STAGED = "staged"  # swap: staged files on the host and checked; banned product still on
    REMOVING = "removing"  # intent: banned product being stopped and purged
    SWAPPING = "swapping"  # intent (swap): banned removed, replacement installing from stage
    REMOVE_FAILED = "remove_failed"  # removal failed; the replacement was verified and protects
    # The removal succeeded but completes only at the next reboot (msiexec 3010/1641): the
    # host holds its budget slot until it has rebooted and its replacement is proven again.
    REBOOT_PENDING = "reboot_pending"
    INTERRUPTED = "interrupted"  # a run stopped or died mid-migration; re-probed, will resume
    MIGRATED = "migrated"  # banned product gone, replacement verified after removal
    UNPROTECTED = "unprotected"  # neither product verified protecting: an alarm

    @property
    def is_final_success(self) -> bool:
        return self in (HostState.MIGRATED, HostState.CLEAN)

    @property
    def is_failure(self) -> bool:
        return self in (HostState.INSTALL_FAILED, HostState.REMOVE_FAILED, HostState.UNPROTECTED)

    @property
    def is_intent(self) -> bool:
        """Committed before a step that changes the host; seen at start they mean a crash."""
        return self in INTENTS

    @property
    def holds_slot(self) -> bool:
        """Counts against the protection budget: its protection is not proven."""
        return self in SLOT_STATES


INTENTS = frozenset({HostState.INSTALLING, HostState.STAGING, HostState.REMOVING,
                     HostState.SWAPPING})

# States in which a host holds one slot of the fleet's protection budget: from the commit of
# the intent to stop its banned product until a probe proves protection again (a protecting
# product runs, or the replacement was verified). A host leaves them only with such proof.
SLOT_STATES = frozenset({HostState.REMOVING, HostState.SWAPPING, HostState.REBOOT_PENDING,
                         HostState.UNPROTECTED})

# States that say nothing was ever done to the host (in this migration). A host that a step
# has changed never returns to them: only MIGRATED -> PENDING, when a banned product is back.
UNTOUCHED = frozenset({HostState.PENDING, HostState.UNREACHABLE, HostState.CLEAN,
                       HostState.BLOCKED})

# States from which a host's migration (re)starts at its first step.
RESTARTABLE = frozenset({
    HostState.PENDING, HostState.INSTALL_FAILED, HostState.VERIFIED, HostState.STAGED,
    HostState.REMOVE_FAILED, HostState.INTERRUPTED,
})
_START = frozenset({HostState.INSTALLING, HostState.STAGING})
# What a probe of a touched host may conclude (VERIFIED and MIGRATED need the replacement
# verified by that probe, INTERRUPTED a protecting product running).
_REPROBED = frozenset({HostState.INTERRUPTED, HostState.UNPROTECTED, HostState.VERIFIED,
                       HostState.MIGRATED})

# Allowed moves. The safety rules are in this table: REMOVING is entered only from VERIFIED
# (make-before-break: replacement verified in this run) or STAGED (swap: replacement staged on
# the host in this run), and only through the budget (SqlStore checks it in the same
# transaction); a touched host never goes back to an "untouched" state.
_STEPS: dict[HostState, frozenset[HostState]] = {
    HostState.INSTALLING: frozenset({HostState.VERIFIED, HostState.INSTALL_FAILED}),
    HostState.STAGING: frozenset({HostState.STAGED, HostState.INSTALL_FAILED}),
    # A verified host that waited for a slot is verified again; failing that, it stops there.
    HostState.VERIFIED: frozenset({HostState.REMOVING, HostState.INSTALL_FAILED}),
    # A staged host whose stage no longer proves the install is stopped there, untouched.
    HostState.STAGED: frozenset({HostState.REMOVING, HostState.INSTALL_FAILED}),
    HostState.REMOVING: frozenset({HostState.MIGRATED, HostState.REMOVE_FAILED,
                                   HostState.SWAPPING, HostState.REBOOT_PENDING}),
    # Rebooted (in its window) and proven again, or still waiting for its reboot.
    HostState.REBOOT_PENDING: frozenset({HostState.MIGRATED, HostState.REMOVE_FAILED,
                                         HostState.REBOOT_PENDING}),
    HostState.SWAPPING: frozenset({HostState.MIGRATED, HostState.REMOVE_FAILED,
                                   HostState.REBOOT_PENDING}),
    # Found with its removal waiting for a reboot: the reboot, then the proof.
    HostState.UNPROTECTED: frozenset({HostState.REBOOT_PENDING}),
    HostState.MIGRATED: frozenset({HostState.PENDING, HostState.UNPROTECTED}),
}


def _allowed(state: HostState) -> frozenset[HostState]:
    if state == HostState.CLEAN:  # a host with no antivirus at all may be given one
        return UNTOUCHED | {HostState.INSTALLING}
    if state in UNTOUCHED:
        return UNTOUCHED | (_START if state in RESTARTABLE else frozenset())
    moves = _STEPS.get(state, frozenset()) | _REPROBED
    if state in RESTARTABLE:
        moves |= _START
    return frozenset(moves)


ALLOWED_TRANSITIONS: dict[HostState, frozenset[HostState]] = {s: _allowed(s) for s in HostState}


# One step as the state history shows it: (state entered, from where, the next state, seconds
# to it, the state after that, seconds to that; None where the history ends). The planner's
# estimates come from these; `SqlStore.step_spans` reads them with one query.
StepSpan = tuple[str, str, str | None, float | None, str | None, float | None]
STEP_STARTS = (HostState.INSTALLING.value, HostState.STAGING.value, HostState.REMOVING.value)


def exit_code_for_states(states: set[HostState]) -> ExitCode:
    """exit_code_for, from the set of states the hosts are in."""
    if HostState.UNPROTECTED in states:
        return ExitCode.UNPROTECTED
    if states & {HostState.INSTALL_FAILED, HostState.REMOVE_FAILED}:
        return ExitCode.STEP_FAILED
    if any(not s.is_final_success for s in states):
        return ExitCode.HOSTS_LEFT
    return ExitCode.OK


def transition_allowed(src: HostState, dst: HostState) -> bool:
    return dst in ALLOWED_TRANSITIONS[src]


@dataclass(frozen=True, slots=True)
class InventoryHost:
    """A host as the inventory names it, with its variables (never templated by us).

    `own` are the host's own variables; `shared` the merged variables of its groups, one
    dict shared by every host of the same groups (100,000 hosts need not hold 100,000
    copies). `vars` merges them as Ansible does: the host's own win.
    """

    name: str
    groups: tuple[str, ...]
    own: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    shared: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def vars(self) -> dict[str, Any]:
        return {**self.shared, **self.own} if self.shared else self.own

    @property
    def address(self) -> str:
        return str((self.own if "ansible_host" in self.own else self.shared)
                   .get("ansible_host", self.name))


@dataclass(frozen=True, slots=True)
class BannedFinding:
    """One banned product found on a host by discovery."""

    product: str
    version: str | None
    signatures_date: str | None
    packages: tuple[str, ...]
    services_active: tuple[str, ...]
    processes: int


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What discovery read off a host. Never written to the host."""

    os_family: str
    distribution: str
    distribution_version: str
    banned: tuple[BannedFinding, ...]
    replacement_installed: bool
    replacement_active: bool
    free_mb: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    package_manager_ok: bool = True
    package_manager_problem: str = ""
    # When the host last booted (epoch seconds, its own clock), if the probe said.
    booted_at: float | None = None
    # A banned product's removal completes only at the next boot (Windows: its files in the
    # pending renames): nothing is proven about the host until it has rebooted.
    reboot_pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "os_family": self.os_family,
            "distribution": self.distribution,
            "distribution_version": self.distribution_version,
            "banned": [{"product": b.product, "version": b.version,
                        "signatures_date": b.signatures_date, "packages": list(b.packages),
                        "services_active": list(b.services_active), "processes": b.processes}
                       for b in self.banned],
            "replacement_installed": self.replacement_installed,
            "replacement_active": self.replacement_active,
            "free_mb": dict(self.free_mb),
            "package_manager_ok": self.package_manager_ok,
            "package_manager_problem": self.package_manager_problem,
            "booted_at": self.booted_at,
            "reboot_pending": self.reboot_pending,
        }

    def with_free_mb(self, free_mb: dict[str, int]) -> HostFacts:
        """These facts with other free-space figures (`dataclasses.replace`, 10x cheaper)."""
        return new_facts(self.os_family, self.distribution, self.distribution_version,
                         self.banned, self.replacement_installed, self.replacement_active,
                         free_mb, self.package_manager_ok, self.package_manager_problem,
                         self.booted_at, self.reboot_pending)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostFacts:
        return cls(
            os_family=str(data.get("os_family", "")),
            distribution=str(data.get("distribution", "")),
            distribution_version=str(data.get("distribution_version", "")),
            banned=tuple(
                BannedFinding(
                    product=str(b["product"]),
                    version=b.get("version"),
                    signatures_date=b.get("signatures_date"),
                    packages=tuple(b.get("packages", ())),
                    services_active=tuple(b.get("services_active", ())),
                    processes=int(b.get("processes", 0)),
                )
                for b in data.get("banned", ())
            ),
            replacement_installed=bool(data.get("replacement_installed", False)),
            replacement_active=bool(data.get("replacement_active", False)),
            free_mb={str(k): int(v) for k, v in dict(data.get("free_mb", {})).items()},
            package_manager_ok=bool(data.get("package_manager_ok", True)),
            package_manager_problem=str(data.get("package_manager_problem", "")),
            booted_at=(float(data["booted_at"]) if isinstance(data.get("booted_at"), int | float)
                       else None),
            reboot_pending=bool(data.get("reboot_pending", False)),
        )


@dataclass(frozen=True, slots=True)
class HostRecord:
    """The state database's view of one host."""

    name: str
    state: HostState
    reason: str
    strategy: str | None
    wave: int | None
    facts: HostFacts | None
    updated_at: float
    protection_stopped_at: float | None
    replacement_verified_at: float | None
    # The last evidence of protection a probe gave ("kesl.service running", "clamav verified:
    # ..."), and when; None while its protection is not proven (SLOT_STATES) or none was found.
    protected_by: str | None = None
    protected_at: float | None = None
    # The replacement it is being (or was) migrated to, recorded from its install on.
    replacement: str | None = None

    @property
    def gap_seconds(self) -> float | None:
        """Time from the banned product's protection stopping to the replacement verified.

        Zero when the replacement was verified before the banned product was touched
        (make-before-break); None while the banned product has not been stopped.
        """
        if self.protection_stopped_at is None:
            return None
        if self.replacement_verified_at is None:
            return None
        return max(0.0, self.replacement_verified_at - self.protection_stopped_at)


@dataclass(frozen=True, slots=True)
class Transition:
    """One committed change of a host's state."""

    host: str
    from_state: HostState
    to_state: HostState
    at: float
    run_id: int | None
    reason: str


@dataclass(frozen=True)
class Wave:
    """A group of hosts migrated together; wave 0 is the canary."""

    number: int
    hosts: tuple[str, ...]
    window: str | None = None  # the policy window (inventory group) it may run in; None: any

    @property
    def is_canary(self) -> bool:
        return self.number == 0


@dataclass(frozen=True)
class Plan:
    """What a run will do, before it does it. Pure data: computing it touches no host."""

    created_at: float
    inventory_digest: str
    catalogue_digest: str
    replacement: str  # the default replacement
    strategy: str
    waves: tuple[Wave, ...]
    # Hosts whose replacement is not the default (policy groups, inventory variable).
    replacements: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    skipped: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # The policy the plan was made with; a run of the plan follows it, not the command line.
    policy: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Per host and per catalogue entry, so that a refused run can say what changed.
    host_digests: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    catalogue_digests: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Estimated timeline and deadline verdict; `plan --check` findings. Informative only.
    estimate: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    checks: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for w in self.waves for h in w.hosts)


class StepOutcome(StrEnum):
    """How one Ansible step ended for one host, from runner events and stats."""

    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"  # its execution node died mid-step: the host must be re-probed


@dataclass(frozen=True, slots=True)
class StepResult:
    """One host's result of one step (one ansible-runner invocation)."""

    host: str
    step: str
    outcome: StepOutcome
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def bulk_constructor(cls: type[T]) -> Callable[..., T]:
    """A positional constructor of a frozen, slotted dataclass that fills its slots directly.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, which costs
    three times what the object is worth when a store reads 100,000 rows. This one sets the
    slots by their descriptors: the same object (equal, hashable, immutable afterwards),
    without `__post_init__` or defaults, so only for callers that pass every field already
    typed (the state store's bulk reads). `tests/unit/core/test_models.py` checks it equals `cls`.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    if {"obj", "new", "cls"} & set(names):
        raise TypeError(f"{cls.__name__}: a field name clashes with bulk_constructor's own")
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    scope |= {f"set_{n}": getattr(cls, n).__set__ for n in names}
    body = "".join(f"    set_{n}(obj, {n})\n" for n in names)
    exec(f"def make({', '.join(names)}):\n    obj = new(cls)\n{body}    return obj\n",  # noqa: S102 - fixed text from field names
         scope)
    made: Callable[..., T] = scope["make"]
    made.__doc__ = f"{cls.__name__}(...), positional, every field given (see bulk_constructor)."
    return made


new_record = bulk_constructor(HostRecord)
new_facts = bulk_constructor(HostFacts)
