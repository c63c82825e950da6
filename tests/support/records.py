"""Sample host facts and a small planned fleet: records the report and browser tests share."""

from __future__ import annotations

from orchestrator.core.models import BannedFinding, HostFacts, HostRecord, HostState, InventoryHost
from orchestrator.inputs.inventory import Inventory, digest_of


def facts(*banned: str, free: int = 5000, dpkg_ok: bool = True, os_family: str = "Debian"
          ) -> HostFacts:
    return HostFacts(
        os_family=os_family, distribution="Debian", distribution_version="12",
        banned=tuple(BannedFinding(b, "12.1.0.1297", "2024-09-27 21:04:00", (b,), (), 1)
                     for b in banned),
        replacement_installed=False, replacement_active=False,
        free_mb={"/var/cache/apt/archives": free, "/var/lib": free, "/usr": free},
        package_manager_ok=dpkg_ok,
        package_manager_problem="" if dpkg_ok else "dpkg was interrupted")


def fleet() -> tuple[Inventory, dict[str, HostRecord]]:
    hosts = tuple(InventoryHost(f"h{i}", ("web",), {}) for i in range(5))
    inv = Inventory("i", hosts, digest_of(hosts))

    def rec(name: str, state: HostState, f: HostFacts | None, reason: str = "") -> HostRecord:
        return HostRecord(name, state, reason, "make-before-break", None, f, 0.0, None, None)

    records = {
        "h0": rec("h0", HostState.PENDING, facts("kesl", "klnagent64")),
        "h1": rec("h1", HostState.PENDING, facts("kesl")),
        "h2": rec("h2", HostState.BLOCKED, facts("kesl", free=3), "low disk"),
        "h3": rec("h3", HostState.UNREACHABLE, None, "ssh: connection refused"),
        "h4": rec("h4", HostState.CLEAN, facts()),
    }
    return inv, records
