"""A step on the user's own inventory: their sources first, ours (avmigrate's values only,
literal) after, the step's hosts in a --limit file, strict host key checking first in every
host's ssh arguments, the user's configuration and vault identities in the environment."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.core.models import InventoryHost
from orchestrator.execute import stepfiles
from orchestrator.execute.step import ExecConfig, Prompts, StepRequest


def request(*hosts: InventoryHost) -> StepRequest:
    return StepRequest("remove", "remove.yml", hosts, {"avmigrate_banned": {}},
                       {h.name: {"avmigrate_remove_ids": ["kesl"]} for h in hosts})


def test_the_step_runs_on_the_users_sources_limited_to_its_hosts(tmp_path: Path) -> None:
    config = ExecConfig(artifacts_dir=tmp_path, sources=("/repo/inv/hosts.ini", "/repo/aws.yml"),
                        vault_ids=("prod@/repo/.vault-pass",),
                        ansible_config=Path("/repo/ansible.cfg"), ssh_args="-o ControlPersist=9s",
                        pipelining=False, prompts=Prompts(b"vault-typed", b"become-typed"))
    plain = InventoryHost("db_prod_01", ("db",), {"ansible_host": "10.0.0.5", "secret": "s3"})
    own = InventoryHost("web-1", ("web",), {"ansible_ssh_args": "-o ProxyJump=jump {{ x }}"})
    pdd = stepfiles.new_private_data_dir(config, request(plain, own))
    sources, limit = stepfiles.user_inventory(config, request(plain, own), pdd)
    assert sources[:2] == ["/repo/inv/hosts.ini", "/repo/aws.yml"]
    assert limit.startswith("@") and Path(limit[1:]).read_text() == "db_prod_01\nweb-1\n"
    text = Path(sources[2]).read_text()
    ours = yaml.safe_load(text.replace("!unsafe", ""))["all"]["hosts"]
    # Only avmigrate's values: the user's own (an address, a secret) come from their sources.
    assert ours == {"db_prod_01": {"avmigrate_remove_ids": ["kesl"]},
                    "web-1": {"avmigrate_remove_ids": ["kesl"],
                              "avmigrate_ssh_args": "-o ProxyJump=jump {{ x }}"}}
    assert "!unsafe '-o ProxyJump=jump {{ x }}'" in text  # never templated
    extra = stepfiles.user_extravars(config)["ansible_ssh_args"]
    assert extra.startswith("-o StrictHostKeyChecking=yes {{ avmigrate_ssh_args | default(")
    assert "'-o ControlPersist=9s'" in extra and extra.endswith("ServerAliveCountMax=3")
    env = stepfiles.envvars(config, pdd, tmp_path / "cp")
    assert env["ANSIBLE_CONFIG"] == "/repo/ansible.cfg"
    assert env["ANSIBLE_VAULT_IDENTITY_LIST"] == "prod@/repo/.vault-pass"
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert "ANSIBLE_PIPELINING" not in env and "ANSIBLE_TIMEOUT" not in env
    assert env["ANSIBLE_SSH_ARGS"].startswith("-o StrictHostKeyChecking=yes -o ControlPersist=9s")
    # The typed passwords: prompts on the command line, answers only in runner's memory.
    assert stepfiles.cmdline(config) == ["--ask-vault-pass", "--ask-become-pass"]
    assert set(config.prompts.expect().values()) == {"vault-typed", "become-typed"}
    assert "typed" not in repr(config) and "typed" not in repr(config.prompts)


def test_a_silent_configuration_gets_pipelining(tmp_path: Path) -> None:
    env = stepfiles.envvars(ExecConfig(artifacts_dir=tmp_path), tmp_path, tmp_path / "cp")
    assert env["ANSIBLE_PIPELINING"] == "True" and "ANSIBLE_CONFIG" not in env
    assert "ANSIBLE_VAULT_IDENTITY_LIST" not in env
