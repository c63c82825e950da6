"""How OpenSSH would reach a host: its effective configuration (`ssh -G`, which reads
`~/.ssh/config`, `/etc/ssh/ssh_config` and the arguments Ansible would pass), and known_hosts
files read the way ssh reads them (hashed names; `@cert-authority` and `@revoked` lines are
OpenSSH's to judge, so a host they may concern is probed with OpenSSH itself).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.core.models import InventoryHost
from orchestrator.core.names import STRICT

# Every way to authenticate, off for the destination: only "none" is tried, and refused.
_AUTH_METHODS = ("PubkeyAuthentication", "PasswordAuthentication", "KbdInteractiveAuthentication",
                 "GSSAPIAuthentication", "HostbasedAuthentication")
# The host's variables Ansible adds to its ssh command line, in Ansible's order.
ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")


@dataclass(frozen=True)
class Effective:
    """What ssh will do for one host."""

    hostname: str
    port: int
    user: str
    proxy: str | None  # ProxyJump or ProxyCommand: hops only OpenSSH makes
    known_hosts: tuple[Path, ...]
    key_alias: str | None
    strict: str  # StrictHostKeyChecking as configured for the destination

    @property
    def lookup_name(self) -> str:
        name = self.key_alias or self.hostname
        return name if self.port == 22 else f"[{name}]:{self.port}"


def ssh_words(host: InventoryHost, ssh_args: str) -> list[str]:
    """The options Ansible's ssh connection gives ssh for this host (before the host)."""
    words = shlex.split(str(host.vars.get("ansible_ssh_args", ssh_args)))
    for var in ARG_VARS:
        value = host.vars.get(var)
        if isinstance(value, str) and value.strip():
            words += shlex.split(value)
    port = host.vars.get("ansible_port", host.vars.get("ansible_ssh_port"))
    if port is not None:
        words += ["-o", f"Port={int(port)}"]
    user = host.vars.get("ansible_user", host.vars.get("ansible_ssh_user"))
    if user:
        words += ["-o", f"User={user}"]
    return words


def effective(host: InventoryHost, ssh_args: str = "", timeout: float = 10.0) -> Effective:
    """`ssh -G` for the host as Ansible would name it (its ansible_host)."""
    done = subprocess.run(["ssh", "-G", *ssh_words(host, ssh_args), "--", host.address],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ValueError((done.stderr.strip().splitlines() or ["ssh -G failed"])[-1])
    conf: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        conf.setdefault(key.lower(), value.strip())
    proxy = conf.get("proxyjump") or conf.get("proxycommand")
    files = [*conf.get("userknownhostsfile", "").split(),
             *conf.get("globalknownhostsfile", "").split()]
    return Effective(hostname=conf.get("hostname", host.address),
                     port=int(conf.get("port", "22")), user=conf.get("user", ""),
                     proxy=None if proxy in (None, "", "none") else proxy,
                     known_hosts=tuple(Path(f).expanduser() for f in files if f != "none"),
                     key_alias=conf.get("hostkeyalias") or None,
                     strict=conf.get("stricthostkeychecking", "ask"))


@dataclass
class KnownHosts:
    """Some known_hosts files as paramiko can use them, and whether they hold lines only
    OpenSSH can judge (`@cert-authority`, `@revoked`)."""

    keys: paramiko.HostKeys
    markers: bool


def load_known_hosts(files: tuple[Path, ...]) -> KnownHosts:
    keys = paramiko.HostKeys()
    markers = False
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("@"):
                markers = True
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(stripped, number)
            except (paramiko.hostkeys.InvalidHostKey, ValueError):
                continue  # ssh skips what it cannot read, and so do we
            if entry is not None:
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
    return KnownHosts(keys, markers)


def openssh_probe_command(host: InventoryHost, ssh_args: str, timeout: float) -> list[str]:
    """An ssh command that verifies the host key strictly and then offers no credential, so
    that it never logs in to the host (a ProxyJump hop authenticates as the user's ssh would)."""
    return ["ssh", *shlex.split(STRICT), "-v", "-o", "BatchMode=yes",
            *[w for m in _AUTH_METHODS for w in ("-o", f"{m}=no")], "-o", "ControlMaster=no",
            "-o", "ControlPath=none", "-o", f"ConnectTimeout={max(1, round(timeout))}",
            *ssh_words(host, ssh_args), "--", host.address, "true"]
