"""Build, inspect and take down a lab of real Debian hosts on this machine.

Each host is a systemd-nspawn container booted with systemd over an overlay of one cached
image, in its own network namespace joined to the lab bridge by a veth pair. The bridge has no
route anywhere else: lab traffic stays on this machine. Everything a lab creates is named with
its prefix and recorded in lab.json, so a later `lab up` or `lab down` can find and remove it
even after an unclean stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.errors import LabError
from orchestrator.core.procs import pid_alive
from orchestrator.execute import ssh
from orchestrator.lab import image, packages, repo, scenario, vendors
from orchestrator.lab import ksc as ksc_report
from orchestrator.lab.hosts import (
    BaseImage,
    container_init,
    make_root,
    node_binds,
    raise_inotify_limits,
)
from orchestrator.lab.network import LabNetwork, default_subnet
from orchestrator.lab.procfs import mounts_under, pids_cmdline_contains, pids_using, send_signal
from orchestrator.lab.records import LabHost, LabInfo
from orchestrator.lab.sh import run

HTTP_PORT = 8080
SSH_WAIT_S = 120.0


def labs_root() -> Path:
    return Path(os.environ.get("AVMIGRATE_LAB_ROOT", "/var/lib/avmigrate/labs"))


class Lab:
    """One named lab; its files live in labs_root()/NAME."""

    def __init__(self, name: str = "demo") -> None:
        if not name.isalnum() or len(name) > 8:
            raise LabError("a lab name is 1-8 letters or digits, e.g. `demo` or `test`")
        self.name = name
        self.dir = labs_root() / name
        self.bridge = f"avm-{name}"
        self.prefix = f"avm-{name}-"
        self.subnet = default_subnet(name)
        self.gateway = str(next(self.subnet.hosts()))
        self.net = LabNetwork(name=name, bridge=self.bridge, prefix=self.prefix,
                              subnet=self.subnet, gateway=self.gateway)

    # ---- reading -----------------------------------------------------------------------
    def info(self) -> LabInfo:
        path = self.dir / "lab.json"
        try:
            return LabInfo.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise LabError(f"no lab {self.name!r} is up; run `avmigrate lab up` first") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(f"{path} is damaged ({exc}); run `avmigrate lab down` and up again"
                           ) from exc

    def status(self) -> dict[str, Any]:
        info = self.info()
        hosts = []
        for h in info.hosts:
            alive = h.pid is not None and pid_alive(h.pid)
            hosts.append({
                "name": h.name,
                "address": h.address,
                "profile": h.profile,
                "running": alive,
                "ssh_port_open": alive and ssh.port_open(h.address, timeout=0.5),
                "ssh_user": info.user,
                "private_key": info.key_file,
                "known_hosts": info.known_hosts,
            })
        return {"lab": info.name, "inventory": info.inventory, "known_hosts": info.known_hosts,
                "gateway": info.gateway, "hosts": hosts}

    # ---- building ----------------------------------------------------------------------
    def up(self, count: int, scenario_file: Path | None, log: list[str],
           nodes: int = 0) -> LabInfo:
        if os.geteuid() != 0:
            raise LabError("`lab up` needs root (it mounts overlays and makes namespaces)")
        for tool in ("systemd-nspawn", "debootstrap", "dpkg-deb", "gpg", "sigtool", "ip"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed; run `make deps` first")
        if not 1 <= count <= 200:
            raise LabError("--hosts must be between 1 and 200")
        if not 0 <= nodes <= 9:
            raise LabError("--nodes must be between 0 and 9")
        plan = scenario.load(scenario_file).assign(count)
        self.down(log)  # whatever an earlier lab of this name left behind
        raise_inotify_limits(log)
        try:
            return self._up(plan, log, nodes)
        except BaseException:
            # Nothing half-done: a lab that did not come up is taken down again.
            self.down(log)
            raise

    def _up(self, plan: list[scenario.Profile], log: list[str], node_count: int = 0) -> LabInfo:
        self.dir.mkdir(parents=True, exist_ok=True)
        www = self.dir / "www"
        with image.cache_lock():
            rootfs = image.ensure_image(log)
            debs = packages.build(image.cache_root() / "standins")
            pool = repo.download_replacement_debs(rootfs, log)
            agents = vendors.build(image.cache_root() / "vendors")
            key_file = repo.build_repository(www / "debian",
                                             sorted(pool.glob("*.deb")) + agents)
        repo.build_signatures(www / "clamav")
        keys = self._client_key()
        self.net.add_bridge()
        http_pid = self._http(www)
        hosts: list[LabHost] = []
        known: list[str] = []
        t0 = time.monotonic()
        base = BaseImage(rootfs, debs, keys)
        for i, profile in enumerate(plan, start=1):
            host, pub = self._start_host(i, profile, base)
            hosts.append(host)
            known.append(f"{host.name},{host.address} {pub}")
        known_hosts = self.dir / "known_hosts"
        _atomic_write(known_hosts, "\n".join(known) + "\n")
        # Execution nodes see the targets' keys (that file, bound read-only) and the apt key;
        # their own keys are added to the controller's known_hosts afterwards.
        node_hosts: list[LabHost] = []
        node_args = node_binds(known_hosts, key_file)
        for i in range(1, node_count + 1):
            node, pub = self._start_host(100 + i, scenario.Profile("node", ()), base,
                                         name=f"{self.name}-node{i}", extra=node_args)
            node_hosts.append(node)
            known.append(f"{node.name},{node.address} {pub}")
        if node_hosts:
            _atomic_write(known_hosts, "\n".join(known) + "\n")
        info = LabInfo(
            name=self.name, directory=str(self.dir), bridge=self.bridge, gateway=self.gateway,
            http_pid=http_pid, inventory=str(self.dir / "inventory.yml"),
            known_hosts=str(known_hosts), key_file=str(keys), user=image.ADMIN_USER,
            hosts=tuple(hosts), nodes=tuple(node_hosts),
        )
        _atomic_write(self.dir / "lab.json", json.dumps(info.to_json(), indent=2) + "\n")
        _atomic_write(Path(info.inventory), self._inventory(info, key_file, plan))
        # What a KSC managing these hosts would export (a stand-in report, `ksc import`).
        groups = {h: g for g, spec in lab_groups(info.hosts, list(plan)).items()
                  for h in spec["hosts"]}
        _atomic_write(self.dir / "ksc-hosts.csv", ksc_report.report(
            info.hosts, plan, [groups[h.name] for h in info.hosts]))
        # The enrolment secrets of the replacements' stand-ins: test values, good only here.
        fd = os.open(self.dir / "credentials.yml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(yaml.safe_dump({"mde_onboarding": vendors.LAB_ONBOARDING,
                                      "falcon_cid": vendors.LAB_CID}))
        self._wait_ready(info)
        if node_hosts:
            self._wait_ready(dataclasses.replace(info, hosts=info.nodes))
        log.append(f"{len(hosts)} hosts up in {time.monotonic() - t0:.0f}s; "
                   f"inventory {info.inventory}")
        return info

    def _client_key(self) -> Path:
        keydir = self.dir / "keys"
        keydir.mkdir(mode=0o700, exist_ok=True)
        key = keydir / "id_ed25519"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"avmigrate-lab-{self.name}",
                 "-f", key])
        return key

    def _http(self, www: Path) -> int:
        logf = (self.dir / "http.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", self.gateway,
             "--directory", str(www)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not ssh.port_open(self.gateway, HTTP_PORT, timeout=0.3):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the lab's HTTP server did not start; see {self.dir}/http.log")
            time.sleep(0.1)
        return proc.pid

    def _start_host(self, index: int, profile: scenario.Profile, base: BaseImage,
                    name: str = "", extra: Sequence[str] = ()) -> tuple[LabHost, str]:
        """Make one host's root, plug it into the bridge and boot it; its public host key."""
        name = name or f"{self.name}-{index:02d}"
        address = str(self.subnet.network_address + 10 + index)
        hdir = self.dir / "hosts" / name
        merged, pub = make_root(name, profile, base, hdir)
        netns, veth = self.net.plug(index, address)
        argv = ["systemd-nspawn", "-D", str(merged), "--boot", "--register=no", "--keep-unit",
                f"--network-namespace-path=/run/netns/{netns}", f"--machine={name}",
                "--console=passive", "--link-journal=no", "--resolv-conf=off",
                "--timezone=off"]
        if profile.small_fs_path:
            argv.append(f"--tmpfs={profile.small_fs_path}:size={profile.small_fs_mb}m,mode=0755")
        if extra:
            # An execution node runs the controller's own Python and venv, bound read-only at
            # the same paths; its admin user must be able to reach them.
            (merged / "root").chmod(0o755)
            argv.extend(extra)
        logf = (hdir / "console.log").open("ab")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        host = LabHost(name=name, address=address, profile=profile.name, netns=netns, veth=veth,
                       pid=proc.pid, sshd_down=profile.sshd_down)
        return host, pub

    def _wait_ready(self, info: LabInfo) -> None:
        deadline = time.monotonic() + SSH_WAIT_S
        pending = {h.name: h for h in info.hosts}
        last: dict[str, str] = {}  # why each host was not ready yet, the last time we looked
        while pending and time.monotonic() < deadline:
            for name, h in list(pending.items()):
                if h.pid is None or not pid_alive(h.pid):
                    raise LabError(f"lab host {name} stopped while booting; see "
                                   f"{self.dir}/hosts/{name}/console.log")
                if h.sshd_down:
                    done = self.exec(h, ["systemctl", "is-active", "--quiet", "kesl.service"],
                                     check=False).returncode == 0
                else:
                    try:
                        code, said, _ = ssh.run(info.target(h),
                                                "systemctl is-system-running --wait", timeout=60)
                        done = code in (0, 1)  # running or degraded: boot has finished
                        last[name] = f"systemd says {said.strip() or code}"
                    except ssh.SSHError as exc:
                        last[name] = f"ssh: {exc}"
                        done = False
                if done:
                    del pending[name]
            if pending:
                time.sleep(1)
        if pending:
            # `lab down` removes the hosts' directories: their boot logs are kept apart.
            kept = self.dir.parent / "failed-boots"
            kept.mkdir(parents=True, exist_ok=True)
            for name in pending:
                with contextlib.suppress(OSError):
                    shutil.copy(self.dir / "hosts" / name / "console.log",
                                kept / f"{name}-{int(time.time())}.log")
            why = "; ".join(f"{n} ({last.get(n, 'no answer yet')})" for n in sorted(pending))
            raise LabError(f"lab hosts not ready after {SSH_WAIT_S:.0f}s: {why}; their boot "
                           f"logs are kept in {kept}")

    def _inventory(self, info: LabInfo, key_file: Path,
                   profiles: list[scenario.Profile] | None = None) -> str:
        url = f"http://{self.gateway}:{HTTP_PORT}"
        children: dict[str, Any] = {"lab": {"children": lab_groups(info.hosts, profiles)}}
        if info.nodes:
            children["execution_nodes"] = {"hosts": {
                n.name: {"ansible_host": n.address, "avmigrate_runner_venv": sys.prefix}
                for n in info.nodes}}
        data = {
            "all": {
                "vars": {
                    "ansible_user": info.user,
                    "ansible_become": True,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_private_key_file": info.key_file,
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={info.known_hosts} -o StrictHostKeyChecking=yes"
                    ),
                    "avmigrate_apt_repository_url": f"{url}/debian",
                    "avmigrate_apt_repository_suite": "./",
                    "avmigrate_apt_key_file": str(key_file),
                    "avmigrate_signature_url": f"{url}/clamav",
                    "avmigrate_signature_files": ["daily.cud"],
                },
                "children": children,
            }
        }
        header = (f"# Written by `avmigrate lab up` for lab {self.name!r}; rewritten at each up.\n"
                  "# Host keys are checked against the lab's known_hosts.\n")
        return header + yaml.safe_dump(data, sort_keys=False)

    # ---- using -------------------------------------------------------------------------
    def exec(self, host: LabHost, argv: list[str], check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host without SSH (for hosts whose sshd is down)."""
        if host.pid is None or not pid_alive(host.pid):
            raise LabError(f"lab host {host.name} is not running")
        init = container_init(host.pid)
        if init is None:
            raise LabError(f"lab host {host.name} has no init process yet")
        return run(["nsenter", "-t", str(init), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                   check=check, timeout=timeout)

    # ---- faults, for tests --------------------------------------------------------------
    def power_off(self, host: LabHost) -> None:
        """Pull the plug: kill the host's container at once, no shutdown."""
        if host.pid is not None:
            # Killing PID 1 of the container ends its whole PID namespace; killing only
            # systemd-nspawn would leave the container running.
            init = container_init(host.pid)
            if init is not None:
                send_signal(init, signal.SIGKILL)
            send_signal(host.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(host.pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def cut_network(self, host: LabHost) -> None:
        run(["ip", "link", "set", host.veth, "down"])

    def restore_network(self, host: LabHost) -> None:
        run(["ip", "link", "set", host.veth, "up"])

    def kill_sshd(self, host: LabHost) -> None:
        """sshd dies and stays dead (masked for this boot), sessions included."""
        self.exec(host, ["systemctl", "mask", "--runtime", "--now", "ssh.service"], check=False)
        self.exec(host, ["pkill", "-KILL", "-x", "sshd"], check=False)

    def change_host_key(self, host: LabHost) -> None:
        """The host gets new SSH host keys (as a rebuilt or impersonated host would); the
        lab's known_hosts keeps the old ones."""
        self.exec(host, ["sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A -q && "
                         "systemctl restart ssh.service"])

    def protect_with_password(self, host: LabHost, sha256_hex: str) -> None:
        """Turn on KESL's password protection on the host (only the password's hash is sent)."""
        if len(sha256_hex) != 64 or any(c not in "0123456789abcdef" for c in sha256_hex):
            raise LabError("protect_with_password takes a SHA-256 hex digest")
        self.exec(host, ["sh", "-c", f"umask 077 && echo {sha256_hex} > "
                         f"{packages.KESL_PROTECTION}"])

    def protection(self, host: LabHost, units: tuple[str, ...]) -> dict[str, bool]:
        """Which of these units are active on the host, read without SSH."""
        result = self.exec(host, ["systemctl", "is-active", *units], check=False, timeout=20)
        states = result.stdout.split()
        return {u: i < len(states) and states[i] == "active" for i, u in enumerate(units)}

    # ---- taking down -------------------------------------------------------------------
    def down(self, log: list[str]) -> None:
        """Remove every process, mount, namespace, link and file of this lab. Idempotent."""
        if os.geteuid() != 0:
            raise LabError("`lab down` needs root")
        pids = self._stop_processes()
        for mnt in sorted(mounts_under(self.dir), key=len, reverse=True):
            run(["umount", "-l", mnt], check=False)
        self.net.remove()
        if self.dir.exists():
            shutil.rmtree(self.dir / "hosts", ignore_errors=True)
            for f in ("lab.json", "inventory.yml", "known_hosts"):
                (self.dir / f).unlink(missing_ok=True)
            shutil.rmtree(self.dir / "www", ignore_errors=True)
        if pids:
            log.append(f"lab {self.name}: stopped {len(pids)} processes and cleaned up")

    def _stop_processes(self) -> set[int]:
        """Terminate, then kill, every process of this lab: its hosts and its HTTP server."""
        pids = pids_using(self.dir / "hosts")
        with contextlib.suppress(LabError):
            info = self.info()
            pids |= {h.pid for h in info.hosts if h.pid}
            if info.http_pid:
                pids.add(info.http_pid)
        pids |= pids_cmdline_contains(f"--bind {self.gateway} --directory {self.dir}")
        for pid in pids:
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            send_signal(pid, signal.SIGKILL)
        return pids

    def leftovers(self) -> list[str]:
        """What of this lab still exists on the machine (empty after a clean `down`)."""
        found = [f"process {p}" for p in pids_using(self.dir / "hosts")]
        found += [f"mount {m}" for m in mounts_under(self.dir)]
        found += [f"netns {line.split(' ')[0]}" for line in
                  run(["ip", "netns", "list"], check=False).stdout.splitlines()
                  if line.startswith(self.prefix)]
        for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
            parts = line.split(":")
            ifname = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
            if ifname == self.bridge or self.net.ours(ifname):
                found.append(f"link {ifname}")
        found += [f"ip rule hiding {a}" for a in self.net.hidden()]
        return found

    def hide_from_controller(self, host: LabHost) -> None:
        """The controller's direct SSH route to `host` is closed: only a jump host (another
        lab host) reaches it. Undone by `down`."""
        self.net.hide(host.address)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def lab_groups(hosts: tuple[LabHost, ...] | list[LabHost],
               profiles: list[scenario.Profile] | None = None) -> dict[str, Any]:
    """Every third host is a server, the others workstations, so a policy can order them;
    a profile may name the host's group, and its replacement (avmigrate_replacement)."""
    groups: dict[str, Any] = {}
    for i, h in enumerate(hosts):
        profile = profiles[i] if profiles else None
        name = (profile.group if profile and profile.group
                else "servers" if i % 3 == 2 else "workstations")
        entry: dict[str, Any] = {"ansible_host": h.address}
        if profile and profile.replacement:
            entry["avmigrate_replacement"] = profile.replacement
        groups.setdefault(name, {"hosts": {}})["hosts"][h.name] = entry
    return groups
