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
        return {str(b["remove"]["secret"]) for b in self.banned.values()
                if b["remove"].get("secret")}

    def protection_services(self, bid: str) -> tuple[str, ...]:
        """The services whose running is banned product `bid`'s protection (none: it
        protects nothing)."""
        entry = self.banned.get(bid)
        return tuple(entry["protection"]["services"]) if entry else ()

    def coexists(self, rid: str, banned_ids: list[str]) -> bool:
        allowed = set(self.replacements[rid].get("coexists_with", ()))
        return all(b in allowed for b in banned_ids)
