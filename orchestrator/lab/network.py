"""The lab's private network: a bridge with no route out, one namespace per host on it."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import zlib
from dataclasses import dataclass

from orchestrator.lab.sh import run

# The priority of the rules that hide lab hosts from the controller (before the main table).
HIDE_PRIORITY = 1213


def default_subnet(name: str) -> ipaddress.IPv4Network:
    third = 20 + zlib.crc32(name.encode()) % 200
    return ipaddress.IPv4Network(f"10.213.{third}.0/24")


@dataclass(frozen=True)
class LabNetwork:
    """A lab's bridge, subnet and gateway, and the names its namespaces and links get."""

    name: str
    bridge: str
    prefix: str
    subnet: ipaddress.IPv4Network
    gateway: str

    def ours(self, ifname: str) -> bool:
        """A host link of this lab: `avm` + the lab's whole name + the host's number (a
        prefix alone would also match the links of a lab whose name starts with ours)."""
        return re.fullmatch(rf"avm{re.escape(self.name)}\d{{2,3}}", ifname) is not None

    def add_bridge(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    def plug(self, index: int, address: str) -> tuple[str, str]:
        """A network namespace for host `index`, linked to the lab's bridge at `address`."""
        netns, veth = f"{self.prefix}{index:02d}", f"avm{self.name}{index:02d}"
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev",
             "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        return netns, veth

    def hide(self, address: str) -> None:
        """The controller can no longer open SSH to `address` (its packets are refused by a
        policy rule); other lab hosts still can, so it is reachable only through them (a jump
        host). Everything else (the lab's HTTP repository, replies) is untouched."""
        run(["ip", "rule", "add", "to", f"{address}/32", "ipproto", "tcp", "dport", "22",
             "prohibit", "priority", str(HIDE_PRIORITY)])

    def hidden(self) -> list[str]:
        """The addresses of this lab the controller cannot reach over SSH."""
        found = []
        for line in run(["ip", "rule", "show"], check=False).stdout.splitlines():
            words = line.split()
            if "to" in words and "prohibit" in words:
                address = words[words.index("to") + 1].split("/")[0]
                with contextlib.suppress(ValueError):
                    if ipaddress.IPv4Address(address) in self.subnet:
                        found.append(address)
        return found

    def remove(self) -> None:
        """Delete this lab's network namespaces, its hosts' links, its bridge and its rules."""
        for address in self.hidden():
            run(["ip", "rule", "del", "to", f"{address}/32", "ipproto", "tcp", "dport", "22",
                 "prohibit", "priority", str(HIDE_PRIORITY)], check=False)
        netns = run(["ip", "netns", "list"], check=False).stdout.split("\n")
        for line in netns:
            ns = line.split(" ")[0]
            if ns.startswith(self.prefix):
                run(["ip", "netns", "delete", ns], check=False)
        links = run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
        for line in links:
            parts = line.split(":")
            if len(parts) > 1:
                ifname = parts[1].strip().split("@")[0]
                if ifname == self.bridge or self.ours(ifname):
                    run(["ip", "link", "delete", ifname], check=False)
