"""A run over the plan's waves: approvals, windows, gates and soak between waves, preflight
and the strategies within one, and the evidence probe at the end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.core import classify
from orchestrator.core import facts as factlib
from orchestrator.core.models import (
    RESTARTABLE,
    UNTOUCHED,
    HostState,
    Plan,
    StepOutcome,
    StepResult,
    Wave,
)
from orchestrator.engine.budget import Budget
from orchestrator.engine.make_before_break import MakeBeforeBreak
from orchestrator.engine.policy import RunSummary, Stopped, exit_code_for
from orchestrator.engine.strategies import STRATEGIES, by_strategy

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


# How recent a discovery's preflight checks must be to stand for a wave's preflight.
PREFLIGHT_FRESH_S = 300.0


class Waves:
    """Runs a plan wave by wave through the engine, stopping where a gate says to."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, plan: Plan) -> RunSummary:
        engine = self.engine
        stopped: str | None = None
        approvals = (engine.store.approvals(engine.policy.plan_key)
                     if engine.policy.require_approval else {})
        Budget(engine).say()
        try:
            self._restore_protection()
            self._finish_reboots()
            stopped = self._waves(plan, approvals)
        except Stopped:
            stopped = self._stopped_by_operator()
        if stopped:
            engine.log(stopped)
        self._evidence_probe()
        records = [rec for n in engine.inventory.names()
                   if (rec := engine.store.get(n)) is not None]
        counts: dict[str, int] = {}
        for rec in records:
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return RunSummary(counts=counts, exit_code=exit_code_for(records), stopped_early=stopped)

    def _waves(self, plan: Plan, approvals: dict[int, tuple[str, float]]) -> str | None:
        """Each wave in turn; why the run stopped before the end, or None."""
        stopped: str | None = None
        for index, wave in enumerate(plan.waves):
            soak = self.engine.policy.soak_seconds > 0 and index < len(plan.waves) - 1
            stopped = self._wave(wave, approvals, soak)
            if stopped:
                break
        return stopped

    def _wave(self, wave: Wave, approvals: dict[int, tuple[str, float]], soak: bool) -> str | None:
        """One wave: migrate what is left of it, then its gate (after the soak, if any)."""
        engine = self.engine
        label = "canary wave" if wave.is_canary else f"wave {wave.number}"
        engine.check_stop()
        if (held := self._held_back(wave, label, approvals)) is not None:
            return held
        todo = [n for n in wave.hosts if engine.record(n).state in RESTARTABLE
                or (engine.policy.protect_unprotected
                    and engine.record(n).state == HostState.CLEAN)]
        if todo and (closed := self._window_closed(wave)):
            return (f"{label} may start only in its maintenance window: {closed}; "
                    "run again then")
        if todo:
            engine.log(f"{label}: {len(todo)} host(s): {', '.join(todo)}")
            engine.settled.clear()
            engine.unreached.clear()
            held = self.migrate_wave(todo, wave.number)
            engine.settled.clear()
            if held:
                return held
        stopped = self._gate(label, wave.hosts)
        if stopped or not soak:
            return stopped
        self._soak(label, list(wave.hosts))
        return self._gate(label, wave.hosts)

    def _held_back(self, wave: Wave, label: str,
                   approvals: dict[int, tuple[str, float]]) -> str | None:
        """Why the wave may not start at all: it awaits approval, or a host is unprotected."""
        engine = self.engine
        if engine.policy.require_approval and not wave.is_canary and (
                wave.number not in approvals):
            return (f"{label} needs approval: `avmigrate approve --wave "
                    f"{wave.number} --plan PLAN`, then run again")
        if (bad := engine.unprotected()):
            return (f"UNPROTECTED hosts: {', '.join(bad)}; no further removals "
                    "start. Run `avmigrate remediate`, then run again")
        return None

    def _stopped_by_operator(self) -> str:
        """After a stop: hosts this run left installing or staging are settled by evidence."""
        engine = self.engine
        mine = set(engine.inventory.names())
        for r in engine.store.in_states([HostState.INSTALLING, HostState.STAGING]):
            if r.name not in mine:  # only this run's hosts: others belong to their runs
                continue
            if r.protected_by:  # the evidence its last probe gave still stands
                engine.move(r.name, HostState.INTERRUPTED,
                            f"stopped by the operator during {r.state.value}; "
                            f"banned product untouched; {r.protected_by}")
            else:
                engine.move(r.name, HostState.UNPROTECTED,
                            f"stopped by the operator during {r.state.value}; no evidence "
                            "of protection (no protecting product ran at its last probe)")
        return "stopped by the operator: no new step was started; run again to resume"

    def _evidence_probe(self) -> None:
        """Read again, read-only, every host this run changed: the report's "after"."""
        engine = self.engine
        names = sorted(engine.touched)
        if not names:
            return
        fresh = {n: engine.fresh_probe.pop(n) for n in names if n in engine.fresh_probe}

        def refresh(result: StepResult) -> None:
            # Facts only: the state and its reason stay what this run concluded.
            if result.outcome == StepOutcome.OK:
                rec = engine.record(result.host)
                facts = factlib.parse_discovery(result.data, engine.catalogue,
                                                engine.replacement_of(result.host))
                engine.store.transition(result.host, rec.state, rec.reason, engine.run_id,
                                        facts=facts)

        for n, probe in sorted(fresh.items()):
            refresh(StepResult(n, "evidence", StepOutcome.OK, "", probe))
        names = [n for n in names if n not in fresh]
        if fresh:
            engine.log(f"evidence of {len(fresh)} host(s) from the probe their removal ended "
                       "with")
        if names:
            engine.log(f"probing {len(names)} changed host(s) for the evidence")
        engine.step("evidence", "discover.yml", names, on_result=refresh)
        engine.touched.clear()
        engine.fresh_probe.clear()

    def _restore_protection(self) -> None:
        """Before anything else, give unprotected hosts their replacement back.

        Discovery has just re-probed them: those still unprotected get the replacement
        installed and verified (always safe); hosts it cannot fix keep every further removal
        from starting.
        """
        engine = self.engine
        names = [n for n in engine.inventory.names()
                 if engine.record(n).state == HostState.UNPROTECTED]
        if names:
            engine.log(f"restoring protection first: {', '.join(names)}")
            engine.remediate(names)

    def _finish_reboots(self) -> None:
        """Hosts an earlier run left waiting for their reboot (REBOOT_PENDING, discovery has
        just seen them not rebooted since): rebooted now where their window is open, then
        proven; they hold their budget slots until then."""
        engine = self.engine
        names = [n for n in engine.inventory.names()
                 if engine.record(n).state == HostState.REBOOT_PENDING]
        if names:
            engine.log(f"finishing removals that wait for a reboot: {', '.join(names)}")
            MakeBeforeBreak(engine).finish_reboots(names)

    def _window_closed(self, wave: Wave) -> str | None:
        policy = self.engine.policy.windows
        if policy is None:
            return None
        now = datetime.fromtimestamp(self.engine.clock(), UTC)
        return policy.closed_reason(policy.window_named(wave.window), now)

    def _gate(self, label: str, hosts: tuple[str, ...]) -> str | None:
        states = {n: self.engine.record(n).state for n in hosts}
        for n in self.engine.unreached & set(hosts):
            states[n] = HostState.UNREACHABLE  # touched, then lost from sight: a failure
        return classify.wave_gate(label, states, self.engine.policy.max_failed_percent)

    def _soak(self, label: str, hosts: list[str]) -> None:
        engine = self.engine
        engine.log(f"{label}: soaking {engine.policy.soak_seconds:.0f}s before the next wave")
        if engine.stop.wait(engine.policy.soak_seconds):
            raise Stopped
        migrated = [n for n in hosts if engine.record(n).state == HostState.MIGRATED]
        results = engine.step("soak-verify", "verify.yml", migrated)
        for n in migrated:
            problem = engine.proof_problem(results[n])
            if problem is not None:
                engine.move(n, HostState.UNPROTECTED, "UNPROTECTED: replacement failed its "
                            f"check after the soak ({problem})")

    def migrate_wave(self, names: list[str], wave: int) -> str | None:
        """Migrate one wave's hosts; a reason when removals had to stop short."""
        engine = self.engine
        engine.check_stop()
        ready = self._preflight(names)
        groups = by_strategy(engine, ready)
        for strategy, migration in STRATEGIES.items():
            if (held := migration(engine).migrate(groups[strategy], wave)):
                return held
        return None

    def _preflight_seen(self, names: list[str]) -> dict[str, StepResult]:
        """The preflight results this run's discovery read moments ago (PREFLIGHT_FRESH_S),
        for hosts untouched since: no second probe of them."""
        engine = self.engine
        out = {}
        for n in names:
            when, seen = engine.preflight_seen.pop(n, (None, None))
            if (when is None or seen is None or n in engine.touched
                    or engine.monotonic() - when > PREFLIGHT_FRESH_S):
                continue
            problems = [str(p) for p in seen.get("problems", [])]
            out[n] = StepResult(n, "preflight", StepOutcome.FAILED if problems
                                else StepOutcome.OK, "; ".join(problems),
                                {"notes": [str(x) for x in seen.get("notes", [])]})
            if engine.run_id is not None:
                engine.store.record_step(engine.run_id, out[n])
        if out:
            engine.log(f"  preflight: {len(out)} host(s) checked by this run's discovery")
        return out

    def _preflight(self, names: list[str]) -> list[str]:
        """Preflight, read-only: the hosts ready to migrate. A refused host stays exactly as
        it was."""
        engine = self.engine
        pre = self._preflight_seen(names)
        pre.update(engine.step("preflight", "preflight.yml",
                               [n for n in names if n not in pre]))
        ready = []
        for n in names:
            r = pre[n]
            if n in engine.settled:
                continue
            prior = engine.record(n)
            if r.outcome == StepOutcome.OK:
                ready.append(n)
                for note in r.data.get("notes", []):
                    engine.log(f"  {n}: {note}")
            elif prior.state in UNTOUCHED:
                to = (HostState.UNREACHABLE if r.outcome == StepOutcome.UNREACHABLE
                      else HostState.BLOCKED)
                engine.move(n, to, f"{'unreachable at ' if to == HostState.UNREACHABLE else ''}"
                            f"preflight: {r.message}")
            else:
                # Something was done to it before: it keeps the state that says so.
                if r.outcome == StepOutcome.UNREACHABLE:
                    engine.unreached.add(n)
                engine.move(n, prior.state, f"preflight {r.outcome.value}: {r.message} (was: "
                            f"{prior.reason[:200]})")
        return ready
