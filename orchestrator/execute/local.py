"""The local transport: a step run by ansible-runner on this machine, under the step guard."""

from __future__ import annotations

import shlex
import tempfile
import threading
from pathlib import Path

from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import StepResult
from orchestrator.execute import stepfiles, stepguard
from orchestrator.execute.events import Collector
from orchestrator.execute.step import ExecConfig, ResultCallback, StepRequest, aborted
from orchestrator.inputs.secrets import Secrets, VaultChannel


class LocalExecutor:
    """Executor on ansible-runner's Python API, on this machine."""

    def __init__(self, config: ExecConfig, secrets: Secrets, cancel: threading.Event) -> None:
        self.config = config
        self.secrets = secrets
        self.cancel = cancel
        self.guard = stepguard.Guard.install(config.state_key)
        # One ssh connection per host across the steps of a run: the control masters live in
        # this directory until close() (keep-alives end a master whose host went away).
        self._control_dir: Path | None = None

    def control_dir(self) -> Path:
        if self._control_dir is None or not self._control_dir.is_dir():
            # Short, so that socket paths stay under the 108-byte limit.
            self._control_dir = Path(tempfile.mkdtemp(prefix="avm-cp-", dir="/tmp"))
        return self._control_dir

    def close(self) -> None:
        """Stop the run's ssh connection masters."""
        if self._control_dir is not None:
            stepfiles.close_masters(self._control_dir)
            self._control_dir = None

    def run_step(self, request: StepRequest, on_result: ResultCallback) -> dict[str, StepResult]:
        import ansible_runner  # noqa: PLC0415  (slow import, only when a step runs)

        real = stepfiles.ensure_ansible_on_path()
        config = self.config
        limit: str | None = None
        inventory: str | list[str]
        extravars = request.extravars
        if config.sources:  # the user's own inventory, limited to this step's hosts
            pdd = stepfiles.new_private_data_dir(config, request)
            inventory, limit = stepfiles.user_inventory(config, request, pdd)
            extravars = {**extravars, **stepfiles.user_extravars(config)}
        else:
            pdd = stepfiles.private_data_dir(config, request)
            inventory = str(pdd / "inventory" / "hosts.yml")
        playbook = stepfiles.playbook_for(config, request, pdd)
        control_dir = self.control_dir()
        collector = Collector(request, on_result)
        channel = VaultChannel(self.secrets, pdd) if self.secrets else None
        args = [*stepfiles.cmdline(config), *(channel.cmdline() if channel else []),
                *(["--check"] if request.check else [])]
        try:
            runner = ansible_runner.run(
                private_data_dir=str(pdd),
                playbook=str(playbook),
                inventory=inventory,
                limit=limit,
                passwords=config.prompts.expect() or None,
                extravars=extravars,
                # The step runs under the guard: it dies with this process, however it dies.
                envvars=(stepfiles.envvars(self.config, pdd, control_dir)
                         | self._guard().env(real, request.step)),
                forks=self.config.forks,
                verbosity=self.config.verbosity or None,
                quiet=True,
                event_handler=collector.handle,
                cancel_callback=self.cancel.is_set,
                rotate_artifacts=0,
                cmdline=shlex.join(args) if args else None,
            )
        except Exception as exc:  # ansible-runner raises bare exceptions on setup problems
            raise ExecutionError(f"could not start ansible-runner for {request.step}: {exc}"
                                 ) from exc
        finally:
            if channel is not None:
                channel.close()
            stepfiles.scrub(pdd)
            if self.cancel.is_set():  # aborted: no connection of this run outlives the step
                self.close()
        if self.cancel.is_set():
            raise aborted(request)
        collector.finish(getattr(runner, "status", "unknown"), pdd, getattr(runner, "rc", None))
        stepfiles.rotate(self.config)
        return collector.results

    def _guard(self) -> stepguard.Guard:
        self.guard = self.guard.ready()
        return self.guard

