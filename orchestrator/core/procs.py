"""Small facts about processes on this machine, read from /proc, and ending a process tree.

The tree-ending functions are also shipped as source (`script_source()`) to the programs that
run in a process of their own: the step guard, and an execution node's watchdog and cleaner.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
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


def kill_below(root: int, passes: int = 3) -> None:
    """SIGKILL every process below `root`, pass after pass until none is left (at most
    `passes`): what was forking during one pass is caught by the next."""
    for _ in range(passes):
        victims = descendants(root)
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def kill_tree(root: int, passes: int = 3) -> None:
    """SIGKILL `root` and every process below it; those below first, while they are still
    found below it (once `root` dies its orphans are re-parented elsewhere)."""
    kill_below(root, passes)
    with contextlib.suppress(OSError):
        os.kill(root, signal.SIGKILL)


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


@functools.cache
def script_source() -> str:
    """The program text of children_map, descendants, kill_below and kill_tree, standard
    library only, for a script run by another Python (here or on an execution node): written
    once, above, and shipped rather than copied. `from __future__` first: the annotations
    are then never evaluated, whatever the remote Python. Read when a step first needs it,
    not at import: `avmigrate status` never does."""
    import inspect  # noqa: PLC0415 - costs every command's start otherwise

    return "\n".join([
        "from __future__ import annotations",
        "import contextlib, os, signal, time",
        "from pathlib import Path",
        *(inspect.getsource(f) for f in (children_map, descendants, kill_below, kill_tree)),
    ])
