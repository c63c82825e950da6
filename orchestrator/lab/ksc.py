"""The hosts report a Kaspersky Security Center managing the lab would export (a stand-in:
no KSC runs here). Every lab host with the Kaspersky products its profile installed (one row
per application, as KSC's reports list them), in its administration group, last visible at
the lab's start; a host without the Network Agent is not in KSC. Three Windows workstations
KSC manages are not in the lab's inventory: the reconciliation must name them."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from orchestrator.lab.packages import STAND_INS
from orchestrator.lab.records import LabHost
from orchestrator.lab.scenario import Profile

COLUMNS = ("Device", "DNS name", "IP address", "Group", "Application", "Version",
           "Last visible")
# KSC-managed hosts the lab's inventory does not have (no lab host is Windows).
ELSEWHERE = (
    ("FIN-WS-044", "fin-ws-044.corp.example", "10.40.2.44", "Workstations/Finance",
     (("Kaspersky Endpoint Security for Windows", "12.6.0.438"),
      ("Kaspersky Security Center Network Agent", "15.1.0.20748"))),
    ("HR-LT-017", "hr-lt-017.corp.example", "10.40.3.17", "Workstations/HR",
     (("Kaspersky Endpoint Security for Windows", "11.11.0.452"),
      ("Kaspersky Security Center Network Agent", "14.2.0.26967"))),
    ("KIOSK-02", "kiosk-02.corp.example", "10.40.9.2", "Unassigned devices",
     (("Kaspersky Security Center Network Agent", "14.2.0.26967"),)),
)


def report(hosts: Sequence[LabHost], plan: Sequence[Profile], groups: Sequence[str],
           now: float | None = None) -> str:
    """The CSV KSC would export for these lab hosts (with their profiles and groups)."""
    seen = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    when = seen.strftime("%d.%m.%Y %H:%M:%S")
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for host, profile, group in zip(hosts, plan, groups, strict=True):
        stand_ins = [STAND_INS[p] for p in profile.packages if p in STAND_INS]
        if not any(s.package == "klnagent64" for s in stand_ins):
            continue  # no Network Agent: KSC does not manage it
        for stand_in in stand_ins:
            writer.writerow((host.name, f"{host.name}.lab.internal", host.address,
                             f"Linux/{group}", stand_in.product_name, stand_in.version, when))
    for name, dns, ip, where, products in ELSEWHERE:
        for product_name, version in products:
            writer.writerow((name, dns, ip, where, product_name, version, when))
    return out.getvalue()
