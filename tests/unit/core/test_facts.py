from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.core import facts
from orchestrator.inputs import catalogue

# What avmigrate.migration.probe reported for a lab host with KESL 12 and the Network Agent
# (trimmed).
REPORT = {
    "os_family": "Debian",
    "distribution": "Debian",
    "distribution_version": "12.11",
    "packages": {"kesl": "12.1.0.1297", "klnagent64": "14.2.0.26967"},
    "services": {"kesl.service": "active", "kesl-supervisor.service": "active",
                 "klnagent64.service": "inactive", "clamav-daemon.service": "inactive"},
    "paths": {"/opt/kaspersky/kesl": True, "/var/opt/kaspersky/kesl": True,
              "/opt/kaspersky/klnagent64": True, "/var/opt/kaspersky/klnagent64": False},
    "processes": {"kesl": 2, "klnagent64": 0},
    "info": {"kesl": "Name:   Kaspersky Endpoint Security 12.1 for Linux\n"
                     "Version:                               12.1.0.1297\n"
                     "Last release of databases:             2024-09-27 21:04:00\n",
             "klnagent64": "Network Agent version: 14.2.0.26967\n"},
    "free_mb": {"/var/cache/apt/archives": 8, "/var/lib": 81163},
    "dpkg_journal": [],
    "dpkg_audit": "",
    "dpkg_locks": [],
}


@pytest.fixture(scope="module")
def cat() -> catalogue.Catalogue:
    return catalogue.load()


def test_discovery_finds_both_products_with_versions(cat: catalogue.Catalogue) -> None:
    f = facts.parse_discovery(REPORT, cat, "clamav")
    by_id = {b.product: b for b in f.banned}
    assert set(by_id) == {"kesl", "klnagent64"}
    assert by_id["kesl"].version == "12.1.0.1297"
    assert by_id["kesl"].signatures_date == "2024-09-27 21:04:00"
    assert by_id["kesl"].services_active == ("kesl.service", "kesl-supervisor.service")
    assert by_id["kesl"].processes == 2
    assert by_id["klnagent64"].version == "14.2.0.26967"
    assert by_id["klnagent64"].services_active == ()
    assert f.free_mb == {"/var/cache/apt/archives": 8, "/var/lib": 81163}
    assert not f.replacement_installed
    assert f.package_manager_ok


def test_low_disk_is_a_preflight_problem(cat: catalogue.Catalogue) -> None:
    f = facts.parse_discovery(REPORT, cat, "clamav")
    problems = facts.preflight_problems(f, cat, "clamav")
    assert problems == ["low disk: 8 MiB free at /var/cache/apt/archives, ClamAV needs 40 MiB"]


def test_enough_disk_and_healthy_dpkg_has_no_problem(cat: catalogue.Catalogue) -> None:
    report = dict(REPORT, free_mb={"/var/cache/apt/archives": 40})
    assert facts.preflight_problems(facts.parse_discovery(report, cat, "clamav"), cat,
                                    "clamav") == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"dpkg_journal": ["0000"]}, "dpkg was interrupted"),
        ({"dpkg_audit": "The following packages are only half configured"}, "dpkg --audit"),
        ({"apt_holds": ["kesl", "vim"]}, "held packages kesl (apt-mark hold)"),
        ({"apt_holds": ["clamav-daemon"]}, "apt-mark unhold clamav-daemon"),
    ],
)
def test_broken_package_manager_is_reported(cat: catalogue.Catalogue, change: dict[str, object],
                                            needle: str) -> None:
    f = facts.parse_discovery(dict(REPORT, **change), cat, "clamav")
    assert not f.package_manager_ok
    assert needle in f.package_manager_problem
    assert any("broken package state" in p for p in facts.preflight_problems(f, cat, "clamav"))


def test_a_held_lock_or_an_unrelated_hold_does_not_block(cat: catalogue.Catalogue) -> None:
    """unattended-upgrades holding the dpkg lock now: the steps wait for it."""
    report = dict(REPORT, dpkg_locks=["unattended-upgr (pid 812)"], apt_holds=["linux-image"],
                  free_mb={"/var/cache/apt/archives": 40})
    f = facts.parse_discovery(report, cat, "clamav")
    assert f.package_manager_ok, f.package_manager_problem
    assert facts.preflight_problems(f, cat, "clamav") == []


def test_clean_host_has_no_banned_product(cat: catalogue.Catalogue) -> None:
    report = dict(REPORT, packages={}, services={}, paths={}, processes={}, info={})
    assert facts.parse_discovery(report, cat, "clamav").banned == ()


def test_other_platform_has_no_replacement(cat: catalogue.Catalogue) -> None:
    f = facts.parse_discovery(dict(REPORT, os_family="Windows", free_mb={}), cat, "clamav")
    assert facts.preflight_problems(f, cat, "clamav") == ["no ClamAV for platform Windows"]


NOW = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)


CLAMD = "ClamAV 1.4.6/1/Fri Nov 27 18:36:06 2026"


def test_signature_age_from_what_each_product_prints(cat: catalogue.Catalogue) -> None:
    clamd = cat.verify_spec("clamav")["signatures"]
    age = facts.signature_age_days(clamd, CLAMD, NOW)
    assert age is not None
    assert 0 < age < 0.1
    assert facts.signature_age_days(clamd, "garbage", NOW) is None
    mdatp = cat.verify_spec("mde")["signatures"]
    assert facts.signature_age_days(mdatp, "2880", NOW) == 2.0  # minutes ago
    assert facts.signature_age_days(mdatp, "unavailable", NOW) is None


def _clamd(daemon: str, output: str, rc: str = "1") -> dict[str, object]:
    """verify.yml's report of ClamAV (`clamdscan --no-summary -`, the EICAR string on its
    standard input)."""
    return {"service": "active", "health": {}, "signatures": daemon,
            "detection": {"rc": rc, "output": output}}


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (_clamd(CLAMD, "/tmp/x: Eicar FOUND"), None),
        (_clamd(CLAMD, "/tmp/x: OK", "0"), "the scan did not report the EICAR test file"),
        (_clamd(CLAMD, "/tmp/x: Eicar FOUND", "0"),
         "the scan did not report the EICAR test file"),
        (_clamd("ClamAV 1.4.6/1/Fri Sep 27 18:36:06 2024", "/tmp/x: Eicar FOUND"),
         "signatures are 791 days old (limit 7)"),
        (_clamd("", "/tmp/x: Eicar FOUND"), "cannot read the signature age"),
        ({**_clamd(CLAMD, "/tmp/x: Eicar FOUND"), "service": "inactive"},
         "clamav-daemon.service is not running"),
    ],
)
def test_verification_problem(cat: catalogue.Catalogue, report: dict[str, str],
                              problem: str | None) -> None:
    got = facts.verification_problem(report, cat, "clamav", NOW)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(problem)


# `mdatp health --field X` prints the value alone (Microsoft's health-status page lists the
# fields); these are the values of a healthy, onboarded device.
MDE_ACTIVE = {"healthy": "true", "licensed": "true", "health_issues": "[]",
              "conflicting_applications": "[]", "definitions_status": '"up_to_date"',
              "passive_mode_enabled": "false", "real_time_protection_enabled": "true"}


TEST_FILE = "/tmp/ansible.x1y2.avmigrate-eicar"
EXPIRES = '"Jun 13, 2027 at 12:00:00 AM"'  # mdatp health --field product_expiration


def _mde(health: dict[str, str], gone: str = "True", evidence: str = "EICAR",
         path: str = TEST_FILE) -> dict[str, Any]:
    return {"service": "active", "health": health, "signatures": "42", "expires": EXPIRES,
            "banned_running": ["active"],
            "detection": {"gone": gone, "path": TEST_FILE, "evidence":
                          f'Name: Virus:DOS/{evidence}_Test_File\nPath: "{path}"'}}


@pytest.mark.parametrize(
    ("report", "passive", "problem"),
    [
        (_mde(MDE_ACTIVE), False, None),
        (_mde(MDE_ACTIVE | {"passive_mode_enabled": "true",
                            "real_time_protection_enabled": "false"}), True, None),
        # passive is not protection: the active proof refuses it
        (_mde(MDE_ACTIVE | {"passive_mode_enabled": "true"}), False, "passive_mode_enabled"),
        # not onboarded: unlicensed, unhealthy
        (_mde(MDE_ACTIVE | {"licensed": "false", "healthy": "false",
                            "health_issues": '["missing license"]'}), True, "healthy"),
        # active beside a running KESL
        (_mde(MDE_ACTIVE | {"conflicting_applications": '["name:kesl, pid:812"]'}), False,
         "conflicting_applications"),
        # expired build
        (_mde(MDE_ACTIVE | {"healthy": "false", "health_issues": '["product expired"]'}),
         False, "healthy"),
        (_mde(MDE_ACTIVE, gone="False"), False, "the EICAR test file was still on disk"),
        (_mde(MDE_ACTIVE, evidence="Nothing"), False, "`mdatp threat list` does not show"),
        # an old detection in the threat history proves nothing about this test
        (_mde(MDE_ACTIVE, path="/tmp/eicar-of-last-week.com"), False,
         "`mdatp threat list` does not show this test's detection"),
        ({**_mde(MDE_ACTIVE | {"passive_mode_enabled": "true"}), "banned_running":
          ["inactive"]}, True, "the banned product's protection does not run"),
        ({**_mde(MDE_ACTIVE), "signatures": "20160"}, False, "signatures are 14 days old"),
        # a field that cannot be read is not an empty list
        (_mde(MDE_ACTIVE | {"conflicting_applications": ""}), False,
         "conflicting_applications is ''"),
        ({**_mde(MDE_ACTIVE), "health_rc": {"conflicting_applications": 1}}, False,
         "conflicting_applications could not be read (`mdatp health --field "
         "conflicting_applications` exit 1)"),
        ({**_mde(MDE_ACTIVE), "expires": '"Dec 10, 2026 at 12:00:00 AM"'}, False,
         "the build expires in 12 days (on 2026-12-10; at least 14 needed)"),
        ({**_mde(MDE_ACTIVE), "expires": "unavailable"}, False,
         "cannot read when the build expires"),
    ],
)
def test_mde_is_judged_by_its_own_health_fields(
        cat: catalogue.Catalogue, report: dict[str, Any], passive: bool,
        problem: str | None) -> None:
    got = facts.verification_problem(report, cat, "mde", NOW, beside=passive)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(problem), got


AID = 'aid="1a2b3c4d5e6f70819a2b3c4d5e6f7081".'


@pytest.mark.parametrize(
    ("aid", "rfm", "gone", "problem"),
    [
        (AID, "rfm-state=false.", "True", None),
        ("aid is not set.", "rfm-state=false.", "True", "aid is 'aid is not set.'"),
        (AID, "rfm-state=true.", "True", "rfm-state is 'rfm-state=true.'"),
        (AID, "rfm-state=false.", "False", "the EICAR test file was still on disk"),
    ],
)
# Beside a running KESL its detection cannot be told from KESL's: health is all that is
# proven there (with KESL seen running); detection is proven after the removal.
def test_falcon_is_judged_by_aid_rfm_and_detection(
        cat: catalogue.Catalogue, aid: str, rfm: str, gone: str, problem: str | None) -> None:
    report = {"service": "active", "health": {"aid": aid, "rfm-state": rfm},
              "detection": {"gone": gone}}
    got = facts.verification_problem(report, cat, "falcon", NOW)
    assert got == problem if problem is None else (got or "").startswith(problem), got
    beside = {**report, "banned_running": ["active"], "detection": {}}
    health_problem = None if aid == AID and rfm == "rfm-state=false." else problem
    assert facts.verification_problem(beside, cat, "falcon", NOW, beside=True) == (
        health_problem) or (facts.verification_problem(beside, cat, "falcon", NOW, beside=True)
                            or "").startswith(str(health_problem))
