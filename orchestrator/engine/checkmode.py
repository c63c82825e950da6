"""plan --check: preflight, then each host's steps in Ansible's check mode; changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.core.models import StepOutcome, StepResult
from orchestrator.engine.strategies import STRATEGIES, by_strategy

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


def check(engine: Engine, names: list[str]) -> dict[str, Any]:
    """Preflight, then each host's steps in Ansible's check mode: what would change.

    Changes nothing on any host and no host's state: only the findings are returned.
    """
    found: dict[str, dict[str, Any]] = {n: {"problems": [], "would_change": [], "notes": []}
                                        for n in names}
    pre = engine.step("check-preflight", "preflight.yml", names)
    ready = []
    for n in names:
        if pre[n].outcome == StepOutcome.OK:
            ready.append(n)
            found[n]["notes"] = list(pre[n].data.get("notes", []))
        else:
            found[n]["problems"].append(f"preflight {pre[n].outcome.value}: "
                                        f"{pre[n].message}")
    groups = by_strategy(engine, ready)
    results: dict[str, StepResult] = {}
    for strategy, migration in STRATEGIES.items():
        step, playbook = migration.CHECK_STEP
        results.update(engine.step(step, playbook, groups[strategy], check=True))
    removable = []
    for n in ready:
        r = results[n]
        if r.outcome == StepOutcome.OK:
            found[n]["would_change"] += r.data.get("would_change", [])
            removable.append(n)
        else:
            found[n]["problems"].append(f"{r.step} {r.outcome.value}: {r.message}")
    host_vars = {n: {"avmigrate_remove_ids": engine.banned_ids(n)} for n in removable}
    for n, r in engine.step("check-remove", "remove.yml", removable, host_vars,
                            check=True).items():
        if r.outcome == StepOutcome.OK:
            found[n]["would_change"] += r.data.get("would_change", [])
        else:
            found[n]["problems"].append(f"{r.step} {r.outcome.value}: {r.message}")
    bad = sum(1 for f in found.values() if f["problems"])
    return {"hosts": found,
            "summary": f"{len(names) - bad} of {len(names)} host(s) passed; "
                       f"{bad} with problems"}
