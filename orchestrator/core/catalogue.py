"""The product catalogue as data: what to detect, remove, install and verify per product.

Loading and checking a catalogue file is `orchestrator.inputs.catalogue`'s work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from orchestrator.core.errors import CatalogueError


@dataclass(frozen=True)
class Catalogue:
    """The parsed catalogue; entries stay plain mappings because playbooks consume them."""

    source: str
    banned: dict[str, dict[str, Any]]
    replacements: dict[str, dict[str, Any]]
    digest: str
    default: str = ""  # the replacement no choice names (default_replacement)

    def replacement(self, rid: str) -> dict[str, Any]:
        try:
            return {**self.replacements[rid], "id": rid}
        except KeyError:
            known = ", ".join(sorted(self.replacements))
            raise CatalogueError(f"{self.source}: no replacement {rid!r}; known: {known}"
                                 ) from None

    def part_digests(self) -> dict[str, str]:
        """One digest per product entry, to say what changed since a plan."""
        parts = {f"banned.{k}": v for k, v in self.banned.items()}
        parts |= {f"replacements.{k}": v for k, v in self.replacements.items()}
        return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]
                for k, v in parts.items()}

    def secret_names(self) -> set[str]:
        """Credentials the catalogue's products may need (e.g. an uninstall password)."""
        removal = {str(b["remove"]["secret"]) for b in self.banned.values()
                   if b["remove"].get("secret")}
        return removal | {str(r["enrol"]["secret"]) for r in self.replacements.values()
                          if r.get("enrol")}

    def enrol_secret(self, rid: str) -> str | None:
        """The credential replacement `rid` is enrolled with (an onboarding file, a CID)."""
        enrol = self.replacements[rid].get("enrol")
        return str(enrol["secret"]) if enrol else None

    def passive(self, rid: str) -> bool:
        """Does `rid` run beside some banned product only in passive mode (then activated)?"""
        return bool(self.replacements[rid].get("passive_beside"))

    def passive_beside(self, rid: str, running: list[str]) -> bool:
        """Must `rid` run passive on a host where banned products `running` run?"""
        return bool(set(self.replacements[rid].get("passive_beside", ())) & set(running))

    def verify_spec(self, rid: str, beside: bool = False) -> dict[str, Any]:
        """How `rid` proves protection (`beside`: its proof while a banned product that
        protects still runs beside it, which alone is known to protect then)."""
        entry = self.replacements[rid]
        return dict(entry["verify_beside" if beside and "verify_beside" in entry
                          else "verify"])

    def proven_beside(self, rid: str) -> bool:
        """Is `rid` proven by `verify_beside` (health only) while a protecting banned
        product runs beside it, its detection after that product is gone?"""
        return "verify_beside" in self.replacements[rid]

    def supports(self, rid: str, strategy: str) -> bool:
        return strategy in self.replacements[rid].get("strategies",
                                                      ("make-before-break", "swap"))

    def protection_services(self, bid: str) -> tuple[str, ...]:
        """The services whose running is banned product `bid`'s protection (none: it
        protects nothing)."""
        entry = self.banned.get(bid)
        return tuple(entry["protection"]["services"]) if entry else ()

    def coexists(self, rid: str, banned_ids: list[str]) -> bool:
        """Can `rid` be installed while these banned products are still on (make-before-
        break), actively or in passive mode?"""
        entry = self.replacements[rid]
        allowed = {*entry.get("coexists_with", ()), *entry.get("passive_beside", ())}
        return all(b in allowed for b in banned_ids)
