"""Remediation: give unprotected hosts their replacement back, installed and verified."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestrator.core import facts as factlib
from orchestrator.core.facts import carries_proof
from orchestrator.core.models import HostState, StepOutcome
from orchestrator.core.protection import beside_proof, replacement_proof

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


def remediate(engine: Engine, names: list[str]) -> None:
    """Unprotected hosts: install the replacement from the repository and verify it, then
    read whether a banned product is still there: migrated only if none is; else verified,
    and its removal continues under the budget. They keep their slot until verified."""
    for n in names:
        rid = engine.pin(n)
        engine.move(n, HostState.UNPROTECTED, f"remediating: installing {rid}",
                    replacement=rid)
    # Where a banned product is still there, a passive-only replacement stays passive beside
    # it, and a replacement proven beside it is proven by its health while the banned product
    # is seen protecting; elsewhere the replacement is active and proves its detection too.
    passive = {n for n in names if engine.passive_beside(n)}
    beside = {n for n in names if engine.proven_beside(n)}
    phase = engine.beside_vars(beside)
    inst = engine.reach("remediate-install", "install.yml", names,
                        {n: {"avmigrate_passive": n in passive, **phase.get(n, {})}
                         for n in names})
    # Proven in the install's own run where the role can (ClamAV on Debian).
    proof = {n: inst[n] for n in names if carries_proof(inst[n].data)}
    ok = [n for n in names if inst[n].outcome == StepOutcome.OK and n not in engine.settled
          and n not in proof]
    proof.update(engine.reach("remediate-verify", "verify.yml", ok,
                              engine.beside_vars(beside & set(ok))))
    verified = [n for n in names if n in proof and n not in engine.settled
                and engine.proof_problem(proof[n], beside=n in beside) is None]
    probe = engine.step("remediate-probe", "discover.yml", verified)
    for n in names:
        if n in engine.settled:
            continue
        rid = engine.replacement_of(n)
        evidence = (beside_proof(rid, engine.protecting_units(n), n in passive) if n in beside
                    else replacement_proof(rid))
        if n not in verified and n in proof and engine.waits_for_reboot(n, proof[n]):
            continue
        if n not in verified:
            problem = (engine.proof_problem(proof[n], beside=n in beside) if n in proof
                       else f"{inst[n].outcome.value}: {inst[n].message}")
            engine.move(n, HostState.UNPROTECTED, f"UNPROTECTED: remediation failed "
                        f"({problem})")
            continue
        r = probe.get(n)
        facts = (factlib.parse_discovery(r.data, engine.catalogue, engine.replacement_of(n))
                 if r is not None and r.outcome == StepOutcome.OK else None)
        if facts is not None and not facts.banned and n not in beside:
            engine.move(n, HostState.MIGRATED, f"remediated: no banned product left; "
                        f"{evidence}", replacement_verified_at=time.time(), proof=evidence,
                        facts=facts)
        else:
            left = (", ".join(b.product for b in facts.banned) if facts is not None
                    else "whether a banned product is left could not be read")
            engine.move(n, HostState.VERIFIED, f"remediated: {evidence}; {left}: its "
                        "removal continues under the budget",
                        replacement_verified_at=time.time(), proof=evidence,
                        **({"facts": facts} if facts is not None else {}))
