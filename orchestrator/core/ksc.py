"""Kaspersky Security Center as the list of record: the hosts it manages, reconciled with the
inventory. Pure: the report's parsing is inputs/ksc.py, the API adapter inputs/kscapi.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.core.models import InventoryHost

# What names a product of Kaspersky's in KSC's lists (its own products: KES, KESL, the agent).
KASPERSKY = "kaspersky"


@dataclass(frozen=True, slots=True)
class KscHost:
    """One host as Kaspersky Security Center lists it."""

    name: str  # its display name in KSC (KLHST_WKS_DN)
    dns_name: str = ""  # its DNS name or FQDN
    ip: str = ""
    group: str = ""  # its administration group
    last_seen: float | None = None  # last visible to the Administration Server (epoch s)
    products: tuple[tuple[str, str], ...] = ()  # (product, version)

    @property
    def kaspersky(self) -> tuple[tuple[str, str], ...]:
        """Its Kaspersky products (by name)."""
        return tuple(p for p in self.products if KASPERSKY in p[0].lower())

    @property
    def kaspersky_text(self) -> str:
        """Its Kaspersky products and versions, as the pages show them."""
        return ", ".join(f"{p} {v}".strip() for p, v in self.kaspersky)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dns_name": self.dns_name, "ip": self.ip,
                "group": self.group, "last_seen": self.last_seen,
                "products": [list(p) for p in self.products]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KscHost:
        seen = data.get("last_seen")
        return cls(str(data["name"]), str(data.get("dns_name") or ""),
                   str(data.get("ip") or ""), str(data.get("group") or ""),
                   float(seen) if isinstance(seen, int | float) else None,
                   tuple((str(p[0]), str(p[1])) for p in data.get("products") or ()))


def _exact(*names: str) -> set[str]:
    return {n.strip().lower().rstrip(".") for n in names if n.strip()}


def _short(names: set[str]) -> set[str]:
    """Short names of host names (not of IP addresses)."""
    return {n.split(".", 1)[0] for n in names if not n.replace(".", "").isdigit()}


@dataclass(frozen=True)
class Reconciled:
    """KSC's list against the inventory."""

    matched: dict[str, KscHost]  # inventory host -> its KSC entry
    unknown: list[KscHost]  # in KSC with a Kaspersky product, not in the inventory
    unmanaged: list[str]  # in the inventory, not in KSC
    without_kaspersky: list[KscHost]  # in KSC, not in the inventory, no Kaspersky product
    # KSC entries that name an inventory host another entry already matched, or that match
    # several inventory hosts by short name alone: listed, never guessed.
    ambiguous: list[KscHost]


def reconcile(inventory: tuple[InventoryHost, ...], ksc: list[KscHost]) -> Reconciled:
    """Which KSC host is which inventory host: by inventory name or ansible_host against KSC's
    display name, DNS name or IP, case-insensitive; by short name only where that short name
    is one inventory host's alone."""
    exact: dict[str, str] = {}
    short: dict[str, set[str]] = {}
    for host in inventory:
        names = _exact(host.name, str(host.address))
        for key in names:
            exact.setdefault(key, host.name)
        for key in _short(names):
            short.setdefault(key, set()).add(host.name)
    matched: dict[str, KscHost] = {}
    unknown: list[KscHost] = []
    others: list[KscHost] = []
    ambiguous: list[KscHost] = []
    for entry in ksc:
        full = _exact(entry.name, entry.dns_name, entry.ip)
        hits = {exact[k] for k in full if k in exact}
        if not hits:
            by_short = set().union(*(short.get(k, set()) for k in _short(full)))
            if len(by_short) > 1:
                ambiguous.append(entry)
                continue
            hits = by_short
        if len(hits) > 1:
            ambiguous.append(entry)
        elif hits:
            name = next(iter(hits))
            if name in matched:
                ambiguous.append(entry)
            else:
                matched[name] = entry
        else:
            (unknown if entry.kaspersky else others).append(entry)
    unmanaged = [h.name for h in inventory if h.name not in matched]
    return Reconciled(matched, unknown, unmanaged, others, ambiguous)
