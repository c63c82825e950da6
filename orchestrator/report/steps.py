"""What a wave does to a host, step by step, for the plan pages."""

from __future__ import annotations

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import Strategy
from orchestrator.inputs.policy import Policy


def strategy_steps(catalogue: Catalogue, replacement: str, policy: Policy
                   ) -> dict[str, list[str]]:
    """What a wave does to a host, step by step, in the words of the catalogue's data."""
    repl = catalogue.replacement(replacement)
    verify = repl["verify"]
    space = ", ".join(f"{mb} MiB at {path}" for path, mb in
                      repl.get("requirements", {}).get("free_mb", {}).items()) or "none"
    services = sorted({s for b in catalogue.banned.values() for s in b["remove"]["services"]})
    packages = sorted({p for b in catalogue.banned.values() for p in b["remove"]["packages"]})
    preflight = (f"Preflight, read-only: free space ({space}), a healthy package manager, the "
                 "internal repository and the signature source answer. A host that fails is "
                 "left exactly as it is.")
    proof = (f"Verify: {verify['service']} runs, `{' '.join(verify['daemon_command'])}` "
             "answers, and the running daemon detects the EICAR test file.")
    remove = (f"Remove the banned product: stop {', '.join(services)}; purge "
              f"{', '.join(packages)}; delete the leftovers the packages leave.")
    budgeted_removal = (
        f"At most {policy.max_unprotected} host(s) at a time, over the whole fleet (the "
        "protection budget): record the intent, which takes a slot of the budget, then "
        + remove[0].lower() + remove[1:])
    return {
        Strategy.MAKE_BEFORE_BREAK: [
            preflight,
            f"Record the intent, then install {repl['name']} ({', '.join(repl['packages'])}) "
            "from the internal repository, beside the banned product.",
            proof + " Recorded as verified. The banned product is still running.",
            budgeted_removal,
            "Verify again, and that nothing of the banned product remains. Recorded as "
            "migrated; the slot is given back. The replacement ran throughout: gap zero.",
        ],
        Strategy.SWAP: [
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
        ],
    }
