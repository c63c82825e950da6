"""`avmigrate ksc import`, and what the plan and the report make of KSC's list and of hosts
whose removal may need a reboot (issue 16). The hosts' findings are recorded probe reports
(Windows: win_probe's shape; Debian: probe.py's), the plan made by the CLI as a user runs it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli.main import cli
from orchestrator.core import facts as factlib
from orchestrator.core.models import HostState
from orchestrator.core.protection import proof_of
from orchestrator.inputs import catalogue
from orchestrator.store.sqlite import SqliteStore

from ..playbooks.test_platforms import UNINSTALL

WINDOWS = {"os_family": "Windows", "platform": "windows",
           "distribution": "Microsoft Windows 11 Enterprise", "distribution_version": "10.0.22631",
           "packages": {}, "uninstall": UNINSTALL[:2],
           "services": {"AVP.KES.*": "active", "klnagent": "active"}, "paths": {},
           "processes": {"kes": 3, "klnagent": 1}, "info": {}, "free_mb": {"C:\\": 40000}}
DEBIAN = {"os_family": "Debian", "platform": "debian", "distribution": "Debian",
          "distribution_version": "12.8", "packages": {"kesl": "12.1.0.1297"},
          "services": {"kesl.service": "active"}, "paths": {}, "processes": {"kesl": 2},
          "info": {}, "free_mb": {}}
KSC = ("Device;DNS name;IP address;Group;Application;Version;Last visible\n"
       "WS1;ws1.corp.example;192.0.2.1;Workstations;Kaspersky Endpoint Security for Windows;"
       "12.6.0.438;30.11.2026 08:12:44\n"
       "srv1;;192.0.2.100;Servers;Kaspersky Endpoint Security 12.1 for Linux;12.1.0.1297;"
       "29.11.2026 23:05:10\n"
       "FIN-WS-044;fin-ws-044.corp.example;10.40.2.44;Finance;"
       "Kaspersky Endpoint Security for Windows;12.6.0.438;30.11.2026 08:12:44\n")


def _estate(tmp_path: Path) -> tuple[Path, Path]:
    inv = tmp_path / "inv.ini"
    inv.write_text("[workstations]\nws1.corp.example ansible_host=192.0.2.1 "
                   "ansible_connection=winrm\nws2 ansible_host=192.0.2.2 ansible_connection=winrm\n"
                   "[servers]\nsrv1 ansible_host=192.0.2.100\n")
    state = tmp_path / "s.db"
    cat = catalogue.load()
    store = SqliteStore(state)
    names = ["ws1.corp.example", "ws2", "srv1"]
    store.ensure_hosts(names)
    for name, report in zip(names, (WINDOWS, WINDOWS, DEBIAN), strict=True):
        facts = factlib.parse_discovery(report, cat, "mde")
        proof = proof_of(facts, cat, "mde", False)  # KES (AVP.KES.*) or KESL running
        assert proof, name
        store.transition(name, HostState.PENDING, "found", None, facts=facts, proof=proof)
    store.close()
    return inv, state


def test_ksc_import_reconciles_in_the_plan_and_reboots_are_planned(tmp_path: Path) -> None:
    inv, state = _estate(tmp_path)
    report = tmp_path / "ksc.csv"
    report.write_text(KSC)
    runner = CliRunner()
    done = runner.invoke(cli, ["--state", str(state), "ksc", "import", str(report)])
    assert done.exit_code == 0, done.output
    assert "imported 3 host(s)" in done.output and "3 with a Kaspersky product" in done.output
    out = tmp_path / "plan"
    planned = runner.invoke(cli, ["--state", str(state), "plan", "-i", str(inv),
                                  "--no-discover", "--replacement", "mde", "--out", str(out)])
    assert planned.exit_code == 0, planned.output
    page = (out / "plan.md").read_text()
    ksc_part = page.split("## Kaspersky Security Center", 1)[1].split("## Waves", 1)[0]
    assert "**1 host(s) that KSC manages with a Kaspersky product are not in the inventory**" \
        in ksc_part and "FIN-WS-044" in ksc_part
    assert "1 inventory host(s) KSC does not know: ws2." in ksc_part
    assert "| ws1.corp.example | WS1 | Workstations |" in ksc_part
    assert "| srv1 | srv1 | Servers |" in ksc_part
    # The Windows hosts' removal (KES, the agent: msiexec) may need a reboot; KESL's not.
    reboots = page.split("| Wave | Hosts whose removal may need a reboot", 1)[1].split("\n\n")[0]
    assert "ws1.corp.example, ws2" in reboots and "srv1" not in reboots
    assert "maintenance window" in reboots
    html = (out / "plan.html").read_text()
    assert 'id="ksc-unknown-hosts"' in html and 'id="reboots"' in html
    # What a wave does, per platform: Windows hosts' steps are Windows'.
    windows = page.split("### make-before-break on windows", 1)[1].split("###", 1)[0]
    assert "msiexec /x" in windows and "AMRunningMode" in windows, windows
    debian = page.split("### make-before-break\n", 1)[1].split("###", 1)[0]
    assert "purge kesl" in debian and "msiexec" not in debian, debian
    # The report lists migrated hosts to retire from KSC (none migrated yet: none listed).
    made = runner.invoke(cli, ["--state", str(state), "report", "--format", "md"])
    assert made.exit_code == 0, made.output
    assert "No migrated host is still listed in KSC" in made.output


def test_migrated_hosts_are_listed_to_retire_from_ksc(tmp_path: Path) -> None:
    _inv, state = _estate(tmp_path)
    report = tmp_path / "ksc.csv"
    report.write_text(KSC)
    runner = CliRunner()
    assert runner.invoke(cli, ["--state", str(state), "ksc", "import", str(report)]).exit_code == 0
    store = SqliteStore(state)
    for to in (HostState.INSTALLING, HostState.VERIFIED):
        store.transition("srv1", to, "step", None, proof="mde verified")
    store.transition("srv1", HostState.REMOVING, "step", None)
    store.transition("srv1", HostState.MIGRATED, "done", None, proof="mde verified")
    store.close()
    made = runner.invoke(cli, ["--state", str(state), "report", "--format", "md"])
    assert made.exit_code == 0, made.output
    retire = made.output.split("## To retire from Kaspersky Security Center", 1)[1]
    assert "| srv1 | srv1 | Servers | Kaspersky Endpoint Security 12.1 for Linux 12.1.0.1297 |" \
        in retire.split("## Hosts", 1)[0]
    assert "ws1" not in retire.split("## Hosts", 1)[0]  # not migrated


def test_ksc_import_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    state = str(tmp_path / "s.db")
    for args, message in (
            (["ksc", "import", str(tmp_path / "none.csv")], "cannot read the KSC report"),
            (["ksc", "import"], "give a KSC hosts report (FILE) or --server"),
            (["ksc", "import", "x.csv", "--server", "https://k:13299"], "not both"),
            (["ksc", "import", "--server", "https://k:13299"], "--server needs --user"),
            (["ksc", "import", "--server", "https://k:13299", "--user", "u"],
             "set AVMIGRATE_KSC_PASSWORD"),
    ):
        result = runner.invoke(cli, ["--state", state, *args])
        assert result.exit_code != 0, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], result.output
