"""Ansible's inventory data model, reduced to what the static loaders need: groups, their
depth and priority, and variables merged the way Ansible merges them (staticinv's core)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

# (host, its groups but 'all', variables of its groups merged (shared), its own variables);
# every value plain (str, int, float, bool, None, lists and dicts of them).
Found = tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]


class Unsupported(Exception):
    """The file needs Ansible's own loader."""


class VarsSource(Protocol):
    """Variables from outside the inventory file (`group_vars/`, `host_vars/`: varsdirs)."""

    def group(self, name: str) -> dict[str, Any]: ...

    def host(self, name: str) -> dict[str, Any]: ...


PLAIN_HOST = re.compile(r"[A-Za-z0-9_.-]+")
SIMPLE = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Ansible's tagged/unsafe wrappers, dates and tuples to plain JSON-able Python, so that
    nothing is ever templated later and every value serialises."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if value is None:
        return None
    return str(value)


class Builder:
    """Ansible's inventory data model, reduced to what the merge needs."""

    def __init__(self) -> None:
        self.group_vars: dict[str, dict[str, Any]] = {"all": {}, "ungrouped": {}}
        self.priority: dict[str, int] = {}
        self.children: dict[str, list[str]] = {"all": ["ungrouped"], "ungrouped": []}
        self.parents: dict[str, list[str]] = {"all": [], "ungrouped": ["all"]}
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_groups: dict[str, list[str]] = {}
        # False once any value is not a plain scalar: result() then makes every value plain.
        self.plain = True

    def check(self, variables: Mapping[str, Any]) -> None:
        if self.plain and any(type(v) not in SIMPLE for v in variables.values()):
            self.plain = False

    def add_group(self, name: str) -> None:
        if name not in self.group_vars:
            self.group_vars[name] = {}
            self.children[name] = []
            self.parents[name] = []

    def add_child(self, parent: str, child: str) -> None:
        if parent == child:
            raise Unsupported("a group cannot contain itself")
        if child not in self.children[parent]:
            if parent in self._ancestors(child) or parent == child:
                raise Unsupported("recursive groups")
            if child in self._ancestors(parent):
                raise Unsupported("recursive groups")
            self.children[parent].append(child)
            if parent not in self.parents[child]:
                self.parents[child].append(parent)

    def _ancestors(self, group: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.parents[group])
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.parents[g])
        return seen

    def set_group_var(self, group: str, key: str, value: Any) -> None:
        if key == "ansible_group_priority":
            try:
                self.priority[group] = int(value)
            except TypeError:
                pass
            except ValueError as exc:
                raise Unsupported("bad group priority") from exc
            return
        if type(value) not in SIMPLE:
            self.plain = False
        set_var(self.group_vars[group], key, value)

    def add_host(self, name: str, group: str | None, port: int | None) -> dict[str, Any]:
        hv = self.host_vars.get(name)
        if hv is None:
            hv = self.host_vars[name] = {}
            self.host_groups[name] = []
            if port:
                hv["ansible_port"] = int(port)
        if group is not None and group not in self.host_groups[name]:
            self.host_groups[name].append(group)
        return hv

    def result(self, extra: Sequence[VarsSource] = ()) -> list[Found]:
        """Hosts sorted by name: groups (no 'all'), the merged group variables (one dict
        shared by every host with the same groups) and the host's own variables. `extra`:
        layers of `group_vars/` and `host_vars/` (the inventory's, then the playbook
        directory's), merged where Ansible's default precedence puts them (group files above
        every inventory-file group variable, host files above the host's inventory
        variables; within each, the inventory's layer below the playbook's)."""
        for name in list(self.parents):
            if name != "all" and not self.parents[name]:
                self.add_child("all", name)
        if not self.plain:
            self.group_vars = {g: plain(v) for g, v in self.group_vars.items()}
            self.host_vars = {h: plain(v) for h, v in self.host_vars.items()}
        depth = self._depths()
        ancestors_of = {g: frozenset(self._ancestors(g)) for g in self.parents}
        merged_for: dict[frozenset[str], tuple[tuple[str, ...], dict[str, Any]]] = {}
        by_direct: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, Any]]] = {}
        out = []
        for host in sorted(self.host_vars):
            direct = tuple(self.host_groups[host])
            cached = by_direct.get(direct)
            if cached is None:
                key = _all_groups(direct, ancestors_of)
                cached = merged_for.get(key)
                if cached is None:
                    cached = merged_for[key] = self._merged(key, depth, extra)
                by_direct[direct] = cached
            own = self.host_vars[host]
            for layer in extra:
                if from_files := layer.host(host):
                    own = {**own, **from_files}
            out.append((host, cached[0], cached[1], own))
        return out

    def _merged(self, groups: frozenset[str], depth: dict[str, int],
                extra: Sequence[VarsSource]) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The groups but 'all', and their variables merged as Ansible merges them: by depth,
        then priority, then name, the later winning; then the same from `extra`."""
        ordered = sorted(groups, key=lambda g: (depth[g], self.priority.get(g, 1), g))
        gvars: dict[str, Any] = {}
        for g in ordered:
            gvars.update(self.group_vars[g])
        # Ansible's default order: all_plugins_inventory, all_plugins_play, then
        # groups_plugins_inventory, groups_plugins_play.
        for layer in extra:
            gvars.update(layer.group("all"))
        for layer in extra:
            for g in ordered:
                if g != "all":
                    gvars.update(layer.group(g))
        return tuple(sorted(g for g in groups if g != "all")), gvars

    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}

        def of(group: str) -> int:
            if group not in depth:
                depth[group] = 0 if group == "all" else \
                    max((of(p) + 1 for p in self.parents[group]), default=0)
            return depth[group]

        for g in self.parents:
            of(g)
        return depth


def set_var(target: dict[str, Any], key: str, value: Any) -> None:
    old = target.get(key)
    if isinstance(old, Mapping) and isinstance(value, Mapping):
        target[key] = {**old, **value}
    else:
        target[key] = value


def host_pattern(pattern: str) -> tuple[list[str], int | None]:
    if PLAIN_HOST.fullmatch(pattern):
        if pattern == "---":
            raise Unsupported("'---' as a host")
        return [pattern], None
    # Ports, IPv6 and [a:b] ranges: Ansible's own parsing (rare enough to pay its import).
    from ansible.parsing.utils.addresses import parse_address  # noqa: PLC0415
    from ansible.plugins.inventory import (  # noqa: PLC0415
        detect_range,
        expand_hostname_range,
    )
    try:
        host, port = parse_address(pattern, allow_ranges=True)
    except Exception:  # noqa: BLE001 - Ansible keeps the pattern as it is
        host, port = pattern, None
    if pattern.strip().endswith(":") and port is None:
        raise Unsupported("host pattern ends in ':'")
    try:
        names = expand_hostname_range(host) if detect_range(host) else [host]
    except Exception as exc:
        raise Unsupported(str(exc)) from exc
    if any(n.strip() == "---" for n in names):
        raise Unsupported("'---' as a host")
    return [str(n) for n in names], port


def _all_groups(direct: tuple[str, ...], ancestors_of: dict[str, frozenset[str]]
                ) -> frozenset[str]:
    """A host's groups: its own, their ancestors and 'all'; 'ungrouped' only if no other."""
    groups = set(direct)
    for g in direct:
        groups |= ancestors_of[g]
    groups.add("all")
    if "ungrouped" in groups and groups - {"all", "ungrouped"}:
        groups.discard("ungrouped")
    elif groups == {"all"}:
        groups.add("ungrouped")
    return frozenset(groups)
