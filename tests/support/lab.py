"""Helpers for tests on lab hosts: run avmigrate as a process, kill it, sample the hosts' truth.

The sampler is the oracle of the lab tests: it judges each host by what runs on it, never by
avmigrate's state. A host counts as protected only when, at that moment, KESL's protecting
service runs or its clamd detects the EICAR test file; it is asked over one persistent SSH
connection per host, at least once a second (and, when sshd is down, from inside the host
without SSH). A powered-off host runs nothing and is not counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from orchestrator.core.procs import pid_alive
from orchestrator.core.protection import EICAR_B64
from orchestrator.execute import stepguard
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo

AVMIGRATE = [sys.executable, "-m", "orchestrator.cli.cli"]
# Asked of a host: does KESL's protection run, and does clamd detect EICAR right now?
# A host's protection as its products say it: KESL's service running; clamd detecting the EICAR
# test file; MDE's real-time protection on and healthy (the lab stand-in quarantines exactly
# then); the Falcon sensor running, registered and not in reduced functionality mode.
TRUTH = ("systemctl is-active kesl.service; "
         f"echo {EICAR_B64} | base64 -d | timeout 5 clamdscan --no-summary - 2>&1; "
         "echo rc=$?; "
         "[ -x /usr/bin/mdatp ] && echo mde=$(mdatp health --field "
         "real_time_protection_enabled 2>/dev/null)/$(mdatp health --field healthy 2>/dev/null); "
         "[ -x /opt/CrowdStrike/falconctl ] && systemctl is-active --quiet falcon-sensor.service "
         "&& echo falcon: $(/opt/CrowdStrike/falconctl -g --aid --rfm-state); true")
FALCON_OK = re.compile(r'^falcon: aid="[0-9a-f]{32}", rfm-state=false\.$', re.M)
PERIOD_S = 0.5


# Every orchestrator a test started: a test that fails mid-run must not leave one running
# against the next test's lab (same names, addresses and known_hosts file). See end_runs().
STARTED: list[subprocess.Popen[str]] = []


def end_runs() -> list[int]:
    """Kill every orchestrator a test started that still runs (its whole session: the
    orchestrator and the steps under it); the pids it had to kill."""
    killed = []
    for proc in STARTED:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
    STARTED.clear()
    return killed


def start_run(workdir: Path, inventory: str, *args: str, state: str = "state.db",
              user: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, AVMIGRATE_STATE=state)
    if user is not None:
        env["SUDO_USER"] = user
    log = (workdir / "runs.log").open("a")
    log.write(f"\n=== run {' '.join(args)} at {time.time():.1f}\n")
    log.flush()
    proc = subprocess.Popen([*AVMIGRATE, "run", "-i", inventory, "--yes", "--no-progress", *args],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    STARTED.append(proc)
    return proc


def kill_orchestrator(proc: subprocess.Popen[str], timeout: float = 15.0) -> list[str]:
    """SIGKILL the orchestrator process alone (as the OOM killer would), then wait until no
    step process it started lives on. Returns the steps found still alive after `timeout`."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while time.monotonic() < deadline:
        left = [f"{info.get('step')} (guard {info['pid']}, child {info.get('child')})"
                for info in _steps() if info.get("owner") == proc.pid and (
                    pid_alive(int(str(info["pid"])))
                    or pid_alive(int(str(info.get("child") or 0))))]
        if not left:
            break
        time.sleep(0.2)
    return left


def _steps() -> list[dict[str, object]]:
    out = []
    for path in stepguard.registry().glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


@dataclass
class Sampler:
    """Samples, from outside avmigrate, which lab hosts are protected at each moment."""

    lab: Lab
    info: LabInfo
    hosts: tuple[LabHost, ...] = ()
    samples: int = 0
    max_unprotected: int = 0
    seen: list[tuple[float, list[str]]] = field(default_factory=list)
    truth: dict[str, tuple[float, bool | None]] = field(default_factory=dict)
    baseline: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Sampler:
        self.hosts = self.hosts or tuple(h for h in self.info.hosts if not h.sshd_down)
        for host in self.hosts:
            first = self._ask_inside(host)
            if first:
                self.baseline.add(host.name)  # protected before anything began
            self.truth[host.name] = (time.monotonic(), first)
        for host in self.hosts:
            t = threading.Thread(target=self._watch, args=(host,), daemon=True,
                                 name=f"sampler-{host.name}")
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._count, daemon=True, name="sampler-count")
        t.start()
        self._threads.append(t)
        return self

    @staticmethod
    def judge(said: str) -> bool:
        lines = said.split("\n")
        kesl = bool(lines) and lines[0].strip() == "active"
        return (kesl or ("FOUND" in said and "rc=1" in said) or "mde=true/true" in said
                or FALCON_OK.search(said) is not None)

    def _connect(self, host: LabHost) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(self.info.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(host.address, username=self.info.user, key_filename=self.info.key_file,
                       timeout=3, banner_timeout=3, auth_timeout=3, look_for_keys=False,
                       allow_agent=False)
        return client

    def _ask_ssh(self, client: paramiko.SSHClient) -> bool:
        _, out, _ = client.exec_command(TRUTH, timeout=8)
        return self.judge(out.read().decode(errors="replace"))

    def _ask_inside(self, host: LabHost) -> bool | None:
        """Without SSH (sshd down or the network cut): from inside the host. None: it is off."""
        try:
            result = self.lab.exec(host, ["sh", "-c", TRUTH], check=False, timeout=10)
        except Exception:  # noqa: BLE001 - a host powered off on purpose runs nothing
            return None
        return self.judge(result.stdout)

    def _watch(self, host: LabHost) -> None:
        client: paramiko.SSHClient | None = None
        while not self._stop.is_set():
            verdict: bool | None
            try:
                if client is None:
                    client = self._connect(host)
                verdict = self._ask_ssh(client)
            except Exception:  # noqa: BLE001 - sshd gone, network cut: look from inside
                if client is not None:
                    client.close()
                client = None
                verdict = self._ask_inside(host)
            with self._lock:
                self.truth[host.name] = (time.monotonic(), verdict)
                self.samples += 1
            self._stop.wait(PERIOD_S)
        if client is not None:
            client.close()

    def _count(self) -> None:
        while not self._stop.wait(PERIOD_S):
            with self._lock:
                bare = sorted(n for n, (_, ok) in self.truth.items()
                              if ok is False and n in self.baseline)
            if bare:
                self.seen.append((time.time(), bare))
            self.max_unprotected = max(self.max_unprotected, len(bare))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
