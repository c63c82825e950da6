"""The execution-node transport: a step's hosts sharded across the live nodes, each shard
streamed to an `ansible-runner worker` there (the wire protocol is nodes.py's)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.core import procs
from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import StepResult
from orchestrator.execute import nodes, stepfiles
from orchestrator.execute.events import Collector
from orchestrator.execute.nodes import ExecutionNode, Shard
from orchestrator.execute.step import ExecConfig, ResultCallback, StepRequest, aborted


class NodeExecutor:
    """Executor on the inventory's execution nodes; a node lost mid-step leaves its hosts
    UNKNOWN and is not used again in this run."""

    def __init__(self, config: ExecConfig, execution_nodes: Sequence[ExecutionNode],
                 cancel: threading.Event, log: Callable[[str], None]) -> None:
        self.config = config
        self.nodes = tuple(execution_nodes)
        self.cancel = cancel
        self.log = log
        self.dead: dict[str, str] = {}  # execution nodes lost in this run, and why
        self._nodes_checked = False

    def run_step(self, request: StepRequest, on_result: ResultCallback) -> dict[str, StepResult]:
        """The step's hosts sharded across the live execution nodes, streamed at once."""
        collector = Collector(request, on_result)
        shards = self._shards(request, self._alive(request))
        try:
            dead = nodes.run_threads(shards, request.playbook, collector.handle,
                                     self.cancel.is_set, self._owner())
        finally:
            for shard in shards:
                stepfiles.scrub(shard.pdd)
        if self.cancel.is_set():
            raise aborted(request)
        for shard in shards:
            if shard.node.name in dead:
                why = self.dead[shard.node.name] = dead[shard.node.name]
                for h in sorted({h.name for h in shard.hosts} - set(collector.results)):
                    collector.emit(nodes.unknown_result(h, request.step, shard.node, why))
        collector.finish("done" if not dead else "node lost", shards[0].pdd)
        stepfiles.rotate(self.config)
        return collector.results

    def _alive(self, request: StepRequest) -> list[ExecutionNode]:
        """The nodes still usable; checked (and cleared of dead runs' workers) once a run."""
        if not self._nodes_checked:
            self._nodes_checked = True
            for name, why in nodes.unreachable(self.nodes, self._orphaned, self.log).items():
                self.dead[name] = why
                self.log(f"execution node {name} is not usable, not used in this run: {why}")
        alive = [n for n in self.nodes if n.name not in self.dead]
        if not alive:
            lost = "; ".join(f"{k}: {v}" for k, v in sorted(self.dead.items()))
            raise ExecutionError(f"no execution node left for {request.step} ({lost}); hosts "
                                 "caught mid-step are re-probed by the next run")
        return alive

    def _shards(self, request: StepRequest, alive: list[ExecutionNode]) -> list[Shard]:
        """One private data dir and job per node; the targets' key goes to the worker's agent,
        not into the inventory."""
        env = {k: v for k, v in stepfiles.envvars(self.config, Path("/nonexistent"),
                                                  Path("/nonexistent")).items()
               if k not in stepfiles.LOCAL_ONLY_ENV}
        for h in request.hosts:
            if any(isinstance(v, str) and v.startswith("<vaulted:") for v in h.vars.values()):
                raise ExecutionError(
                    f"host {h.name} has vault-encrypted variables, which execution nodes "
                    "cannot decrypt yet; run without execution_nodes in the inventory")
        shards = []
        for node, hosts in nodes.shard(request.hosts, alive):
            key = nodes.target_key(hosts)
            pdd = stepfiles.private_data_dir(self.config, request, hosts, drop=(
                ("ansible_ssh_private_key_file",) if key else ()))
            job = nodes.Job(
                playbook_dir=self.config.playbook_dir,
                collections_root=self.config.collections_root,
                inventory=str(pdd / "inventory" / "hosts.yml"),
                extravars=request.extravars, envvars=env, forks=self.config.forks,
                verbosity=self.config.verbosity or None,
                cmdline="--check" if request.check else None, ssh_key=key)
            shards.append(Shard(node, hosts, pdd, job))
        return shards

    def _owner(self) -> str:
        """Who starts a worker on a node: this state, this process, this machine."""
        me = os.getpid()
        return f"{self.config.state_key}|{me}|{procs.start_ticks(me)}|{procs.machine_identity()}"

    def _orphaned(self, owner: str) -> bool:
        """A node's worker whose owner was a run of this state on this machine, now dead."""
        state, pid, start, machine = [*owner.split("|", 3), "", "", "", ""][:4]
        return (state == self.config.state_key and machine == procs.machine_identity()
                and pid.isdigit() and start.isdigit() and not procs.alive(int(pid), int(start)))
