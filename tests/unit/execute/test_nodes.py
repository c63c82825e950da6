"""Execution nodes, the parts that need no node: sharding, the worker command, node vars."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.core.models import InventoryHost
from orchestrator.execute.nodes import ExecutionNode, shard


def node(name: str) -> ExecutionNode:
    return ExecutionNode(name, "10.0.0.1", 22, "ops", None, (), "")


def test_shards_are_contiguous_near_equal_and_never_empty() -> None:
    hosts = [InventoryHost(f"h{i}", (), {}) for i in range(7)]
    got = shard(hosts, [node("a"), node("b"), node("c")])
    assert [len(s) for _, s in got] == [3, 2, 2]
    assert [h.name for _, s in got for h in s] == [h.name for h in hosts]
    two = shard(hosts[:2], [node("a"), node("b"), node("c")])
    assert [n.name for n, _ in two] == ["a", "b"]


def test_a_node_is_read_from_its_inventory_variables() -> None:
    host = InventoryHost("n1", ("execution_nodes",), {
        "ansible_host": "10.1.2.3", "ansible_port": 2222, "ansible_user": "runner",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/lab/known_hosts",
        "avmigrate_runner_venv": "/opt/venv"})
    n = ExecutionNode.from_host(host)
    assert (n.address, n.port, n.user, n.key_file) == ("10.1.2.3", 2222, "runner",
                                                       Path("/keys/id"))
    # As ssh -G says: the inventory's user file, then the system-wide ones ssh also reads.
    assert n.known_hosts[0] == Path("/lab/known_hosts")
    assert set(n.known_hosts[1:]) <= {Path("/etc/ssh/ssh_known_hosts"),
                                      Path("/etc/ssh/ssh_known_hosts2")}
    command = n.worker_command("/tmp/avm-worker-x", "k|1|2|m")
    assert command.startswith("PATH=/opt/venv/bin:$PATH /opt/venv/bin/python -c ")
    assert command.endswith("'avm-owner=k|1|2|m' /opt/venv/bin/ansible-runner worker "
                            "--private-data-dir /tmp/avm-worker-x --delete --keepalive-seconds 5")


def fake_node(tmp_path: Path, runner: str) -> ExecutionNode:
    """A node whose venv holds our Python and a fake `ansible-runner` (a shell script)."""
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "ansible-runner").write_text("#!/bin/sh\n" + runner)
    (bindir / "ansible-runner").chmod(0o755)
    return ExecutionNode("n", "127.0.0.1", 22, "u", None, (), str(tmp_path / "venv"))


def test_the_watchdog_passes_the_job_through_and_the_workers_exit_status(tmp_path: Path
                                                                         ) -> None:
    node = fake_node(tmp_path, 'read line; echo "got $line"; exit 3\n')
    done = subprocess.run(["sh", "-c", node.worker_command("/tmp/x", "o")], input="job\n",
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (3, "got job\n")


def test_the_watchdog_ends_the_worker_when_its_controller_goes(tmp_path: Path) -> None:
    """The channel's input closes (the controller died) while the worker runs: the worker and
    what it started are ended, not left to go on changing hosts."""
    marker = f"{os.getpid()}.{time.monotonic_ns() % 10**6}"
    node = fake_node(tmp_path, f'sleep 600{marker} 2>/dev/null || sleep 60{marker} &\n'
                               f'exec sleep 601{marker}\n')
    proc = subprocess.Popen(["sh", "-c", node.worker_command("/tmp/x", "o")],
                            stdin=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(holding(marker)) < 2:
        time.sleep(0.1)
    assert len(holding(marker)) == 2, "the fake worker and its child did not start"
    assert proc.stdin is not None
    proc.stdin.close()  # what sshd does to the channel when the controller's process dies
    proc.wait(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and holding(marker):
        time.sleep(0.1)
    assert not holding(marker)


def test_the_watchdog_ends_the_worker_when_its_controller_falls_silent(tmp_path: Path
                                                                       ) -> None:
    """The controller vanished without closing its connection (a power loss, a cut network):
    the heartbeats stop, and the worker is ended within the silence limit, not left running
    past the dead controller's lease. While heartbeats come, it runs on."""
    import shlex  # noqa: PLC0415

    from orchestrator.execute.nodes import watchdog  # noqa: PLC0415

    marker = f"{os.getpid()}.{time.monotonic_ns() % 10**6}"
    node = fake_node(tmp_path, f'read job; exec sleep 602{marker}\n')
    command = node.worker_command("/tmp/x", "o").replace(shlex.quote(watchdog()),
                                                         shlex.quote(watchdog(2.0)))
    assert "SILENCE = 2.0" in command
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"job\n")
        proc.stdin.flush()
        for _ in range(10):  # heartbeats for 5 s, more than twice the limit
            time.sleep(0.5)
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        assert holding(marker), "the worker was ended while its controller still spoke"
        started = time.monotonic()
        assert proc.wait(timeout=20) == 137  # silence: the watchdog ended it
        assert time.monotonic() - started < 6
        assert not holding(marker)
    finally:
        proc.kill()
        for pid in holding(marker):
            os.kill(pid, 9)


def test_after_the_jobs_eof_line_heartbeats_do_not_reach_the_worker(tmp_path: Path) -> None:
    """The worker's input is closed after the job's eof line: heartbeats never fill a pipe it
    no longer reads, and it gets the job byte for byte."""
    got = tmp_path / "got"
    node = fake_node(tmp_path, f"cat > {got}; exit 0\n")
    job = b'{"kwargs": {}}\n{"zipfile": 3}\nabc{"eof": true}\n'
    proc = subprocess.Popen(["sh", "-c", node.worker_command("/tmp/x", "o")],
                            stdin=subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(job[:-5])  # the eof line across two reads, a heartbeat in the second
    proc.stdin.flush()
    time.sleep(0.3)
    proc.stdin.write(job[-5:] + b"\n")
    proc.stdin.flush()
    assert proc.wait(timeout=20) == 0  # the worker ended on its own, before the input closed
    assert got.read_bytes() == job
    proc.stdin.close()


def test_a_cancelled_step_closes_the_nodes_connection() -> None:
    """ansible-runner's `process` streamer ignores its cancel callback: the heartbeat thread
    closes the connection instead, and the node's watchdog ends the worker."""
    import threading  # noqa: PLC0415

    from orchestrator.execute import nodes  # noqa: PLC0415

    class Client:
        closed = False

        def close(self) -> None:
            self.closed = True

    class Channel:
        sent = 0

        def sendall(self, data: bytes) -> None:
            self.sent += len(data)

    client, channel, finished = Client(), Channel(), threading.Event()
    cancelled = threading.Event()
    beat = threading.Thread(target=nodes._heartbeat,
                            args=(client, channel, finished, cancelled.is_set))
    beat.start()
    time.sleep(1.0)
    assert not client.closed
    cancelled.set()
    beat.join(timeout=5)
    assert not beat.is_alive() and client.closed
    finished.set()


def holding(marker: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(p.name))
            except OSError:
                continue
    return found
