"""Run one playbook step on a set of hosts with ansible-runner; per-host results from events.

Each invocation gets a fresh private data dir holding an inventory of only its own hosts (with
their variables), so Ansible parses no more than it needs and nothing leaks between runs. Host
results come from runner events (`runner_on_failed`, `runner_on_unreachable`, the
`avmigrate_report` debug task and `playbook_on_stats`), never from stdout. Only failure events
are written to the artifacts, which keeps them small.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator.core import procs
from orchestrator.core.errors import Aborted, ExecutionError
from orchestrator.core.models import InventoryHost, StepOutcome, StepResult
from orchestrator.core.names import STRICT
from orchestrator.execute import nodes, stepguard
from orchestrator.execute.nodes import ExecutionNode
from orchestrator.inputs.secrets import Secrets, VaultChannel

PLAYBOOK_DIR = Path(__file__).resolve().parents[2] / "playbooks"


@dataclass(frozen=True)
class ExecConfig:
    """How steps are run: where playbooks and artifacts live, and Ansible's parallelism."""

    playbook_dir: Path = PLAYBOOK_DIR
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


class _Unsafe(str):
    """A string Ansible must take literally: written with YAML's `!unsafe` tag."""

    __slots__ = ()


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(
    _Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_literal(v) for v in value]
    return value


def dump_unsafe(inventory: dict[str, Any]) -> str:
    """The step's inventory: every string value marked `!unsafe`, so that nothing an inventory
    says is ever evaluated as a Jinja template on the controller (host names stay plain keys)."""
    hosts = inventory["all"]["hosts"]
    marked = {"all": {"hosts": {name: _literal(v) for name, v in hosts.items()}}}
    return yaml.dump(marked, Dumper=_UnsafeDumper, sort_keys=True)


def host_key_message(msg: str) -> str:
    """ssh's host key refusals, said plainly; other messages unchanged."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in msg:
        return ("host key changed: the host's SSH key no longer matches known_hosts (rebuilt, "
                "or someone is impersonating it); nothing was done to it. Check the new key out "
                "of band, then replace its line in known_hosts")
    if "Host key verification failed" in msg or "No ED25519 host key is known" in msg:
        return ("host key unknown: the host is not in known_hosts; nothing was done to it. "
                "Record its key (ssh-keyscan, checked out of band) in known_hosts")
    return msg


def _failure_message(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if (not msg or msg == "One or more items failed") and "results" in res:
        # A loop: the first failed item says why.
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _failure_message(item)
    text = " ".join(str(msg).split())
    if text == "non-zero return code" and res.get("stderr"):
        # A command's own words say more than its return code: apt's first "E:" line, say.
        lines = [ln.strip() for ln in str(res["stderr"]).splitlines() if ln.strip()]
        said = next((ln for ln in lines if ln.startswith("E:")), lines[-1])
        text = f"{' '.join(said.split())} (rc {res.get('rc', '?')})"
    # A package manager's "sub-process returned an error code" hides the real cause, which a
    # maintainer script printed: name the first line of its output that says why.
    if "returned an error code" in text:
        lines = (str(res.get("stderr", "")) + "\n" + str(res.get("stdout", ""))).splitlines()
        for why in _WHY:
            line = next((ln for ln in lines if why.search(ln)
                         and "returned an error code" not in ln), None)
            if line is not None:
                text = f"{' '.join(line.split())} ({text})"
                break
    return text[:500]


# The most telling lines first: a refusal, then any error.
_WHY = (re.compile(r"refused|denied|not allowed", re.IGNORECASE),
        re.compile(r"cannot|can't|error:", re.IGNORECASE))


class Collector:
    """Per-host results of one step from ansible-runner's events, reported as they are known.

    The same for a local run and for events streamed back from an execution node.
    """

    def __init__(self, request: StepRequest, on_result: ResultCallback) -> None:
        self.request = request
        self.on_result = on_result
        self.names = {h.name for h in request.hosts}
        self.results: dict[str, StepResult] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.changes: dict[str, list[str]] = {}

    def emit(self, result: StepResult) -> None:
        if result.host in self.results or result.host not in self.names:
            return
        self.results[result.host] = result
        self.on_result(result)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event handler; True keeps the event in the artifacts."""
        step = self.request.step
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host")
        res = data.get("res") or {}
        if kind == "runner_on_ok" and host and res.get("changed"):
            task = str(data.get("task", "task"))
            if task not in self.changes.setdefault(host, []):
                self.changes[host].append(task)
        if kind == "runner_on_ok" and host and "avmigrate_report" in res:
            self.reports[host] = res["avmigrate_report"]
        elif kind == "runner_on_failed" and host and not data.get("ignore_errors"):
            msg = f"{data.get('task', 'task')}: {_failure_message(res)}"
            self.failures.setdefault(host, msg)
            self.emit(StepResult(host, step, StepOutcome.FAILED, msg))
            return True
        elif kind == "runner_on_unreachable" and host:
            msg = host_key_message(_failure_message(res)) or "unreachable"
            self.emit(StepResult(host, step, StepOutcome.UNREACHABLE, msg))
            return True
        elif kind == "playbook_on_stats":
            for h in sorted(self.names):
                if h in (data.get("dark") or {}):
                    self.emit(StepResult(h, step, StepOutcome.UNREACHABLE, "unreachable"))
                elif h in (data.get("failures") or {}):
                    self.emit(StepResult(h, step, StepOutcome.FAILED,
                                         self.failures.get(h, "failed")))
                elif h in (data.get("ok") or {}) or h in (data.get("skipped") or {}):
                    data_out = dict(self.reports.get(h, {}))
                    if self.request.check:
                        data_out["would_change"] = self.changes.get(h, [])
                    self.emit(StepResult(h, step, StepOutcome.OK, "", data_out))
        return False

    def finish(self, status: str, pdd: Path, rc: int | None = 0) -> None:
        """After the run: Ansible that never ran is an error; a host with no result failed.
        Ansible ended by a signal (its guard ended it, the OOM killer) may have been anywhere
        on a host with no result: that host's outcome is unknown, to be re-probed."""
        if rc is None or rc < 0 or rc >= 128:
            self._without_result(StepOutcome.UNKNOWN, f"Ansible was ended (exit {rc}) before "
                                 "this host's result; what happened on it is unknown")
            return
        if not self.results and self.names:
            # Not one host answered or failed: Ansible itself did not run. Touch no host state.
            stdout = pdd / "artifacts"
            first = ""
            for f in sorted(stdout.glob("*/stdout")):
                first = f.read_text(encoding="utf-8", errors="replace").strip()[:300]
            raise ExecutionError(f"{self.request.step}: Ansible did not run (runner status "
                                 f"{status}): {first or 'no output'}; see {stdout}")
        self._without_result(StepOutcome.FAILED, f"no result from Ansible (runner status "
                             f"{status}); see {pdd}/artifacts")

    def _without_result(self, outcome: StepOutcome, message: str) -> None:
        for h in sorted(self.names - set(self.results)):
            self.emit(StepResult(h, self.request.step, outcome, message))


# Paths on the controller that mean nothing on an execution node.
_LOCAL_ONLY_ENV = ("ANSIBLE_ROLES_PATH", "ANSIBLE_SSH_CONTROL_PATH_DIR", "ANSIBLE_LOCAL_TEMP")


def _scrub(pdd: Path) -> None:
    """Keep only runner's artifacts (status, rc, stdout, failure events): not the inventory,
    extravars, key or temporary files of the step."""
    for sub in ("env", "inventory", "tmp", "project"):
        shutil.rmtree(pdd / sub, ignore_errors=True)


class RunnerExecutor:
    """Executor on ansible-runner's Python API, on this machine."""

    def __init__(self, config: ExecConfig, secrets: Secrets | None = None,
                 nodes: Sequence[ExecutionNode] = ()) -> None:
        self.config = config
        self.secrets = secrets or Secrets()
        self.cancel = threading.Event()
        self.nodes = tuple(nodes)
        self.dead: dict[str, str] = {}  # execution nodes lost in this run, and why
        self._nodes_checked = False
        self.log: Callable[[str], None] = lambda _message: None
        self.guard = stepguard.Guard.install(config.state_key)
        if self.nodes and self.secrets:
            raise ExecutionError("credentials (uninstall passwords) cannot be sent to execution "
                                 "nodes yet; run without execution_nodes in the inventory, or "
                                 "without --credentials")

    def _envvars(self, pdd: Path, control_dir: Path) -> dict[str, str]:
        return {
            # ansible-runner turns host key checking off unless told otherwise: keep it on.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_ROLES_PATH": str(self.config.playbook_dir / "roles"),
            "ANSIBLE_PIPELINING": "True",
            # Connection sharing within one step only, and dead peers noticed in seconds: a
            # master left from before a network cut would hang every later connection.
            # ssh takes the first value given for an option: ours come first, so an
            # inventory cannot turn host key checking off (names.py refuses it too).
            "ANSIBLE_SSH_ARGS": (f"{STRICT} -o ControlMaster=auto "
                                 "-o ControlPersist=30s -o ServerAliveInterval=5 "
                                 "-o ServerAliveCountMax=3"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_TIMEOUT": "15",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        }

    def run_step(self, request: StepRequest, on_result: ResultCallback) -> dict[str, StepResult]:
        if self.nodes:
            return self._run_on_nodes(request, on_result)
        import ansible_runner  # noqa: PLC0415  (slow import, only when a step runs)

        real = _ensure_ansible_on_path()

        pdd = self._private_data_dir(request)
        inv_path = pdd / "inventory" / "hosts.yml"
        # Short, so that socket paths stay under the 108-byte limit.
        control_dir = Path(tempfile.mkdtemp(prefix="avm-cp-", dir="/tmp"))
        collector = Collector(request, on_result)
        channel = VaultChannel(self.secrets, pdd) if self.secrets else None
        args = [*(channel.cmdline() if channel else []), *(["--check"] if request.check else [])]
        try:
            runner = ansible_runner.run(
                private_data_dir=str(pdd),
                playbook=str(self.config.playbook_dir / request.playbook),
                inventory=str(inv_path),
                extravars=request.extravars,
                # The step runs under the guard: it dies with this process, however it dies.
                envvars=self._envvars(pdd, control_dir) | self._guard().env(real, request.step),
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
            _scrub(pdd)
            _close_masters(control_dir)
        status = getattr(runner, "status", "unknown")
        if self.cancel.is_set():
            raise Aborted(f"aborted during {request.step}; hosts caught mid-step keep their "
                          "intent and are re-probed by the next run")
        collector.finish(status, pdd, getattr(runner, "rc", None))
        self._rotate()
        return collector.results

    def _owner(self) -> str:
        """Who starts a worker on a node: this state, this process, this machine."""
        me = os.getpid()
        return f"{self.config.state_key}|{me}|{procs.start_ticks(me)}|{procs.machine_identity()}"

    def _orphaned(self, owner: str) -> bool:
        """A node's worker whose owner was a run of this state on this machine, now dead."""
        state, pid, start, machine = [*owner.split("|", 3), "", "", "", ""][:4]
        return (state == self.config.state_key and machine == procs.machine_identity()
                and pid.isdigit() and start.isdigit() and not procs.alive(int(pid), int(start)))

    def _guard(self) -> stepguard.Guard:
        self.guard = self.guard.ready()
        return self.guard

    def end_orphans(self) -> list[str]:
        """Before hosts are re-probed: end the steps dead runs of this state left running on
        this machine (their guard could not), and say so."""
        return stepguard.end_orphans(self.config.state_key, self.log)

    def _run_on_nodes(self, request: StepRequest, on_result: ResultCallback
                      ) -> dict[str, StepResult]:
        """The step's hosts sharded across the live execution nodes, streamed at once."""
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
        collector = Collector(request, on_result)
        env = {k: v for k, v in self._envvars(Path("/nonexistent"), Path("/nonexistent")).items()
               if k not in _LOCAL_ONLY_ENV}
        shards = []
        names: dict[str, set[str]] = {}
        for node, hosts in nodes.shard(request.hosts, alive):
            key = nodes.target_key(hosts)
            pdd = self._private_data_dir(request, hosts, drop=(
                ("ansible_ssh_private_key_file",) if key else ()))
            kwargs: dict[str, Any] = {
                "playbook_dir": self.config.playbook_dir,
                "inventory": str(pdd / "inventory" / "hosts.yml"),
                "extravars": request.extravars, "envvars": env, "forks": self.config.forks,
                "verbosity": self.config.verbosity or None,
                "cmdline": "--check" if request.check else None,
            }
            if key:
                kwargs["ssh_key"] = key
            shards.append((node, pdd, kwargs))
            names[node.name] = {h.name for h in hosts}
        try:
            dead = nodes.run_threads(shards, request.playbook, collector.handle,
                                     self.cancel.is_set, self._owner())
        finally:
            for _, pdd, _ in shards:
                _scrub(pdd)
        if self.cancel.is_set():
            raise Aborted(f"aborted during {request.step}; hosts caught mid-step keep their "
                          "intent and are re-probed by the next run")
        for node, _, _ in shards:
            if node.name in dead:
                self.dead[node.name] = dead[node.name]
                for h in sorted(names[node.name] - set(collector.results)):
                    collector.emit(nodes.unknown_result(h, request.step, node,
                                                        dead[node.name]))
        collector.finish("done" if not dead else "node lost", shards[0][1])
        self._rotate()
        return collector.results

    def _private_data_dir(self, request: StepRequest, hosts: tuple[InventoryHost, ...] | None
                          = None, drop: tuple[str, ...] = ()) -> Path:
        """A fresh private data dir under the artifacts, with an inventory of only `hosts`."""
        # Absolute: ansible-runner works from its own directory, a relative path breaks there.
        artifacts = self.config.artifacts_dir.resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        pdd = Path(tempfile.mkdtemp(prefix=f"{request.step}-", dir=artifacts))
        inventory = {"all": {"hosts": {
            h.name: _strict({k: v for k, v in {**h.vars, **request.host_vars.get(h.name, {})}
                             .items() if k not in drop})
            for h in (request.hosts if hosts is None else hosts)
        }}}
        inv_path = pdd / "inventory" / "hosts.yml"
        inv_path.parent.mkdir()
        inv_path.write_text(dump_unsafe(inventory), encoding="utf-8")
        return pdd

    def _rotate(self) -> None:
        dirs = sorted((d for d in self.config.artifacts_dir.resolve().iterdir() if d.is_dir()),
                      key=lambda d: d.stat().st_mtime)
        for old in dirs[: max(0, len(dirs) - self.config.keep_runs)]:
            shutil.rmtree(old, ignore_errors=True)


def _strict(variables: dict[str, Any]) -> dict[str, Any]:
    """A host's own `ansible_ssh_args` replaces the ssh_args we give Ansible: ours goes first in
    it too, so that no inventory variable removes strict host key checking (ssh takes the
    first value of an option; names.py refuses lax values anyway)."""
    if "ansible_ssh_args" in variables:
        variables["ansible_ssh_args"] = f"{STRICT} {variables['ansible_ssh_args']}".strip()
    return variables


def _close_masters(control_dir: Path) -> None:
    """Stop this step's ssh connection masters and remove their directory."""
    for sock in control_dir.glob("*"):
        if sock.is_socket():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "avm-control"],
                           capture_output=True, timeout=10, check=False)
    shutil.rmtree(control_dir, ignore_errors=True)


def _ensure_ansible_on_path() -> str:
    """ansible-runner starts `ansible-playbook` by name: find the one beside our Python (our
    step guard takes that name on the step's PATH and runs this one)."""
    found = shutil.which("ansible-playbook")
    if found is None:
        bindir = str(Path(sys.executable).parent)
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        found = shutil.which("ansible-playbook")
        if found is None:
            raise ExecutionError("ansible-playbook is not installed; run `make venv`")
    return found


def default_artifacts_dir(state_path: str) -> Path:
    base = Path(state_path).parent if "://" not in state_path else Path.cwd()
    return Path(os.environ.get("AVMIGRATE_ARTIFACTS", base / "avmigrate-artifacts"))
