"""What the user gives as their inventory, as `ansible-playbook` takes it: one or more `-i`
sources, a `--limit` pattern, vault identities, and the `ansible.cfg` Ansible would read.

`limit_names` applies a `--limit` to loaded hosts with Ansible's pattern rules (comma or colon
separated terms; `!` excludes, `&` intersects; a term names a group, a host, a glob or a `~regex`).
A subscript (`web[0:2]`) or `@file` is left to Ansible's own matcher (Unsupported).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.errors import InventoryError
from orchestrator.inputs.invbuilder import Found, Unsupported


@dataclass(frozen=True)
class Sources:
    """The inventory as given on the command line (`-i` repeated, `--limit`, vault ids)."""

    paths: tuple[Path, ...]
    limit: str | None = None
    # As ansible-playbook's --vault-id: "label@source" or a bare source (label 'default');
    # the source is a password file or an executable script (never the password itself).
    vault_ids: tuple[str, ...] = ()
    # A vault password typed at a prompt (--ask-vault-pass): memory only, never shown.
    vault_password: bytes | None = field(default=None, repr=False, compare=False)
    # The become password typed at a prompt (--ask-become-pass), for the steps only.
    become_password: bytes | None = field(default=None, repr=False, compare=False)
    # Where the user's playbooks live (--playbook-dir): its group_vars/ and host_vars/ are
    # read as ansible-playbook reads a playbook's, above the inventory's.
    playbook_dir: Path | None = None

    @classmethod
    def of(cls, given: Path | str | Sources | Iterable[Path | str]) -> Sources:
        if isinstance(given, Sources):
            return given
        if isinstance(given, Path | str):
            return cls((Path(given),))
        return cls(tuple(Path(p) for p in given))

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.paths)

    @property
    def single_file(self) -> Path | None:
        """The one source when it is one plain file (what the fast loader reads)."""
        if len(self.paths) == 1 and self.paths[0].is_file():
            return self.paths[0]
        return None

    @property
    def has_vault(self) -> bool:
        return bool(self.vault_ids) or self.vault_password is not None

    def resolved(self, config_inventory: tuple[Path, ...], config_vault_ids: tuple[str, ...]
                 ) -> Sources:
        """As ansible-playbook takes them: the configuration's inventory when no -i was given,
        its vault identities before the command line's, every path absolute."""
        paths = self.paths or config_inventory
        ids = []
        for given in (*config_vault_ids, *self.vault_ids):
            label, where = split_vault_id(given)
            if where == "prompt":  # asked once, by --ask-vault-pass, for every step
                if self.vault_password is None:
                    raise InventoryError(f"vault identity {given!r} asks at a prompt: pass "
                                         "--ask-vault-pass (-J)")
                continue
            ids.append(f"{label}@{Path(where).expanduser().resolve()}")
        return Sources(tuple(Path(p).expanduser().absolute() if "," not in str(p) else Path(p)
                             for p in paths), self.limit, tuple(dict.fromkeys(ids)),
                       self.vault_password, self.become_password,
                       self.playbook_dir.expanduser().absolute() if self.playbook_dir else None)


def split_vault_id(given: str) -> tuple[str, str]:
    """(label, source) of a vault identity, split as Ansible splits it (at the first '@';
    no '@': the 'default' label)."""
    label, at, where = given.partition("@")
    return (label or "default", where) if at else ("default", label)


def find_config(cwd: Path | None = None) -> Path | None:
    """The ansible.cfg Ansible would read, found as Ansible finds it: $ANSIBLE_CONFIG, then
    ./ansible.cfg (not in a world-writable directory), ~/.ansible.cfg, /etc/ansible/ansible.cfg."""
    env = os.environ.get("ANSIBLE_CONFIG")
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            path = path / "ansible.cfg"
        if path.is_file():
            return path.resolve()
    here = (cwd or Path.cwd())
    try:
        world_writable = bool(here.stat().st_mode & stat.S_IWOTH)
    except OSError:
        world_writable = True
    candidates = [] if world_writable else [here / "ansible.cfg"]
    candidates += [Path.home() / ".ansible.cfg", Path("/etc/ansible/ansible.cfg")]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    return None


# What the loaders take: a path, several paths, or Sources.
Given = Path | str | Sources | Iterable[Path | str]

_SPECIAL = (".", "?", "*", "[")


def _split(pattern: str) -> list[str]:
    if "," in pattern:
        terms = pattern.split(",")
    elif "[" in pattern or (pattern.count(":") > 1 and "::" in pattern):
        raise Unsupported("subscripts and IPv6 addresses in --limit")
    else:
        terms = pattern.split(":")
    return [t.strip() for t in terms if t.strip()]


def _matcher(term: str) -> re.Pattern[str]:
    try:
        return re.compile(term[1:] if term.startswith("~") else fnmatch.translate(term))
    except re.error as exc:
        raise Unsupported(f"pattern {term!r}: {exc}") from exc


def _enumerate(term: str, found: list[Found], groups: set[str]) -> set[str]:
    """Ansible's _enumerate_matches: a group's hosts, and hosts by name when no group
    matched or the term is a glob or regex."""
    if term.endswith("]") or term.startswith("@"):
        raise Unsupported("subscripts and @files in --limit")
    match = _matcher(term).match
    matching_groups = {g for g in groups if match(g)}
    out: set[str] = set()
    if matching_groups:
        if "all" in matching_groups:
            return {row[0] for row in found}
        out = {row[0] for row in found if matching_groups.intersection(row[1])}
    if not matching_groups or term.startswith("~") or any(c in term for c in _SPECIAL):
        out |= {row[0] for row in found if match(row[0])}
    return out


def limit_names(found: list[Found], pattern: str) -> set[str]:
    """The names of `found` that `--limit pattern` keeps, as Ansible's InventoryManager would."""
    terms = _split(pattern)
    groups = {"all", "ungrouped"}
    for row in found:
        groups.update(row[1])
    plain = [t for t in terms if not t.startswith(("!", "&"))] or ["all"]
    kept: set[str] = set()
    for term in plain:
        kept |= _enumerate(term, found, groups)
    for term in terms:
        if term.startswith("&"):
            kept &= _enumerate(term[1:], found, groups)
    for term in terms:
        if term.startswith("!"):
            kept -= _enumerate(term[1:], found, groups)
    return kept
