"""Execution nodes: a step's hosts sharded across machines running `ansible-runner worker`.

For each shard the controller opens an SSH channel to its node with paramiko (host key
checked against known_hosts), starts `ansible-runner worker` there, streams the job to it
with ansible-runner's `transmit` and reads the results back with `process`: the protocol
AWX and Automation Platform use between their control and execution planes. Events come
back to the controller's thread and are handled exactly as for a local run.

A node that stops answering mid-step (no keepalive for NODE_SILENCE_S, its connection
dropped, its worker killed) leaves its hosts with outcome UNKNOWN; the engine re-probes them
before doing anything else to them. The node is not used again in this run.

No worker outlives the run that started it: on the node it runs under a small watchdog that
holds the SSH channel's input open and ends the worker's whole process tree when that input
closes (the controller finished, or died: its kernel closes the connection), or when it falls
silent: after the job the controller sends a heartbeat every HEARTBEAT_S, so a controller
that vanished without closing the connection (a power loss, a cut network) is noticed within
NODE_SILENCE_S, before its lease could expire. A worker left behind anyway is found by the
next run of the same state from this machine, which ends it before the node is used.
"""

from __future__ import annotations

import getpass
import queue
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import InventoryHost, StepOutcome, StepResult
from orchestrator.execute import ssh, sshconfig
from orchestrator.execute.nodescripts import leftovers, watchdog
from orchestrator.execute.sweep import known_hosts_files

NODE_SILENCE_S = 30.0  # the worker sends a keepalive every 5 s of quiet
KEEPALIVE_S = 5
# The controller's heartbeat to the watchdog after the job; silence that is too long (below
# half a lease's life, 15 s) ends the worker.
HEARTBEAT_S = 3.0
OWNER_TAG = "avm-owner="

@dataclass(frozen=True)
class ExecutionNode:
    """A machine that runs `ansible-runner worker` for us, reached over SSH."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path | None
    known_hosts: tuple[Path, ...]
    runner_venv: str  # a directory whose bin/ has ansible-runner and ansible-playbook; "" = PATH

    @classmethod
    def from_host(cls, host: InventoryHost) -> ExecutionNode:
        v = host.vars
        key = v.get("ansible_ssh_private_key_file")
        return cls(name=host.name, address=host.address, port=int(v.get("ansible_port", 22)),
                   user=str(v.get("ansible_user") or getpass.getuser()),
                   key_file=Path(str(key)) if key else None,
                   known_hosts=known_hosts_files(host),
                   runner_venv=str(v.get("avmigrate_runner_venv", "")))

    @property
    def python(self) -> str:
        return f"{self.runner_venv}/bin/python" if self.runner_venv else "python3"

    def worker_command(self, directory: str, owner: str = "") -> str:
        """`ansible-runner worker` under the watchdog; `owner` names the run that starts it
        (machine, pid, start time, state) for the next run to judge if it is left behind."""
        runner = f"{self.runner_venv}/bin/ansible-runner" if self.runner_venv else "ansible-runner"
        path = f"PATH={shlex.quote(self.runner_venv + '/bin')}:$PATH " if self.runner_venv else ""
        return (f"{path}{shlex.quote(self.python)} -c {shlex.quote(watchdog())} "
                f"{shlex.quote(OWNER_TAG + owner)} {shlex.quote(runner)} worker "
                f"--private-data-dir {shlex.quote(directory)} --delete "
                f"--keepalive-seconds {KEEPALIVE_S}")

    def open_channel(self) -> tuple[paramiko.SSHClient, paramiko.Channel]:
        """A logged-in client and a fresh session channel on it."""
        client = self.connect()
        transport = client.get_transport()
        if transport is None:  # pragma: no cover - connect() returned a live client
            client.close()
            raise ssh.SSHError(f"execution node {self.name}: no SSH transport")
        return client, transport.open_session()

    def connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        # Hashed names read; @cert-authority/@revoked lines skipped (paramiko cannot judge
        # them): a node whose key is known only through a CA is refused as unknown.
        client.get_host_keys().update(sshconfig.load_known_hosts(self.known_hosts).keys)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.address, port=self.port, username=self.user,
                           key_filename=str(self.key_file) if self.key_file else None,
                           timeout=15, banner_timeout=15, auth_timeout=15,
                           allow_agent=self.key_file is None, look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ssh.SSHError(f"execution node {self.name}: host key changed; refusing to "
                               "connect") from exc
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise ssh.SSHError(f"execution node {self.name}: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
        return client


def _run(node: ExecutionNode, command: str) -> tuple[int, str]:
    client, channel = node.open_channel()
    try:
        channel.settimeout(NODE_SILENCE_S)
        channel.exec_command(command)
        said = channel.makefile("rb").read().decode(errors="replace")
        return channel.recv_exit_status(), said
    finally:
        client.close()


def unreachable(nodes: Sequence[ExecutionNode], orphaned: Callable[[str], bool] | None = None,
                log: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
    """Nodes that cannot run a worker now (checked at once): name -> why. On the others, the
    workers whose owner `orphaned` judges dead (a run of ours that vanished without closing
    its channel) are ended first, and said."""
    def check(node: ExecutionNode) -> str | None:
        runner = (f"{node.runner_venv}/bin/ansible-runner" if node.runner_venv
                  else "ansible-runner")
        try:
            code, _ = _run(node, f"{shlex.quote(runner)} --version")
            if code != 0:
                return f"`{runner} --version` exited {code}"
            if orphaned is not None:
                _end_leftovers(node, orphaned, log)
        except ssh.SSHError as exc:
            return str(exc)
        except (paramiko.SSHException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        found = dict(zip((n.name for n in nodes), pool.map(check, nodes), strict=True))
    return {name: why for name, why in found.items() if why is not None}


def _end_leftovers(node: ExecutionNode, orphaned: Callable[[str], bool],
                   log: Callable[[str], None]) -> None:
    base = f"{shlex.quote(node.python)} -c {shlex.quote(leftovers())} {OWNER_TAG}"
    _, said = _run(node, base)
    dead = []
    for line in said.splitlines():
        pid, _, owner = line.partition(" ")
        if pid.isdigit() and orphaned(owner):
            dead.append(pid)
    if dead:
        _, said = _run(node, f"{base} {' '.join(dead)}")
        for line in said.splitlines():
            if line.startswith("ended "):
                log(f"execution node {node.name}: ended a worker left by a dead run "
                    f"(watchdog pid {line.split()[1]}) before re-probing its hosts")


def shard(hosts: Sequence[InventoryHost], nodes: Sequence[ExecutionNode]
          ) -> list[tuple[ExecutionNode, tuple[InventoryHost, ...]]]:
    """Hosts cut into contiguous, near-equal shards, one per node (no empty shard)."""
    count = min(len(nodes), len(hosts))
    out = []
    start = 0
    for i in range(count):
        size = len(hosts) // count + (1 if i < len(hosts) % count else 0)
        out.append((nodes[i], tuple(hosts[start:start + size])))
        start += size
    return out


def target_key(hosts: Sequence[InventoryHost]) -> str | None:
    """The private key the targets are reached with, to hand to the worker's ssh-agent."""
    files = {str(h.vars.get("ansible_ssh_private_key_file", "")) for h in hosts}
    files.discard("")
    if not files:
        return None
    if len(files) > 1:
        raise ExecutionError("hosts of one shard name different ansible_ssh_private_key_file; "
                             "use one key per inventory with execution nodes, or an agent")
    try:
        return Path(files.pop()).read_text(encoding="utf-8")
    except OSError as exc:
        raise ExecutionError(f"cannot read the hosts' private key for the execution nodes "
                             f"({exc.strerror})") from exc


Event = tuple[str, Any]


@dataclass(frozen=True)
class Job:
    """What `ansible-runner transmit` sends a worker besides the data dir and the playbook."""

    playbook_dir: Path
    collections_root: Path  # holds ansible_collections/: sent beside the playbooks
    inventory: str
    extravars: dict[str, Any]
    envvars: dict[str, str]
    forks: int
    verbosity: int | None
    cmdline: str | None
    ssh_key: str | None  # the targets' private key, for the worker's ssh-agent


@dataclass(frozen=True)
class Shard:
    """Some of a step's hosts, to be run by one node from their own private data dir."""

    node: ExecutionNode
    hosts: tuple[InventoryHost, ...]
    pdd: Path
    job: Job


class _ChannelStream:
    """A paramiko channel file as ansible-runner's streams want one (a name, close() that
    leaves the channel to its owner)."""

    name = "<execution node channel>"

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped
        self.closed = False

    def write(self, data: bytes) -> int:
        self._wrapped.write(data)
        return len(data)

    def flush(self) -> None:
        self._wrapped.flush()

    def read(self, size: int = -1) -> bytes:
        return bytes(self._wrapped.read(size))

    def readline(self) -> bytes:
        return bytes(self._wrapped.readline())

    def close(self) -> None:
        self.closed = True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True


def stream_shard(shard: Shard, playbook: str, events: queue.Queue[Event],
                 cancel: Callable[[], bool], owner: str = "") -> None:
    """Run one shard on its node: transmit, worker (remote), process; events into `events`.

    Always ends by putting ("done", (node, error or None)) on the queue.
    """
    node = shard.node
    error: str | None = None
    recap = threading.Event()  # the play's recap came back: every host has its result
    client: paramiko.SSHClient | None = None
    finished = threading.Event()
    try:
        client, channel = node.open_channel()
        channel.settimeout(NODE_SILENCE_S)
        channel.exec_command(node.worker_command(f"/tmp/avm-worker-{uuid.uuid4().hex[:12]}",
                                                 owner))
        _transmit(channel, shard, playbook)
        # The channel's input stays open: the watchdog on the node ends the worker when it
        # closes, which it does when this process ends, however it ends, or when it falls
        # silent: heartbeats tell it this process still lives.
        beating = threading.Thread(target=_heartbeat,
                                   args=(client, channel, finished, cancel),
                                   name=f"avmigrate-heartbeat-{node.name}", daemon=True)
        beating.start()
        error = _process(channel, shard.pdd, events, cancel, recap)
    except Exception as exc:  # noqa: BLE001 - any failure of the node or the stream
        if not recap.is_set():
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        finished.set()
        if client is not None:
            client.close()
        events.put(("done", (node, error)))


def _transmit(channel: paramiko.Channel, shard: Shard, playbook: str) -> None:
    """The job (project, inventory, variables, the targets' key) to the node's worker."""
    import ansible_runner  # noqa: PLC0415 - slow import

    job = shard.job
    project = shard.pdd / "project"
    skip = shutil.ignore_patterns(".ansible", "__pycache__", "*.tar.gz")
    shutil.copytree(job.playbook_dir, project, ignore=skip)
    # Ansible searches a collections/ directory beside the playbook: the worker finds the
    # module and roles there, whatever is installed on the node.
    shutil.copytree(job.collections_root / "ansible_collections",
                    project / "collections" / "ansible_collections", ignore=skip)
    with channel.makefile("wb") as out:
        ansible_runner.run(streamer="transmit", _output=_ChannelStream(out),
                           private_data_dir=str(shard.pdd), playbook=str(project / playbook),
                           quiet=True, inventory=job.inventory, extravars=job.extravars,
                           envvars=job.envvars, forks=job.forks, verbosity=job.verbosity,
                           cmdline=job.cmdline, ssh_key=job.ssh_key)


def _process(channel: paramiko.Channel, pdd: Path, events: queue.Queue[Event],
             cancel: Callable[[], bool], recap: threading.Event) -> str | None:
    """The worker's events, read back into `events`; why the worker failed, if it did."""
    import ansible_runner  # noqa: PLC0415 - slow import

    def handler(event: dict[str, Any]) -> bool:
        if event.get("event") == "playbook_on_stats":
            recap.set()
        events.put(("event", event))
        return event.get("event") in ("runner_on_failed", "runner_on_unreachable")

    with channel.makefile("rb") as inp:
        ansible_runner.run(streamer="process", _input=_ChannelStream(inp),
                           private_data_dir=str(pdd), event_handler=handler,
                           cancel_callback=cancel, quiet=True)
    status = channel.recv_exit_status() if channel.exit_status_ready() else -1
    if recap.is_set():
        return None
    said = channel.makefile_stderr("rb").read(2000).decode(errors="replace").strip()
    return (f"its worker ended without finishing the step (exit {status}"
            + (f": {said.splitlines()[-1]}" if said else "") + ")")


def _heartbeat(client: paramiko.SSHClient, channel: paramiko.Channel,
               finished: threading.Event, cancel: Callable[[], bool]) -> None:
    """A newline to the node's watchdog every HEARTBEAT_S until the shard is finished. When
    the step is cancelled (its lease lost, a second Ctrl-C), the connection is closed instead:
    the watchdog then ends the worker (ansible-runner's `process` streamer does not act on a
    cancel callback)."""
    beat = time.monotonic()
    while not finished.wait(min(HEARTBEAT_S, 0.5)):
        if cancel():
            client.close()
            return
        if time.monotonic() - beat < HEARTBEAT_S:
            continue
        try:
            channel.sendall(b"\n")
        except (OSError, paramiko.SSHException):
            return
        beat = time.monotonic()


def unknown_result(host: str, step: str, node: ExecutionNode, error: str) -> StepResult:
    return StepResult(host, step, StepOutcome.UNKNOWN,
                      f"execution node {node.name} stopped answering mid-step ({error}); "
                      "what happened on this host is unknown")


def run_threads(shards: list[Shard], playbook: str,
                handle: Callable[[dict[str, Any]], bool], cancel: Callable[[], bool],
                owner: str = "") -> dict[str, str]:
    """Stream every shard at once; events handled in this thread. Returns dead nodes' errors."""
    events: queue.Queue[Event] = queue.Queue()
    threads = [threading.Thread(target=stream_shard, name=f"avmigrate-node-{s.node.name}",
                                args=(s, playbook, events, cancel, owner), daemon=True)
               for s in shards]
    for t in threads:
        t.start()
    dead: dict[str, str] = {}
    pending = len(threads)
    while pending:
        kind, payload = events.get()
        if kind == "event":
            handle(payload)
        else:
            pending -= 1
            node, error = payload
            if error is not None:
                dead[node.name] = error
    for t in threads:
        t.join(timeout=5)
    return dead
