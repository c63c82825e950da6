"""The user's Ansible configuration, read as `ansible-playbook` reads it, and what avmigrate
changes in it for its steps (and why).

The configuration file is the one Ansible finds (`$ANSIBLE_CONFIG`, `./ansible.cfg` unless the
directory is world-writable, `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`), with `ANSIBLE_*`
environment variables above it, read by Ansible's own ConfigManager. The steps run with the
same file (`ANSIBLE_CONFIG`). avmigrate changes only what safety needs, and says so once per run
(`overrides`):

- host key checking on, and `-o StrictHostKeyChecking=yes` first on every ssh command line
  (ssh takes the first value of an option: nothing later can turn it off);
- dead peers noticed in 15 s (`ServerAliveInterval=5`, `ServerAliveCountMax=3`) after the
  user's own ssh arguments, so that the user's values win where they set them: a host lost in
  a protection window must be noticed, not waited for;
- each step's ssh connection masters in a directory of its own (a master left from before a
  network cut would hang the next step's connections);
- pipelining on, only where the configuration does not say (fewer round trips);
- the avmigrate.migration collection found first on the collections path.

Everything else (timeout, forks unless --forks is given, become settings, vault identities,
callbacks, ssh_common_args, interpreter discovery) is the user's.
"""

from __future__ import annotations

import configparser
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core import names
from orchestrator.core.errors import InventoryError
from orchestrator.inputs.sources import find_config, split_vault_id

# Ansible's own default for [ssh_connection] ssh_args.
ANSIBLE_DEFAULT_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"
KEEPALIVE = "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"


@dataclass(frozen=True)
class AnsibleSettings:
    """What of the user's Ansible configuration avmigrate's steps must know."""

    path: Path | None = None
    ssh_args: str = ANSIBLE_DEFAULT_SSH_ARGS
    pipelining: bool | None = None  # None: the configuration does not say
    forks: int | None = None
    # Vault identities the configuration names, paths made absolute (label@/abs/path).
    vault_ids: tuple[str, ...] = ()
    # The configuration's own inventory (used when no -i is given), absolute.
    inventory: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # The user's collections path (after avmigrate's own in the steps).
    collections: tuple[str, ...] = ()
    # Settings that make ansible-playbook ask at a prompt: which one, and the option that
    # answers it once (a step must never wait at a prompt nobody answers).
    prompts: tuple[tuple[str, str], ...] = ()
    # False when the configuration changes how variables merge (hash_behaviour, precedence,
    # vars plugins): avmigrate's own loader then leaves the inventory to Ansible's.
    default_merging: bool = True

    def overrides(self) -> list[str]:
        """One line per setting avmigrate changes for its steps, with the reason."""
        where = str(self.path) if self.path else "Ansible's defaults (no ansible.cfg found)"
        lines = [f"Ansible configuration: {where}",
                 f"  ssh: {names.STRICT} first (host keys are always checked), then "
                 f"ssh_args {self.ssh_args!r}, then {KEEPALIVE} (a lost host noticed in 15 s)",
                 "  ssh control path: one directory per run (one connection per host for "
                 "every step; none of another run's is reused); paramiko never adds unknown "
                 "keys",
                 "  collections: avmigrate.migration from this package first, then yours",
                 "  vault identities: given to the steps with absolute paths"]
        if self.pipelining is None:
            lines.append("  pipelining: on (your configuration does not set it)")
        return [*lines, *self.notes]


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, _mtime_ns: int) -> configparser.ConfigParser:
    """The file parsed once (per modification time), however many settings are read."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError) as exc:
        raise InventoryError(f"{path}: not a valid ansible.cfg ({exc}); fix it") from exc
    return parser


def _ini_value(path: Path | None, section: str, key: str) -> str | None:
    if path is None:
        return None
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise InventoryError(f"{path}: cannot be read ({exc.strerror}); fix it") from exc
    value = _parsed(path, mtime).get(section, key, fallback=None)
    return value.strip().strip("'\"") if value is not None else None


def _first(path: Path | None, envs: tuple[str, ...],
           keys: tuple[tuple[str, str], ...]) -> str | None:
    """A setting as Ansible resolves it: its environment variables, then the file's keys."""
    for env in envs:
        if os.environ.get(env):
            return os.environ[env]
    for section, key in keys:
        value = _ini_value(path, section, key)
        if value is not None:
            return value
    return None


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on", "y", "t")


def load(cwd: Path | None = None) -> AnsibleSettings:
    """The settings of the configuration Ansible would read from `cwd`; InventoryError if it
    would weaken host key checking."""
    path = find_config(cwd)
    ssh_args = os.environ.get("ANSIBLE_SSH_ARGS") or _ini_value(path, "ssh_connection",
                                                               "ssh_args")
    for key in ("ssh_args", "ssh_common_args", "ssh_extra_args", "scp_extra_args",
                "sftp_extra_args"):
        value = os.environ.get(f"ANSIBLE_{key.upper()}") or _ini_value(path, "ssh_connection",
                                                                      key)
        if value and (problem := names.ssh_args_problem(value)) is not None:
            raise InventoryError(f"{path or 'environment'}: [ssh_connection] {key}: {problem}")
    notes = []
    for section, key in (("defaults", "host_key_checking"),
                         ("ssh_connection", "host_key_checking")):
        value = _ini_value(path, section, key)
        if value is not None and not _bool(value):
            notes.append(f"  host_key_checking: on for avmigrate's steps ([{section}] says "
                         f"{value}; avmigrate never runs with it off)")
    pipelining = _first(path, ("ANSIBLE_PIPELINING", "ANSIBLE_SSH_PIPELINING"),
                        (("ssh_connection", "pipelining"), ("connection", "pipelining"),
                         ("defaults", "pipelining")))
    executable = _first(path, ("ANSIBLE_SSH_EXECUTABLE",),
                        (("ssh_connection", "ssh_executable"),))
    if executable and (problem := names.host_key_problem(
            {"ansible_ssh_executable": executable})) is not None:
        raise InventoryError(f"{path or 'environment'}: ssh_executable: {problem}")
    forks = os.environ.get("ANSIBLE_FORKS") or _ini_value(path, "defaults", "forks")
    base = path.parent if path else Path.cwd()
    here = cwd or Path.cwd()
    vault_ids = []
    identities = os.environ.get("ANSIBLE_VAULT_IDENTITY_LIST") or \
        _ini_value(path, "defaults", "vault_identity_list") or ""
    for item in (i.strip() for i in identities.split(",") if i.strip()):
        label, where = split_vault_id(item)
        if where != "prompt":  # as ansible-playbook run from `cwd` would open it
            where = str((here / Path(where).expanduser()).resolve())
        vault_ids.append(f"{label}@{where}")
    password_file = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") or \
        _ini_value(path, "defaults", "vault_password_file")
    if password_file:  # a path setting: relative to the configuration file
        vault_ids.append(f"default@{(base / Path(password_file).expanduser()).resolve()}")
    inventory = os.environ.get("ANSIBLE_INVENTORY") or _ini_value(path, "defaults", "inventory")
    sources = tuple((base / Path(p.strip()).expanduser()).resolve()
                    for p in (inventory or "").split(",") if p.strip())
    prompts = tuple((setting, option) for setting, option, env, section in (
        ("become_ask_pass", "--ask-become-pass (-K)", "ANSIBLE_BECOME_ASK_PASS",
         "privilege_escalation"),
        ("ask_vault_pass", "--ask-vault-pass (-J)", "ANSIBLE_ASK_VAULT_PASS", "defaults"),
        ("ask_pass", "SSH keys (avmigrate does not type SSH passwords)", "ANSIBLE_ASK_PASS",
         "defaults"))
        if _bool(_first(path, (env,), ((section, setting),)) or "false"))
    merging = (_first(path, ("ANSIBLE_HASH_BEHAVIOUR",), (("defaults", "hash_behaviour"),))
               or "replace", _first(path, ("ANSIBLE_PRECEDENCE",), (("defaults", "precedence"),)),
               _first(path, ("ANSIBLE_VARS_ENABLED",), (("defaults", "vars_plugins_enabled"),)))
    default_merging = merging[0] == "replace" and merging[1] is None and merging[2] in (
        None, "host_group_vars", "ansible.builtin.host_group_vars")
    collections = _first(path, ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"),
                         (("defaults", "collections_path"), ("defaults", "collections_paths")))
    try:
        fork_count = int(forks) if forks else None
    except ValueError as exc:
        raise InventoryError(f"{path}: [defaults] forks = {forks}: not a number") from exc
    return AnsibleSettings(path=path, ssh_args=ssh_args or ANSIBLE_DEFAULT_SSH_ARGS,
                           pipelining=_bool(pipelining) if pipelining else None,
                           forks=fork_count, vault_ids=tuple(vault_ids), inventory=sources,
                           notes=tuple(notes), prompts=prompts, default_merging=default_merging,
                           collections=tuple(str((base / Path(c).expanduser()).resolve())
                                             for c in (collections or "").split(os.pathsep)
                                             if c.strip()))
