"""How long waves take: step durations (measured or default), the timeline, the deadline."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from orchestrator.core.models import STEP_STARTS, StepSpan, Transition, Wave
from orchestrator.core.protection import resolve_budget
from orchestrator.inputs.policy import Policy


@dataclass(frozen=True)
class Estimates:
    """Seconds one step takes for a wave (its hosts in parallel), and where that comes from."""

    preflight: float
    install_verify: float
    remove_verify: float
    stage: float
    swap_window: float
    measured: dict[str, int]  # step -> how many measurements (0: the stated default)

    DEFAULTS: ClassVar[dict[str, float]] = {
        "preflight": 15.0, "install_verify": 120.0, "remove_verify": 45.0, "stage": 90.0,
        "swap_window": 60.0}

    @classmethod
    def defaults(cls) -> Estimates:
        return cls(**cls.DEFAULTS, measured=dict.fromkeys(cls.DEFAULTS, 0))

    def describe(self) -> dict[str, dict[str, Any]]:
        return {step: {"seconds": round(getattr(self, step), 1),
                       "source": (f"measured: median of {n} earlier step(s) in this state"
                                  if n else "default: no earlier run measured it")}
                for step, n in self.measured.items()}


def spans_of(history: list[Transition]) -> list[StepSpan]:
    """The step rows of `history` (in commit order), as `SqlStore.step_spans` gives them."""
    by_host: dict[str, list[Transition]] = {}
    for t in history:
        by_host.setdefault(t.host, []).append(t)
    rows: list[StepSpan] = []
    for moves in by_host.values():
        for i, a in enumerate(moves):
            if a.to_state.value not in STEP_STARTS:
                continue
            b = moves[i + 1] if i + 1 < len(moves) else None
            c = moves[i + 2] if i + 2 < len(moves) else None
            rows.append((a.to_state.value, a.from_state.value,
                         b.to_state.value if b else None, b.at - a.at if b else None,
                         c.to_state.value if c else None, c.at - a.at if c else None))
    return rows


def measure(history: list[Transition]) -> Estimates:
    """Median durations of earlier steps, from the committed transitions."""
    return estimates_from(spans_of(history))


def estimates_from(rows: list[StepSpan]) -> Estimates:
    """Median durations of earlier steps, from their step rows."""
    spans: dict[str, list[float]] = {k: [] for k in Estimates.DEFAULTS}
    for entered, came_from, then, took, after, took_after in rows:
        if then is None or took is None:
            continue
        if entered == "installing" and then == "verified":
            spans["install_verify"].append(took)
        elif entered == "staging" and then == "staged":
            spans["stage"].append(took)
        elif entered == "removing" and came_from == "verified" and then == "migrated":
            spans["remove_verify"].append(took)
        elif (entered == "removing" and came_from == "staged" and then == "swapping"
              and after == "migrated" and took_after is not None):
            spans["swap_window"].append(took_after)
    values = {k: (statistics.median(v) if v else Estimates.DEFAULTS[k])
              for k, v in spans.items()}
    return Estimates(**values, measured={k: len(v) for k, v in spans.items()})


def wave_seconds(n_mbb: int, n_swap: int, est: Estimates, forks: int, budget: int) -> float:
    """A wave's estimated duration. Removals (either strategy) run in rounds of at most
    `budget` hosts, the slots of the protection budget, and never more than `forks`."""
    return sum(_wave_parts(n_mbb, n_swap, est, forks, budget))


def _wave_parts(n_mbb: int, n_swap: int, est: Estimates, forks: int, budget: int
                ) -> tuple[float, float]:
    """(seconds of the steps that keep protection, seconds of the removal rounds)."""
    forks = max(1, forks)
    per_round = max(1, min(budget, forks))
    kept = est.preflight * math.ceil((n_mbb + n_swap) / forks)
    removals = 0.0
    if n_mbb:
        kept += est.install_verify * math.ceil(n_mbb / forks)
        removals += est.remove_verify * math.ceil(n_mbb / per_round)
    if n_swap:
        kept += est.stage * math.ceil(n_swap / forks)
        removals += est.swap_window * math.ceil(n_swap / per_round)
    return kept, removals


@dataclass(frozen=True)
class Workload:
    """What a timeline is estimated from: the waves, the policy they follow, step durations,
    forks, the hosts migrated by swap (the others make-before-break), and how many hosts a
    share of the fleet in the protection budget is of."""

    waves: list[Wave]
    policy: Policy
    estimates: Estimates
    forks: int
    swaps: set[str]
    fleet: int

    def swaps_in(self, wave: Wave) -> int:
        return len(self.swaps.intersection(wave.hosts)) if self.swaps else 0


def budget_effect(work: Workload) -> dict[str, Any]:
    """What the protection budget means for the timeline, for managers to size it."""
    spec, forks, fleet = str(work.policy.max_unprotected), work.forks, work.fleet
    k = resolve_budget(spec, fleet)

    def total(budget: int) -> tuple[float, float]:
        kept = removals = 0.0
        for w in work.waves:
            n_swap = work.swaps_in(w)
            a, b = _wave_parts(len(w.hosts) - n_swap, n_swap, work.estimates, forks, budget)
            kept, removals = kept + a, removals + b
        return kept, removals

    kept, removals = total(k)
    double = sum(total(2 * k))
    free = sum(total(forks))
    text = (f"Protection budget {spec}: at most {k} host(s) of the {fleet} at once may be "
            f"between the removal of the banned product and the verification of "
            f"{'its' if k == 1 else 'their'} replacement, with either strategy and over every "
            f"operator. Removals run {max(1, min(k, forks))} at a time: about "
            f"{_dur(removals)} of the {_dur(kept + removals)} the waves take.")
    if removals and 2 * k <= forks:
        text += (f" With a budget of {2 * k}: about {_dur(double)}; limited by forks alone "
                 f"({forks}): about {_dur(free)}.")
    return {"spec": spec, "hosts": k, "fleet": fleet, "removal_seconds": round(removals, 1),
            "total_seconds": round(kept + removals, 1), "text": text}


def _dur(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def schedule(work: Workload, now: datetime) -> dict[str, Any]:
    """Place each wave at the first opening of its window that fits it; judge the deadline.
    A `work.fleet` of 0 means the hosts of the waves."""
    if not work.fleet:
        work = Workload(work.waves, work.policy, work.estimates, work.forks, work.swaps,
                        sum(len(w.hosts) for w in work.waves))
    rows, problems = _placed(work, now)
    finish = max((r["end"] for r in rows if r["end"] is not None), default=now.timestamp())
    return {"waves": rows, "deadline": _deadline_verdict(work.policy, finish, problems),
            "durations": work.estimates.describe(), "forks": work.forks,
            "started_from": now.timestamp(), "budget": budget_effect(work)}


def _placed(work: Workload, now: datetime) -> tuple[list[dict[str, Any]], list[str]]:
    """Each wave's row of the timeline, one after the other from `now`; and the waves that
    fit in no opening of their window."""
    policy = work.policy
    budget = resolve_budget(str(policy.max_unprotected), work.fleet)
    rows: list[dict[str, Any]] = []
    problems = []
    t = now
    for w in work.waves:
        n_swap = work.swaps_in(w)
        secs = wave_seconds(len(w.hosts) - n_swap, n_swap, work.estimates, work.forks, budget)
        window = policy.window_named(w.window)
        begin = policy.earliest_start(window, t, timedelta(seconds=secs))
        row: dict[str, Any] = {"wave": w.number, "hosts": len(w.hosts), "window": w.window,
                               "window_text": window.describe() if window else "any time",
                               "seconds": round(secs, 1)}
        rows.append(row)
        if begin is None:
            row |= {"start": None, "end": None}
            problems.append(f"wave {w.number} ({secs / 60:.0f} min) fits in no opening of "
                            f"its window {window.describe() if window else ''}")
            continue
        end = begin + timedelta(seconds=secs)
        row |= {"start": begin.timestamp(), "end": end.timestamp()}
        t = end + timedelta(seconds=policy.soak_seconds)
    return rows, problems


def _deadline_verdict(policy: Policy, finish: float, problems: list[str]) -> dict[str, Any]:
    verdict: dict[str, Any] = {"deadline": None, "finish": finish, "feasible": not problems,
                               "text": ""}
    if policy.deadline is None:
        verdict["text"] = "; ".join(problems) if problems else "no deadline set in the policy"
        return verdict
    deadline = policy.deadline.timestamp()
    verdict["deadline"] = deadline
    if problems:
        verdict["feasible"] = False
        verdict["text"] = "CANNOT BE MET: " + "; ".join(problems)
    elif finish > deadline:
        verdict["feasible"] = False
        late = timedelta(seconds=round(finish - deadline))
        verdict["text"] = (f"CANNOT BE MET: the estimated finish is {late} after the "
                           "deadline; widen the windows, grow waves faster or move the "
                           "deadline")
    else:
        spare = timedelta(seconds=round(deadline - finish))
        verdict["text"] = f"can be met with {spare} to spare (by the estimate)"
    return verdict
