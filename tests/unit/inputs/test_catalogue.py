from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.core.errors import CatalogueError
from orchestrator.inputs import catalogue


def raw() -> dict[str, Any]:
    data = yaml.safe_load((Path(catalogue.__file__).parents[1] / "data/catalogue.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_builtin_catalogue_loads() -> None:
    cat = catalogue.load()
    assert set(cat.banned) == {"kesl", "klnagent64", "kes", "klnagent"}
    assert set(cat.banned_on("debian")) == set(cat.banned_on("redhat")) == {"kesl", "klnagent64"}
    assert set(cat.banned_on("windows")) == {"kes", "klnagent"}
    assert cat.replacement("clamav")["id"] == "clamav"
    assert cat.coexists("clamav", ["kesl", "klnagent64"])
    assert not cat.coexists("clamav", ["something-else"])
    assert len(cat.digest) == 64
    # MDE coexists with KESL only passive; the Network Agent is no on-access product.
    assert cat.coexists("mde", ["kesl", "klnagent64"]) and cat.passive("mde")
    assert cat.passive_beside("mde", ["kesl"]) and not cat.passive_beside("mde", ["klnagent64"])
    assert not cat.passive("falcon") and not cat.passive("clamav")
    assert cat.secret_names() == {"kesl_uninstall_password", "mde_onboarding", "falcon_cid",
                                  "kes_uninstall_password", "klnagent_uninstall_password",
                                  "mde_onboarding_windows"}
    assert cat.supports("clamav", "swap") and not cat.supports("mde", "swap")
    # Per platform: each key of on_platform replaces the entry's own, whole.
    assert not cat.supports("clamav", "swap", "redhat")
    assert cat.verify_spec("clamav", platform="redhat")["service"] == "clamd@scan.service"
    assert cat.verify_spec("clamav")["service"] == "clamav-daemon.service"
    assert cat.replacement("mde", "windows")["role"].endswith(".replacement_mde_windows")
    assert cat.enrol_secret("mde", "windows") == "mde_onboarding_windows"
    assert cat.enrol_secret("mde", "debian") == "mde_onboarding"
    assert cat.entry("banned", "kesl", "redhat")["remove"]["packages"] == ["kesl-gui", "kesl"]
    assert cat.reboot_after_removal(["kes"], "windows")
    assert not cat.reboot_after_removal(["kesl"], "debian")
    assert cat.passive_beside("mde", ["kes"]) and cat.coexists("mde", ["kes", "klnagent"])


def _mutated(fn: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw())
    fn(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version: must be 1"),
        (lambda d: d["banned"]["kesl"].pop("remove"), "banned.kesl: missing keys ['remove']"),
        (lambda d: d["banned"]["kesl"]["remove"].update(leftovers=["/"]),
         "is not a safe absolute path"),
        (lambda d: d["banned"]["kesl"]["remove"].update(leftovers=["/opt/../etc"]),
         "is not a safe absolute path"),
        (lambda d: d["banned"]["kesl"]["detect"].update(packages="kesl"),
         "banned.kesl.detect.packages: must be a list"),
        (lambda d: d["replacements"]["clamav"].update(coexists_with=["ghost"]),
         "'ghost' is not a banned product"),
        (lambda d: d["replacements"]["clamav"].update(colour="red"), "unknown keys ['colour']"),
        (lambda d: d["replacements"]["mde"].pop("verify_beside"),
         "replacements.mde.verify_beside: a product that runs passive beside a banned product "
         "needs verify_beside"),
        (lambda d: d["replacements"]["falcon"].pop("verify_beside"),
         "an on-access detection cannot be told from the banned product's own"),
        (lambda d: d["replacements"]["mde"]["verify"]["expires"].update(min_days=-1),
         "replacements.mde.verify.expires.min_days: must be a number of days"),
        (lambda d: d["replacements"]["mde"].update(coexists_with=["kesl"]),
         "['kesl'] cannot be in coexists_with too"),
        (lambda d: d["replacements"]["mde"]["verify"]["health"][0].update(expect="(unclosed"),
         "replacements.mde.verify.health.0.expect: is not a regular expression"),
        (lambda d: d["replacements"]["clamav"]["verify"]["signatures"].update(pattern="(.+)"),
         "needs a (?P<date>...) group with a `format`, or a (?P<minutes>...) or "
         "(?P<days>...) group"),
        (lambda d: d["replacements"]["clamav"]["verify"]["detection"].update(method="sniff"),
         "must be scan or on_access"),
        (lambda d: d["replacements"]["clamav"]["verify"]["detection"].pop("detected_rc"),
         "a scan needs command, detected_rc and detected_text"),
        (lambda d: d["replacements"]["falcon"]["verify"].pop("detection"),
         "replacements.falcon.verify: missing keys ['detection']"),
        (lambda d: d["replacements"]["falcon"]["enrol"].update(secret="CID!"),
         "replacements.falcon.enrol.secret: must name a credential"),
        (lambda d: d["replacements"]["mde"].update(strategies=["teleport"]),
         "replacements.mde.strategies: must list some of make-before-break, swap"),
        (lambda d: d["replacements"]["falcon"]["verify"].update(max_signature_age_days=7),
         "with `signatures` to read the age from"),
        # Platforms: a known one, overrides only for the entry's platforms and only of keys
        # that may differ per platform, Windows products found and removed as Windows does.
        (lambda d: d["banned"]["kesl"].update(platforms=["solaris"]),
         "banned.kesl.platforms: must list some of debian, redhat, windows"),
        (lambda d: d["replacements"]["falcon"]["on_platform"].update(windows={}),
         "replacements.falcon.on_platform.windows: is not one of the entry's platforms"),
        (lambda d: d["replacements"]["mde"]["on_platform"]["windows"].update(
            coexists_with=["kesl"]),
         "replacements.mde.on_platform.windows: unknown keys ['coexists_with']"),
        (lambda d: d["banned"]["kes"]["detect"].update(registry=[]),
         "banned.kes.detect.registry: a Windows product is found by its Uninstall"),
        (lambda d: d["banned"]["kes"]["remove"].pop("msi"),
         "banned.kes.remove.msi: a Windows product is removed with msiexec"),
        (lambda d: d["banned"]["kes"]["remove"]["msi"]["properties"].update(klpasswd="x"),
         "banned.kes.remove.msi.properties: must map public MSI property names"),
        (lambda d: d["banned"]["kes"]["remove"].pop("secret"),
         "'{secret}' in a property needs remove.secret"),
        (lambda d: d["banned"]["kes"]["remove"].update(reboot="sometimes"),
         "banned.kes.remove.reboot: must be one of never, may"),
        (lambda d: d["banned"]["kes"]["remove"].update(leftovers=["C:\\"]),
         "is not a safe absolute path"),
        (lambda d: d["banned"]["kesl"]["on_platform"]["redhat"]["remove"].update(
            msi={"properties": {}}), "banned.kesl.remove.msi: is for Windows only"),
    ],
)
def test_bad_catalogue_entries_are_refused(mutate: Any, message: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(message)):
        catalogue.parse(_mutated(mutate), "test")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("version: 1\nbanned: [\n")
    with pytest.raises(CatalogueError, match=r"c\.yml:3: not valid YAML"):
        catalogue.load(f)


def test_scenario_errors_name_the_problem(tmp_path: Path) -> None:
    from orchestrator.core.errors import ScenarioError  # noqa: PLC0415
    from orchestrator.lab import scenario  # noqa: PLC0415

    assert len(scenario.load(None).assign(12)) == 12
    with pytest.raises(ScenarioError, match="use --hosts 7 or more"):
        scenario.load(None).assign(3)
    bad = tmp_path / "s.yml"
    bad.write_text("default: x\nprofiles: {x: {packages: [kesl99]}}\n")
    with pytest.raises(ScenarioError, match="names package 'kesl99'"):
        scenario.load(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        scenario.load(tmp_path / "missing.yml")


def test_an_invalid_catalogue_file_names_file_line_and_key(tmp_path: Path) -> None:
    text = (Path(catalogue.__file__).parents[1] / "data" / "catalogue.yml").read_text()
    text = text.replace("      secret: kesl_uninstall_password\n",
                        "      secret: Not A Name\n")
    f = tmp_path / "c.yml"
    f.write_text(text)
    line = text.splitlines().index("      secret: Not A Name") + 1
    with pytest.raises(CatalogueError) as caught:
        catalogue.load(f)
    assert str(caught.value).startswith(f"{f}:{line}: banned.kesl.remove.secret: must name")
