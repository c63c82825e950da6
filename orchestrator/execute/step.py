"""What a step is: the request, the executor's settings, and the Executor protocol every
transport (local ansible-runner, execution nodes) implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.core.assets import COLLECTIONS_ROOT, PLAYBOOK_DIR
from orchestrator.core.errors import Aborted
from orchestrator.core.models import InventoryHost, StepResult
from orchestrator.inputs.ansiblecfg import ANSIBLE_DEFAULT_SSH_ARGS


@dataclass(frozen=True)
class Prompts:
    """Passwords the operator typed once, for every step of the run."""

    vault: bytes | None = field(default=None, repr=False)
    become: bytes | None = field(default=None, repr=False)

    def cmdline(self) -> list[str]:
        return [*(["--ask-vault-pass"] if self.vault is not None else []),
                *(["--ask-become-pass"] if self.become is not None else [])]

    def expect(self) -> dict[str, str]:
        """ansible-runner's `passwords`: prompt patterns to answers."""
        out = {}
        if self.vault is not None:
            out[r"^Vault password:\s*?$"] = self.vault.decode()
        if self.become is not None:
            out[r"^BECOME password.*:\s*?$"] = self.become.decode()
        return out


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
    # The user's inventory sources (absolute): the local steps run against them, limited to
    # the step's hosts. Empty: a generated inventory of the hosts' resolved variables.
    sources: tuple[str, ...] = ()
    # The user's vault identities (label@/absolute/path) given to every step.
    vault_ids: tuple[str, ...] = ()
    # The user's ansible.cfg (None: Ansible's defaults), its ssh_args, whether it sets
    # pipelining: the steps run with that configuration (see inputs/ansiblecfg.py).
    ansible_config: Path | None = None
    ssh_args: str = ANSIBLE_DEFAULT_SSH_ARGS
    pipelining: bool | None = None
    # The user's own collections path, searched after the package's.
    user_collections: tuple[str, ...] = ()
    # The user's playbook directory: its group_vars/ and host_vars/ reach the steps as
    # play-adjacent variables (the step's playbooks are copied beside links to them).
    user_playbook_dir: Path | None = None
    # Answers typed at the prompts ansible-playbook would show (--ask-vault-pass,
    # --ask-become-pass), given to it through ansible-runner's `passwords`; never written.
    prompts: Prompts = field(default_factory=Prompts, repr=False, compare=False)


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
