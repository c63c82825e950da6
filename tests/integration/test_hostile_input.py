"""Hostile inventories: refused before any connection, and never evaluated on the controller.

These run real Ansible (ansible-runner) against this machine's discard port (127.0.0.1:9), so
nothing leaves the machine and every connection is refused at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import cli
from orchestrator.core.models import HostState
from orchestrator.engine.engine import Engine
from orchestrator.execute.executor import RunnerExecutor
from orchestrator.execute.step import ExecConfig
from orchestrator.inputs import catalogue
from orchestrator.inputs.inventory import load
from orchestrator.store.sqlite import SqliteStore

MARKER = "{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}"


@pytest.mark.parametrize(
    ("inventory", "suffix", "needle"),
    [
        ("[web]\nok1 ansible_host=127.0.0.1\nbad;id ansible_host=127.0.0.1\n", "ini",
         "host 'bad;id' contains ';'"),
        ("all:\n  hosts:\n    'x$(id)':\n      ansible_host: 127.0.0.1\n", "yml",
         "contains '$' '(' ')'"),
        ("all:\n  hosts:\n    'a`id`b':\n", "yml", "contains '`'"),
        ("all:\n  hosts:\n    good:\n      ansible_host: '127.0.0.1;reboot'\n", "yml",
         "ansible_host '127.0.0.1;reboot' contains ';'"),
        ("all:\n  hosts:\n    good:\n      ansible_ssh_common_args: "
         "'-o StrictHostKeyChecking=no'\n", "yml", "is not strict host key checking"),
        ("all:\n  hosts:\n    good:\n      ansible_ssh_extra_args: "
         "'-o UserKnownHostsFile=/dev/null'\n", "yml", "throws every host key away"),
        ("all:\n  hosts:\n    good:\n      ansible_ssh_args: "
         "'-o StrictHostKeyChecking=false'\n", "yml", "is not strict host key checking"),
        ("all:\n  vars:\n    ansible_ssh_common_args: '-o KnownHostsCommand=/bin/true'\n"
         "  hosts:\n    good:\n", "yml", "KnownHostsCommand"),
        ("all:\n  hosts:\n    good:\n      ansible_ssh_executable: /bin/true\n", "yml",
         "ansible_ssh_executable"),
        ("all:\n  hosts:\n    good:\n      ansible_host_key_checking: false\n", "yml",
         "turns host key checking off"),
        ("all:\n  hosts:\n    good:\n  children:\n    bad-group!:\n      hosts:\n        good:\n",
         "yml", "group 'bad-group!' is not a valid name"),
        ("[web\nh1\n", "ini", "inventory"),
        ("all:\n  hosts: [1, 2\n", "yml", "inventory"),
    ],
)
def test_a_hostile_inventory_is_refused_before_anything_is_contacted(
        tmp_path: Path, inventory: str, suffix: str, needle: str) -> None:
    inv = tmp_path / f"inv.{suffix}"
    inv.write_text(inventory)
    state = tmp_path / "state.db"
    for command in (["discover"], ["plan", "--out", str(tmp_path / "p")], ["run", "--yes"]):
        result = CliRunner().invoke(cli, ["--state", str(state), *command, "-i", str(inv)])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1, result.output
        assert needle in lines[0], lines[0]
        assert str(inv) in lines[0]
    assert not state.exists()  # refused before the state was even opened
    assert not (tmp_path / "avmigrate-artifacts").exists()  # and before Ansible ran


def run_discover(tmp_path: Path, inventory: Path) -> HostState:
    store = SqliteStore(tmp_path / "state.db")
    executor = RunnerExecutor(ExecConfig(artifacts_dir=tmp_path / "artifacts", forks=2))
    engine = Engine(store, executor, catalogue.load(), load(inventory), "clamav",
                    log=lambda _m: None)
    records = engine.discover(["h1"])
    return records["h1"].state


def booby_trapped(tmp_path: Path) -> tuple[Path, Path]:
    """An inventory whose ansible_user is a template that would create `marker`."""
    marker = tmp_path / "pwned"
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"h1": {
        "ansible_host": "127.0.0.1", "ansible_port": 9,
        "ansible_user": MARKER.replace("MARKER", str(marker)),
    }}}}))
    return inv, marker


def test_a_template_in_an_inventory_value_is_never_evaluated(tmp_path: Path) -> None:
    inv, marker = booby_trapped(tmp_path)
    assert run_discover(tmp_path, inv) == HostState.UNREACHABLE
    assert not marker.exists(), "Ansible evaluated a template from the inventory"


def test_the_same_template_is_evaluated_by_plain_ansible(tmp_path: Path) -> None:
    """The test above can fail: given to ansible-playbook as is, the template does run."""
    inv, marker = booby_trapped(tmp_path)
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{"hosts": "all", "gather_facts": False,
                                 "tasks": [{"ansible.builtin.ping": {}}]}]))
    ansible = Path(sys.executable).with_name("ansible-playbook")
    subprocess.run([str(ansible), "-i", str(inv), str(play)], capture_output=True,
                   timeout=120, check=False, env={"PATH": "/usr/bin:/bin",
                                                  "ANSIBLE_HOST_KEY_CHECKING": "True",
                                                  "HOME": str(tmp_path)})
    assert marker.exists()


def test_an_inventory_ssh_args_cannot_remove_strict_host_key_checking(tmp_path: Path) -> None:
    """Case 9 of issue 12: a host's own `ansible_ssh_args` replaces the ssh_args avmigrate
    gives Ansible. Whatever it says, the ssh command real Ansible runs starts with strict
    host key checking (read from Ansible's own -vvvv log of the command it executed)."""
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"h1": {
        "ansible_host": "127.0.0.1", "ansible_port": 9,
        "ansible_ssh_args": "-o ControlMaster=no -o ConnectTimeout=3",
    }}}}))
    artifacts = tmp_path / "artifacts"
    store = SqliteStore(tmp_path / "state.db")
    executor = RunnerExecutor(ExecConfig(artifacts_dir=artifacts, forks=1, verbosity=4))
    engine = Engine(store, executor, catalogue.load(), load(inv), "clamav",
                    log=lambda _m: None)
    assert engine.discover(["h1"])["h1"].state == HostState.UNREACHABLE
    said = "\n".join(p.read_text(errors="replace") for p in artifacts.glob("*/artifacts/*/stdout"))
    commands = [line for line in said.splitlines() if "SSH: EXEC" in line]
    assert commands, said[-2000:]
    for line in commands:
        first = line.find("StrictHostKeyChecking")
        assert first >= 0 and line[first:].startswith("StrictHostKeyChecking=yes"), line
        assert "ControlMaster=no" in line  # the estate's own options still apply
