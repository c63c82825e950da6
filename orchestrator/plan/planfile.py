"""The plan file (plan.json): its format, content hash, writing and reading back."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.errors import PlanError
from orchestrator.core.models import Plan, Wave
from orchestrator.inputs import policy as policy_mod
from orchestrator.inputs.policy import Policy

PLAN_FORMAT = 2


@dataclass(frozen=True, slots=True)
class _Serialised:
    """A plan's file content (with its hash) and the sorted-key text the hash was taken of."""

    plan: Plan
    body: dict[str, Any]
    hashed: str


# The plan last serialised: `plan` writes plan.json, prints it and shows its hash from one
# plan object, and a 100k-host plan is serialised once. Matched by identity (`is`), not
# equality: plans that differ only in their estimate or check findings compare equal. The
# plan itself is held, so no other object can take its identity meanwhile.
_last: list[_Serialised] = []


def _serialised(plan: Plan) -> _Serialised:
    if _last and _last[0].plan is plan:
        return _last[0]
    body = _plan_body(plan)
    hashed = json.dumps(body, sort_keys=True)
    body["content_hash"] = hashlib.sha256(hashed.encode()).hexdigest()
    _last[:] = [_Serialised(plan, body, hashed)]
    return _last[0]


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan file's content, with its content hash (computed once per plan object)."""
    return _serialised(plan).body


def plan_json_text(plan: Plan, indent: int | None = None) -> str:
    """plan.json's text. Compact, it reuses the serialisation the content hash was taken
    over (sorted keys; the hash appended last), so a 100k-host plan is serialised once."""
    done = _serialised(plan)
    body, hashed = done.body, done.hashed
    if indent is not None:
        return json.dumps(body, indent=indent) + "\n"
    return f'{hashed[:-1]}, "content_hash": "{body["content_hash"]}"}}\n'


def _plan_body(plan: Plan) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "created_at": plan.created_at,
        "inventory_digest": plan.inventory_digest,
        "catalogue_digest": plan.catalogue_digest,
        "replacement": plan.replacement,
        "replacements": plan.replacements,
        "strategy": plan.strategy,
        "waves": [{"number": w.number, "hosts": list(w.hosts), "window": w.window}
                  for w in plan.waves],
        "skipped": plan.skipped,
        "policy": plan.policy,
        "host_digests": plan.host_digests,
        "catalogue_digests": plan.catalogue_digests,
        "estimate": plan.estimate,
        "checks": plan.checks,
    }


def plan_from_json(data: Any, source: str) -> Plan:
    """The plan a plan file holds; PlanError if it was edited, is of another format or is
    malformed."""
    try:
        body = _checked_body(data, source)
        return Plan(
            created_at=float(body["created_at"]),
            inventory_digest=str(body["inventory_digest"]),
            catalogue_digest=str(body["catalogue_digest"]),
            replacement=str(body["replacement"]),
            replacements={str(k): str(v) for k, v in body.get("replacements", {}).items()},
            strategy=str(body["strategy"]),
            waves=tuple(Wave(int(w["number"]), tuple(w["hosts"]), w.get("window"))
                        for w in body["waves"]),
            skipped=dict(body.get("skipped", {})),
            policy=dict(body.get("policy", {})),
            host_digests=dict(body.get("host_digests", {})),
            catalogue_digests=dict(body.get("catalogue_digests", {})),
            estimate=dict(body.get("estimate", {})),
            checks=dict(body.get("checks", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"plan {source} is malformed ({exc}); make a new one") from exc


def _checked_body(data: Any, source: str) -> dict[str, Any]:
    """The file's content without its hash, once the hash and the format are checked."""
    body = {k: v for k, v in data.items() if k != "content_hash"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if data.get("content_hash") != digest:
        raise PlanError(f"plan {source} was edited after it was made (hash mismatch); "
                        "make a new one with `avmigrate plan`")
    if body["format"] != PLAN_FORMAT:
        raise PlanError(f"plan {source} has format {body['format']}; expected {PLAN_FORMAT}")
    return body


def load_plan(path: Path) -> Plan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PlanError(f"plan {path} is not JSON ({exc}); make a new one") from exc
    return plan_from_json(data, str(path))


def policy_from_plan(plan: Plan) -> Policy:
    """The policy the plan was made with (a run follows it, not the command line)."""
    return policy_mod.from_json(plan.policy) if plan.policy else Policy()


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write `text` (or its chunks, as they come) to a temporary file, then move it over
    `path`: a reader sees the old file or the new one, never half of one. Plan files and
    reports are written this way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        if isinstance(text, str):
            out.write(text)
        else:
            out.writelines(text)
    tmp.replace(path)
