"""Passwords typed once (--ask-vault-pass, --ask-become-pass) reach each step's real
ansible-playbook prompt through ansible-runner's `passwords`, on the user's own inventory
(an inline `!vault` value, decrypted by Ansible in the step); and nothing of them is left in
the step's files. A real step: ansible-runner, ansible-playbook, the local connection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator.core.models import InventoryHost, StepOutcome
from orchestrator.execute.executor import ExecConfig, RunnerExecutor, StepRequest
from orchestrator.execute.step import Prompts

VAULT_PASSWORD = "typed-vault-password-4711"
BECOME_PASSWORD = "typed-become-password-4712"


def vaulted_inventory(tmp_path: Path) -> Path:
    """localhost (local connection) with `secret_word` as an inline !vault value."""
    encrypted = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-vault")), "encrypt_string",
         "--vault-password-file", "/dev/stdin", "swordfish", "--name", "secret_word"],
        input=VAULT_PASSWORD, capture_output=True, text=True, check=True).stdout
    inventory = tmp_path / "hosts.yml"
    lines = "\n".join("      " + ln for ln in encrypted.splitlines())
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n{lines}\n")
    return inventory


def test_typed_passwords_answer_ansibles_prompts(tmp_path: Path) -> None:
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "show.yml").write_text(json.dumps([{
        "hosts": "all", "gather_facts": False, "become": True,
        "tasks": [{"name": "Show the decrypted value",
                   "ansible.builtin.assert": {"that": ["secret_word == 'swordfish'"]}}]}]))
    inventory = vaulted_inventory(tmp_path)
    config = ExecConfig(playbook_dir=books, artifacts_dir=tmp_path / "artifacts",
                        sources=(str(inventory),), state_key="prompts-test",
                        prompts=Prompts(VAULT_PASSWORD.encode(), BECOME_PASSWORD.encode()))
    host = InventoryHost("localhost", ("all",), {})
    results = RunnerExecutor(config).run_step(
        StepRequest("show", "show.yml", (host,), {}, {}), lambda _r: None)
    assert results["localhost"].outcome == StepOutcome.OK, results
    for path in (tmp_path / "artifacts").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert VAULT_PASSWORD not in text and BECOME_PASSWORD not in text, path


def test_without_the_vault_password_the_step_fails(tmp_path: Path) -> None:
    """The control: the same step with no typed vault password cannot decrypt the value."""
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "show.yml").write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Show", "ansible.builtin.debug": {"msg": "{{ secret_word }}"}}]}]))
    inventory = vaulted_inventory(tmp_path)
    config = ExecConfig(playbook_dir=books, artifacts_dir=tmp_path / "artifacts",
                        sources=(str(inventory),), state_key="prompts-test")
    host = InventoryHost("localhost", ("all",), {})
    try:
        results = RunnerExecutor(config).run_step(
            StepRequest("show", "show.yml", (host,), {}, {}), lambda _r: None)
    except Exception as exc:  # noqa: BLE001 - Ansible refusing to start is the expected end
        assert "vault" in str(exc).lower() or "decrypt" in str(exc).lower(), exc
    else:
        assert results["localhost"].outcome != StepOutcome.OK, results


def test_the_playbook_directorys_vars_reach_a_real_step(tmp_path: Path) -> None:
    """--playbook-dir: a real ansible-playbook step sees that directory's group_vars as it
    would for the user's own playbook there (above the inventory's)."""
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "show.yml").write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Check", "ansible.builtin.assert": {
            "that": ["site_word == 'from-playbook-dir'", "inv_word == 'from-inventory'"]}}]}]))
    user_books = tmp_path / "user"
    (user_books / "group_vars").mkdir(parents=True)
    (user_books / "group_vars" / "all.yml").write_text("site_word: from-playbook-dir\n")
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "group_vars" / "all.yml").write_text(
        "site_word: from-inventory\ninv_word: from-inventory\n")
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    host = InventoryHost("localhost", ("all",), {})
    for where, expected in ((user_books, StepOutcome.OK), (None, StepOutcome.FAILED)):
        config = ExecConfig(playbook_dir=books, artifacts_dir=tmp_path / "artifacts",
                            sources=(str(inv / "hosts.yml"),), state_key="pbdir-test",
                            user_playbook_dir=where)
        results = RunnerExecutor(config).run_step(
            StepRequest("show", "show.yml", (host,), {}, {}), lambda _r: None)
        assert results["localhost"].outcome == expected, (where, results)
    assert (user_books / "group_vars" / "all.yml").is_file()  # the links went, not the files
