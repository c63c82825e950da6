"""The static YAML inventory format, read the way Ansible's `yaml` inventory plugin reads it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from orchestrator.inputs.invbuilder import (
    Builder,
    Found,
    Unsupported,
    VarsSource,
    host_pattern,
    set_var,
)

_SECTIONS = ("vars", "children", "hosts")


def _yaml_group(b: Builder, name: Any, data: Any) -> str:
    if not isinstance(name, str):
        raise Unsupported("non-string group name")
    if not isinstance(data, Mapping | None):
        raise Unsupported("group is not a mapping")  # Ansible warns and skips: let it say so
    b.add_group(name)
    if data is None:
        return name
    for key, given in data.items():
        section = {given: None} if isinstance(given, str) and key in _SECTIONS else given
        if section is None:
            continue
        if not isinstance(section, Mapping) or key not in _SECTIONS:
            raise Unsupported("unexpected key")  # Ansible warns and skips: let it say so
        _yaml_section(b, name, key, section)
    return name


def _yaml_section(b: Builder, group: str, key: str, section: Mapping[Any, Any]) -> None:
    """A group's `vars:`, `children:` or `hosts:`."""
    if key == "vars":
        for var, value in section.items():
            b.set_group_var(group, var, value)
    elif key == "children":
        for child, child_data in section.items():
            b.add_child(group, _yaml_group(b, child, child_data))
    else:
        _yaml_hosts(b, group, section)


def _yaml_hosts(b: Builder, group: str, section: Mapping[Any, Any]) -> None:
    """A group's `hosts:` mapping: host patterns to their variables."""
    for pattern, host_vars in section.items():
        if not isinstance(pattern, str):
            raise Unsupported("non-string host")
        hosts, port = host_pattern(pattern)
        if host_vars is not None and not isinstance(host_vars, Mapping):
            raise Unsupported("host vars are not a mapping")
        b.check(host_vars or {})
        for host in hosts:
            hv = b.add_host(host, group, port)
            for k, v in (host_vars or {}).items():
                set_var(hv, k, v)


class SafeTaglessLoader(yaml.CSafeLoader):
    """libyaml's safe loader; a duplicate key or a tag is left to Ansible's loader."""


def _no_tags(_loader: yaml.Loader, _suffix: str, node: yaml.Node) -> Any:
    raise Unsupported(f"YAML tag {node.tag}")


SafeTaglessLoader.add_multi_constructor("!", _no_tags)


def parse_yaml(text: str, extra: Sequence[VarsSource] = ()) -> list[Found]:
    try:
        data = yaml.load(text, Loader=SafeTaglessLoader)  # noqa: S506 - a safe loader subclass
    except Unsupported:
        raise
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise Unsupported(str(exc)) from exc
    if not data or not isinstance(data, Mapping) or data.get("plugin"):
        raise Unsupported("not a YAML inventory")
    if "---" in text[3:] or "<<" in text:
        raise Unsupported("several documents or merge keys")
    b = Builder()
    for name in data:
        _yaml_group(b, name, data[name])
    return b.result(extra)
