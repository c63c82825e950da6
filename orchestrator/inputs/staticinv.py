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
here. The formats are read by staticini and staticyaml into invbuilder's model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.inputs.invbuilder import Found, Unsupported, VarsSource
from orchestrator.inputs.staticini import parse_ini
from orchestrator.inputs.staticyaml import parse_yaml


def kind(path: Path, head: str) -> str | None:
    """'ini', 'yaml' or None (not a static file this loader reads)."""
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml", ".json"):
        return "yaml"
    if suffix in ("", ".ini", ".cfg", ".hosts", ".txt"):
        return "ini" if not head.lstrip().startswith(("{", "---", "all:")) else None
    return None


def load(path: Path, extra: Sequence[VarsSource] = ()) -> list[Found]:
    """The hosts of a static inventory file, sorted by name, with the variables of `extra`
    (its group_vars/host_vars); raises Unsupported if unsure."""
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
        return parse_ini(text, extra)
    if which == "yaml":
        return parse_yaml(text, extra)
    raise Unsupported("not a static inventory file")
