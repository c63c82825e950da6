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

from orchestrator.core.assets import STEP_SHIM
from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import InventoryHost
from orchestrator.core.names import STRICT
from orchestrator.execute.step import ExecConfig, StepRequest
from orchestrator.inputs.ansiblecfg import KEEPALIVE

# Paths on the controller that mean nothing on an execution node.
LOCAL_ONLY_ENV = ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_SSH_CONTROL_PATH_DIR",
                  "ANSIBLE_LOCAL_TEMP", "ANSIBLE_CONFIG", "PYTHONPATH")
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


def ssh_args(config: ExecConfig, own: str | None = None) -> str:
    """The ssh arguments of every step: strict host key checking first (ssh takes the first
    value of an option, so nothing later turns it off), then the user's (the host's own
    `ansible_ssh_args`, else the configuration's), then keep-alives the user's may override."""
    return f"{STRICT} {own if own is not None else config.ssh_args} {KEEPALIVE}"


def envvars(config: ExecConfig, pdd: Path, control_dir: Path) -> dict[str, str]:
    """Ansible's settings for a step whose data dir is `pdd`: the user's configuration, with
    what safety needs changed (inputs/ansiblecfg.py says what and why)."""
    env = {
        # ansible-runner turns host key checking off unless told otherwise: keep it on.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # The avmigrate.migration collection inside this package, then the user's (else
        # Ansible's defaults).
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            (str(config.collections_root), *(config.user_collections or DEFAULT_COLLECTIONS))),
        "ANSIBLE_SSH_ARGS": ssh_args(config),
        # Connection sharing within one run only: one master per host carries every step of
        # the run (one handshake per host, not one per step); keep-alives end a master whose
        # host went away (a network cut) within 15 s, and one of the user's own runs (perhaps
        # made without host key checking) must never carry ours. A control_path of the
        # user's configuration is replaced by one inside the run's directory.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_SSH_CONTROL_PATH": "%(directory)s/%%C",
        # The paramiko connection (if the user's configuration chooses it) never records an
        # unknown key.
        "ANSIBLE_PARAMIKO_HOST_KEY_AUTO_ADD": "False",
        # One of the user's sources that fails to parse fails the step (else it would run
        # with avmigrate's values alone: no address, user or jump host).
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        # Ansible starts without paramiko's import of invoke (assets/stepshim/invoke says
        # why): a quarter of each step's start-up CPU.
        "PYTHONPATH": os.pathsep.join(p for p in (str(STEP_SHIM),
                                                  os.environ.get("PYTHONPATH", "")) if p),
    }
    if config.vault_ids:
        # The configuration's and the command line's vault identities, paths made absolute
        # (a relative one would be looked for in the step's own directory).
        env["ANSIBLE_VAULT_IDENTITY_LIST"] = ",".join(config.vault_ids)
    if config.ansible_config is not None:
        env["ANSIBLE_CONFIG"] = str(config.ansible_config)
    if config.pipelining is None:
        env["ANSIBLE_PIPELINING"] = "True"
    return env


def cmdline(config: ExecConfig) -> list[str]:
    """What every step adds to ansible-playbook's command line: the prompts the operator
    answered (the vault identities go in the environment, see envvars)."""
    return config.prompts.cmdline()


def user_inventory(config: ExecConfig, request: StepRequest, pdd: Path
                   ) -> tuple[list[str], str]:
    """The step's inventory when it runs against the user's own sources: those sources, then
    one of ours with avmigrate's per-host values (all `!unsafe`), and the `--limit @file` of
    the step's hosts. Returns (inventory sources, limit)."""
    own = {}
    for h in request.hosts:
        values = dict(request.host_vars.get(h.name, {}))
        if "ansible_ssh_args" in h.vars:  # as we resolved and checked it
            values["avmigrate_ssh_args"] = str(h.vars["ansible_ssh_args"])
        own[h.name] = values
    ours = pdd / "inventory" / "avmigrate.yml"
    ours.parent.mkdir(exist_ok=True)
    ours.write_text(dump_unsafe({"all": {"hosts": own}}), encoding="utf-8")
    limit = pdd / "inventory" / "limit"
    limit.write_text("".join(f"{h.name}\n" for h in request.hosts), encoding="utf-8")
    return [*config.sources, str(ours)], f"@{limit}"


def playbook_for(config: ExecConfig, request: StepRequest, pdd: Path) -> Path:
    """The playbook the step runs. With the user's --playbook-dir: a copy of avmigrate's
    playbooks in the step's project directory, beside links to that directory's group_vars/
    and host_vars/, so that ansible-playbook reads them as a playbook's own."""
    if config.user_playbook_dir is None:
        return config.playbook_dir / request.playbook
    project = pdd / "project"
    project.mkdir(exist_ok=True)
    for book in config.playbook_dir.glob("*.yml"):
        shutil.copyfile(book, project / book.name)
    for kind in ("group_vars", "host_vars"):
        if (config.user_playbook_dir / kind).is_dir():
            (project / kind).symlink_to(config.user_playbook_dir / kind)
    return project / request.playbook


def user_extravars(config: ExecConfig) -> dict[str, Any]:
    """Extra variables of a step on the user's sources: its ssh arguments for every host,
    with strict host key checking first, the host's own arguments kept (see ssh_args)."""
    return {"ansible_ssh_args": ssh_args(
        config, "{{ avmigrate_ssh_args | default(" + repr(config.ssh_args) + ") }}")}


def new_private_data_dir(config: ExecConfig, request: StepRequest) -> Path:
    """A fresh private data dir under the artifacts."""
    # Absolute: ansible-runner works from its own directory, a relative path breaks there.
    artifacts = config.artifacts_dir.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{request.step}-", dir=artifacts))


def private_data_dir(config: ExecConfig, request: StepRequest,
                     hosts: tuple[InventoryHost, ...] | None = None,
                     drop: tuple[str, ...] = ()) -> Path:
    """A fresh private data dir under the artifacts, with an inventory of only `hosts`
    (default: the request's), without the variables named in `drop`."""
    pdd = new_private_data_dir(config, request)
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
    """Stop the ssh connection masters of `control_dir` (a run's) and remove it."""
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
