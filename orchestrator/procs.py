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
