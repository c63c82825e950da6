"""The executor a run uses: a step on a set of hosts, run by the transport the inventory asks
for (local ansible-runner, or execution nodes), with per-host results from runner events.

Each step gets a fresh private data dir holding an inventory of only its own hosts (stepfiles),
so Ansible parses no more than it needs and nothing leaks between runs. Host results come
from runner events, never from stdout (events). Only failure events are written to the
artifacts, which keeps them small.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import StepResult
from orchestrator.execute import stepguard
from orchestrator.execute.local import LocalExecutor
from orchestrator.execute.nodes import ExecutionNode
from orchestrator.execute.remote import NodeExecutor
from orchestrator.execute.step import ExecConfig, Executor, ResultCallback, StepRequest
from orchestrator.inputs.secrets import Secrets


def transport(config: ExecConfig, secrets: Secrets, nodes: Sequence[ExecutionNode], *,
              cancel: threading.Event, log: Callable[[str], None]) -> Executor:
    """The executor for this run: the execution nodes if the inventory names any, else this
    machine."""
    if nodes:
        if secrets:
            raise ExecutionError("credentials (uninstall passwords) cannot be sent to "
                                 "execution nodes yet; run without execution_nodes in the "
                                 "inventory, or without --credentials")
        return NodeExecutor(config, nodes, cancel, log)
    return LocalExecutor(config, secrets, cancel)


class RunnerExecutor:
    """The executor the command line builds: one transport chosen at the start, a cancel flag
    the lease keeper and Ctrl-C set, and the clean-up of dead runs' steps."""

    def __init__(self, config: ExecConfig, secrets: Secrets | None = None,
                 nodes: Sequence[ExecutionNode] = (),
                 log: Callable[[str], None] | None = None, notes: Sequence[str] = ()) -> None:
        self.config = config
        # What the steps change in the user's Ansible configuration: said before the first.
        self.notes = tuple(notes)
        self.secrets = secrets or Secrets()
        self.cancel = threading.Event()
        self.nodes = tuple(nodes)
        self.log: Callable[[str], None] = log or (lambda _message: None)
        self.transport = transport(config, self.secrets, self.nodes, cancel=self.cancel,
                                   log=self.log)

    def run_step(self, request: StepRequest, on_result: ResultCallback) -> dict[str, StepResult]:
        for line in self.notes:
            self.log(line)
        self.notes = ()
        return self.transport.run_step(request, on_result)

    def close(self) -> None:
        """At the end of the run: what the transport keeps open between steps (the local
        transport's ssh connection masters)."""
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def end_orphans(self) -> list[str]:
        """Before hosts are re-probed: end the steps dead runs of this state left running on
        this machine (their guard could not), and say so."""
        return stepguard.end_orphans(self.config.state_key, self.log)
