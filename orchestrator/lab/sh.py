"""Running the lab's host-side commands: fixed argument vectors, never a shell."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from orchestrator.core.errors import LabError


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise LabError naming it and the end of its stderr."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(
            f"{args[0]} is not installed; run `make deps` (or install it) and retry"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(args[:4])}` did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"`{' '.join(args[:6])}` failed ({proc.returncode}): {' | '.join(tail)}")
    return proc
