"""Execution nodes, the parts that need no node: sharding, the worker command, node vars."""

from __future__ import annotations

from pathlib import Path

from orchestrator.models import InventoryHost
from orchestrator.nodes import ExecutionNode, shard


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
    assert n.known_hosts == (Path("/lab/known_hosts"),)
    command = n.worker_command("/tmp/avm-worker-x")
    assert command == ("PATH=/opt/venv/bin:$PATH /opt/venv/bin/ansible-runner worker "
                       "--private-data-dir /tmp/avm-worker-x --delete --keepalive-seconds 5")
