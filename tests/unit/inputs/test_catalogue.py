from __future__ import annotations

import copy
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
    assert set(cat.banned) == {"kesl", "klnagent64"}
    assert cat.replacement("clamav")["id"] == "clamav"
    assert cat.coexists("clamav", ["kesl", "klnagent64"])
    assert not cat.coexists("clamav", ["something-else"])
    assert len(cat.digest) == 64


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
    ],
)
def test_bad_catalogue_entries_are_refused(mutate: Any, message: str) -> None:
    with pytest.raises(CatalogueError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
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
