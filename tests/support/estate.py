"""An agency's Ansible repository over lab hosts, shaped as sysadmins keep theirs: ansible.cfg
naming the inventory and a vault identity, inventories/prod/hosts.ini with aliases (not DNS
names), group_vars/all.yml, an encrypted group_vars/<group>/vault.yml, host_vars/<alias>.yml
with each host's address, and an ssh config that sends every host but the bastion through it
(ProxyJump). The connection arguments are a template (`-F {{ estate_ssh_config }}`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.lab.records import LabHost, LabInfo

VAULT_PASSWORD = "estate-vault-password\n"
BECOME_PASSWORD = "not-needed-sudo-is-nopasswd"  # vaulted: Ansible must decrypt it to become


def alias(index: int, host: LabHost, bastion: LabHost) -> str:
    return "bastion_01" if host is bastion else f"web_prod_{index:02d}"


def write(root: Path, info: LabInfo, bastion: LabHost, lab_vars: dict[str, object]) -> Path:
    """The estate under `root`; returns root. `lab_vars`: the lab's repository settings."""
    prod = root / "inventories" / "prod"
    (prod / "group_vars" / "linux_servers").mkdir(parents=True)
    (prod / "host_vars").mkdir()
    hidden = [h for h in info.hosts if h is not bastion]
    (root / "ansible.cfg").write_text(
        "[defaults]\n"
        "inventory = inventories/prod/hosts.ini\n"
        "forks = 8\n"
        "vault_identity_list = prod@.vault-pass\n"
        "host_key_checking = False\n"  # common in agencies' files: avmigrate keeps it on
        "\n[ssh_connection]\n"
        "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n")
    vault_pass = root / ".vault-pass"
    vault_pass.write_text(VAULT_PASSWORD)
    vault_pass.chmod(0o600)
    ssh_config = root / "ssh_config"
    common = (f"  User {info.user}\n  IdentityFile {info.key_file}\n"
              f"  UserKnownHostsFile {info.known_hosts}\n  StrictHostKeyChecking yes\n"
              "  IdentitiesOnly yes\n")
    ssh_config.write_text(
        f"Host bastion\n  HostName {bastion.address}\n{common}\n"
        f"Host {' '.join(h.address for h in hidden)}\n  ProxyJump bastion\n{common}\n"
        f"Host {bastion.address}\n{common}")
    ssh_config.chmod(0o600)
    web = [alias(i, h, bastion) for i, h in enumerate(info.hosts, 1) if h is not bastion]
    (prod / "hosts.ini").write_text(
        "# Production Linux servers (aliases; host_vars/ holds each address)\n"
        "[web-servers]\n" + "".join(f"{a}\n" for a in web) +
        "\n[bastions]\nbastion_01\n"
        "\n[linux_servers:children]\nweb-servers\nbastions\n")
    (prod / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "ansible_user": info.user,
        "ansible_become": True,
        "ansible_python_interpreter": "/usr/bin/python3",
        "estate_ssh_config": str(ssh_config),
        "ansible_ssh_common_args": "-F {{ estate_ssh_config }}",
        **lab_vars,
    }, sort_keys=False))
    (prod / "group_vars" / "linux_servers" / "main.yml").write_text(
        'ansible_become_password: "{{ vault_become_password }}"\n')
    plain = root / "vault-plain.yml"
    plain.write_text(yaml.safe_dump({"vault_become_password": BECOME_PASSWORD}))
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt",
                    "--vault-id", f"prod@{vault_pass}", "--encrypt-vault-id", "prod",
                    str(plain), "--output",
                    str(prod / "group_vars" / "linux_servers" / "vault.yml")],
                   check=True, capture_output=True, timeout=60, cwd="/")
    plain.unlink()
    for i, host in enumerate(info.hosts, 1):
        (prod / "host_vars" / f"{alias(i, host, bastion)}.yml").write_text(
            f"ansible_host: {host.address}\n")
    return root
