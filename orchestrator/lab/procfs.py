"""What /proc says about a lab's processes and mounts, and signalling those processes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def send_signal(pid: int, sig: int) -> None:
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


def pids_using(hosts_dir: Path) -> set[int]:
    """systemd-nspawn processes whose root directory lies under hosts_dir."""
    needle = f"-D {hosts_dir}/"
    return {pid for pid, cmd in _proc_cmdlines().items()
            if cmd.startswith("systemd-nspawn ") and needle in cmd}


def pids_cmdline_contains(text: str) -> set[int]:
    return {pid for pid, cmd in _proc_cmdlines().items() if text in cmd}


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1].startswith(prefix):
            out.append(parts[1])
    return out
