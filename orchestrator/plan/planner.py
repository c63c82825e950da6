"""Waves and their order: the plan. Pure: reads facts, never touches a host.

Hosts are ordered by the policy (`first` groups, the rest, `last` groups), cut into a canary and
growing rings, and a wave never mixes maintenance windows. estimate.py then places each wave at
the first opening of its window that fits its estimated duration and misses every blackout
date, and checks the finish against the deadline.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import HostFacts, HostRecord, HostState, Plan, Strategy, Wave
from orchestrator.inputs.inventory import Inventory
from orchestrator.inputs.policy import Policy
from orchestrator.plan.estimate import Estimates, Workload, schedule


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


def skip_reason(record: HostRecord | None, protect_unprotected: bool = False) -> str | None:
    """Why a host needs no wave, judged from what the last discovery recorded. A clean host
    (no banned product) is planned when `protect_unprotected` asks for its replacement."""
    if record is None:
        return None
    if record.state == HostState.CLEAN:
        return None if protect_unprotected else "clean: no banned product found"
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
    parts: list[Any] = [plan.inventory_digest, plan.catalogue_digest, plan.replacement,
                        [list(w.hosts) for w in plan.waves]]
    if plan.replacements:  # approvals of a mixed fleet cover who gets which replacement
        parts.append(sorted(plan.replacements.items()))
    blob = json.dumps(parts)
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


def make_plan(inventory: Inventory, catalogue: Catalogue, replacement: str,  # noqa: PLR0913, PLR0917 - what a plan is made from, passed positionally by the CLI and tests
              records: dict[str, HostRecord], policy: Policy | None = None,
              estimates: Estimates | None = None, forks: int = 10,
              now: float | None = None, choice: Mapping[str, str] | None = None) -> Plan:
    """The plan: hosts that need no wave set aside with the reason, the rest in waves, each
    wave's estimated time; `now`: when it is made (the clock if None); `choice`: the hosts
    whose replacement is not `replacement` (plan/choice.py)."""
    catalogue.replacement(replacement)  # raises for an unknown id
    policy = policy or Policy()
    protect = policy.protect_unprotected
    todo, skipped = [], {}
    for host in inventory.hosts:
        record = records.get(host.name)
        reason = (skip_reason(record, protect) if record is not None
                  and record.state in _SKIPPED else None)
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
    work = Workload(waves, policy, estimates or Estimates.defaults(), forks, swaps,
                    len(inventory.hosts))
    estimate = schedule(work, datetime.fromtimestamp(created, UTC))
    return Plan(
        created_at=created,
        inventory_digest=inventory.digest,
        catalogue_digest=catalogue.digest,
        replacement=replacement,
        replacements=_replacements(inventory, records, replacement, choice or {}),
        strategy=policy.strategy,
        waves=tuple(waves),
        skipped=skipped,
        policy=policy.to_json(),
        host_digests=inventory.host_digests(),
        catalogue_digests=catalogue.part_digests(),
        estimate=estimate,
    )


def _replacements(inventory: Inventory, records: dict[str, HostRecord], default: str,
                  choice: Mapping[str, str]) -> dict[str, str]:
    """The inventory's hosts whose replacement is not the default: the one recorded when a
    host's migration began (the engine keeps to it), else the choice."""
    out = {}
    for name in inventory.names():
        record = records.get(name)
        rid = (record.replacement if record is not None and record.replacement
               else choice.get(name, default))
        if rid != default:
            out[name] = rid
    return out


def strategy_for(facts: HostFacts, catalogue: Catalogue, replacement: str) -> str:
    banned = [b.product for b in facts.banned]
    return Strategy.MAKE_BEFORE_BREAK if catalogue.coexists(replacement, banned) else Strategy.SWAP
