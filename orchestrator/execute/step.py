"""What a step is: the request, the executor's settings, and the Executor protocol every
transport (local ansible-runner, execution nodes) implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.core.assets import COLLECTIONS_ROOT, PLAYBOOK_DIR
from orchestrator.core.errors import Aborted
from orchestrator.core.models import InventoryHost, StepResult


@dataclass(frozen=True)
class ExecConfig:
    """How steps are run: where playbooks and artifacts live, and Ansible's parallelism."""

    playbook_dir: Path = PLAYBOOK_DIR
    # Where Ansible finds the avmigrate.migration collection (the module and roles).
    collections_root: Path = COLLECTIONS_ROOT
    artifacts_dir: Path = Path("avmigrate-artifacts")
    forks: int = 10
    verbosity: int = 0
    keep_runs: int = 30
    # The state this run writes (stepguard.state_key): a later run of the same state ends the
    # step processes this one leaves behind if it dies and their guard could not.
    state_key: str = ""


@dataclass(frozen=True)
class StepRequest:
    """One step: a playbook on some hosts, with shared and per-host variables."""

    step: str
    playbook: str
    hosts: tuple[InventoryHost, ...]
    extravars: dict[str, Any]
    host_vars: dict[str, dict[str, Any]]
    check: bool = False  # Ansible's check mode: report what would change, change nothing


ResultCallback = Callable[[StepResult], None]


class Executor(Protocol):
    """Runs a step and reports each host's result through the callback as it is known."""

    def run_step(self, request: StepRequest, on_result: ResultCallback) -> dict[str, StepResult]:
        ...


def aborted(request: StepRequest) -> Aborted:
    """The error of a step cancelled while it ran (a lost lease, a second Ctrl-C)."""
    return Aborted(f"aborted during {request.step}; hosts caught mid-step keep their "
                   "intent and are re-probed by the next run")
