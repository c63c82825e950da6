"""The user's ansible.cfg as Ansible finds and reads it, and what avmigrate changes in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.errors import InventoryError
from orchestrator.inputs import ansiblecfg
from orchestrator.inputs.sources import Sources, find_config


@pytest.fixture(autouse=True)
def _no_ansible_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_SSH_ARGS", "ANSIBLE_PIPELINING", "ANSIBLE_FORKS",
                "ANSIBLE_VAULT_IDENTITY_LIST", "ANSIBLE_VAULT_PASSWORD_FILE",
                "ANSIBLE_INVENTORY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_found_as_ansible_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "repo"
    here.mkdir()
    assert find_config(here) is None or str(find_config(here)).startswith("/etc/ansible")
    (here / "ansible.cfg").write_text("[defaults]\nforks = 7\n")
    assert find_config(here) == (here / "ansible.cfg").resolve()
    here.chmod(0o777)  # Ansible ignores ./ansible.cfg in a world-writable directory
    try:
        assert find_config(here) != (here / "ansible.cfg").resolve()
    finally:
        here.chmod(0o755)
    other = tmp_path / "other.cfg"
    other.write_text("[defaults]\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(other))
    assert find_config(here) == other.resolve()


def test_settings_are_read_and_paths_resolved_as_ansible_does(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "inventories" / "prod").mkdir(parents=True)
    (repo / "ansible.cfg").write_text(
        "[defaults]\ninventory = inventories/prod/hosts.ini\nforks = 8\n"
        "vault_identity_list = prod@.vault-pass, dev@prompt\n"
        "vault_password_file = secrets/pass\nhost_key_checking = False\n"
        "[ssh_connection]\nssh_args = -o ControlMaster=auto -o ControlPersist=90s\n"
        "pipelining = False\n")
    got = ansiblecfg.load(repo)
    assert got.path == (repo / "ansible.cfg").resolve()
    assert got.forks == 8 and got.pipelining is False
    assert got.ssh_args == "-o ControlMaster=auto -o ControlPersist=90s"
    # A path setting is relative to the file; a vault identity to where Ansible runs.
    assert got.inventory == ((repo / "inventories/prod/hosts.ini").resolve(),)
    assert f"prod@{(repo / '.vault-pass').resolve()}" in got.vault_ids
    assert f"default@{(repo / 'secrets/pass').resolve()}" in got.vault_ids
    said = "\n".join(got.overrides())
    assert "-o StrictHostKeyChecking=yes first" in said
    assert "host_key_checking: on for avmigrate's steps" in said
    assert "pipelining" not in said  # the file sets it: not changed
    # Sources without -i take the configuration's inventory. A prompting identity needs
    # --ask-vault-pass (asked once; steps never prompt where nobody answers).
    with pytest.raises(InventoryError, match="--ask-vault-pass"):
        Sources(()).resolved(got.inventory, got.vault_ids)
    src = Sources((), vault_password=b"typed").resolved(got.inventory, got.vault_ids)
    assert src.paths == got.inventory
    assert all(not i.endswith("@prompt") for i in src.vault_ids)


@pytest.mark.parametrize("bad", ["-o StrictHostKeyChecking=no",
                                 "-o UserKnownHostsFile=/dev/null",
                                 "-o StrictHostKeyChecking=accept-new"])
def test_ssh_args_that_weaken_host_key_checking_are_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "ansible.cfg").write_text(f"[ssh_connection]\nssh_args = {bad}\n")
    with pytest.raises(InventoryError, match=r"\[ssh_connection\] ssh_args"):
        ansiblecfg.load(tmp_path)


def test_silence_means_ansible_defaults_and_pipelining_on(tmp_path: Path) -> None:
    got = ansiblecfg.load(tmp_path)
    assert got.ssh_args == ansiblecfg.ANSIBLE_DEFAULT_SSH_ARGS and got.forks is None
    assert "  pipelining: on (your configuration does not set it)" in got.overrides()
