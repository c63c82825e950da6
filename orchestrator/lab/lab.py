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
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.errors import LabError
from orchestrator.core.procs import descendants, pid_alive
from orchestrator.execute import ssh
from orchestrator.lab import image, packages, repo, scenario
from orchestrator.lab.sh import run

HTTP_PORT = 8080
SSH_WAIT_S = 120.0


def labs_root() -> Path:
    return Path(os.environ.get("AVMIGRATE_LAB_ROOT", "/var/lib/avmigrate/labs"))


def default_subnet(name: str) -> ipaddress.IPv4Network:
    third = 20 + zlib.crc32(name.encode()) % 200
    return ipaddress.IPv4Network(f"10.213.{third}.0/24")


@dataclass(frozen=True)
class BaseImage:
    """What every lab host is made from: the Debian root, the stand-in packages, our key."""

    rootfs: Path
    debs: dict[str, Path]
    client_key: Path


@dataclass(frozen=True)
class LabHost:
    """One lab host as lab.json records it."""

    name: str
    address: str
    profile: str
    netns: str
    veth: str
    pid: int | None
    sshd_down: bool


@dataclass(frozen=True)
class LabInfo:
    """A lab as lab.json records it."""

    name: str
    directory: str
    bridge: str
    gateway: str
    http_pid: int | None
    inventory: str
    known_hosts: str
    key_file: str
    user: str
    hosts: tuple[LabHost, ...]
    nodes: tuple[LabHost, ...] = ()  # execution nodes: run `ansible-runner worker`, not migrated

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hosts"] = [asdict(h) for h in self.hosts]
        data["nodes"] = [asdict(h) for h in self.nodes]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabInfo:
        hosts = tuple(LabHost(**h) for h in data["hosts"])
        nodes = tuple(LabHost(**h) for h in data.get("nodes", []))
        return cls(**{**data, "hosts": hosts, "nodes": nodes})

    def target(self, host: LabHost) -> ssh.SSHTarget:
        return ssh.SSHTarget(host.address, self.user, Path(self.key_file), Path(self.known_hosts))

    def host(self, name: str) -> LabHost:
        for h in (*self.hosts, *self.nodes):
            if h.name == name:
                return h
        raise LabError(f"lab {self.name} has no host {name!r}")


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

    def _ours(self, ifname: str) -> bool:
        """A host link of this lab: `avm` + the lab's whole name + the host's number (a
        prefix alone would also match the links of a lab whose name starts with ours)."""
        return re.fullmatch(rf"avm{re.escape(self.name)}\d{{2,3}}", ifname) is not None

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
        _raise_inotify_limits(log)
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
            key_file = repo.build_repository(www / "debian", sorted(pool.glob("*.deb")))
        repo.build_signatures(www / "clamav")
        keys = self._client_key()
        self._bridge()
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
        node_args = _node_binds(known_hosts, key_file)
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
        _atomic_write(Path(info.inventory), self._inventory(info, key_file))
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

    def _bridge(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

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
        merged, pub = self._make_root(name, profile, base, hdir)
        netns, veth = self._plug(index, address)
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

    def _make_root(self, name: str, profile: scenario.Profile, base: BaseImage, hdir: Path
                   ) -> tuple[Path, str]:
        """An overlay of the base image set up as the profile says; its public host key."""
        upper, work, merged = hdir / "upper", hdir / "work", hdir / "merged"
        for d in (upper, work, merged):
            d.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={base.rootfs},upperdir={upper},workdir={work}", merged])
        # Host keys of its own, recorded in the lab's known_hosts before the host ever boots.
        hostkey = merged / "etc/ssh/ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", hostkey])
        pub = hostkey.with_suffix(".pub").read_text(encoding="utf-8").split()
        sshdir = merged / "home" / image.ADMIN_USER / ".ssh"
        sshdir.mkdir(mode=0o700, exist_ok=True)
        (sshdir / "authorized_keys").write_text(
            base.client_key.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8")
        (sshdir / "authorized_keys").chmod(0o600)
        run(["chroot", merged, "chown", "-R", f"{image.ADMIN_USER}:{image.ADMIN_USER}",
             f"/home/{image.ADMIN_USER}/.ssh"])
        (merged / "etc/hostname").write_text(name + "\n", encoding="utf-8")
        (merged / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n",
            encoding="utf-8")
        _apply_profile(merged, profile, base.debs)
        return merged, f"{pub[0]} {pub[1]}"

    def _plug(self, index: int, address: str) -> tuple[str, str]:
        """A network namespace for host `index`, linked to the lab's bridge at `address`."""
        netns, veth = f"{self.prefix}{index:02d}", f"avm{self.name}{index:02d}"
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev",
             "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        return netns, veth

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

    def _inventory(self, info: LabInfo, key_file: Path) -> str:
        url = f"http://{self.gateway}:{HTTP_PORT}"
        children: dict[str, Any] = {"lab": {"children": lab_groups(info.hosts)}}
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
        init = _container_init(host.pid)
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
            init = _container_init(host.pid)
            if init is not None:
                _signal(init, signal.SIGKILL)
            _signal(host.pid, signal.SIGKILL)
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
        for mnt in sorted(_mounts_under(self.dir), key=len, reverse=True):
            run(["umount", "-l", mnt], check=False)
        self._remove_network()
        if self.dir.exists():
            shutil.rmtree(self.dir / "hosts", ignore_errors=True)
            for f in ("lab.json", "inventory.yml", "known_hosts"):
                (self.dir / f).unlink(missing_ok=True)
            shutil.rmtree(self.dir / "www", ignore_errors=True)
        if pids:
            log.append(f"lab {self.name}: stopped {len(pids)} processes and cleaned up")

    def _stop_processes(self) -> set[int]:
        """Terminate, then kill, every process of this lab: its hosts and its HTTP server."""
        pids = _pids_using(self.dir / "hosts")
        with contextlib.suppress(LabError):
            info = self.info()
            pids |= {h.pid for h in info.hosts if h.pid}
            if info.http_pid:
                pids.add(info.http_pid)
        pids |= _pids_cmdline_contains(f"--bind {self.gateway} --directory {self.dir}")
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return pids

    def _remove_network(self) -> None:
        """Delete this lab's network namespaces, its hosts' links and its bridge."""
        netns = run(["ip", "netns", "list"], check=False).stdout.split("\n")
        for line in netns:
            ns = line.split(" ")[0]
            if ns.startswith(self.prefix):
                run(["ip", "netns", "delete", ns], check=False)
        links = run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
        for line in links:
            parts = line.split(":")
            if len(parts) > 1:
                ifname = parts[1].strip().split("@")[0]
                if ifname == self.bridge or self._ours(ifname):
                    run(["ip", "link", "delete", ifname], check=False)

    def leftovers(self) -> list[str]:
        """What of this lab still exists on the machine (empty after a clean `down`)."""
        found = [f"process {p}" for p in _pids_using(self.dir / "hosts")]
        found += [f"mount {m}" for m in _mounts_under(self.dir)]
        found += [f"netns {line.split(' ')[0]}" for line in
                  run(["ip", "netns", "list"], check=False).stdout.splitlines()
                  if line.startswith(self.prefix)]
        for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
            parts = line.split(":")
            ifname = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
            if ifname == self.bridge or self._ours(ifname):
                found.append(f"link {ifname}")
        return found


# Each booted host runs its own systemd, which takes several inotify instances; the kernel's
# default of 128 per user stops the twentieth host or so ("Too many open files").
INOTIFY_MINIMUM = {"max_user_instances": 4096, "max_user_watches": 524288}


def _raise_inotify_limits(log: list[str]) -> None:
    for name, minimum in INOTIFY_MINIMUM.items():
        path = Path("/proc/sys/fs/inotify") / name
        try:
            current = int(path.read_text().strip())
            if current < minimum:
                path.write_text(f"{minimum}\n")
                log.append(f"raised fs.inotify.{name} from {current} to {minimum}")
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot raise fs.inotify.{name} to {minimum} ({exc}); "
                           f"set it with sysctl and retry") from exc


def _apply_profile(merged: Path, profile: scenario.Profile, debs: dict[str, Path]) -> None:
    """Install the profile's stand-in packages in a host's root and break what it says."""
    if profile.packages:
        stage = merged / "tmp/avm-lab"
        stage.mkdir(exist_ok=True)
        for key in profile.packages:
            shutil.copy2(debs[key], stage / debs[key].name)
        run(["chroot", merged, "dpkg", "-i",
             *[f"/tmp/avm-lab/{debs[k].name}" for k in profile.packages]])
        shutil.rmtree(stage)
    if profile.sshd_down:
        (merged / "etc/systemd/system/ssh.service").symlink_to("/dev/null")
    if profile.dpkg_interrupted:
        # What dpkg leaves when it is killed mid-run: a journal entry it has not folded in.
        # apt then refuses to work until `dpkg --configure -a` is run.
        updates = merged / "var/lib/dpkg/updates"
        (updates / "0000").write_text(
            "Package: klnagent64\nStatus: install ok half-configured\n"
            f"Version: {packages.STAND_INS['klnagent64'].version}\n", encoding="utf-8")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _proc_cmdlines() -> dict[int, str]:
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
    return out


def _pids_using(hosts_dir: Path) -> set[int]:
    """systemd-nspawn processes whose root directory lies under hosts_dir."""
    needle = f"-D {hosts_dir}/"
    return {pid for pid, cmd in _proc_cmdlines().items()
            if cmd.startswith("systemd-nspawn ") and needle in cmd}


def _pids_cmdline_contains(text: str) -> set[int]:
    return {pid for pid, cmd in _proc_cmdlines().items() if text in cmd}


def _container_init(nspawn_pid: int) -> int | None:
    """The container's PID 1 (systemd), a descendant of the systemd-nspawn process."""
    for pid in descendants(nspawn_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
        except OSError:
            continue
    return None


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1].startswith(prefix):
            out.append(parts[1])
    return out


def _node_binds(known_hosts: Path, apt_key: Path) -> list[str]:
    """systemd-nspawn options giving a node what `ansible-runner worker` needs from us."""
    paths = {Path(sys.prefix), known_hosts, apt_key}
    if not Path(sys.base_prefix).resolve().is_relative_to("/usr"):
        paths.add(Path(sys.base_prefix))  # a Python built elsewhere (pyenv): the venv's base
    return [f"--bind-ro={p}" for p in sorted(paths)]


def lab_groups(hosts: tuple[LabHost, ...] | list[LabHost]) -> dict[str, Any]:
    """Every third host is a server, the others workstations, so a policy can order them."""
    groups: dict[str, Any] = {}
    for i, h in enumerate(hosts):
        name = "servers" if i % 3 == 2 else "workstations"
        groups.setdefault(name, {"hosts": {}})["hosts"][h.name] = {"ansible_host": h.address}
    return groups
