"""How OpenSSH would reach a host (ssh -G) and known_hosts files read as ssh reads them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.core.models import InventoryHost
from orchestrator.execute import sshconfig


def test_hashed_names_are_read_and_ca_lines_flagged_not_fatal(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    pub = (tmp_path / "k.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"host1.agency.example {' '.join(pub)}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True,
                   capture_output=True)
    assert "host1" not in known.read_text()  # hashed as ssh's HashKnownHosts writes it
    with known.open("a") as f:
        f.write(f"@cert-authority *.agency.example {' '.join(pub)}\n# a comment\nnot a key\n")
    read = sshconfig.load_known_hosts((known, tmp_path / "missing"))
    assert read.markers  # a @cert-authority line: OpenSSH judges such hosts
    found = read.keys.lookup("host1.agency.example")
    assert found is not None and pub[0] in found
    assert read.keys.lookup("host2.agency.example") is None


def test_ssh_g_gives_the_users_configuration(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host 10.9.9.*\n  ProxyJump bastion\n  UserKnownHostsFile /kh/site\n"
                      "  Port 2200\n  User ops\n")
    config.chmod(0o600)
    host = InventoryHost("db_prod_01", ("db",), {
        "ansible_host": "10.9.9.5", "ansible_ssh_common_args": f"-F {config}"})
    eff = sshconfig.effective(host)
    assert (eff.hostname, eff.port, eff.user, eff.proxy) == ("10.9.9.5", 2200, "ops", "bastion")
    assert eff.known_hosts[0] == Path("/kh/site")
    assert eff.lookup_name == "[10.9.9.5]:2200"
    # The inventory's port and user reach ssh as -o options, which outrank any config file.
    direct = InventoryHost("web1", ("web",), {"ansible_host": "10.8.0.1", "ansible_port": 2222,
                                               "ansible_user": "avadmin"})
    eff = sshconfig.effective(direct)
    assert (eff.port, eff.user, eff.proxy) == (2222, "avadmin", None)
    command = sshconfig.openssh_probe_command(host, "", 5)
    assert command[1:3] == ["-o", "StrictHostKeyChecking=yes"]  # first: ssh keeps it
    assert "PubkeyAuthentication=no" in command and command[-1] == "true"
