"""The static INI inventory format, read the way Ansible's `ini` inventory plugin reads it:
sections, host patterns and values typed as Ansible types them. Its commonest cases are
written inline: a plan may read 100,000 host lines."""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from collections.abc import Sequence
from itertools import islice
from typing import Any

from orchestrator.inputs.invbuilder import (
    PLAIN_HOST,
    SIMPLE,
    Builder,
    Found,
    Unsupported,
    VarsSource,
    host_pattern,
    set_var,
)

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_DNS = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)+")
_SPECIAL = frozenset("'\"\\#")
_FAST_VALUE = re.compile(rf"(?P<int>{_INT.pattern})|(?P<name>{_NAME.pattern})|"
                         rf"(?P<text>{_IPV4.pattern}|{_DNS.pattern})")
_NAMED = {"True": True, "False": False, "None": None}


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


class _IniReader:
    """One INI file's lines into a Builder, section by section."""

    def __init__(self) -> None:
        self.b = Builder()
        # Groups named before their section: as a child ("children") or by a [g:vars].
        self.pending: dict[str, dict[str, Any]] = {}
        self.group, self.state = "ungrouped", "hosts"

    def read(self, text: str, extra: Sequence[VarsSource] = ()) -> list[Found]:
        host_line = self.host_line  # bound once: 100,000 lines
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line[0] == "[":
                self.section(line)
            elif self.state == "hosts":
                host_line(line)
            elif self.state == "vars":
                self.var_line(line)
            else:
                self.child_line(line)
        if self.pending:
            raise Unsupported("undefined group")
        return self.b.result(extra)

    def section(self, line: str) -> None:
        b, pending = self.b, self.pending
        m = _SECTION.match(line)
        if not m:
            raise Unsupported("bad section")
        group, state = self.group, self.state = m.group(1), m.group(2) or "hosts"
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

    def host_line(self, line: str) -> None:
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
        variables = self._typed(tokens)
        host_vars, host_groups = self.b.host_vars, self.b.host_groups
        if PLAIN_HOST.fullmatch(first) and first != "---":
            if first not in host_vars:  # add_host's commonest case, inline
                host_vars[first] = variables
                host_groups[first] = [self.group]
                return
            names, port = [first], None
        else:
            names, port = host_pattern(first)
        for name in names:
            hv = host_vars.get(name)
            if hv is None and port is None:  # add_host's commonest case, inline
                host_vars[name] = variables if len(names) == 1 else dict(variables)
                host_groups[name] = [self.group]
                continue
            hv = self.b.add_host(name, self.group, port)
            if hv:
                for k, v in variables.items():
                    set_var(hv, k, v)
            else:
                hv.update(variables)

    def _typed(self, tokens: list[str]) -> dict[str, Any]:
        """A host line's key=value tokens, each value typed as Ansible types it."""
        variables: dict[str, Any] = {}
        fast_value = _FAST_VALUE.fullmatch
        for token in islice(tokens, 1, None):
            key, eq, value = token.partition("=")
            if not eq:
                raise Unsupported("expected key=value")
            m = fast_value(value)  # ini_value's common cases, inline: 100,000 lines
            if m is None:
                typed = ini_value(value)
                if type(typed) not in SIMPLE:
                    self.b.plain = False
            else:
                kind = m.lastgroup
                typed = (value if kind == "text" else int(value) if kind == "int"
                         else _NAMED.get(value, value))
            variables[key] = typed
        return variables

    def var_line(self, line: str) -> None:
        key, eq, value = line.partition("=")
        if not eq:
            raise Unsupported("expected key=value")
        self.b.set_group_var(self.group, key.strip(), ini_value(value.strip()))

    def child_line(self, line: str) -> None:
        m = _GROUPNAME.match(line)
        if not m:
            raise Unsupported("expected a group name")
        child = m.group(1)
        if child not in self.b.group_vars:
            self.pending.setdefault(child, {"state": "children", "parents": []})
            if self.pending[child]["state"] != "children":
                raise Unsupported("pending vars and children")
            self.pending[child]["parents"].append(self.group)
        else:
            self.b.add_child(self.group, child)


def parse_ini(text: str, extra: Sequence[VarsSource] = ()) -> list[Found]:
    return _IniReader().read(text, extra)


def _add_pending(b: Builder, group: str, pending: dict[str, dict[str, Any]]) -> None:
    for parent in pending[group]["parents"]:
        b.add_child(parent, group)
        if parent in pending and pending[parent]["state"] == "children":
            _add_pending(b, parent, pending)
    del pending[group]
