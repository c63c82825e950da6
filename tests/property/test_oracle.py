"""The protection promise under random schedules, judged by the hosts' truth (issue 12).

Hypothesis draws whole schedules: a fleet (KESL, KESL with the Network Agent, the agent alone,
clean; some hosts whose replacement breaks when KESL goes, some with a broken dpkg), a budget
K, one to three operators on one state (runs of either strategy and remediations, on
overlapping inventories, interleaved one yield at a time in a drawn order), each of which may
be killed at any of its yield points (a step boundary, between stopping two products, right
after a commit) or at its n-th yield inside a protection window; execution nodes lost mid-step
inside windows; hosts that stop answering for a while or for good; Ctrl-C once or twice; a step
failing once on a host; a replacement breaking on its own on a host whose migration is under
way (held against nobody until a verification has looked at it); hosts whose replacement may
run beside KESL only in passive mode (MDE), installed passive and activated after the removal,
whose activation may fail (a host where it ran active beside a running KESL is a violation);
hosts whose removal completes only at the next reboot (KES on Windows), left reboot_pending
(unprotected until rebooted and proven) and rebooted by the run (policy `reboot: window`),
by their administrator (`reboot: never`) or not at all, the reboot failing once. At
every yield point it checks, from the simulated hosts themselves, that no more than K hosts that
were protected are without a running protecting product or a working replacement, and that
every record says what is true. Then the outages end and one operator runs to the end: every
host must end migrated or protected, and its record say which.

`make test` runs 2,000 schedules; `make stress` 20,000 (AVMIGRATE_ORACLE_SCHEDULES); the seed is
AVMIGRATE_ORACLE_SEED (fixed in `make test`, new in `make stress`).
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from orchestrator.core.models import UNTOUCHED, HostState
from orchestrator.engine.policy import RunPolicy

from ..support.schedule import Schedule
from ..support.sim import SimHost

SCHEDULES = int(os.environ.get("AVMIGRATE_ORACLE_SCHEDULES", "2000"))
SEED = int(os.environ.get("AVMIGRATE_ORACLE_SEED", "20261201"))
KINDS = {
    "kesl": {},
    "kesl+agent": {"agent": True, "agent_running": True},
    "agent only": {"kesl": False, "kesl_running": False, "agent": True, "agent_running": True},
    "clean": {"kesl": False, "kesl_running": False},
}
TRAITS = {"": {}, "fragile": {"fragile": True}, "dpkg broken": {"dpkg_broken": True}}
SHM = Path("/dev/shm")
MAX_TURNS = 4000


@dataclass(frozen=True)
class Session:
    """One operator's command: which hosts, what, and how it may end early."""

    op: int
    hosts: tuple[int, ...]
    command: str
    strategy: str
    starts_at: int  # the turn of the schedule at which it starts
    kill_at: int | None  # killed at its own n-th yield point
    window_event: tuple[str, int] | None  # at its n-th yield inside a window: crash/node lost
    ctrl_c: tuple[int, bool] | None  # at its n-th yield: Ctrl-C (twice: abort the step)


@dataclass(frozen=True)
class Mishap:
    """At a turn: a host's replacement breaks on its own (a bad signature push), or one
    playbook fails once on it."""

    turn: int
    host: int
    what: str  # "replacement breaks", or a playbook's name


@dataclass(frozen=True)
class Outage:
    """A host that stops answering at a turn: for a number of attempts, or for good."""

    turn: int
    host: int
    attempts: int | None
    back_at: int | None


sessions = st.builds(
    Session,
    op=st.integers(0, 2),
    hosts=st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True).map(tuple),
    command=st.sampled_from(["run", "run", "run", "remediate"]),
    strategy=st.sampled_from(["auto", "make-before-break", "swap"]),
    starts_at=st.integers(0, 120),
    kill_at=st.none() | st.integers(1, 150),
    window_event=st.none() | st.tuples(st.sampled_from(["crash", "node lost"]),
                                       st.integers(1, 8)),
    ctrl_c=st.none() | st.tuples(st.integers(1, 120), st.booleans()),
)
mishaps = st.builds(Mishap, turn=st.integers(0, 300), host=st.integers(0, 3),
                    what=st.sampled_from(["replacement breaks"] * 3 + ["remove"] * 2 + [
                        "install", "verify", "stage", "stage_check", "install_staged"])
                   ) | st.builds(  # early: a passive replacement's activation is soon reached
                       Mishap, turn=st.integers(0, 30), host=st.integers(0, 3),
                       what=st.just("activate")
                   ) | st.builds(  # a reboot failing once; an administrator rebooting
                       Mishap, turn=st.integers(0, 60), host=st.integers(0, 3),
                       what=st.sampled_from(["reboot", "administrator reboots"]))
outages = st.builds(Outage, turn=st.integers(0, 300), host=st.integers(0, 3),
                    attempts=st.none() | st.integers(1, 8),
                    back_at=st.none() | st.integers(1, 400))


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(2, 4))
    return {
        "kinds": draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=n, max_size=n)),
        "traits": draw(st.lists(st.sampled_from(["", "", "", "fragile", "dpkg broken"]),
                                min_size=n, max_size=n)),
        # The replacement each host gets: ClamAV (protects beside KESL), or a product that
        # may run beside a running KESL only passive (MDE): activated after the removal.
        "products": draw(st.lists(st.sampled_from(["clamav", "clamav", "mde"]),
                                  min_size=n, max_size=n)),
        # Hosts whose removal completes at the next reboot; who reboots them.
        "reboots": draw(st.lists(st.sampled_from([False, False, True]), min_size=n,
                                 max_size=n)),
        "reboot": draw(st.sampled_from(["window", "window", "never"])),
        "k": draw(st.integers(1, 2)),
        # The first session starts at once, on every host: most schedules migrate something.
        "sessions": [Session(0, tuple(range(n)), "run", draw(sessions).strategy, 0,
                             draw(st.none() | st.integers(1, 150)),
                             draw(sessions).window_event, None),
                     *draw(st.lists(sessions, max_size=3))],
        "turns": draw(st.lists(st.integers(0, 2), min_size=1, max_size=60)),
        "outages": draw(st.lists(outages, max_size=3)),
        "mishaps": draw(st.lists(mishaps, max_size=3)),
    }


# A replacement that breaks on its own is only fair game on a host whose migration is
# under way (a migrated host's proof stands until a soak or remediation looks again).
BREAKABLE = {HostState.VERIFIED, HostState.REMOVE_FAILED, HostState.INTERRUPTED,
             HostState.INSTALL_FAILED, HostState.STAGED}


def cut_off(sched: Schedule, names: list[str], down: list[Outage], turn: int) -> None:
    """The outages that begin or end at this turn."""
    for o in down:
        h = sched.fleet.hosts[names[o.host % len(names)]]
        if o.turn == turn:
            if o.attempts is None:
                h.reachable = False
            else:
                h.unreachable_for = o.attempts
        if o.back_at is not None and o.turn + o.back_at == turn:
            h.reachable = True


def mishaps_befall(sched: Schedule, names: list[str], pending: list[Mishap], turn: int
                   ) -> list[Mishap]:
    """Play the mishaps due by this turn that can happen now; those still waiting."""
    waiting = list(pending)
    for m in pending:
        if m.turn > turn:
            continue
        name = names[m.host % len(names)]
        if m.what == "activate":  # only a passive-mode replacement is activated
            name = next((n for n in [name, *names] if sched.fleet.hosts[n].product == "mde"),
                        name)
        if m.what == "reboot":  # only a removal that waits for a reboot is rebooted
            name = next((n for n in [name, *names] if sched.fleet.hosts[n].reboot_removal),
                        name)
        if m.what == "administrator reboots":
            pending = [n for n in [name, *names] if sched.fleet.hosts[n].reboot_pending]
            if pending:  # the first turn a removal waits for its reboot
                sched.fleet.hosts[pending[0]].reboot_pending = False
                sched.fleet.hosts[pending[0]].booted_at = time.time() + 1.0
                sched.seen["rebooted by the administrator"] += 1
                waiting.remove(m)
            continue
        if m.what != "replacement breaks":
            sched.fleet.fail_next.setdefault(name, set()).add(m.what)
            waiting.remove(m)
            continue
        # The first turn it can: on that host, or on any host whose protection rests on
        # its replacement alone (its KESL stopped), where a break matters most.
        records = sched.records()
        bare_kesl = [n for n in names if not sched.fleet.hosts[n].kesl_running]
        for target in [name, *bare_kesl]:
            if records[target].state in BREAKABLE and sched.fleet.break_replacement(target):
                sched.seen["replacement broke on its own"] += 1
                waiting.remove(m)
                break
    return waiting


def play(directory: Path, plan: dict[str, object]) -> Schedule:
    kinds, traits = plan["kinds"], plan["traits"]
    assert isinstance(kinds, list) and isinstance(traits, list)
    products = plan.get("products") or ["clamav"] * len(kinds)
    reboots = plan.get("reboots") or [False] * len(kinds)
    assert isinstance(products, list) and isinstance(reboots, list)
    hosts = {f"h{i}": SimHost(**(KINDS[kind] | TRAITS[traits[i]]),  # type: ignore[arg-type]
                              product=products[i], reboot_removal=reboots[i])
             for i, kind in enumerate(kinds)}
    names = sorted(hosts)
    k = int(plan["k"])  # type: ignore[call-overload]
    sched = Schedule(directory, hosts)
    sched.budget = k

    def policy(strategy: str) -> RunPolicy:
        # Wave gates are not what is tested here: they would stop most schedules early.
        return RunPolicy(strategy=strategy, max_unprotected=k, reconnect_seconds=30,
                         max_failed_percent=100, reboot=str(plan.get("reboot", "window")))

    todo: list[Session] = list(plan["sessions"])  # type: ignore[call-overload]
    turns: list[int] = list(plan["turns"])  # type: ignore[call-overload]
    down: list[Outage] = list(plan["outages"])  # type: ignore[call-overload]
    mishaps_: list[Mishap] = list(plan["mishaps"])  # type: ignore[call-overload]
    running: dict[int, Session] = {}
    for turn in range(MAX_TURNS):
        for s in [s for s in todo if s.starts_at <= turn and s.op not in running]:
            if sched.start(s.op, sorted({names[i % len(names)] for i in s.hosts}), s.command,
                           policy(s.strategy), s.kill_at, s.window_event):
                todo.remove(s)
                running[s.op] = s
        cut_off(sched, names, down, turn)
        mishaps_ = mishaps_befall(sched, names, mishaps_, turn)
        live = [op for op in running if not sched.ops[op].finished]
        if not live and not todo:
            break
        if live:
            op = live[turns[turn % len(turns)] % len(live)]
            session = running[op]
            sched.step(op)
            operator = sched.ops[op]
            if session.ctrl_c is not None and operator.yields == session.ctrl_c[0]:
                sched.interrupt(op, session.ctrl_c[1])
        for op in [op for op, s in running.items() if sched.ops[op].finished]:
            del running[op]
    for op in list(sched.ops):  # whatever is left of the schedule dies here
        sched.crash(op)
    sched.judge("end of the schedule")
    return sched


def recover(sched: Schedule, k: int) -> None:
    """The outages end and one operator runs on every host until it changes nothing more."""
    for h in sched.fleet.hosts.values():
        h.reachable, h.unreachable_for = True, 0
    sched.fleet.lose_next.clear()
    sched.fleet.fail_next.clear()
    names = sorted(sched.fleet.hosts)
    # Each run ends at least one host's migration or restores one: with K=1 and hosts whose
    # replacement breaks when KESL goes, a run restores the last one, removes the next, finds
    # it bare and stops (no removal while a host is unprotected). So as many runs as hosts.
    runs = len(names) + 2
    for attempt in range(runs):
        sched.start(0, names, "run", RunPolicy(max_unprotected=k, max_failed_percent=100,
                                               reconnect_seconds=30))
        sched.finish(0, limit=5000)
        assert not sched.ops[0].error, sched.ops[0].error
        records = sched.records()
        if not any(r.state.holds_slot or (r.state in (HostState.PENDING, HostState.VERIFIED,
                                                      HostState.STAGED,
                                                      HostState.INTERRUPTED)
                   and not sched.fleet.hosts[n].dpkg_broken)
                   for n, r in records.items()):
            return
        assert attempt < runs - 1, (f"not settled after {runs} runs: {records}",
                                    sched.log[-30:])


SEEN: collections.Counter[str] = collections.Counter()


@seed(SEED)
# Found by `make test` on a loaded machine: three hosts whose replacement breaks when KESL goes,
# K=1, the first run killed at once: recovery takes one run per host.
@example(plan={"kinds": ["kesl", "kesl", "agent only", "kesl"],
               "traits": ["fragile", "fragile", "", "fragile"], "k": 1,
               "sessions": [Session(op=0, hosts=(0, 1, 2, 3), command="run", strategy="auto",
                                    starts_at=0, kill_at=1, window_event=None, ctrl_c=None)],
               "turns": [0], "outages": [], "mishaps": []})
# Found by `make test` (2026-12-02): the orchestrator dies inside MDE's removal window; the
# next run finds KESL stopped but installed and must install MDE active to restore the host
# (KESL's services were stopped and disabled by that removal), not passive beside nothing.
@example(plan={"kinds": ["agent only", "kesl"], "traits": ["", ""], "k": 1,
               "products": ["clamav", "mde"],
               "sessions": [Session(op=0, hosts=(0, 1), command="run", strategy="auto",
                                    starts_at=0, kill_at=None, window_event=("crash", 1),
                                    ctrl_c=None)],
               "turns": [0], "outages": [], "mishaps": []})
# The passive path: MDE on KESL hosts, its activation failing once right after a removal, K=1.
@example(plan={"kinds": ["kesl+agent", "kesl"], "traits": ["", ""], "k": 1,
               "products": ["mde", "mde"],
               "sessions": [Session(op=0, hosts=(0, 1), command="run", strategy="auto",
                                    starts_at=0, kill_at=None, window_event=None, ctrl_c=None)],
               "turns": [0], "outages": [],
               "mishaps": [Mishap(turn=0, host=0, what="activate")]})
# Removals that complete at the next reboot (issue 16), K=1: rebooted by the run, the reboot
# failing once; and left to the administrator's reboot under `reboot: never`.
@example(plan={"kinds": ["kesl", "kesl+agent", "kesl"], "traits": ["", "", ""], "k": 1,
               "products": ["mde", "clamav", "clamav"], "reboots": [True, True, False],
               "reboot": "window",
               "sessions": [Session(op=0, hosts=(0, 1, 2), command="run", strategy="auto",
                                    starts_at=0, kill_at=None, window_event=None, ctrl_c=None)],
               "turns": [0], "outages": [],
               "mishaps": [Mishap(turn=0, host=1, what="reboot")]})
@example(plan={"kinds": ["kesl", "kesl"], "traits": ["", ""], "k": 1,
               "products": ["mde", "clamav"], "reboots": [True, False], "reboot": "never",
               "sessions": [Session(op=0, hosts=(0, 1), command="run", strategy="auto",
                                    starts_at=0, kill_at=None, window_event=None, ctrl_c=None)],
               "turns": [0], "outages": [],
               "mishaps": [Mishap(turn=40, host=0, what="administrator reboots")]})
@settings(max_examples=SCHEDULES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(schedules())
def check_schedule(plan: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else None) as tmp:
        sched = play(Path(tmp), plan)
        SEEN["schedules"] += 1
        SEEN.update(sched.seen)
        SEEN["with a passive-mode replacement"] += "mde" in plan.get("products", [])  # type: ignore[operator]
        SEEN["activations failed once"] += sched.fleet.failed_once["activate"]
        SEEN["reboots failed once"] += sched.fleet.failed_once["reboot"]
        SEEN["with a removal waiting for a reboot"] += sched.reboot_pending_seen
        SEEN["with a host without protection"] += sched.peak > 0
        SEEN["with K hosts without protection"] += sched.peak == int(plan["k"])  # type: ignore[call-overload]
        SEEN["with several operators"] += len({s.op for s in plan["sessions"]}) > 1  # type: ignore[attr-defined]
        try:
            assert not sched.violations, (sched.violations[:5], sched.log[-25:])
            errors = [op.error for op in sched.ops.values() if op.error]
            assert not errors, errors[0]
            recover(sched, int(plan["k"]))  # type: ignore[call-overload]
            sched.judge("after recovery")
            assert not sched.violations, (sched.violations[:5], sched.log[-25:])
            for name, record in sched.records().items():
                host = sched.fleet.hosts[name]
                if name in sched.baseline:
                    assert host.protected, (name, host, record)
                assert record.state == HostState.MIGRATED or (
                    record.state in UNTOUCHED and not host.touched) or (
                    record.state in (HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
                                     HostState.INTERRUPTED, HostState.STAGED,
                                     HostState.VERIFIED) and host.dpkg_broken), (name, record)
            assert sched.reader.audit_verify().ok
        finally:
            sched.close()


def test_the_promise_holds_on_every_schedule() -> None:
    SEEN.clear()
    check_schedule()
    said = ", ".join(f"{n} {what}" for what, n in sorted(SEEN.items()) if what != "schedules")
    print(f"\noracle: {SEEN['schedules']} schedules (seed {SEED}), no violation; {said}")
    assert SEEN["schedules"] >= SCHEDULES
    assert SEEN["crash inside a window"] and SEEN["node lost inside a window"], SEEN
    assert SEEN["with a passive-mode replacement"] and SEEN["activations failed once"], SEEN
    assert SEEN["with a removal waiting for a reboot"] and SEEN["reboots failed once"], SEEN
    assert SEEN["rebooted by the administrator"], SEEN
