"""Load and check the product catalogue: what to detect, remove, install and verify, as data."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.errors import CatalogueError
from orchestrator.inputs.yamlfile import key_lines, load_yaml

_BANNED_KEYS = {"name", "vendor", "platforms", "detect", "protection", "remove"}
_DETECT_KEYS = {"packages", "services", "paths", "process_pattern", "info_command", "info_fields"}
_REMOVE_KEYS = {"services", "packages", "leftovers", "shared_parents", "secret", "secret_file"}
_REPL_KEYS = {"name", "platforms", "role", "coexists_with", "packages", "services",
              "requirements", "verify", "sha256"}
_VERIFY_KEYS = {"service", "daemon_command", "scan_command", "detected_rc", "detected_text",
                "max_signature_age_days"}


class _Invalid(CatalogueError):
    """A catalogue check failed at a key path; `load` adds the line number."""

    def __init__(self, source: str, where: str, what: str) -> None:
        super().__init__(f"{source}: {where}: {what}")
        self.source, self.where, self.what = source, where, what


def _require(cond: bool, source: str, where: str, what: str) -> None:
    if not cond:
        raise _Invalid(source, where, what)


def _check_keys(entry: Any, allowed: set[str], required: set[str], source: str, where: str
                ) -> None:
    _require(isinstance(entry, dict), source, where, "must be a mapping")
    unknown = set(entry) - allowed
    _require(not unknown, source, where, f"unknown keys {sorted(unknown)}")
    missing = required - set(entry)
    _require(not missing, source, where, f"missing keys {sorted(missing)}")


def _str_list(value: Any, source: str, where: str) -> None:
    _require(isinstance(value, list) and all(isinstance(v, str) and v for v in value),
             source, where, "must be a list of non-empty strings")


def parse(data: Any, source: str) -> Catalogue:
    _require(isinstance(data, dict), source, "top level", "must be a mapping")
    _require(data.get("version") == 1, source, "version", "must be 1")
    banned, repl = data.get("banned"), data.get("replacements")
    _require(isinstance(banned, dict) and bool(banned), source, "banned", "needs one product")
    _require(isinstance(repl, dict) and bool(repl), source, "replacements",
             "needs one product")
    for bid, entry in banned.items():
        _check_banned(entry, source, f"banned.{bid}")
    for rid, entry in repl.items():
        _check_replacement(entry, banned, source, f"replacements.{rid}")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return Catalogue(source=source, banned=banned, replacements=repl, digest=digest)


def load(path: Path | None = None) -> Catalogue:
    data, source = load_yaml(path, ("orchestrator", "data/catalogue.yml", "built-in catalogue"),
                             CatalogueError)
    try:
        return parse(data, source)
    except _Invalid as exc:
        if path is None:
            raise
        lines = key_lines(path.read_text(encoding="utf-8"))
        key: tuple[str | int, ...] = tuple(p for p in exc.where.split(".") if p != "top level")
        while key and key not in lines:
            key = key[:-1]
        line = lines.get(key, 1)
        raise CatalogueError(f"{exc.source}:{line}: {exc.where}: {exc.what}") from None


def _check_banned(entry: Any, source: str, where: str) -> None:
    """A banned product: how it is detected, what protects, how it is removed."""
    _check_keys(entry, _BANNED_KEYS, {"name", "detect", "protection", "remove"}, source,
                where)
    _check_keys(entry["detect"], _DETECT_KEYS, {"packages", "services", "paths",
                                                "process_pattern"}, source, where + ".detect")
    _check_keys(entry["remove"], _REMOVE_KEYS, {"services", "packages", "leftovers"},
                source, where + ".remove")
    for key in ("packages", "services", "paths"):
        _str_list(entry["detect"][key], source, f"{where}.detect.{key}")
    for key in ("services", "packages", "leftovers"):
        _str_list(entry["remove"][key], source, f"{where}.remove.{key}")
    _check_keys(entry["protection"], {"services"}, {"services"}, source,
                where + ".protection")
    protecting = entry["protection"]["services"]
    _require(isinstance(protecting, list) and all(isinstance(v, str) and v
                                                  for v in protecting),
             source, f"{where}.protection.services",
             "must be a list of services (empty for a product that protects nothing)")
    missing = [s for s in protecting if s not in entry["detect"]["services"]]
    _require(not missing, source, f"{where}.protection.services",
             f"{missing} must also be in detect.services (discovery reads them there)")
    for path in entry["remove"]["leftovers"] + entry["remove"].get("shared_parents", []):
        _require(path.startswith("/") and path.count("/") >= 2 and ".." not in path,
                 source, f"{where}.remove", f"{path!r} is not a safe absolute path to delete")
    entry["remove"].setdefault("shared_parents", [])
    secret = entry["remove"].get("secret")
    if secret is not None or "secret_file" in entry["remove"]:
        _require(isinstance(secret, str) and re.fullmatch(r"[a-z][a-z0-9_]*", secret)
                 is not None, source, f"{where}.remove.secret",
                 "must name a credential (lower case letters, digits, '_')")
        file = entry["remove"].get("secret_file")
        _require(isinstance(file, str) and file.startswith("/") and ".." not in file,
                 source, f"{where}.remove.secret_file",
                 "must be the absolute path the product reads its password from")


def _check_replacement(entry: Any, banned: dict[str, Any], source: str, where: str) -> None:
    """A replacement product: its role, packages, services and how it is verified."""
    _check_keys(entry, _REPL_KEYS, {"name", "role", "packages", "services", "verify"},
                source, where)
    _check_keys(entry["verify"], _VERIFY_KEYS, {"service", "daemon_command", "scan_command",
                                                "detected_rc", "detected_text"},
                source, where + ".verify")
    for other in entry.get("coexists_with", []):
        _require(other in banned, source, where + ".coexists_with",
                 f"{other!r} is not a banned product of this catalogue")
    pins = entry.get("sha256", {})
    _require(isinstance(pins, dict) and all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in pins.items()), source, where + ".sha256",
        "must map package file names to SHA-256 hex digests")
    entry.setdefault("requirements", {"free_mb": {}})
    entry.setdefault("coexists_with", [])
