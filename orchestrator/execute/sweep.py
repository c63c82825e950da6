"""A parallel reachability and host-key sweep over SSH, no login, no Ansible.

Each host is reached as OpenSSH would reach it (`ssh -G`: ~/.ssh/config, the inventory's ssh
arguments). A direct host costs one TCP connection and one key exchange (paramiko), many
hosts at once, the key compared with the known_hosts files ssh would use (hashed names
included); a host behind a jump host, or one that `@cert-authority`/`@revoked` lines may
concern, is probed by OpenSSH itself with every authentication method off. Keys are only
compared, never recorded: an unknown or changed key is a finding.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.core.models import InventoryHost
from orchestrator.execute import sshconfig

DEFAULT_KNOWN_HOSTS = (Path.home() / ".ssh" / "known_hosts", Path("/etc/ssh/ssh_known_hosts"))


@dataclass(frozen=True)
class SweepResult:
    """What the sweep found for one host."""

    host: str
    address: str
    port: int
    status: str  # ok | unreachable | host-key-changed | host-key-unknown
    detail: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def known_hosts_files(host: InventoryHost, ssh_args: str = "") -> tuple[Path, ...]:
    """The known_hosts files ssh would use for this host (as `ssh -G` says)."""
    try:
        return sshconfig.effective(host, ssh_args).known_hosts or DEFAULT_KNOWN_HOSTS
    except (ValueError, OSError, subprocess.SubprocessError):
        return DEFAULT_KNOWN_HOSTS


class _Keys:
    """known_hosts files, each set read once however many hosts name it."""

    def __init__(self) -> None:
        self._files: dict[tuple[Path, ...], sshconfig.KnownHosts] = {}

    def for_files(self, files: tuple[Path, ...]) -> sshconfig.KnownHosts:
        if files not in self._files:
            self._files[files] = sshconfig.load_known_hosts(files)
        return self._files[files]


def _probe(host: InventoryHost, ssh_args: str, cache: _Keys, timeout: float) -> SweepResult:
    start = time.monotonic()
    try:
        eff = sshconfig.effective(host, ssh_args)
    except (ValueError, OSError, subprocess.SubprocessError) as exc:
        return SweepResult(host.name, host.address, 22, "unreachable",
                           f"ssh cannot read its configuration for it: {exc}",
                           time.monotonic() - start)

    def result(status: str, detail: str) -> SweepResult:
        return SweepResult(host.name, eff.hostname, eff.port, status, detail,
                           time.monotonic() - start)

    known = cache.for_files(eff.known_hosts)
    if eff.proxy is not None or known.markers:
        return _probe_openssh(host, eff, ssh_args, timeout, result)
    return _probe_direct(eff, known.keys, timeout, result)


def _probe_direct(eff: sshconfig.Effective, keys: paramiko.HostKeys, timeout: float,
                  result: Callable[[str, str], SweepResult]) -> SweepResult:
    """One TCP connection and key exchange (paramiko), the key compared with known_hosts."""
    try:
        sock = socket.create_connection((eff.hostname, eff.port), timeout=timeout)
    except OSError as exc:
        return result("unreachable", f"ssh port {eff.port}: {exc.strerror or exc}")
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return result("unreachable", f"no SSH key exchange: {exc}")
    finally:
        transport.close()
    recorded = keys.lookup(eff.lookup_name)
    if recorded is None:
        return result("host-key-unknown", "not in known_hosts; record its key (checked out "
                      "of band) before avmigrate connects to it")
    if key.get_name() in recorded and recorded[key.get_name()] == key:
        return result("ok", f"{key.get_name()} key matches known_hosts")
    if key.get_name() not in recorded:
        # ssh negotiates among the recorded types; a host offering only others is a change.
        return result("host-key-changed", f"offers a {key.get_name()} key; known_hosts has "
                      f"{', '.join(sorted(recorded.keys()))} only")
    return result("host-key-changed", f"its {key.get_name()} key no longer matches "
                  "known_hosts; nothing will be done to it until the change is explained")


def _probe_openssh(host: InventoryHost, eff: sshconfig.Effective, ssh_args: str,
                   timeout: float, result: Callable[[str, str], SweepResult]) -> SweepResult:
    """Through OpenSSH itself (jump hosts, certificate authorities, revoked keys): the host
    key checked strictly, then no credential offered, so nothing logs in to the host."""
    command = sshconfig.openssh_probe_command(host, ssh_args, timeout)
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=timeout * 3 + 10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return result("unreachable", "ssh did not finish in time")
    said = done.stderr.strip()
    lines = [ln for ln in said.splitlines() if not ln.startswith("debug1:")]
    last = (lines or [f"ssh exit {done.returncode}"])[-1]
    # ssh -v names the host whose key it verified: the target's own line is the evidence (a
    # jump host's verification, or its refusing us, says nothing of the target's key).
    verified = re.search(rf"Host '\[?{re.escape(eff.key_alias or eff.hostname)}\]?(:\d+)?' "
                         r"is known and matches", said)
    if verified and (done.returncode == 0 or "Permission denied" in said):
        return result("ok", "host key verified by ssh (no login)")
    if "IDENTIFICATION HAS CHANGED" in said or "has changed" in said or "REVOKED" in said:
        return result("host-key-changed", "ssh refuses its key (changed or revoked); nothing "
                      "will be done to it until the change is explained")
    if "host key is known" in said or "Host key verification failed" in said:
        return result("host-key-unknown", "ssh knows no key for it; record its key (checked "
                      "out of band) before avmigrate connects to it")
    return result("unreachable", last)


def sweep(hosts: Sequence[InventoryHost], workers: int = 64, timeout: float = 5.0,
          ssh_args: str = "") -> list[SweepResult]:
    """Probe every host at once (`workers` at a time); results in the hosts' order.
    `ssh_args`: the configuration's [ssh_connection] ssh_args (a host's own
    ansible_ssh_args replaces it, as in Ansible)."""
    cache = _Keys()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts)))) as pool:
        return list(pool.map(lambda h: _probe(h, ssh_args, cache, timeout), hosts))
