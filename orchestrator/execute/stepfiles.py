"""A step's files and environment: its private data dir (an inventory of only its hosts, every
string `!unsafe`), Ansible's settings, and the clean-up after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import InventoryHost
from orchestrator.core.names import STRICT
from orchestrator.execute.step import ExecConfig, StepRequest

# Paths on the controller that mean nothing on an execution node.
LOCAL_ONLY_ENV = ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_SSH_CONTROL_PATH_DIR",
                  "ANSIBLE_LOCAL_TEMP")
# Ansible's own default collection paths, kept after ours.
DEFAULT_COLLECTIONS = ("~/.ansible/collections", "/usr/share/ansible/collections")


class _Unsafe(str):
    """A string Ansible must take literally: written with YAML's `!unsafe` tag."""

    __slots__ = ()


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(
    _Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_literal(v) for v in value]
    return value


def dump_unsafe(inventory: dict[str, Any]) -> str:
    """The step's inventory: every string value marked `!unsafe`, so that nothing an inventory
    says is ever evaluated as a Jinja template on the controller (host names stay plain keys)."""
    hosts = inventory["all"]["hosts"]
    marked = {"all": {"hosts": {name: _literal(v) for name, v in hosts.items()}}}
    return yaml.dump(marked, Dumper=_UnsafeDumper, sort_keys=True)


def envvars(config: ExecConfig, pdd: Path, control_dir: Path) -> dict[str, str]:
    """Ansible's settings for a step whose data dir is `pdd`."""
    return {
        # ansible-runner turns host key checking off unless told otherwise: keep it on.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # The avmigrate.migration collection inside this package, then Ansible's defaults.
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            (str(config.collections_root), *DEFAULT_COLLECTIONS)),
        "ANSIBLE_PIPELINING": "True",
        # Connection sharing within one step only, and dead peers noticed in seconds: a
        # master left from before a network cut would hang every later connection.
        # ssh takes the first value given for an option: ours come first, so an
        # inventory cannot turn host key checking off (names.py refuses it too).
        "ANSIBLE_SSH_ARGS": (f"{STRICT} -o ControlMaster=auto "
                             "-o ControlPersist=30s -o ServerAliveInterval=5 "
                             "-o ServerAliveCountMax=3"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_TIMEOUT": "15",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    }


def private_data_dir(config: ExecConfig, request: StepRequest,
                     hosts: tuple[InventoryHost, ...] | None = None,
                     drop: tuple[str, ...] = ()) -> Path:
    """A fresh private data dir under the artifacts, with an inventory of only `hosts`
    (default: the request's), without the variables named in `drop`."""
    # Absolute: ansible-runner works from its own directory, a relative path breaks there.
    artifacts = config.artifacts_dir.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    pdd = Path(tempfile.mkdtemp(prefix=f"{request.step}-", dir=artifacts))
    inventory = {"all": {"hosts": {
        h.name: _strict({k: v for k, v in {**h.vars, **request.host_vars.get(h.name, {})}
                         .items() if k not in drop})
        for h in (request.hosts if hosts is None else hosts)
    }}}
    inv_path = pdd / "inventory" / "hosts.yml"
    inv_path.parent.mkdir()
    inv_path.write_text(dump_unsafe(inventory), encoding="utf-8")
    return pdd


def _strict(variables: dict[str, Any]) -> dict[str, Any]:
    """A host's own `ansible_ssh_args` replaces the ssh_args we give Ansible: ours goes first in
    it too, so that no inventory variable removes strict host key checking (ssh takes the
    first value of an option; names.py refuses lax values anyway)."""
    if "ansible_ssh_args" in variables:
        variables["ansible_ssh_args"] = f"{STRICT} {variables['ansible_ssh_args']}".strip()
    return variables


def scrub(pdd: Path) -> None:
    """Keep only runner's artifacts (status, rc, stdout, failure events): not the inventory,
    extravars, key or temporary files of the step."""
    for sub in ("env", "inventory", "tmp", "project"):
        shutil.rmtree(pdd / sub, ignore_errors=True)


def rotate(config: ExecConfig) -> None:
    """Keep the artifacts of the last `keep_runs` steps only."""
    dirs = sorted((d for d in config.artifacts_dir.resolve().iterdir() if d.is_dir()),
                  key=lambda d: d.stat().st_mtime)
    for old in dirs[: max(0, len(dirs) - config.keep_runs)]:
        shutil.rmtree(old, ignore_errors=True)


def close_masters(control_dir: Path) -> None:
    """Stop this step's ssh connection masters and remove their directory."""
    for sock in control_dir.glob("*"):
        if sock.is_socket():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "avm-control"],
                           capture_output=True, timeout=10, check=False)
    shutil.rmtree(control_dir, ignore_errors=True)


def ensure_ansible_on_path() -> str:
    """ansible-runner starts `ansible-playbook` by name: find the one beside our Python (our
    step guard takes that name on the step's PATH and runs this one)."""
    found = shutil.which("ansible-playbook")
    if found is None:
        bindir = str(Path(sys.executable).parent)
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        found = shutil.which("ansible-playbook")
        if found is None:
            raise ExecutionError("ansible-playbook is not installed; run `make venv`")
    return found


def default_artifacts_dir(state_path: str) -> Path:
    base = Path(state_path).parent if "://" not in state_path else Path.cwd()
    return Path(os.environ.get("AVMIGRATE_ARTIFACTS", base / "avmigrate-artifacts"))
