"""Small facts about processes on this machine, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible now."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process below pid, nearest first."""
    children = children_map()
    out, queue = [], list(children.get(pid, []))
    while queue:
        c = queue.pop(0)
        out.append(c)
        queue.extend(children.get(c, []))
    return out


def start_ticks(pid: int) -> int:
    """When the process started (clock ticks since boot), to tell it from a later process
    that reuses its pid; 0 if unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def alive(pid: int, started: int = 0) -> bool:
    """The process `pid` still runs, and is the one that started at `started` (if known)."""
    if not pid_alive(pid):
        return False
    return not started or start_ticks(pid) in (0, started)


def machine_identity() -> str:
    """Who can judge our pids: this kernel's boot and our PID namespace. Two containers that
    share a host name (or an image's machine-id) still differ here; a pid is only meaningful
    to a process with the same identity."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        ns = Path("/proc/self/ns/pid").stat().st_ino
    except OSError:
        ns = 0
    return f"{boot}/pidns:{ns}"
