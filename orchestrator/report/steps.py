"""What a wave does to a host, step by step, for the plan pages."""

from __future__ import annotations

from typing import Any

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import Strategy
from orchestrator.inputs.policy import Policy


def proof_text(verify: dict[str, Any]) -> str:
    """A catalogue `verify` entry in words: the product's own evidence."""
    parts = [f"{verify['service']} runs"]
    if verify.get("health"):
        parts.append("its health fields hold ("
                     + ", ".join(f"{h['name']} {h['expect']}" for h in verify["health"]) + ")")
    if verify.get("max_signature_age_days") is not None:
        parts.append(f"its signatures are under {verify['max_signature_age_days']} days old")
    det = verify.get("detection")
    if det is not None and det["method"] == "scan":
        parts.append(f"`{' '.join(det['command'])}` detects the EICAR test file")
    elif det is not None:
        seen = (f", and `{' '.join(det['evidence_command'])}` shows it"
                if "evidence_command" in det else "")
        parts.append(f"it quarantines the EICAR test file on write within {det['wait_s']} s"
                     + seen)
    return "; ".join(parts)


def strategy_steps(catalogue: Catalogue, replacement: str | list[str], policy: Policy,
                   platforms: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
    """What a wave does to a host, step by step, in the words of the catalogue's data; for
    several replacements, their steps each; per platform where hosts of other platforms than
    Debian get them (`platforms`: replacement -> the platforms of its hosts)."""
    rids = [replacement] if isinstance(replacement, str) else replacement
    out: dict[str, list[str]] = {}
    for rid in rids:
        name = catalogue.replacements[rid]["name"]
        for platform in sorted((platforms or {}).get(rid) or {"debian"}):
            on = "" if platform == "debian" else f" on {platform}"
            for strategy, steps in _steps(catalogue, rid, policy, platform).items():
                out[strategy + on if len(rids) == 1 else f"{strategy} to {name}{on}"] = steps
    return out


def _removal(catalogue: Catalogue, platform: str) -> str:
    banned = catalogue.banned_on(platform)
    if platform == "windows":
        return (f"Remove the banned products ({', '.join(b['name'] for b in banned.values())}"
                ", in that order) with msiexec /x, each build's product code read from its "
                "Uninstall key, the uninstall passwords from the credentials (never logged); "
                "a removal that completes only at the next reboot keeps the host's slot until "
                "it has been rebooted in its maintenance window and proven again.")
    services = sorted({s for b in banned.values() for s in b["remove"]["services"]})
    packages = sorted({p for b in banned.values() for p in b["remove"]["packages"]})
    how = "remove the RPMs" if platform == "redhat" else "purge"
    return (f"Remove the banned product: stop {', '.join(services)}; {how} "
            f"{', '.join(packages)}; delete the leftovers the packages leave.")


def _steps(catalogue: Catalogue, replacement: str, policy: Policy, platform: str = "debian"
           ) -> dict[str, list[str]]:
    repl = catalogue.replacement(replacement, platform)
    space = ", ".join(f"{mb} MiB at {path}" for path, mb in
                      repl.get("requirements", {}).get("free_mb", {}).items()) or "none"
    preflight = (f"Preflight, read-only: free space ({space}), a healthy package manager, the "
                 "internal repository and the signature source answer. A host that fails is "
                 "left exactly as it is.")
    proof = f"Verify by {repl['name']}'s own evidence: {proof_text(repl['verify'])}."
    remove = _removal(catalogue, platform)
    budgeted_removal = (
        f"At most {policy.max_unprotected} host(s) at a time, over the whole fleet (the "
        "protection budget): record the intent, which takes a slot of the budget, then "
        + remove[0].lower() + remove[1:])
    enrol = (f" and enrol it (credential {repl['enrol']['secret']}: "
             f"{repl['enrol'].get('what', 'from --credentials')}; never logged)"
             if repl.get("enrol") else "")
    steps: dict[str, list[str]] = {}
    packages = ", ".join(repl["packages"]) or "part of the system"
    if catalogue.proven_beside(replacement, platform) and not catalogue.passive(replacement):
        steps[Strategy.MAKE_BEFORE_BREAK] = [
            preflight,
            f"Record the intent, then install {repl['name']} ({packages}) "
            f"from the internal repository{enrol}, beside the banned product.",
            f"Prove its health beside the banned product ({proof_text(repl['verify_beside'])})"
            " while the banned product is seen running: its own on-access scanning could be "
            "what takes a test file, so detection is proven after it is gone. Recorded as "
            "verified (beside). A failing enrolment or health stops the host here, banned "
            "product untouched.",
            budgeted_removal,
            f"{proof} Recorded as migrated; the slot is given back. The gap is the time from "
            "removal to that proof; if it fails the host is UNPROTECTED and `avmigrate "
            "remediate` restores it.",
        ]
    elif catalogue.passive(replacement):
        passive = repl["verify_beside"]
        steps[Strategy.MAKE_BEFORE_BREAK] = [
            preflight,
            f"Record the intent, then install {repl['name']} ({packages}) "
            f"from the internal repository{enrol}, in passive mode beside the banned "
            f"product ({', '.join(repl['passive_beside'])}: active beside it is unsupported).",
            f"Prove it healthy in passive mode ({proof_text(passive)}) while the banned "
            "product runs and protects. Recorded as verified (passive). An enrolment that "
            "fails or an unhealthy product stops the host here, banned product untouched.",
            budgeted_removal,
            f"Switch {repl['name']} to active protection, then: {proof[0].lower()}"
            f"{proof[1:]} Recorded as migrated; the slot is given back. The gap is the time "
            "from removal to that proof; if it fails the host is UNPROTECTED and "
            "`avmigrate remediate` restores it.",
        ]
    else:
        steps[Strategy.MAKE_BEFORE_BREAK] = [
            preflight,
            f"Record the intent, then install {repl['name']} ({packages}) "
            f"from the internal repository{enrol}, beside the banned product.",
            proof + " Recorded as verified. The banned product is still running.",
            budgeted_removal,
            "Verify again, and that nothing of the banned product remains. Recorded as "
            "migrated; the slot is given back. The replacement ran throughout: gap zero.",
        ]
    if catalogue.supports(replacement, Strategy.SWAP, platform):
        steps[Strategy.SWAP] = [
            preflight,
            f"Stage {repl['name']}'s packages and signatures on the host and prove the "
            "install can run from them alone; the banned product still protects the host.",
            "Right before removal, check the staged files' SHA-256 and prove again that the "
            "install from them alone would succeed.",
            budgeted_removal,
            f"Install {repl['name']} from the staged files and verify it (a second attempt "
            "if needed). The gap is the time from removal to verification.",
            "If it still fails, the host is marked UNPROTECTED, no further removal starts, "
            "and `avmigrate remediate` restores it.",
        ]
    return steps
