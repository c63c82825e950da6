"""Execution nodes: a step's hosts sharded across machines running `ansible-runner worker`.

For each shard the controller opens an SSH channel to its node with paramiko (host key
checked against known_hosts), starts `ansible-runner worker` there, streams the job to it
with ansible-runner's `transmit` and reads the results back with `process`: the protocol
AWX and Automation Platform use between their control and execution planes. Events come
back to the controller's thread and are handled exactly as for a local run.

A node that stops answering mid-step (no keepalive for NODE_SILENCE_S, its connection
dropped, its worker killed) leaves its hosts with outcome UNKNOWN; the engine marks them
interrupted and re-probes them before doing anything else to them. The node is not used
again in this run.
"""

from __future__ import annotations

import queue
import shlex
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from orchestrator import ssh
from orchestrator.errors import ExecutionError
from orchestrator.models import InventoryHost, StepOutcome, StepResult
from orchestrator.sweep import known_hosts_files

NODE_SILENCE_S = 30.0  # the worker sends a keepalive every 5 s of quiet
KEEPALIVE_S = 5


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
                   user=str(v.get("ansible_user", "root")),
                   key_file=Path(str(key)) if key else None,
                   known_hosts=known_hosts_files(host),
                   runner_venv=str(v.get("avmigrate_runner_venv", "")))

    def worker_command(self, directory: str) -> str:
        runner = f"{self.runner_venv}/bin/ansible-runner" if self.runner_venv else "ansible-runner"
        path = f"PATH={shlex.quote(self.runner_venv + '/bin')}:$PATH " if self.runner_venv else ""
        return (f"{path}{shlex.quote(runner)} worker --private-data-dir "
                f"{shlex.quote(directory)} --delete --keepalive-seconds {KEEPALIVE_S}")

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
        for f in self.known_hosts:
            if f.is_file():
                client.load_host_keys(str(f))
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


def unreachable(nodes: Sequence[ExecutionNode]) -> dict[str, str]:
    """Nodes that cannot run a worker now (checked at once): name -> why."""
    def check(node: ExecutionNode) -> str | None:
        try:
            client, channel = node.open_channel()
        except ssh.SSHError as exc:
            return str(exc)
        try:
            channel.settimeout(NODE_SILENCE_S)
            runner = (f"{node.runner_venv}/bin/ansible-runner" if node.runner_venv
                      else "ansible-runner")
            channel.exec_command(f"{shlex.quote(runner)} --version")
            code = channel.recv_exit_status()
        except (paramiko.SSHException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        return None if code == 0 else f"`{runner} --version` exited {code}"

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        found = dict(zip((n.name for n in nodes), pool.map(check, nodes), strict=True))
    return {name: why for name, why in found.items() if why is not None}


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


def stream_shard(node: ExecutionNode, pdd: Path, playbook: str, kwargs: dict[str, Any],
                 events: queue.Queue[Event], cancel: Callable[[], bool]) -> None:
    """Run one shard on `node`: transmit, worker (remote), process; events into `events`.

    Always ends by putting ("done", (node, error or None)) on the queue.
    """
    import ansible_runner  # noqa: PLC0415 - slow import

    error: str | None = None
    saw_stats = False
    client: paramiko.SSHClient | None = None
    try:
        client, channel = node.open_channel()
        channel.settimeout(NODE_SILENCE_S)
        channel.exec_command(node.worker_command(f"/tmp/avm-worker-{uuid.uuid4().hex[:12]}"))
        project = pdd / "project"
        shutil.copytree(kwargs.pop("playbook_dir"), project)
        with channel.makefile("wb") as out:
            ansible_runner.run(streamer="transmit", _output=_ChannelStream(out),
                               private_data_dir=str(pdd), playbook=str(project / playbook),
                               quiet=True, **kwargs)
        channel.shutdown_write()

        def handler(event: dict[str, Any]) -> bool:
            nonlocal saw_stats
            saw_stats = saw_stats or event.get("event") == "playbook_on_stats"
            events.put(("event", event))
            return event.get("event") in ("runner_on_failed", "runner_on_unreachable")

        with channel.makefile("rb") as inp:
            ansible_runner.run(streamer="process", _input=_ChannelStream(inp),
                               private_data_dir=str(pdd), event_handler=handler,
                               cancel_callback=cancel, quiet=True)
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        if not saw_stats:
            said = channel.makefile_stderr("rb").read(2000).decode(errors="replace").strip()
            error = (f"its worker ended without finishing the step (exit {status}"
                     + (f": {said.splitlines()[-1]}" if said else "") + ")")
    except Exception as exc:  # noqa: BLE001 - any failure of the node or the stream
        if not saw_stats:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        if client is not None:
            client.close()
        events.put(("done", (node, error)))


def unknown_result(host: str, step: str, node: ExecutionNode, error: str) -> StepResult:
    return StepResult(host, step, StepOutcome.UNKNOWN,
                      f"execution node {node.name} stopped answering mid-step ({error}); "
                      "what happened on this host is unknown")


def run_threads(shards: list[tuple[ExecutionNode, Path, dict[str, Any]]], playbook: str,
                handle: Callable[[dict[str, Any]], bool], cancel: Callable[[], bool]
                ) -> dict[str, str]:
    """Stream every shard at once; events handled in this thread. Returns dead nodes' errors."""
    events: queue.Queue[Event] = queue.Queue()
    threads = [threading.Thread(target=stream_shard, name=f"avmigrate-node-{node.name}",
                                args=(node, pdd, playbook, kwargs, events, cancel), daemon=True)
               for node, pdd, kwargs in shards]
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
