"""What counts as protection, in one place: evidence read off a host, never a state name. Pure.

A host is protected only while a banned product that protects (the catalogue's `protection`:
KESL's kesl.service; the Network Agent protects nothing) runs, or once the replacement has
been verified by a probe (its daemon answers and detects the EICAR test file) and nothing
since has put that in doubt. A replacement that is merely installed or active proves nothing.
Anything else, including a host that cannot be probed, counts as unprotected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.core.models import HostFacts

if TYPE_CHECKING:  # only its type: `status` and the store need not load YAML
    from orchestrator.core.catalogue import Catalogue

# The EICAR test file a replacement must detect to prove protection, kept encoded so that this
# repository holds no test virus (antivirus products would flag the file).
EICAR_B64 = (
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJE"
    "LUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo="
)


def protecting_products(facts: HostFacts, catalogue: Catalogue) -> list[str]:
    """Banned products found running whose running is protection (every one of the services
    the catalogue names for it is active)."""
    found = []
    for b in facts.banned:
        services = catalogue.protection_services(b.product)
        if services and all(s in b.services_active for s in services):
            found.append(b.product)
    return found


def banned_running_proof(products: list[str], catalogue: Catalogue) -> str:
    """The evidence text for protecting banned products seen running."""
    units = [s for p in products for s in catalogue.protection_services(p)]
    return f"{', '.join(units)} running"


def replacement_proof(replacement: str) -> str:
    """The evidence text for a replacement verified by a probe just now: by its own
    evidence (its service, health fields and signatures, and the EICAR test file detected
    by its own mechanism, as its catalogue `verify` says)."""
    return f"{replacement} verified: its own health evidence held and it detected EICAR"


def beside_proof(replacement: str, units: list[str], passive: bool) -> str:
    """The evidence text for a replacement proven healthy beside a banned product that was
    seen protecting in the same probe (it alone is known to protect the host then: the
    replacement is passive, or its detection is proven only once the banned product is
    gone)."""
    how = ("in passive mode (not yet protecting)" if passive
           else "beside it (detection not yet proven)")
    return f"{', '.join(units)} running; {replacement} healthy {how}"


def evidence_source(proof: str | None) -> str:
    """Which product the evidence text of a record names as protecting the host (the texts
    above, read back): a replacement id, "<banned unit> (banned product)", or "none"."""
    text = proof or ""
    head = text.split(" ", 1)[0]
    if " verified: " in text and head:
        return head
    if " running; " in text and " healthy " in text:
        units, rest = text.split(" running; ", 1)
        return f"{units} (banned product; {rest.split(' ', 1)[0]} installed beside it)"
    if text.endswith(" running"):
        return f"{text.removesuffix(' running')} (banned product)"
    return "none proven"


def proof_of(facts: HostFacts, catalogue: Catalogue, replacement: str,
             verified: bool) -> str | None:
    """The evidence that the host is protected now, or None: unprotected (or unknown)."""
    if verified:
        return replacement_proof(replacement)
    products = protecting_products(facts, catalogue)
    return banned_running_proof(products, catalogue) if products else None


# ---- the protection budget -----------------------------------------------------------------
def budget_problem(spec: str) -> str | None:
    """Why `spec` is not a budget ("3": hosts; "1%": a share of the fleet), or None."""
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            return None if 0 < share <= 100 else "a share must be above 0% and at most 100%"
        count = int(text)
    except ValueError:
        return (f"{spec!r} is neither a number of hosts (3) nor a share of the fleet "
                "(\"1%\")")
    return None if count >= 1 else ("must be at least 1: a removal needs one host without "
                                     "proven protection until its replacement is verified")


def resolve_budget(spec: str, fleet_size: int) -> int:
    """How many hosts the budget allows at once, in a fleet of `fleet_size` hosts (a share
    is rounded down, but never below one host)."""
    text = str(spec).strip()
    if text.endswith("%"):
        return max(1, int(float(text[:-1]) * fleet_size // 100))
    return max(1, int(text))
