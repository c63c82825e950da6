"""Waves: a small canary, then growing rings. Pure: reads facts, never touches a host."""

from __future__ import annotations

import hashlib
import json
import math
import time

from orchestrator.catalogue import Catalogue
from orchestrator.inventory import Inventory
from orchestrator.models import HostFacts, HostRecord, HostState, Plan, Wave


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


def plan_key(plan: Plan) -> str:
    """What approvals are given for: the waves and what they were planned from."""
    blob = json.dumps([plan.inventory_digest, plan.catalogue_digest, plan.replacement,
                       [list(w.hosts) for w in plan.waves]])
    return hashlib.sha256(blob.encode()).hexdigest()


def make_plan(inventory: Inventory, catalogue: Catalogue, replacement: str,
              records: dict[str, HostRecord], canary: int = 1, growth: float = 2.0,
              now: float | None = None) -> Plan:
    catalogue.replacement(replacement)  # raises for an unknown id
    todo, skipped = [], {}
    for host in inventory.hosts:
        reason = skip_reason(records.get(host.name))
        if reason:
            skipped[host.name] = reason
        else:
            todo.append(host.name)
    waves, start = [], 0
    for number, size in enumerate(wave_sizes(len(todo), canary, growth)):
        waves.append(Wave(number=number, hosts=tuple(todo[start:start + size])))
        start += size
    return Plan(
        created_at=time.time() if now is None else now,
        inventory_digest=inventory.digest,
        catalogue_digest=catalogue.digest,
        replacement=replacement,
        strategy="make-before-break",
        waves=tuple(waves),
        skipped=skipped,
    )


def strategy_for(facts: HostFacts, catalogue: Catalogue, replacement: str) -> str:
    banned = [b.product for b in facts.banned]
    return "make-before-break" if catalogue.coexists(replacement, banned) else "swap"
