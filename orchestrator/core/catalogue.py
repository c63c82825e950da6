"""The product catalogue as data: what to detect, remove, install and verify per product.

Loading and checking a catalogue file is `orchestrator.inputs.catalogue`'s work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.errors import CatalogueError

# The platforms a catalogue entry may name: a host's is its probe's `os_family`, lower case.
PLATFORMS = ("debian", "redhat", "windows")


def platform_of(os_family: str | None) -> str:
    """The catalogue platform of a host whose probe said `os_family` ('' when unknown)."""
    family = (os_family or "").strip().lower()
    return family if family in PLATFORMS else ""


def inventory_platform(host_vars: dict[str, Any]) -> str:
    """The platform the inventory itself tells before any probe: Windows for a host reached
    over WinRM/PSRP or with a PowerShell/cmd shell (as Ansible chooses its modules), else ''
    (a Linux host's family is its probe's to read)."""
    connection = str(host_vars.get("ansible_connection", "")).lower()
    shell = str(host_vars.get("ansible_shell_type", "")).lower()
    return "windows" if connection in ("winrm", "psrp") or shell in ("powershell", "cmd") else ""


def resolve(entry: dict[str, Any], platform: str) -> dict[str, Any]:
    """A catalogue entry as it applies on `platform`: its `on_platform.<platform>` keys
    replace the entry's own (top-level keys, whole values: nothing is merged deeper)."""
    own = {k: v for k, v in entry.items() if k != "on_platform"}
    return {**own, **entry.get("on_platform", {}).get(platform, {})}


@dataclass(frozen=True)
class Catalogue:
    """The parsed catalogue; entries stay plain mappings because playbooks consume them."""

    source: str
    banned: dict[str, dict[str, Any]]
    replacements: dict[str, dict[str, Any]]
    digest: str
    default: str = ""  # the replacement no choice names (default_replacement)
    _resolved: dict[tuple[str, str, str], dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False)

    def entry(self, kind: str, pid: str, platform: str = "") -> dict[str, Any]:
        """Product `pid` of `kind` ('banned', 'replacements') as it applies on `platform`
        (one dict per product and platform: callers must not change it)."""
        key = (kind, pid, platform)
        entry = self._resolved.get(key)
        if entry is None:
            base = (self.banned if kind == "banned" else self.replacements)[pid]
            entry = self._resolved[key] = resolve(base, platform) if platform else base
        return entry

    def replacement(self, rid: str, platform: str = "") -> dict[str, Any]:
        """Replacement `rid`'s entry (as it applies on `platform`), with its id."""
        if rid not in self.replacements:
            known = ", ".join(sorted(self.replacements))
            raise CatalogueError(f"{self.source}: no replacement {rid!r}; known: {known}")
        return {**self.entry("replacements", rid, platform), "id": rid}

    def banned_on(self, platform: str) -> dict[str, dict[str, Any]]:
        """The banned products of `platform` (all of them for an unknown platform)."""
        return {bid: self.entry("banned", bid, platform) for bid, entry in self.banned.items()
                if not platform or platform in entry.get("platforms", PLATFORMS)}

    def for_platform(self, platform: str) -> dict[str, Any]:
        """What the playbooks read for a host of `platform`: its banned products and every
        replacement (a replacement the platform lacks is refused by the plan, not here)."""
        return {"banned": self.banned_on(platform),
                "replacements": {rid: self.replacement(rid, platform)
                                 for rid in self.replacements}}


    def part_digests(self) -> dict[str, str]:
        """One digest per product entry, to say what changed since a plan."""
        parts = {f"banned.{k}": v for k, v in self.banned.items()}
        parts |= {f"replacements.{k}": v for k, v in self.replacements.items()}
        return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]
                for k, v in parts.items()}

    def secret_names(self) -> set[str]:
        """Credentials the catalogue's products may need (e.g. an uninstall password)."""
        names: set[str] = set()
        for platform in ("", *PLATFORMS):
            names |= {str(b["remove"]["secret"]) for b in self.banned_on(platform).values()
                      if b["remove"].get("secret")}
            names |= {str(r["enrol"]["secret"]) for rid in self.replacements
                      if (r := self.entry("replacements", rid, platform)).get("enrol")}
        return names

    def enrol_secret(self, rid: str, platform: str = "") -> str | None:
        """The credential replacement `rid` is enrolled with (an onboarding file, a CID)."""
        enrol = self.entry("replacements", rid, platform).get("enrol")
        return str(enrol["secret"]) if enrol else None

    def passive(self, rid: str) -> bool:
        """Does `rid` run beside some banned product only in passive mode (then activated)?"""
        return bool(self.replacements[rid].get("passive_beside"))

    def passive_beside(self, rid: str, running: list[str]) -> bool:
        """Must `rid` run passive on a host where banned products `running` run?"""
        return bool(set(self.replacements[rid].get("passive_beside", ())) & set(running))

    def verify_spec(self, rid: str, beside: bool = False, platform: str = ""
                    ) -> dict[str, Any]:
        """How `rid` proves protection on `platform` (`beside`: its proof while a banned
        product that protects still runs beside it, which alone is known to protect then)."""
        entry = self.entry("replacements", rid, platform)
        return dict(entry["verify_beside" if beside and "verify_beside" in entry
                          else "verify"])

    def proven_beside(self, rid: str, platform: str = "") -> bool:
        """Is `rid` proven by `verify_beside` (health only) while a protecting banned
        product runs beside it, its detection after that product is gone?"""
        return "verify_beside" in self.entry("replacements", rid, platform)

    def supports(self, rid: str, strategy: str, platform: str = "") -> bool:
        return strategy in self.entry("replacements", rid, platform).get(
            "strategies", ("make-before-break", "swap"))

    def reboot_after_removal(self, bids: list[str], platform: str = "") -> bool:
        """May removing banned products `bids` ask for a reboot before it completes (their
        `remove.reboot`: msiexec's 3010 / 1641 on Windows)?"""
        return any(self.entry("banned", b, platform)["remove"].get("reboot", "never")
                   != "never" for b in bids if b in self.banned)

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
