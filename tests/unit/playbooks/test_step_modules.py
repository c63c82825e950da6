"""The Linux step modules' own logic, on recorded readings and scratch files: what the proof
requires (verify_host.problems, as verify.yml's asserts did), what "nothing remains" means
(probe_host.left_behind), rpm's answer for missing packages (remove), and lineinfile's
semantics (install). The modules themselves run on real hosts in the lab tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.assets import COLLECTIONS_ROOT

# Imported as the modules import each other on a host; then forgotten, so that Ansible's
# own collection loader (other tests in this process) never meets these entries.
sys.path.insert(0, str(COLLECTIONS_ROOT))
try:
    from ansible_collections.avmigrate.migration.plugins.module_utils import (
        probe_host,
        verify_host,
    )
    from ansible_collections.avmigrate.migration.plugins.modules import install, remove
finally:
    sys.path.remove(str(COLLECTIONS_ROOT))
    for _name in [m for m in sys.modules if m.startswith("ansible_collections")]:
        del sys.modules[_name]

CLAMAV = {"service": "clamav-daemon.service",
          "detection": {"method": "scan", "input": "stdin", "command": ["clamdscan", "-"],
                        "detected_rc": 1, "detected_text": "FOUND"}}
MDE_BESIDE = {"service": "mdatp.service",
              "health": [{"name": "healthy", "command": ["mdatp", "health"], "expect": "true"}]}


def readings(**over: Any) -> dict[str, Any]:
    base = {"service": "active", "health": {}, "health_rc": {}, "signatures": "",
            "expires": "", "banned_running": [],
            "detection": {"rc": 1, "output": "stdin: Eicar-Signature FOUND", "gone": False,
                          "path": "", "evidence": ""}}
    return base | over


def test_a_scan_that_reports_eicar_proves_and_anything_else_does_not() -> None:
    assert verify_host.problems(readings(), CLAMAV) == []
    missed = readings(detection={"rc": 0, "output": "stdin: OK", "gone": False, "path": "",
                                 "evidence": ""})
    assert verify_host.problems(missed, CLAMAV) == ["the EICAR test file was not detected"]
    assert verify_host.problems(readings(service="inactive"), CLAMAV)[0].startswith(
        "clamav-daemon.service is inactive")


def test_beside_the_banned_product_it_must_be_seen_running_and_healthy() -> None:
    healthy = readings(health={"healthy": "true"}, health_rc={"healthy": 0},
                       banned_running=["active", "active"])
    assert verify_host.problems(healthy, MDE_BESIDE, beside=True) == []
    stopped = healthy | {"banned_running": ["active", "inactive"]}
    assert "does not run" in verify_host.problems(stopped, MDE_BESIDE, beside=True)[0]
    sick = healthy | {"health": {"healthy": "false"}}
    assert verify_host.problems(sick, MDE_BESIDE, beside=True) == [
        "healthy is false (must match true)"]
    unreadable = healthy | {"health_rc": {"healthy": 127}}
    assert verify_host.problems(unreadable, MDE_BESIDE, beside=True)


def test_what_remains_of_a_banned_product_is_named() -> None:
    kesl = {"kesl": {"detect": {"packages": ["kesl"], "services": ["kesl.service"],
                                "paths": ["/opt/kaspersky/kesl"], "process_pattern": "kesl"}}}
    gone = {"packages": {"clamav-daemon": "1.0"}, "services": {"kesl.service": "inactive"},
            "paths": {"/opt/kaspersky/kesl": False}, "processes": {"kesl": 0}}
    assert probe_host.left_behind(gone, kesl) == []
    left = {"packages": {"kesl": "12.1"}, "services": {"kesl.service": "active"},
            "paths": {"/opt/kaspersky/kesl": True}, "processes": {"kesl": 2}}
    assert probe_host.left_behind(left, kesl) == [
        "package kesl", "running service kesl.service", "path /opt/kaspersky/kesl",
        "processes of kesl"]


def test_rpm_s_not_installed_line_is_not_taken_for_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], env: Any = None, timeout: int = 0) -> tuple[int, str, str]:
        del env, timeout
        assert argv[:2] == ["rpm", "-q"]
        return 1, "kesl\npackage kesl-gui is not installed\n", ""

    monkeypatch.setattr(remove, "_run", run)
    assert remove._installed(["kesl-gui", "kesl"], "dnf") == ["kesl"]


def test_lines_are_set_as_lineinfile_sets_them(tmp_path: Path) -> None:
    conf = tmp_path / "freshclam.conf"
    conf.write_text("# PrivateMirror old\nPrivateMirror a\nDatabaseOwner clamav\n"
                    "PrivateMirror b\n")
    conf.chmod(0o640)
    assert install._line(str(conf), "^PrivateMirror ", "PrivateMirror mirror.example")
    assert conf.read_text() == ("# PrivateMirror old\nPrivateMirror a\nDatabaseOwner clamav\n"
                                "PrivateMirror mirror.example\n")
    assert conf.stat().st_mode & 0o777 == 0o640
    assert not install._line(str(conf), "^PrivateMirror ", "PrivateMirror mirror.example")
    with pytest.raises(install.Failed, match="it should come with the packages"):
        install._line(str(tmp_path / "missing.conf"), "^X ", "X 1")
