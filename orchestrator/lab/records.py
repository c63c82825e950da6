"""What lab.json records: a lab and each of its hosts, and how to reach a host over SSH."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.errors import LabError
from orchestrator.execute import ssh


@dataclass(frozen=True)
class LabHost:
    """One lab host as lab.json records it."""

    name: str
    address: str
    profile: str
    netns: str
    veth: str
    pid: int | None
    sshd_down: bool


@dataclass(frozen=True)
class LabInfo:
    """A lab as lab.json records it."""

    name: str
    directory: str
    bridge: str
    gateway: str
    http_pid: int | None
    inventory: str
    known_hosts: str
    key_file: str
    user: str
    hosts: tuple[LabHost, ...]
    nodes: tuple[LabHost, ...] = ()  # execution nodes: run `ansible-runner worker`, not migrated

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hosts"] = [asdict(h) for h in self.hosts]
        data["nodes"] = [asdict(h) for h in self.nodes]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabInfo:
        hosts = tuple(LabHost(**h) for h in data["hosts"])
        nodes = tuple(LabHost(**h) for h in data.get("nodes", []))
        return cls(**{**data, "hosts": hosts, "nodes": nodes})

    def target(self, host: LabHost) -> ssh.SSHTarget:
        return ssh.SSHTarget(host.address, self.user, Path(self.key_file), Path(self.known_hosts))

    def host(self, name: str) -> LabHost:
        for h in (*self.hosts, *self.nodes):
            if h.name == name:
                return h
        raise LabError(f"lab {self.name} has no host {name!r}")
