"""Load an Ansible inventory into plain host records (Ansible's own loader, no templating)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import names
from orchestrator.errors import InventoryError
from orchestrator.models import InventoryHost


@dataclass(frozen=True)
class Inventory:
    """The hosts of one inventory source, with the digest a plan is pinned to."""

    source: str
    hosts: tuple[InventoryHost, ...]
    digest: str

    def get(self, name: str) -> InventoryHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"{self.source}: no host {name!r}")

    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def host_digests(self) -> dict[str, str]:
        """One digest per host (groups and variables), to say what changed since a plan."""
        return {h.name: hashlib.sha256(json.dumps([list(h.groups), h.vars], sort_keys=True)
                                       .encode()).hexdigest()[:16] for h in self.hosts}


def _plain(value: Any) -> Any:
    """Ansible's tagged/unsafe wrappers to plain Python, so nothing is ever templated later."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
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


def digest_of(hosts: tuple[InventoryHost, ...]) -> str:
    blob = json.dumps([[h.name, list(h.groups), h.vars] for h in hosts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _parse_failure(path: Path, text: str, said: str, exc: Exception) -> str:
    """One line for an inventory Ansible could not parse, with the line when it can be found."""
    if path.suffix in (".yml", ".yaml") or text.lstrip().startswith(("all:", "---")):
        try:
            yaml.safe_load(text)
        except ValueError as err:  # a date that cannot exist, say
            return f"{path}: not a valid inventory ({err}); fix the value"
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or "not valid YAML"
            return f"{path}{where}: not valid YAML ({problem}); fix the syntax"
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            return f"{path}:{number}: a group header must look like [name]; fix the INI syntax"
    for source in (said, str(exc)):
        found = re.search(re.escape(str(path)) + r":(\d+):\s*(.+)", source)
        if found:
            return f"{path}:{found.group(1)}: {found.group(2).strip()}"
    reasons = [ln.strip() for ln in said.splitlines()
               if ln.strip().startswith("Failed to parse inventory:")]
    why = reasons[0] if reasons else (str(exc).strip().splitlines() or [repr(exc)])[0]
    return f"{path}: cannot be parsed as an inventory ({why}); fix its syntax"


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return ""


def _line_of(text: str, needle: str) -> str:
    """':LINE' of the first line naming `needle`, to point at it; '' if not found."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return f":{number}"
    return ""


def load(path: Path) -> Inventory:
    if not path.exists():
        raise InventoryError(f"inventory {path} does not exist; pass -i with an inventory file")
    if path.is_file() and not os.access(path, os.R_OK):
        raise InventoryError(f"inventory {path} is not readable; check its permissions")
    # Unparseable sources must be an error, not a warning and an empty inventory.
    os.environ["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"
    os.environ.setdefault("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True")
    try:
        from ansible.errors import AnsibleError  # noqa: PLC0415  (slow import, only when needed)
        from ansible.inventory.helpers import get_group_vars  # noqa: PLC0415
        from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
        from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
        from ansible.utils.vars import combine_vars  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - broken install
        raise InventoryError(f"ansible-core is not importable ({exc}); run `make venv`") from exc
    text = _text(path)
    said = io.StringIO()  # Ansible's own warnings: folded into our one line, never printed
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            manager = InventoryManager(loader=DataLoader(), sources=[str(path)])
    except AnsibleError as exc:
        raise InventoryError(_parse_failure(path, text, said.getvalue(), exc)) from exc
    hosts = []
    for group in manager.groups:
        if (problem := names.identifier_problem(group, "group")) is not None:
            raise InventoryError(f"{path}{_line_of(text, group)}: {problem}; rename it")
    for host in sorted(manager.get_hosts(), key=lambda h: h.name):
        if (problem := names.host_problem(host.name)) is not None:
            raise InventoryError(f"{path}{_line_of(text, host.name)}: host {host.name!r} "
                                 f"{problem}; fix the inventory (nothing was contacted)")
        merged = combine_vars(get_group_vars(host.get_groups()), host.vars)
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name != "all"))
        variables = {k: v for k, v in _plain(dict(merged)).items()
                     if k not in ("inventory_file", "inventory_dir")}
        for var in variables:
            if (problem := names.identifier_problem(var, "variable")) is not None:
                raise InventoryError(f"{path}{_line_of(text, var)}: host {host.name}: {problem}")
        if (problem := names.host_key_problem(variables)) is not None:
            raise InventoryError(f"{path}: host {host.name}: {problem}")
        address = variables.get("ansible_host", host.name)
        if (problem := names.host_problem(str(address))) is not None:
            raise InventoryError(f"{path}{_line_of(text, str(address))}: host {host.name}: "
                                 f"ansible_host {str(address)!r} {problem}")
        hosts.append(InventoryHost(name=str(host.name), groups=groups, vars=variables))
    if not hosts:
        raise InventoryError(f"inventory {path} has no hosts")
    host_tuple = tuple(hosts)
    return Inventory(source=str(path), hosts=host_tuple, digest=digest_of(host_tuple))
