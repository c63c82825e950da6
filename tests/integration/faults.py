"""Helpers for fault tests: run avmigrate as a process, sample hosts, check the record."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.classify import SWAP
from orchestrator.lab.lab import Lab, LabInfo
from orchestrator.models import HostState
from orchestrator.procs import descendants
from orchestrator.state import SqliteStore

AVMIGRATE = [sys.executable, "-m", "orchestrator.cli"]
BANNED_UNITS = ("kesl.service",)
REPLACEMENT_UNITS = ("clamav-daemon.service",)


def start_run(workdir: Path, inventory: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, AVMIGRATE_STATE="state.db")
    log = (workdir / "runs.log").open("a")
    log.write(f"\n=== run {' '.join(args)} at {time.time():.1f}\n")
    log.flush()
    return subprocess.Popen([*AVMIGRATE, "run", "-i", inventory, "--yes", *args],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def power_loss(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the orchestrator and everything it started, as a power loss would."""
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Sampler:
    """Counts, every moment it can, lab hosts with neither KESL nor ClamAV active."""

    lab: Lab
    info: LabInfo
    max_unprotected: int = 0
    samples: int = 0
    seen: list[tuple[float, list[str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            bare = []
            for host in self.info.hosts:
                try:
                    active = self.lab.protection(host, BANNED_UNITS + REPLACEMENT_UNITS)
                except Exception:  # noqa: BLE001, S112 - a host powered off on purpose
                    continue
                if not any(active.values()):
                    bare.append(host.name)
            self.samples += 1
            if bare:
                self.seen.append((time.time(), bare))
            self.max_unprotected = max(self.max_unprotected, len(bare))
            self._stop.wait(0.3)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def max_windows_from_record(store: SqliteStore) -> int:
    """Largest number of hosts at once between banned product stopped and replacement verified,
    from the committed transitions (a window opens on entering a swap removal, SWAPPING or
    UNPROTECTED, and closes on entering any other state)."""
    events: list[tuple[float, int]] = []
    open_since: dict[str, bool] = {}
    for t in store.history():
        # A swap removal says so in its reason (the host's strategy may differ run to run).
        opening = t.to_state in (HostState.SWAPPING, HostState.UNPROTECTED) or (
            t.to_state == HostState.REMOVING and t.reason.startswith(f"{SWAP}:"))
        was_open = open_since.get(t.host, False)
        if opening and not was_open:
            events.append((t.at, +1))
            open_since[t.host] = True
        elif not opening and was_open:
            events.append((t.at, -1))
            open_since[t.host] = False
    current = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak
