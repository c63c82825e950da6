"""Load an Ansible inventory into plain host records (Ansible's own loader, no templating)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    try:
        manager = InventoryManager(loader=DataLoader(), sources=[str(path)])
    except AnsibleError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InventoryError(f"inventory {path}: {first}") from exc
    hosts = []
    for host in sorted(manager.get_hosts(), key=lambda h: h.name):
        merged = combine_vars(get_group_vars(host.get_groups()), host.vars)
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name != "all"))
        variables = {k: v for k, v in _plain(dict(merged)).items()
                     if k not in ("inventory_file", "inventory_dir")}
        hosts.append(InventoryHost(name=str(host.name), groups=groups, vars=variables))
    if not hosts:
        raise InventoryError(f"inventory {path} has no hosts")
    host_tuple = tuple(hosts)
    return Inventory(source=str(path), hosts=host_tuple, digest=digest_of(host_tuple))
