"""A simulated fleet whose hosts hold the truth, and an oracle that judges it.

`SimFleet` is an Executor: it plays each playbook on simulated hosts the way the real playbook
changes a real host (services stopped one after another, packages purged, a replacement
installed, the EICAR test answered only by a replacement that runs and works) and reports what
the real playbook would report. The hosts' truth (`SimHost`) is never read by the engine: tests
judge the engine by it, not by the engine's own state names.

Hooks let a test act at every step boundary: before a step, after each host's change (also
between stopping two products), and after a step before its results are handed back. A hook
may raise `Crash` (the orchestrator process died there), lose the execution node of some
hosts (their outcome becomes UNKNOWN), cut hosts off, or request a stop.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core.models import StepOutcome, StepResult
from orchestrator.execute.step import ResultCallback, StepRequest

KESL_VERSION = "12.1.0.1297"
GOOD_DIGEST = "a" * 64
BAD_DIGEST = "b" * 64


SERVICES = {"clamav": "clamav-daemon.service", "mde": "mdatp.service"}
# The health fields the catalogue's mde entry requires, passive and active.
MDE_PASSIVE = {"healthy": "true", "licensed": "true", "health_issues": "[]",
               "conflicting_applications": "[]", "definitions_status": "up_to_date",
               "passive_mode_enabled": "true"}
MDE_ACTIVE = MDE_PASSIVE | {"passive_mode_enabled": "false",
                            "real_time_protection_enabled": "true"}


class Crash(BaseException):
    """The orchestrator process died here: nothing after this line of its code ran."""


def daemon_line(now: datetime | None = None) -> str:
    """What `clamdscan --version` prints for fresh signatures."""
    return (now or datetime.now(UTC)).strftime("ClamAV 1.4.6/27000/%a %b %d %H:%M:%S %Y")


@dataclass
class SimHost:
    """What is really on one host. Only tests read this; the engine sees step results."""

    kesl: bool = True  # KESL installed
    kesl_running: bool = True  # kesl.service active: KESL protects
    agent: bool = False  # the Network Agent installed (protects nothing)
    agent_running: bool = False
    clamav: bool = False  # the replacement installed
    clamav_running: bool = False
    clamav_works: bool = True  # a running clamd detects EICAR (fresh signatures)
    staged: bool = False
    tampered: bool = False  # a staged package changed after staging
    fragile: bool = False  # the replacement stops working once KESL is removed
    dpkg_broken: bool = False
    reachable: bool = True
    unreachable_for: int = 0  # the next N connections to the host fail
    touched: bool = False  # a step changed something on it (never set by discovery)
    kesl_touched: bool = False  # its banned product was stopped or removed
    # The replacement this host gets: "clamav" (protects beside KESL at once) or "mde" (may
    # run beside a running KESL only in passive mode, where it protects nothing).
    product: str = "clamav"
    passive: bool = False  # the replacement runs in passive mode
    # A passive-only replacement was active beside a running KESL (unsupported: the vendor
    # says it can hang the host): the engine must never cause it.
    conflicted: bool = False
    # A step installed another replacement than the host's (a wrong choice on resume).
    wrong_product: bool = False
    # Its removal completes only at the next reboot (KES on Windows: msiexec 3010). Until
    # that reboot nothing is known to protect it: half-removed drivers, a replacement whose
    # switch to active is not proven.
    reboot_removal: bool = False
    reboot_pending: bool = False
    booted_at: float = 1.0e9  # when it last booted (epoch seconds; long ago)

    @property
    def protected(self) -> bool:
        """The truth: a protecting product runs, or the replacement runs, detects and is
        active (a passive product protects nothing)."""
        return self.kesl_running or (self.clamav_running and self.clamav_works
                                     and not self.passive and not self.reboot_pending)

    def check_conflict(self) -> None:
        if self.product == "mde" and self.clamav_running and not self.passive and (
                self.kesl_running):
            self.conflicted = True

    @property
    def banned_present(self) -> bool:
        return self.kesl or self.agent or self.kesl_running or self.agent_running

    def answers(self) -> bool:
        """One connection attempt: does the host answer?"""
        if not self.reachable:
            return False
        if self.unreachable_for > 0:
            self.unreachable_for -= 1
            return False
        return True


Hook = Callable[[str, str, str | None, str], None]  # (step, point, host, playbook)


@dataclass
class SimFleet:
    """An Executor over simulated hosts.

    `fail` maps a playbook stem (``install``, ``verify``, ...) or a step name to hosts where
    the step fails without changing anything; `lost` maps them to hosts whose execution node
    dies during the step (its change happens, its result is UNKNOWN). `hook` is called at
    every boundary: point ``before`` (host None), ``host`` (after one host's change), ``mid``
    (between stopping two products), ``after`` (all changes made, no result reported yet).
    """

    hosts: dict[str, SimHost]
    fail: dict[str, set[str]] = field(default_factory=dict)
    lost: dict[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    hook: Hook | None = None
    # Hosts whose next step loses its execution node (the step happens, its result is lost).
    lose_next: set[str] = field(default_factory=set)
    # Host -> playbooks whose next run on it fails (once each).
    fail_next: dict[str, set[str]] = field(default_factory=dict)
    # Hosts whose replacement broke on its own (a bad signature push) and that no probe has
    # looked at since: nobody can know yet, so the oracle does not hold it against anyone.
    # Once probed, the engine could tell that its protection rests on the replacement alone,
    # and must find out whether it still works.
    unseen_breaks: set[str] = field(default_factory=set)
    probed: set[str] = field(default_factory=set)  # of those, probed: known once recorded
    failed_once: collections.Counter[str] = field(default_factory=collections.Counter)
    # Hosts whose replacement broke on its own, until they are protected again: the engine
    # did not make them bare, so they do not count against its budget; once it has seen them
    # it must start no removal while they and its own windows fill the budget.
    broke_alone: set[str] = field(default_factory=set)

    def _looked_at(self, name: str) -> None:
        if name in self.unseen_breaks:
            self.probed.add(name)

    def recorded(self, name: str) -> None:
        """The engine committed something about `name`: what a probe showed is known now."""
        if name in self.probed:
            self.probed.discard(name)
            self.unseen_breaks.discard(name)

    def break_replacement(self, name: str) -> bool:
        """The replacement on `name` stops detecting, on its own. False if it has none."""
        host = self.hosts[name]
        if not host.clamav:
            return False
        host.clamav_works = False
        self.unseen_breaks.add(name)
        self.broke_alone.add(name)
        return True
    cancel: Callable[[], bool] = lambda: False
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    # ---- the Executor protocol -------------------------------------------------------------
    def run_step(self, request: StepRequest, on_result: ResultCallback
                 ) -> dict[str, StepResult]:
        names = tuple(h.name for h in request.hosts)
        self.calls.append((request.step, names))
        book = request.playbook.removesuffix(".yml")
        self._at(request.step, "before", None, book)
        out: dict[str, StepResult] = {}
        for name in names:
            out[name] = self._one(request, book, name)
            self._at(request.step, "host", name, book)
        self._at(request.step, "after", None, book)
        for name in names:
            on_result(out[name])
        return out

    def _at(self, step: str, point: str, host: str | None, book: str) -> None:
        if self.hook is not None:
            self.hook(step, point, host, book)
        if self.cancel():
            from orchestrator.core.errors import Aborted  # noqa: PLC0415

            raise Aborted(f"aborted during {step}; hosts caught mid-step keep their intent")

    def _one(self, request: StepRequest, book: str, name: str) -> StepResult:
        host = self.hosts[name]
        step = request.step
        base = step.split("#")[0]
        lost_now = name in self.lose_next
        self.lose_next.discard(name)
        if lost_now or name in self.lost.get(book, set()) | self.lost.get(base, set()):
            # Its execution node died: the change happened if the host answered, but nobody
            # will ever hear how the step ended.
            if host.answers() and name not in self.fail.get(book, set()):
                with contextlib.suppress(_StepFailed):
                    self._apply(book, name, host, request)
            return StepResult(name, step, StepOutcome.UNKNOWN,
                              "execution node n2 stopped answering mid-step")
        refused = self._refused(request, book, name)
        if refused is not None:
            return refused
        if request.check:
            return StepResult(name, step, StepOutcome.OK, "", {"would_change": []})
        try:
            data = self._apply(book, name, host, request)
        except _StepFailed as exc:
            return StepResult(name, step, StepOutcome.FAILED, str(exc), exc.data)
        return StepResult(name, step, StepOutcome.OK, "", data)

    def _refused(self, request: StepRequest, book: str, name: str) -> StepResult | None:
        """The step's result if the host does not answer or the test made the step fail."""
        host, step = self.hosts[name], request.step
        base = step.split("#")[0]
        if not host.answers():
            return StepResult(name, step, StepOutcome.UNREACHABLE,
                              "Failed to connect to the host via ssh: Connection timed out")
        once = self.fail_next.get(name, set())
        if book in once:
            once.discard(book)
            self.failed_once[book] += 1
            if book == "remove":  # as a password-protected KESL: stopped, then purge refused
                self._stop_banned(host, request.host_vars.get(name, {}))
            return StepResult(name, step, StepOutcome.FAILED, f"{base} broke this once")
        if name in self.fail.get(book, set()) | self.fail.get(base, set()):
            return StepResult(name, step, StepOutcome.FAILED, f"{base} broke")
        return None

    def _injected(self, name: str, book: str) -> bool:
        """A failure the test asked of `book` where it now runs inside another playbook's
        run (the install's proof, the removal's activation): consumed like the others."""
        once = self.fail_next.get(name, set())
        if book in once:
            once.discard(book)
            self.failed_once[book] += 1
            return True
        return name in self.fail.get(book, set())

    # ---- what each playbook does to a host -------------------------------------------------
    def _apply(self, book: str, name: str, host: SimHost, request: StepRequest
               ) -> dict[str, Any]:
        plays: dict[str, Callable[[str, SimHost, StepRequest], dict[str, Any]]] = {
            "discover": self._discover, "preflight": self._preflight, "install": self._install,
            "stage": self._stage, "stage_check": self._stage_check,
            "install_staged": self._install_staged, "remove": self._remove,
            "verify": self._verify, "stage_digests": lambda *_: {},
            "activate": self._activate, "reboot": self._reboot,
        }
        if book not in plays:
            raise AssertionError(f"the simulated fleet does not know playbook {book}")
        return plays[book](name, host, request)

    def _discover(self, name: str, host: SimHost, request: StepRequest) -> dict[str, Any]:
        # The probe reads packages and services, not detection: it tells the engine that
        # a host's protection rests on its replacement alone (KESL not running), which
        # the engine must then prove. Where KESL runs, a broken replacement is found by
        # the verification before removal. (The run's last read, for the report, counts
        # for nothing.)
        if request.step != "evidence" and not host.kesl_running:
            self._looked_at(name)
        report = self.probe(host)
        if request.host_vars.get(name, {}).get("avmigrate_discover_preflight"):
            # The run's discovery reads the Debian preflight checks too (probe `preflight`).
            report["preflight"] = {"problems": ["broken package state: dpkg was interrupted"]
                                   if host.dpkg_broken else [], "notes": []}
        return report

    def _preflight(self, _name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        if host.dpkg_broken:
            raise _StepFailed("dpkg was interrupted; run dpkg --configure -a")
        return {}

    def _install(self, name: str, host: SimHost, request: StepRequest) -> dict[str, Any]:
        if host.dpkg_broken:
            raise _StepFailed("apt: dpkg was interrupted")
        host.touched = True
        asked = request.host_vars.get(name, {}).get("avmigrate_replacement_id", host.product)
        if asked != host.product:
            host.wrong_product = True
        host.clamav = host.clamav_running = True
        if host.product == "mde":  # the role writes the enforcement level before it starts
            host.passive = bool(request.host_vars.get(name, {}).get("avmigrate_passive"))
        host.check_conflict()
        host.clamav_works = True  # a fresh install from the repository repairs it
        self.unseen_breaks.discard(name)
        self.probed.discard(name)
        return self._proven_by_install(name, host, request)

    def _proven_by_install(self, name: str, host: SimHost, request: StepRequest
                           ) -> dict[str, Any]:
        """ClamAV's install module proves it in the same run (the others: a verify step)."""
        if host.product != "clamav":
            return {}
        if self._injected(name, "verify"):
            raise _StepFailed("installed, but protection is not proven: verify broke",
                              {"install": {}})
        try:
            return self._verify(name, host, request)
        except _StepFailed as exc:
            raise _StepFailed(f"installed, but protection is not proven: {exc}",
                              {"install": {}}) from exc

    def _stage(self, _name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        host.touched = True
        host.staged = True
        return {"staged": {"clamav-daemon.deb": GOOD_DIGEST}}

    def _stage_check(self, _name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        if not host.staged:
            raise _StepFailed("no staged packages")
        if host.dpkg_broken:
            raise _StepFailed("the staged install would fail: dpkg was interrupted")
        return {"staged": {"clamav-daemon.deb": BAD_DIGEST if host.tampered
                           else GOOD_DIGEST}}

    def _install_staged(self, _name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        if not host.staged or host.dpkg_broken:
            raise _StepFailed("apt-get install from the stage failed")
        host.touched = True
        host.clamav = host.clamav_running = True
        if host.fragile and host.kesl_touched:
            host.clamav_works = False
        return self._proven_by_install(_name, host, _request)

    def _activate(self, _name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        """activate.yml: passive mode off."""
        if not host.clamav_running:
            raise _StepFailed("mdatp.service is not running")
        host.passive = False
        host.check_conflict()
        return {}

    def _verify(self, name: str, host: SimHost, request: StepRequest) -> dict[str, Any]:
        """verify.yml: what the product reports of itself, judged as the real playbook's
        asserts judge it (a failed assert fails the step)."""
        self._looked_at(name)  # whatever it finds, the engine will know
        host_vars = request.host_vars.get(name, {})
        phase_passive = host_vars.get("avmigrate_verify_phase") == "beside"
        if not host.clamav_running:
            raise _StepFailed(f"{SERVICES[host.product]} is not running")
        if phase_passive and not host.kesl_running:
            raise _StepFailed("kesl.service not running: nothing would protect the host "
                              "while the replacement is passive")
        works, passive = host.clamav_works, host.passive
        if host.product == "clamav":
            if not works:
                raise _StepFailed("Scan it with the running daemon: the daemon did not "
                                  "report EICAR")
            return {"service": "active", "health": {}, "signatures": daemon_line(self.now()),
                    "detection": {"rc": "1", "output": "/tmp/x: Eicar-Signature FOUND"},
                    "removal_pending_reboot": host.reboot_pending}
        health = {
            "healthy": "true" if works else "false", "licensed": "true",
            "health_issues": "[]" if works else '["definitions out of date"]',
            "conflicting_applications": '["kesl"]' if host.conflicted else "[]",
            "definitions_status": "up_to_date",
            "passive_mode_enabled": "true" if passive else "false",
            "real_time_protection_enabled": "false" if passive else "true",
        }
        expected = MDE_PASSIVE if phase_passive else MDE_ACTIVE
        bad = [k for k, v in expected.items() if health[k] != v]
        if bad:
            raise _StepFailed(f"health fields not as required: {', '.join(bad)}")
        detected = works and not passive
        if not phase_passive and not detected:
            raise _StepFailed("the EICAR test file was not detected")
        path = f"/tmp/ansible.{len(self.calls)}.avmigrate-eicar"
        expires = (self.now() + timedelta(days=200)).strftime('"%b %d, %Y at %I:%M:%S %p"')
        return {"service": "active", "health": health, "signatures": "5", "expires": expires,
                "banned_running": ["active" if host.kesl_running else "inactive"],
                "detection": {"gone": str(detected), "path": path, "evidence": (
                    f'Name: Virus:DOS/EICAR_Test_File\nPath: "{path}"' if detected else "")},
                "removal_pending_reboot": host.reboot_pending}

    @staticmethod
    def _stop_banned(host: SimHost, host_vars: dict[str, Any]) -> None:
        if "kesl" in host_vars.get("avmigrate_remove_ids", []) and host.kesl_running:
            host.touched = True
            host.kesl_running = False
            host.kesl_touched = True
            if host.fragile:
                host.clamav_works = False

    def _remove(self, name: str, host: SimHost, request: StepRequest) -> dict[str, Any]:
        """remove.yml: stop the services one product after another, then purge."""
        ids = list(request.host_vars.get(name, {}).get("avmigrate_remove_ids", []))
        host.touched = True
        self._stop_banned(host, request.host_vars.get(name, {}))
        self._at(request.step, "mid", name, "remove")
        if "klnagent64" in ids:
            host.agent_running = False
        if host.dpkg_broken:
            raise _StepFailed("apt: dpkg was interrupted")
        if "kesl" in ids:
            host.kesl = False
            host.kesl_touched = True
        if "klnagent64" in ids:
            host.agent = False
        if host.reboot_removal and "kesl" in ids:
            host.reboot_pending = True
            return {"reboot_required": True}
        done: dict[str, Any] = {"removed": True, "reboot_required": False,
                                "probe": self.probe(host)}
        final = request.extravars.get("avmigrate_final_hosts", [])
        activate = request.extravars.get("avmigrate_activate_hosts", [])
        if name in activate and self._injected(name, "activate"):
            raise _StepFailed("activate broke", done)
        try:
            if name in activate:
                self._activate(name, host, request)
        except _StepFailed as exc:
            raise _StepFailed(str(exc), done) from exc
        if name not in final:
            return done
        return self._final_proof(name, host, request, done)

    def _final_proof(self, name: str, host: SimHost, request: StepRequest,
                     done: dict[str, Any]) -> dict[str, Any]:
        """The proof remove.yml gives in the removal's own run: a failed one still reports
        its readings, and the engine judges them (no second chance by a step of its own)."""
        failed = {"service": "failed", "detection": {"rc": 0, "output": ""}}
        if self._injected(name, "verify"):
            raise _StepFailed("removed, but protection is not proven: verify broke",
                              done | failed)
        try:
            done.update(self._verify(name, host, _active(request, name)))
        except _StepFailed as exc:
            raise _StepFailed(f"removed, but protection is not proven: {exc}",
                              done | failed) from exc
        return done

    @staticmethod
    def _reboot(_name: str, host: SimHost, _request: StepRequest) -> dict[str, Any]:
        """reboot.yml: the host reboots; a removal that waited for it completes."""
        host.touched = True
        host.reboot_pending = False
        host.booted_at = time.time() + 1.0  # it takes a while to come back
        return {}

    @staticmethod
    def probe(host: SimHost) -> dict[str, Any]:
        """What avmigrate.migration.probe reports (discover.yml)."""
        packages: dict[str, str] = {}
        if host.kesl:
            packages["kesl"] = KESL_VERSION
        if host.agent:
            packages["klnagent64"] = "14.2.0.26967"
        if host.clamav and host.product == "mde":
            packages["mdatp"] = "101.24082.0004"
        elif host.clamav:
            packages |= {"clamav-daemon": "1.0.9", "clamav-freshclam": "1.0.9",
                         "clamdscan": "1.0.9"}

        def active(on: bool) -> str:
            return "active" if on else "inactive"

        return {
            "os_family": "Debian", "distribution": "Debian", "distribution_version": "12.8",
            "packages": packages,
            "services": {"kesl.service": active(host.kesl_running),
                         "kesl-supervisor.service": active(host.kesl_running),
                         "klnagent64.service": active(host.agent_running),
                         SERVICES[host.product]: active(host.clamav_running)},
            "paths": {"/opt/kaspersky/kesl": host.kesl,
                      "/opt/kaspersky/klnagent64": host.agent},
            "processes": {"kesl": 2 if host.kesl_running else 0,
                          "klnagent64": 1 if host.agent_running else 0},
            "info": ({"kesl": f"Version: {KESL_VERSION}\n"
                              "Last release of databases: 2024-09-27 21:04:00\n"}
                     if host.kesl else {}),
            "free_mb": {"/var/cache/apt/archives": 5000, "/var/lib": 5000, "/usr": 5000},
            "dpkg_journal": ["0000"] if host.dpkg_broken else [],
            "dpkg_audit": "", "dpkg_locks": [], "booted_at": host.booted_at,
            "removal_pending_reboot": host.reboot_pending,
        }


def _active(request: StepRequest, name: str) -> StepRequest:
    """The request as the final proof sees it: the active phase."""
    host_vars = {n: {k: v for k, v in hv.items() if k != "avmigrate_verify_phase"}
                 for n, hv in request.host_vars.items()}
    return dataclasses.replace(request, host_vars=host_vars) if name in host_vars else request


class _StepFailed(Exception):
    """The simulated playbook failed on this host (with what its tasks reported before)."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


# ---- the oracle ------------------------------------------------------------------------------
def unprotected_now(fleet: SimFleet, baseline: set[str]) -> list[str]:
    """Hosts protected when the test began that are not protected now (their truth)."""
    return sorted(n for n in baseline if not fleet.hosts[n].protected)


def baseline(fleet: SimFleet) -> set[str]:
    return {n for n, h in fleet.hosts.items() if h.protected}
