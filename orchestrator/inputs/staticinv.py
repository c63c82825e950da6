"""A fast loader for static INI and YAML inventory files, giving what Ansible's gives.

Ansible's `InventoryManager` takes about half a minute for 100,000 hosts; a plan must take
three seconds. This module reads the same two static formats the way Ansible's `ini` and
`yaml` inventory plugins do (same sections, host patterns, value typing, group depth and
priority, variable precedence, `ungrouped`), and returns plain (name, groups, vars) tuples.
`tests/unit/test_staticinv.py` checks it against Ansible's own loader on the example
inventories and on generated ones.

Whenever a file holds something outside the well-trodden subset (a YAML tag such as
`!vault` or `!unsafe`, a plugin configuration, an unusual host pattern, a parse error) it
raises `Unsupported`, and the caller falls back to Ansible's loader, which then also gives
Ansible's own error message. Dynamic inventories (scripts, plugins, directories) never come
here.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

# (host, its groups but 'all', variables of its groups merged (shared), its own variables);
# every value plain (str, int, float, bool, None, lists and dicts of them).
Found = tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]


class Unsupported(Exception):
    """The file needs Ansible's own loader."""


_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_PLAIN_HOST = re.compile(r"[A-Za-z0-9_.-]+")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_DNS = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)+")
_SPECIAL = frozenset("'\"\\#")
_FAST_VALUE = re.compile(rf"(?P<int>{_INT.pattern})|(?P<name>{_NAME.pattern})|"
                         rf"(?P<text>{_IPV4.pattern}|{_DNS.pattern})")
_NAMED = {"True": True, "False": False, "None": None}
_SIMPLE = frozenset({str, int, float, bool, type(None)})


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


def _coerce(value: Any) -> Any:
    """What Ansible's ini plugin makes of a literal_eval result (tuples and sets to lists)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return value


def ini_value(text: str) -> Any:
    """An INI value as Ansible types it (ast.literal_eval, else the string itself)."""
    m = _FAST_VALUE.fullmatch(text)
    if m is not None:
        kind = m.lastgroup
        if kind == "int":
            return int(text)
        if kind == "name":
            return _NAMED.get(text, text)
        return text  # an IPv4 address or a DNS name: literal_eval refuses both
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


class _Builder:
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
        if self.plain and any(type(v) not in _SIMPLE for v in variables.values()):
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
        if type(value) not in _SIMPLE:
            self.plain = False
        _set(self.group_vars[group], key, value)

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

    def result(self) -> list[Found]:
        """Hosts sorted by name: groups (no 'all'), the merged group variables (one dict
        shared by every host with the same groups) and the host's own variables."""
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
                groups = set(direct)
                for g in direct:
                    groups |= ancestors_of[g]
                groups.add("all")
                if "ungrouped" in groups and groups - {"all", "ungrouped"}:
                    groups.discard("ungrouped")
                elif groups == {"all"}:
                    groups.add("ungrouped")
                key = frozenset(groups)
                cached = merged_for.get(key)
                if cached is None:
                    ordered = sorted(groups,
                                     key=lambda g: (depth[g], self.priority.get(g, 1), g))
                    gvars: dict[str, Any] = {}
                    for g in ordered:
                        gvars.update(self.group_vars[g])
                    cached = (tuple(sorted(g for g in groups if g != "all")), gvars)
                    merged_for[key] = cached
                by_direct[direct] = cached
            out.append((host, cached[0], cached[1], self.host_vars[host]))
        return out

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


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    old = target.get(key)
    if isinstance(old, Mapping) and isinstance(value, Mapping):
        target[key] = {**old, **value}
    else:
        target[key] = value


def _host_pattern(pattern: str) -> tuple[list[str], int | None]:
    if _PLAIN_HOST.fullmatch(pattern):
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


def parse_ini(text: str) -> list[Found]:
    b = _Builder()
    plain_host = _PLAIN_HOST.fullmatch
    fast_value = _FAST_VALUE.fullmatch
    host_vars, host_groups = b.host_vars, b.host_groups
    pending: dict[str, dict[str, Any]] = {}
    group, state = "ungrouped", "hosts"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            m = _SECTION.match(line)
            if not m:
                raise Unsupported("bad section")
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise Unsupported("unknown section type")
            if group not in b.group_vars:
                if state == "vars" and group not in pending:
                    pending[group] = {"state": "vars", "parents": []}
                b.add_group(group)
            if group in pending and state != "vars":
                if pending[group]["state"] == "children":
                    _add_pending(b, group, pending)
                else:
                    del pending[group]
            continue
        if state == "hosts":
            if _SPECIAL.isdisjoint(line):
                tokens = line.split()
            else:
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError as exc:
                    raise Unsupported(str(exc)) from exc
                if not tokens:
                    raise Unsupported("empty host line")
            first = tokens[0]
            variables: dict[str, Any] = {}
            for token in islice(tokens, 1, None):
                key, eq, value = token.partition("=")
                if not eq:
                    raise Unsupported("expected key=value")
                m = fast_value(value)  # ini_value's common cases, inline: 100,000 lines
                if m is None:
                    typed = ini_value(value)
                    if type(typed) not in _SIMPLE:
                        b.plain = False
                else:
                    kind = m.lastgroup
                    typed = (value if kind == "text" else int(value) if kind == "int"
                             else _NAMED.get(value, value))
                variables[key] = typed
            if plain_host(first) and first != "---":
                if first not in host_vars:  # add_host's commonest case, inline
                    host_vars[first] = variables
                    host_groups[first] = [group]
                    continue
                names, port = [first], None
            else:
                names, port = _host_pattern(first)
            for name in names:
                hv = host_vars.get(name)
                if hv is None and port is None:  # add_host's commonest case, inline
                    host_vars[name] = variables if len(names) == 1 else dict(variables)
                    host_groups[name] = [group]
                    continue
                hv = b.add_host(name, group, port)
                if hv:
                    for k, v in variables.items():
                        _set(hv, k, v)
                else:
                    hv.update(variables)
        elif state == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise Unsupported("expected key=value")
            b.set_group_var(group, key.strip(), ini_value(value.strip()))
        else:
            m = _GROUPNAME.match(line)
            if not m:
                raise Unsupported("expected a group name")
            child = m.group(1)
            if child not in b.group_vars:
                pending.setdefault(child, {"state": "children", "parents": []})
                if pending[child]["state"] != "children":
                    raise Unsupported("pending vars and children")
                pending[child]["parents"].append(group)
            else:
                b.add_child(group, child)
    if pending:
        raise Unsupported("undefined group")
    return b.result()


def _add_pending(b: _Builder, group: str, pending: dict[str, dict[str, Any]]) -> None:
    for parent in pending[group]["parents"]:
        b.add_child(parent, group)
        if parent in pending and pending[parent]["state"] == "children":
            _add_pending(b, parent, pending)
    del pending[group]


def _yaml_group(b: _Builder, name: Any, data: Any) -> str:
    if not isinstance(name, str):
        raise Unsupported("non-string group name")
    if not isinstance(data, Mapping | None):
        raise Unsupported("group is not a mapping")  # Ansible warns and skips: let it say so
    b.add_group(name)
    if data is None:
        return name
    for key, given in data.items():
        section = {given: None} if isinstance(given, str) and key in (
            "vars", "children", "hosts") else given
        if section is None:
            continue
        if not isinstance(section, Mapping) or key not in ("vars", "children", "hosts"):
            raise Unsupported("unexpected key")  # Ansible warns and skips: let it say so
        if key == "vars":
            for var, value in section.items():
                b.set_group_var(name, var, value)
        elif key == "children":
            for child, child_data in section.items():
                b.add_child(name, _yaml_group(b, child, child_data))
        else:
            for pattern, host_vars in section.items():
                if not isinstance(pattern, str):
                    raise Unsupported("non-string host")
                hosts, port = _host_pattern(pattern)
                if host_vars is not None and not isinstance(host_vars, Mapping):
                    raise Unsupported("host vars are not a mapping")
                b.check(host_vars or {})
                for host in hosts:
                    hv = b.add_host(host, name, port)
                    for k, v in (host_vars or {}).items():
                        _set(hv, k, v)
    return name


class _Loader(yaml.CSafeLoader):
    """libyaml's safe loader; a duplicate key or a tag is left to Ansible's loader."""


def _no_tags(_loader: yaml.Loader, _suffix: str, node: yaml.Node) -> Any:
    raise Unsupported(f"YAML tag {node.tag}")


_Loader.add_multi_constructor("!", _no_tags)


def parse_yaml(text: str) -> list[Found]:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader subclass
    except Unsupported:
        raise
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise Unsupported(str(exc)) from exc
    if not data or not isinstance(data, Mapping) or data.get("plugin"):
        raise Unsupported("not a YAML inventory")
    if "---" in text[3:] or "<<" in text:
        raise Unsupported("several documents or merge keys")
    b = _Builder()
    for name in data:
        _yaml_group(b, name, data[name])
    return b.result()


def kind(path: Path, head: str) -> str | None:
    """'ini', 'yaml' or None (not a static file this loader reads)."""
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml", ".json"):
        return "yaml"
    if suffix in ("", ".ini", ".cfg", ".hosts", ".txt"):
        return "ini" if not head.lstrip().startswith(("{", "---", "all:")) else None
    return None


def load(path: Path) -> list[Found]:
    """The hosts of a static inventory file, sorted by name; raises Unsupported if unsure."""
    if not path.is_file():
        raise Unsupported("not a file")
    raw = path.read_bytes()
    if raw.startswith(b"#!"):
        raise Unsupported("a script")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unsupported("not UTF-8") from exc
    which = kind(path, text[:200])
    if which == "ini":
        return parse_ini(text)
    if which == "yaml":
        return parse_yaml(text)
    raise Unsupported("not a static inventory file")
