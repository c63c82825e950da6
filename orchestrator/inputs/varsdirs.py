"""`group_vars/` and `host_vars/` beside an inventory, read the way Ansible's `host_group_vars`
vars plugin reads them, for the fast loader.

For an entity NAME, Ansible looks in `<basedir>/group_vars` (or `host_vars`) for the first of
NAME, NAME.yml, NAME.yaml, NAME.json that exists; a directory is read whole (recursively, in
sorted order, skipping hidden files, backups `~` and files with other extensions), and each
file's top-level keys replace the earlier ones. Several base directories (one per inventory
source) are read in order, the later winning.

Anything this reader is not sure to read as Ansible does (a vault-encrypted file, a YAML tag
such as `!vault` or `!unsafe`, a file that is not a mapping) raises `Unsupported`, and the
caller uses Ansible's own loader (which then also decrypts, or gives Ansible's own error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from orchestrator.inputs.invbuilder import Unsupported, plain
from orchestrator.inputs.staticyaml import SafeTaglessLoader

# Ansible's YAML_FILENAME_EXTENSIONS, after the bare name.
EXTENSIONS = ("", ".yml", ".yaml", ".json")


class _Dir:
    """One `group_vars` or `host_vars` directory, listed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries = (frozenset(e.name for e in path.iterdir()) if path.is_dir()
                            else frozenset())
        except OSError as exc:
            raise Unsupported(f"{path}: {exc.strerror}") from exc

    def files(self, name: str) -> list[Path]:
        """The files Ansible reads for `name`, in its order."""
        if not self.entries or name.startswith(os.sep):
            return []
        for ext in EXTENSIONS:
            entry = name + ext
            if entry in self.entries:
                full = self.path / entry
                return _walk(full) if full.is_dir() else [full]
        return []


def _walk(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(e.name for e in directory.iterdir()):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = directory / entry
        ext = Path(entry).suffix
        if full.is_dir() and not ext:
            found.extend(_walk(full))
        elif full.is_file() and (not ext or ext in EXTENSIONS):
            found.append(full)
    return found


def read_vars_file(path: Path) -> dict[str, Any]:
    """One vars file as plain data; Unsupported for what only Ansible reads right."""
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"$ANSIBLE_VAULT"):
        raise Unsupported(f"{path} is vault-encrypted")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=SafeTaglessLoader)  # noqa: S506 - safe subclass
    except Unsupported:
        raise
    except (yaml.YAMLError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise Unsupported(f"{path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise Unsupported(f"{path} is not a mapping of variables")
    return plain(data)  # type: ignore[no-any-return]


class VarsDirs:
    """The `group_vars`/`host_vars` of some base directories (each inventory source's own)."""

    def __init__(self, basedirs: list[Path]) -> None:
        self.group_dirs = [_Dir(Path(os.path.realpath(b)) / "group_vars") for b in basedirs]
        self.host_dirs = [_Dir(Path(os.path.realpath(b)) / "host_vars") for b in basedirs]
        self._groups: dict[str, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return any(d.entries for d in (*self.group_dirs, *self.host_dirs))

    def group(self, name: str) -> dict[str, Any]:
        """The variables `group_vars/` give group `name` (cached: groups are few)."""
        found = self._groups.get(name)
        if found is None:
            found = self._groups[name] = _merged(self.group_dirs, name)
        return found

    def host(self, name: str) -> dict[str, Any]:
        return _merged(self.host_dirs, name)

    def files(self) -> list[Path]:
        """Every file a host or group could read (for the plan's digest of the sources)."""
        out: list[Path] = []
        for d in (*self.group_dirs, *self.host_dirs):
            for entry in sorted(d.entries):
                full = d.path / entry
                out.extend(_walk(full) if full.is_dir() else [full])
        return out


def _merged(dirs: list[_Dir], name: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for d in dirs:
        for path in d.files(name):
            data.update(read_vars_file(path))
    return data


def basedir_of(source: Path) -> Path:
    """Where Ansible looks for a source's group_vars/host_vars: the directory itself, or the
    directory holding the file."""
    return source if source.is_dir() else source.parent


def vault_files(base: Path) -> list[Path]:
    """The vault-encrypted files under `base`'s group_vars/ and host_vars/."""
    out = []
    for kind in ("group_vars", "host_vars"):
        directory = base / kind
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                try:
                    with path.open("rb") as f:
                        head = f.read(64)
                except OSError:
                    continue
                if head.lstrip().startswith(b"$ANSIBLE_VAULT"):
                    out.append(path)
    return out
