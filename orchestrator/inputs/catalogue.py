"""Load and check the product catalogue: what to detect, remove, install and verify, as data."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from orchestrator.core.catalogue import PLATFORMS, Catalogue, resolve
from orchestrator.core.errors import CatalogueError
from orchestrator.inputs.yamlfile import key_lines, load_yaml

_BANNED_KEYS = {"name", "vendor", "platforms", "detect", "protection", "remove", "on_platform"}
_DETECT_KEYS = {"packages", "services", "paths", "process_pattern", "info_command", "info_fields",
                "registry"}
_REMOVE_KEYS = {"services", "packages", "leftovers", "shared_parents", "secret", "secret_file",
                "msi", "reboot"}
_REPL_KEYS = {"name", "vendor", "platforms", "role", "coexists_with", "passive_beside",
              "strategies", "enrol", "packages", "services", "requirements", "verify",
              "verify_beside", "sha256", "on_platform"}
# What `on_platform.<platform>` may replace. Which banned products a replacement coexists with
# and what protects stay one list for all platforms (a platform's products have their own ids).
_BANNED_PLATFORM_KEYS = {"name", "detect", "remove"}
_REPL_PLATFORM_KEYS = {"name", "role", "strategies", "enrol", "packages", "services",
                       "requirements", "verify", "verify_beside", "sha256"}
_REBOOT = ("never", "may")
_VERIFY_KEYS = {"service", "health", "signatures", "max_signature_age_days", "expires",
                "detection"}
_DETECTION_KEYS = {"method", "input", "command", "detected_rc", "detected_text", "wait_s",
                   "evidence_command", "evidence_text"}
_STRATEGIES = ("make-before-break", "swap")


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
    unknown = set(data) - {"version", "banned", "replacements", "default_replacement"}
    _require(not unknown, source, "top level", f"unknown keys {sorted(unknown)}")
    _require(data.get("version") == 1, source, "version", "must be 1")
    banned, repl = data.get("banned"), data.get("replacements")
    _require(isinstance(banned, dict) and bool(banned), source, "banned", "needs one product")
    _require(isinstance(repl, dict) and bool(repl), source, "replacements",
             "needs one product")
    for bid, entry in banned.items():
        for platform in _platforms(entry, _BANNED_PLATFORM_KEYS, source, f"banned.{bid}"):
            _check_banned(resolve(entry, platform), source, f"banned.{bid}", platform)
    for rid, entry in repl.items():
        for platform in _platforms(entry, _REPL_PLATFORM_KEYS, source, f"replacements.{rid}"):
            _check_replacement(resolve(entry, platform), banned, source,
                               f"replacements.{rid}")
    default = data.get("default_replacement", next(iter(repl)))
    _require(default in repl, source, "default_replacement",
             f"{default!r} is not a replacement of this catalogue")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return Catalogue(source=source, banned=banned, replacements=repl, digest=digest,
                     default=str(default))


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


def _platforms(entry: Any, overridable: set[str], source: str, where: str) -> list[str]:
    """The platforms an entry names (each is checked as it resolves there), after checking
    that its `on_platform` overrides only keys that may differ per platform."""
    _require(isinstance(entry, dict), source, where, "must be a mapping")
    platforms = entry.get("platforms")
    _require(isinstance(platforms, list) and bool(platforms)
             and all(p in PLATFORMS for p in platforms), source, where + ".platforms",
             f"must list some of {', '.join(PLATFORMS)}")
    overrides = entry.get("on_platform", {})
    _require(isinstance(overrides, dict), source, where + ".on_platform", "must be a mapping")
    for platform, keys in overrides.items():
        at = f"{where}.on_platform.{platform}"
        _require(platform in platforms, source, at, "is not one of the entry's platforms")
        _check_keys(keys, overridable, set(), source, at)
    return list(platforms)


def _safe_path(path: Any, windows: bool) -> bool:
    """An absolute path two levels deep at least, that avmigrate may delete."""
    if not isinstance(path, str) or ".." in path:
        return False
    if windows:
        return re.fullmatch(r"[A-Za-z]:\\[^\\]+\\.+", path) is not None
    return path.startswith("/") and path.count("/") >= 2


def _check_banned(entry: Any, source: str, where: str, platform: str) -> None:
    """A banned product on one platform: how it is detected, what protects, how it is
    removed."""
    windows = platform == "windows"
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
        _require(_safe_path(path, windows), source, f"{where}.remove",
                 f"{path!r} is not a safe absolute path to delete")
    entry["remove"].setdefault("shared_parents", [])
    _require(entry["remove"].setdefault("reboot", "never") in _REBOOT, source,
             f"{where}.remove.reboot", f"must be one of {', '.join(_REBOOT)}")
    _require(not windows or bool(entry["detect"].get("registry")), source,
             f"{where}.detect.registry", "a Windows product is found by its Uninstall "
             "DisplayName patterns: list them")
    if "registry" in entry["detect"]:
        _str_list(entry["detect"]["registry"], source, f"{where}.detect.registry")
    msi = entry["remove"].get("msi")
    _require(msi is None or windows, source, f"{where}.remove.msi", "is for Windows only")
    _require(not windows or msi is not None, source, f"{where}.remove.msi",
             "a Windows product is removed with msiexec: give its properties")
    if msi is not None:
        _check_keys(msi, {"properties", "secret_encoding"}, {"properties"}, source,
                    f"{where}.remove.msi")
        props = msi["properties"]
        _require(isinstance(props, dict) and all(
            isinstance(k, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", k) and isinstance(v, str)
            for k, v in props.items()), source, f"{where}.remove.msi.properties",
            "must map public MSI property names (upper case) to values; '{secret}' stands "
            "for the uninstall password")
        _require(msi.setdefault("secret_encoding", "plain") in ("plain", "utf16le_hex"),
                 source, f"{where}.remove.msi.secret_encoding", "must be plain or utf16le_hex")
        uses = any("{secret}" in v for v in props.values())
        _require(uses == ("secret" in entry["remove"]), source, f"{where}.remove.msi",
                 "'{secret}' in a property needs remove.secret, and remove.secret needs it")
    secret = entry["remove"].get("secret")
    if secret is not None or "secret_file" in entry["remove"]:
        _require(isinstance(secret, str) and re.fullmatch(r"[a-z][a-z0-9_]*", secret)
                 is not None, source, f"{where}.remove.secret",
                 "must name a credential (lower case letters, digits, '_')")
    if not windows and (secret is not None or "secret_file" in entry["remove"]):
        file = entry["remove"].get("secret_file")
        _require(isinstance(file, str) and file.startswith("/") and ".." not in file,
                 source, f"{where}.remove.secret_file",
                 "must be the absolute path the product reads its password from")


def _check_replacement(entry: Any, banned: dict[str, Any], source: str, where: str) -> None:
    """A replacement product: its role, how it coexists and enrols, how it proves protection."""
    _check_keys(entry, _REPL_KEYS, {"name", "role", "packages", "services", "verify"},
                source, where)
    for key in ("coexists_with", "passive_beside"):
        _str_list(entry.setdefault(key, []), source, f"{where}.{key}")
        for other in entry[key]:
            _require(other in banned, source, f"{where}.{key}",
                     f"{other!r} is not a banned product of this catalogue")
    both = set(entry["coexists_with"]) & set(entry["passive_beside"])
    _require(not both, source, where + ".passive_beside",
             f"{sorted(both)} cannot be in coexists_with too")
    strategies = entry.setdefault("strategies", list(_STRATEGIES))
    _require(isinstance(strategies, list) and bool(strategies)
             and all(s in _STRATEGIES for s in strategies), source, where + ".strategies",
             f"must list some of {', '.join(_STRATEGIES)}")
    enrol = entry.get("enrol")
    if enrol is not None:
        _check_keys(enrol, {"secret", "what"}, {"secret"}, source, where + ".enrol")
        _require(isinstance(enrol["secret"], str)
                 and re.fullmatch(r"[a-z][a-z0-9_]*", enrol["secret"]) is not None,
                 source, where + ".enrol.secret",
                 "must name a credential (lower case letters, digits, '_')")
    _check_verify(entry["verify"], source, where + ".verify", detection=True)
    beside = entry.get("verify_beside")
    _require(beside is not None or not entry["passive_beside"], source,
             where + ".verify_beside",
             "a product that runs passive beside a banned product needs verify_beside")
    _require(beside is not None or entry["verify"]["detection"]["method"] != "on_access",
             source, where + ".verify_beside",
             "an on-access detection cannot be told from the banned product's own while that "
             "runs: give verify_beside, the proof beside it (detection is proven after)")
    if beside is not None:
        _check_verify(beside, source, where + ".verify_beside", detection=False)
    pins = entry.get("sha256", {})
    _require(isinstance(pins, dict) and all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
        for k, v in pins.items()), source, where + ".sha256",
        "must map package file names to SHA-256 hex digests")
    entry.setdefault("requirements", {"free_mb": {}})


def _regex(value: Any, source: str, where: str) -> None:
    _require(isinstance(value, str), source, where, "must be a regular expression")
    try:
        re.compile(value)
    except re.error as exc:
        raise _Invalid(source, where, f"is not a regular expression: {exc}") from None


def _check_verify(verify: Any, source: str, where: str, *, detection: bool) -> None:
    """A proof of protection: service, health fields, signature age, detection of EICAR."""
    _check_keys(verify, _VERIFY_KEYS, {"service"} | ({"detection"} if detection else set()),
                source, where)
    _require(isinstance(verify["service"], str) and bool(verify["service"]), source,
             where + ".service", "must name the service that must run")
    health = verify.setdefault("health", [])
    _require(isinstance(health, list), source, where + ".health", "must be a list")
    for i, field in enumerate(health):
        at = f"{where}.health.{i}"
        _check_keys(field, {"name", "command", "expect"}, {"name", "command", "expect"},
                    source, at)
        _str_list(field["command"], source, at + ".command")
        _regex(field["expect"], source, at + ".expect")
    sigs = verify.get("signatures")
    if sigs is not None:
        _check_keys(sigs, {"command", "pattern", "format"}, {"command", "pattern"}, source,
                    where + ".signatures")
        _str_list(sigs["command"], source, where + ".signatures.command")
        _regex(sigs["pattern"], source, where + ".signatures.pattern")
        groups = re.compile(sigs["pattern"]).groupindex
        _require(("date" in groups and "format" in sigs) or "minutes" in groups
                 or "days" in groups, source, where + ".signatures.pattern",
                 "needs a (?P<date>...) group with a `format`, or a (?P<minutes>...) or "
                 "(?P<days>...) group")
    expires = verify.get("expires")
    if expires is not None:
        _check_keys(expires, {"command", "pattern", "format", "min_days"},
                    {"command", "pattern", "format", "min_days"}, source, where + ".expires")
        _str_list(expires["command"], source, where + ".expires.command")
        _regex(expires["pattern"], source, where + ".expires.pattern")
        _require("date" in re.compile(expires["pattern"]).groupindex, source,
                 where + ".expires.pattern", "needs a (?P<date>...) group")
        _require(isinstance(expires["min_days"], int) and expires["min_days"] >= 0, source,
                 where + ".expires.min_days", "must be a number of days, 0 or more")
    age = verify.get("max_signature_age_days")
    _require(age is None or (isinstance(age, int | float) and age > 0 and sigs is not None),
             source, where + ".max_signature_age_days",
             "must be a positive number of days, with `signatures` to read the age from")
    if "detection" in verify:
        _check_detection(verify["detection"], source, where + ".detection")


def _check_detection(det: Any, source: str, where: str) -> None:
    _check_keys(det, _DETECTION_KEYS, {"method"}, source, where)
    if det["method"] == "scan":
        _require({"command", "detected_rc", "detected_text"} <= set(det), source, where,
                 "a scan needs command, detected_rc and detected_text")
        _str_list(det["command"], source, where + ".command")
        _require(det.setdefault("input", "file") in ("file", "stdin"), source,
                 where + ".input", "must be file or stdin")
    else:
        _require(det["method"] == "on_access", source, where + ".method",
                 "must be scan or on_access")
        wait = det.setdefault("wait_s", 30)
        _require(isinstance(wait, int | float) and 0 < wait <= 600, source, where + ".wait_s",
                 "must be seconds between 1 and 600")
    if "evidence_command" in det:
        _str_list(det["evidence_command"], source, where + ".evidence_command")
        _require(isinstance(det.get("evidence_text"), str) and bool(det["evidence_text"]),
                 source, where + ".evidence_text",
                 "must say what evidence_command prints for the detection")
