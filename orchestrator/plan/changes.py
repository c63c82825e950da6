"""What changed since a plan was made, and a plan cut down to the hosts a run holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import Plan
from orchestrator.inputs.inventory import Inventory


def few(names: list[str], limit: int = 5) -> str:
    """The first `limit` names and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plan_changes(the_plan: Plan, inv: Inventory, cat: Catalogue, source: Path) -> str | None:
    """What changed in the inventory or catalogue since the plan was made, or None."""
    parts = []
    if the_plan.inventory_digest != inv.digest:
        now = inv.host_digests()
        then = the_plan.host_digests
        added = sorted(set(now) - set(then)) if then else []
        removed = sorted(set(then) - set(now))
        changed = sorted(h for h in set(now) & set(then) if now[h] != then[h])
        bits = [f"{label} {few(names)}" for label, names in
                (("hosts added:", added), ("hosts removed:", removed),
                 ("groups or variables changed on", changed)) if names]
        parts.append("the inventory changed (" + ("; ".join(bits) or "its content") + ")")
    if the_plan.catalogue_digest != cat.digest:
        parts_now = cat.part_digests()
        parts_then = the_plan.catalogue_digests
        diff = (sorted(k for k in set(parts_now) | set(parts_then)
                       if parts_now.get(k) != parts_then.get(k))
                if parts_then else [])
        parts.append("the catalogue changed (" + (few(diff) or "its content") + ")")
    if not parts:
        return None
    return f"{' and '.join(parts)} since plan {source} was made; make a new plan"


def narrowed_plan(the_plan: Plan, inv: Inventory) -> Plan:
    """The plan's waves with only the hosts of `inv` (this run's); empty waves dropped."""
    keep = set(inv.names())
    waves = tuple(dataclasses.replace(w, hosts=tuple(h for h in w.hosts if h in keep))
                  for w in the_plan.waves)
    return dataclasses.replace(the_plan, waves=tuple(w for w in waves if w.hosts))
