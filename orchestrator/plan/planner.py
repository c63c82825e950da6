"""Waves, their order and their estimated timeline. Pure: reads facts, never touches a host.

Hosts are ordered by the policy (`first` groups, the rest, `last` groups), cut into a canary and
growing rings, and a wave never mixes maintenance windows. Each wave is then placed at the first
opening of its window that fits its estimated duration and misses every blackout date; the
finish is checked against the deadline.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import (
    STEP_STARTS,
    HostFacts,
    HostRecord,
    HostState,
    Plan,
    StepSpan,
    Strategy,
    Transition,
    Wave,
)
from orchestrator.core.protection import resolve_budget
from orchestrator.inputs.inventory import Inventory
from orchestrator.inputs.policy import Policy


def wave_sizes(total: int, canary: int = 1, growth: float = 2.0, max_wave: int = 500
               ) -> list[int]:
    """Sizes of successive waves covering `total` hosts: canary, then each `growth` times larger.

    >>> wave_sizes(11)
    [1, 2, 4, 4]
    """
    if total <= 0:
        return []
    sizes = []
    size = max(1, min(canary, total))
    left = total
    while left > 0:
        take = min(size, left, max_wave)
        sizes.append(take)
        left -= take
        size = max(size + 1, math.ceil(size * growth))
    return sizes


def _size_stream(first: int, growth: float, max_wave: int) -> Any:
    size = first
    while True:
        yield min(size, max_wave)
        size = max(size + 1, math.ceil(size * growth))


def skip_reason(record: HostRecord | None) -> str | None:
    """Why a host needs no wave, judged from what the last discovery recorded."""
    if record is None:
        return None
    if record.state == HostState.CLEAN:
        return "clean: no banned product found"
    if record.state == HostState.MIGRATED:
        return "already migrated"
    # Known problems are held back, not planned: a wave's gate then measures new failures.
    if record.state == HostState.UNREACHABLE:
        return f"held back: {record.reason}"
    if record.state == HostState.BLOCKED:
        return f"held back: {record.reason}"
    return None


_SKIPPED = frozenset({HostState.CLEAN, HostState.MIGRATED, HostState.UNREACHABLE,
                      HostState.BLOCKED})  # the states skip_reason gives a reason for


def plan_key(plan: Plan) -> str:
    """What approvals are given for: the waves and what they were planned from."""
    blob = json.dumps([plan.inventory_digest, plan.catalogue_digest, plan.replacement,
                       [list(w.hosts) for w in plan.waves]])
    return hashlib.sha256(blob.encode()).hexdigest()


def make_waves(inventory: Inventory, todo: list[str], policy: Policy) -> list[Wave]:
    """Order hosts by the policy and cut them into waves that never mix windows. `todo` is
    in inventory order (make_plan's), the order kept among hosts the policy ranks alike."""
    # Rank and window depend on a host's groups only: judged once per distinct group set.
    by_groups: dict[tuple[str, ...], tuple[tuple[int, int], str, str | None]] = {}
    for groups in {h.groups for h in inventory.hosts}:
        window = policy.window_for(groups)
        group = window.group if window else None
        by_groups[groups] = (policy.rank(groups), group or "", group)
    if len(set(by_groups.values())) <= 1:  # one order and window for all: inventory order
        group = next(iter(by_groups.values()))[2] if by_groups else None
        return _cut(policy, [(group, list(todo))], len(todo))
    keyed = []
    wanted = set(todo)
    for position, host in enumerate(inventory.hosts):
        if host.name not in wanted:
            continue
        judged = by_groups[host.groups]
        keyed.append((judged[0], judged[1], position, host.name, judged[2]))
    keyed.sort()
    segments: list[tuple[str | None, list[str]]] = []
    last_key: tuple[tuple[int, int], str] | None = None
    for rank, window_name, _, name, group in keyed:
        if (rank, window_name) != last_key:
            segments.append((group, []))
            last_key = (rank, window_name)
        segments[-1][1].append(name)
    return _cut(policy, segments, len(keyed))


def _cut(policy: Policy, segments: list[tuple[str | None, list[str]]], total: int
         ) -> list[Wave]:
    """Waves from ordered segments (hosts of one window each): canary, then growing."""
    sizes = _size_stream(policy.canary_size(total), policy.growth, policy.max_wave)
    waves: list[Wave] = []
    for group, names in segments:
        start = 0
        while start < len(names):
            size = next(sizes)
            waves.append(Wave(number=len(waves), hosts=tuple(names[start:start + size]),
                              window=group))
            start += size
    return waves


def make_plan(inventory: Inventory, catalogue: Catalogue, replacement: str,
              records: dict[str, HostRecord], policy: Policy | None = None,
              estimates: Estimates | None = None, forks: int = 10,
              now: float | None = None) -> Plan:
    catalogue.replacement(replacement)  # raises for an unknown id
    policy = policy or Policy()
    todo, skipped = [], {}
    for host in inventory.hosts:
        record = records.get(host.name)
        reason = skip_reason(record) if record is not None and record.state in _SKIPPED else None
        if reason:
            skipped[host.name] = reason
        else:
            todo.append(host.name)
    created = time.time() if now is None else now
    waves = make_waves(inventory, todo, policy)
    if policy.strategy == Strategy.AUTO:
        swaps = {n for n, r in records.items() if r.strategy == Strategy.SWAP}
    else:
        swaps = set(records) if policy.strategy == Strategy.SWAP else set()
    estimate = schedule(waves, policy, estimates or Estimates.defaults(), forks, swaps,
                        datetime.fromtimestamp(created, UTC), fleet=len(inventory.hosts))
    return Plan(
        created_at=created,
        inventory_digest=inventory.digest,
        catalogue_digest=catalogue.digest,
        replacement=replacement,
        strategy=policy.strategy,
        waves=tuple(waves),
        skipped=skipped,
        policy=policy.to_json(),
        host_digests=inventory.host_digests(),
        catalogue_digests=catalogue.part_digests(),
        estimate=estimate,
    )


def strategy_for(facts: HostFacts, catalogue: Catalogue, replacement: str) -> str:
    banned = [b.product for b in facts.banned]
    return Strategy.MAKE_BEFORE_BREAK if catalogue.coexists(replacement, banned) else Strategy.SWAP


# ---- estimates ------------------------------------------------------------------------------
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


def budget_effect(waves: list[Wave], policy: Policy, est: Estimates, forks: int,
                  swaps: set[str], fleet: int) -> dict[str, Any]:
    """What the protection budget means for the timeline, for managers to size it."""
    spec = str(policy.max_unprotected)
    k = resolve_budget(spec, fleet)

    def total(budget: int) -> tuple[float, float]:
        kept = removals = 0.0
        for w in waves:
            n_swap = len(swaps.intersection(w.hosts)) if swaps else 0
            a, b = _wave_parts(len(w.hosts) - n_swap, n_swap, est, forks, budget)
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


def schedule(waves: list[Wave], policy: Policy, est: Estimates, forks: int,
             swaps: set[str], now: datetime, fleet: int = 0) -> dict[str, Any]:
    """Place each wave at the first opening of its window that fits it; judge the deadline.
    `swaps`: the hosts migrated by swap (the others make-before-break); `fleet`: how many
    hosts a share of the fleet in the protection budget is of."""
    fleet = fleet or sum(len(w.hosts) for w in waves)
    budget = resolve_budget(str(policy.max_unprotected), fleet)
    rows = []
    t = now
    problems = []
    for w in waves:
        n_swap = len(swaps.intersection(w.hosts)) if swaps else 0
        secs = wave_seconds(len(w.hosts) - n_swap, n_swap, est, forks, budget)
        window = policy.window_named(w.window)
        begin = policy.earliest_start(window, t, timedelta(seconds=secs))
        row: dict[str, Any] = {"wave": w.number, "hosts": len(w.hosts), "window": w.window,
                               "window_text": window.describe() if window else "any time",
                               "seconds": round(secs, 1)}
        if begin is None:
            row |= {"start": None, "end": None}
            problems.append(f"wave {w.number} ({secs / 60:.0f} min) fits in no opening of "
                            f"its window {window.describe() if window else ''}")
            rows.append(row)
            continue
        end = begin + timedelta(seconds=secs)
        row |= {"start": begin.timestamp(), "end": end.timestamp()}
        rows.append(row)
        t = end + timedelta(seconds=policy.soak_seconds)
    finish = max((r["end"] for r in rows if r["end"] is not None), default=now.timestamp())
    verdict: dict[str, Any] = {"deadline": None, "finish": finish, "feasible": not problems,
                               "text": ""}
    if policy.deadline is not None:
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
    elif problems:
        verdict["text"] = "; ".join(problems)
    else:
        verdict["text"] = "no deadline set in the policy"
    return {"waves": rows, "deadline": verdict, "durations": est.describe(), "forks": forks,
            "started_from": now.timestamp(),
            "budget": budget_effect(waves, policy, est, forks, swaps, fleet)}
