"""The Windows and RHEL tasks, checked as honestly as this machine allows (no Windows or RPM
host runs here): every task file parses and resolves its modules (ansible-playbook
--syntax-check through a wrapper that imports it), every ansible.windows module is given only
options its documentation names, the msiexec arguments and product codes built from the
catalogue, and the probe's rpm and os-release readings from recorded outputs."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from orchestrator.inputs import catalogue

ROOT = Path(__file__).resolve().parents[3]
COLLECTION = ROOT / "playbooks"
WINDOWS = ROOT / ".venv/collections/ansible_collections/ansible/windows"
TASK_FILES = sorted([*COLLECTION.glob("playbooks/tasks/*.yml"),
                     *COLLECTION.glob("roles/*/tasks/*.yml")])


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


msi = _load(COLLECTION / "plugins/filter/msi.py", "avmigrate_msi_filter")


def _env() -> dict[str, str]:
    assert (WINDOWS / "MANIFEST.json").is_file(), "ansible.windows missing: run make venv"
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH":
            f"{ROOT / 'orchestrator/assets'}:{WINDOWS.parents[2]}",
            "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}


def test_every_task_file_and_playbook_passes_ansible_syntax_check(tmp_path: Path) -> None:
    """Each task file imported statically (its modules resolved, its arguments parsed), each
    playbook as it is: ansible-playbook --syntax-check, as for the Debian ones."""
    plays = [{"name": f"syntax of {f.relative_to(COLLECTION)}", "hosts": "all",
              "gather_facts": False, "tasks": [{"ansible.builtin.import_tasks": str(f)}]}
             for f in TASK_FILES]
    wrapper = tmp_path / "tasks.yml"
    wrapper.write_text(yaml.safe_dump(plays))
    books = [wrapper, *sorted(COLLECTION.glob("playbooks/*.yml"))]
    bin_dir = Path(sys.executable).parent
    for book in books:
        done = subprocess.run([str(bin_dir / "ansible-playbook"), "--syntax-check", "-i",
                               "localhost,", str(book)], capture_output=True, text=True,
                              env=_env(), check=False)
        assert done.returncode == 0, (book.name, done.stdout[-2000:], done.stderr[-2000:])
    assert any("windows" in f.name for f in TASK_FILES)
    assert any("redhat" in f.name for f in TASK_FILES)


def _tasks(node: Any) -> list[dict[str, Any]]:
    """Every task of a task list, blocks opened."""
    found = []
    for task in node or ():
        if not isinstance(task, dict):
            continue
        found.append(task)
        for key in ("block", "rescue", "always"):
            found += _tasks(task.get(key))
    return found


def _documentation(path: Path) -> dict[str, Any]:
    """A module's documentation: its .py DOCUMENTATION string, or its .yml sidecar."""
    if path.suffix == ".yml":
        return dict(yaml.safe_load(path.read_text())["DOCUMENTATION"])
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets):
            return dict(yaml.safe_load(ast.literal_eval(node.value)))
    raise AssertionError(f"no DOCUMENTATION in {path}")


def _options(module: str) -> set[str]:
    base = WINDOWS / "plugins/modules" / module
    spec = _documentation(base.with_suffix(".py") if base.with_suffix(".py").is_file()
                          else base.with_suffix(".yml"))
    names = set(spec.get("options", {}))
    for option in spec.get("options", {}).values():
        names |= set(option.get("aliases", ()))
    # Options shared through doc fragments (win_package's provider options, etc.).
    for fragment in spec.get("extends_documentation_fragment", ()):
        frag = WINDOWS / "plugins/doc_fragments" / f"{fragment.split('.')[-1]}.py"
        if frag.is_file():
            tree = ast.parse(frag.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and (
                        isinstance(node.value.value, str)):
                    names |= set((yaml.safe_load(node.value.value) or {}).get("options", {}))
    return names


def test_windows_tasks_give_only_documented_options() -> None:
    """ansible-lint cannot check a PowerShell module's arguments: each ansible.windows task
    is checked here against the module's own documentation."""
    checked = 0
    for path in [*TASK_FILES, *COLLECTION.glob("playbooks/*.yml")]:
        data = yaml.safe_load(path.read_text())
        tasks = [t for play in data for t in _tasks(play.get("tasks"))] if (
            data and isinstance(data[0], dict) and "hosts" in data[0]) else _tasks(data)
        for task in tasks:
            for key, args in task.items():
                if not key.startswith("ansible.windows."):
                    continue
                module = key.rsplit(".", 1)[1]
                unknown = set(args or {}) - _options(module)
                assert not unknown, f"{path.name}: {task['name']}: {module} has no {unknown}"
                checked += 1
    assert checked >= 15, checked


def test_msiexec_properties_carry_the_password_as_the_catalogue_says() -> None:
    cat = catalogue.load()
    kes = cat.entry("banned", "kes", "windows")["remove"]["msi"]
    agent = cat.entry("banned", "klnagent", "windows")["remove"]["msi"]
    assert msi.msi_properties(kes, 'p"w d') == 'KLLOGIN="KLAdmin" KLPASSWD="p""w d"'
    # No password set for a host: the property that needs one is left out, never empty.
    assert msi.msi_properties(kes, "") == 'KLLOGIN="KLAdmin"'
    # The agent's, hex of its UTF-16LE bytes (community scripts; unconfirmed by Kaspersky).
    assert msi.utf16le_hex("Ab1") == "410062003100"
    assert msi.msi_properties(agent, "Ab1") == 'KLUNINSTPASSWD="410062003100"'


# Get-ItemProperty of the Uninstall keys, as win_probe.ps1 returns the matching ones (both views).
UNINSTALL = [
    {"DisplayName": "Kaspersky Endpoint Security for Windows", "DisplayVersion": "12.6.0.438",
     "PSChildName": "{C9EF800D-54AA-4F60-AB96-5A3966550F53}", "Publisher": "AO Kaspersky Lab"},
    {"DisplayName": "Kaspersky Security Center Network Agent", "DisplayVersion": "15.1.0.20748",
     "PSChildName": "{0F05E4E5-5A89-482C-9A62-47CC58643788}", "Publisher": "AO Kaspersky Lab"},
    # An EXE-installed helper: not an MSI product code, msiexec /x cannot take it.
    {"DisplayName": "Kaspersky Endpoint Security Tools", "DisplayVersion": "1.0",
     "PSChildName": "KES-Tools", "Publisher": "AO Kaspersky Lab"},
]


def test_removals_take_each_build_s_product_code_kes_before_the_agent() -> None:
    cat = catalogue.load()
    products = [cat.entry("banned", b, "windows") for b in ("kes", "klnagent")]
    secrets = {"kes_uninstall_password": "s3cret", "klnagent_uninstall_password": "Ab1"}
    plan = msi.msi_removals({"uninstall": list(reversed(UNINSTALL))}, products, secrets)
    assert [(r["code"], r["arguments"]) for r in plan] == [
        ("{C9EF800D-54AA-4F60-AB96-5A3966550F53}", 'KLLOGIN="KLAdmin" KLPASSWD="s3cret"'),
        ("{0F05E4E5-5A89-482C-9A62-47CC58643788}", 'KLUNINSTPASSWD="410062003100"')]
    assert msi.msi_removals({"uninstall": []}, products, secrets) == []


def test_a_recorded_windows_probe_is_classified() -> None:
    from orchestrator.core import facts as factlib  # noqa: PLC0415

    cat = catalogue.load()
    report = {"os_family": "Windows", "platform": "windows",
              "distribution": "Microsoft Windows Server 2022 Standard",
              "distribution_version": "10.0.20348", "packages": {}, "uninstall": UNINSTALL,
              "services": {"AVP.KES.*": "active", "klnagent": "active",
                           "WinDefend": "active", "Sense": "inactive"},
              "paths": {}, "processes": {"kes": 3, "klnagent": 1}, "info": {},
              "free_mb": {"C:\\": 20480}, "msi_in_progress": False,
              "reboot_pending": [], "removal_pending_reboot": False, "booted_at": 1.76e9}
    facts = factlib.parse_discovery(report, cat, "mde")
    found = {b.product: b for b in facts.banned}
    assert set(found) == {"kes", "klnagent"}
    assert found["kes"].version == "12.6.0.438" and found["kes"].services_active == ("AVP.KES.*",)
    assert facts.package_manager_ok and facts.booted_at == 1.76e9
    assert not facts.replacement_active  # Sense does not run: not onboarded yet
    assert factlib.preflight_problems(facts, cat, "mde") == []
    # ClamAV has no Windows row: the plan says so.
    assert factlib.preflight_problems(facts, cat, "clamav") == [
        "no ClamAV for platform Windows"]
    busy = factlib.parse_discovery(report | {"msi_in_progress": True}, cat, "mde")
    assert "Windows Installer is busy" in busy.package_manager_problem


def _mp_status(**fields: str) -> dict[str, str]:
    """Get-MpComputerStatus fields (and the onboarding state) as the health commands print them."""
    return {"OnboardingState": "1", "Sense": "Running", "AMServiceEnabled": "True",
            "DefenderSignaturesOutOfDate": "False", "AMRunningMode": "Normal",
            "AntivirusEnabled": "True", "RealTimeProtectionEnabled": "True"} | fields


def _proof(health: dict[str, str], **extra: Any) -> dict[str, Any]:
    path = "C:\\Windows\\Temp\\avmigrate-eicar-4242.com"
    return {"service": "active", "health": health, "health_rc": dict.fromkeys(health, 0),
            "signatures": "0", "banned_running": ["active"],
            "detection": {"gone": "True", "path": path,
                          "evidence": f"ThreatID  : 2147519003\nResources : {{file:_{path}}}"},
            "removal_pending_reboot": False} | extra


@pytest.mark.parametrize(("health", "extra", "beside", "problem"), [
    (_mp_status(), {}, False, None),
    (_mp_status(AMRunningMode="Passive"), {}, True, None),
    (_mp_status(AMRunningMode="Passive"), {}, False, "AMRunningMode is 'Passive'"),
    (_mp_status(AMRunningMode="Normal"), {}, True, "AMRunningMode is 'Normal'"),
    (_mp_status(OnboardingState="0"), {}, False, "OnboardingState is '0'"),
    (_mp_status(RealTimeProtectionEnabled="False"), {}, False,
     "RealTimeProtectionEnabled is 'False'"),
    (_mp_status(), {"signatures": "9"}, False, "signatures are 9 days old"),
    (_mp_status(), {"removal_pending_reboot": True}, False, "completes only at the next reboot"),
    (_mp_status(), {"detection": {"gone": "True", "path": "C:\\x.com", "evidence": ""}},
     False, "does not show this test's detection"),
])
def test_recorded_defender_status_is_judged(health: dict[str, str], extra: dict[str, Any],
                                            beside: bool, problem: str | None) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from orchestrator.core import facts as factlib  # noqa: PLC0415

    found = factlib.verification_problem(_proof(health, **extra), catalogue.load(), "mde",
                                         datetime.now(UTC), beside, "windows")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


probe = _load(COLLECTION / "plugins/module_utils/probe_host.py", "avmigrate_probe_host")


def test_the_probe_reads_rpm_hosts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """rpm -q and dnf versionlock outputs as rpm prints them; os-release of Rocky Linux 9."""
    calls: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        if argv[:2] == ["rpm", "-q"]:
            return 1, ("kesl\t12.1.0-1208\npackage kesl-gui is not installed\n"
                       "klnagent64\t15.1.0-20748\n"), ""
        if argv[:2] == ["rpm", "-qa"]:
            return 0, "", ""
        if argv[:2] == ["dnf", "-q"]:
            return 0, "kesl-0:12.1.0-1208.*\n", ""
        raise AssertionError(argv)

    monkeypatch.setattr(probe, "_run", run)
    assert probe.packages(["kesl", "kesl-gui", "klnagent64"], "RedHat") == {
        "kesl": "12.1.0-1208", "klnagent64": "15.1.0-20748"}
    assert probe.rpm_health() == ("", ["kesl"])
    release = tmp_path / "os-release"
    release.write_text('NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\n'
                       'ID_LIKE="rhel centos fedora"\n')
    real_open = open

    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        return real_open(release if path == "/etc/os-release" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert probe.os_release() == ("RedHat", "Rocky", "9.4")


def test_rpm_database_damage_and_version_locks_block_the_host() -> None:
    from orchestrator.core import facts as factlib  # noqa: PLC0415

    cat = catalogue.load()
    base = {"os_family": "RedHat", "platform": "redhat", "distribution": "Rocky",
            "distribution_version": "9.4", "packages": {"kesl": "12.1.0-1208"},
            "services": {"kesl.service": "active"}, "paths": {}, "processes": {"kesl": 2},
            "info": {}, "free_mb": {}, "rpmdb_problem": "", "dnf_versionlocks": []}
    facts = factlib.parse_discovery(base, cat, "clamav")
    assert [b.product for b in facts.banned] == ["kesl"] and facts.package_manager_ok
    assert not facts.replacement_installed  # EPEL's packages, not Debian's
    damaged = factlib.parse_discovery(base | {"rpmdb_problem": "error: rpmdb: BDB0113"}, cat,
                                      "clamav")
    assert "rpm --rebuilddb" in damaged.package_manager_problem
    locked = factlib.parse_discovery(base | {"dnf_versionlocks": ["kesl"]}, cat, "clamav")
    assert "dnf versionlock delete kesl" in locked.package_manager_problem
