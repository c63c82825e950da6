"""Lab scenario files: which products and faults each lab host gets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.errors import ScenarioError
from orchestrator.inputs.yamlfile import load_yaml
from orchestrator.lab.packages import STAND_INS
from orchestrator.lab.vendors import FAULTS


@dataclass(frozen=True)
class Profile:
    """What one lab host carries and which fault it has."""

    name: str
    packages: tuple[str, ...]
    small_fs_path: str | None = None
    small_fs_mb: int = 0
    sshd_down: bool = False
    dpkg_interrupted: bool = False
    # A third-party package source that no longer answers (a vendor repository gone),
    # as real fleets carry in sources.list.d.
    dead_apt_source: bool = False
    # What the replacements' stand-ins meet here (lab/vendors.py FAULTS).
    faults: tuple[str, ...] = ()
    # The host's own choice of replacement (the inventory variable avmigrate_replacement).
    replacement: str | None = None
    # The inventory group it is in (None: every third host a server, the others workstations).
    group: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A fleet mix: profiles for the special hosts, a default for the rest."""

    source: str
    default: Profile
    special: tuple[Profile, ...]

    def assign(self, count: int) -> list[Profile]:
        if count < len(self.special):
            raise ScenarioError(
                f"scenario {self.source} has {len(self.special)} special hosts; "
                f"use --hosts {len(self.special)} or more"
            )
        return [self.default] * (count - len(self.special)) + list(self.special)


def _profile(name: str, raw: Any, source: str) -> Profile:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: profile {name!r} must be a mapping")
    unknown = set(raw) - {"packages", "small_fs", "sshd", "dpkg", "apt_source", "faults",
                          "replacement", "group"}
    if unknown:
        raise ScenarioError(f"{source}: profile {name!r} has unknown keys {sorted(unknown)}")
    packages = tuple(raw.get("packages") or ())
    for pkg in packages:
        if pkg not in STAND_INS:
            raise ScenarioError(
                f"{source}: profile {name!r} names package {pkg!r}; "
                f"known: {', '.join(sorted(STAND_INS))}"
            )
    if sum(1 for p in packages if STAND_INS[p].package == "kesl") > 1:
        raise ScenarioError(f"{source}: profile {name!r} installs two KESL builds; pick one")
    small = raw.get("small_fs")
    if small is not None and not (isinstance(small, dict) and "path" in small):
        raise ScenarioError(f"{source}: profile {name!r}: small_fs needs path and size_mb")
    sshd = raw.get("sshd", "up")
    dpkg = raw.get("dpkg", "ok")
    if sshd not in ("up", "down"):
        raise ScenarioError(f"{source}: profile {name!r}: sshd must be up or down")
    if dpkg not in ("ok", "interrupted"):
        raise ScenarioError(f"{source}: profile {name!r}: dpkg must be ok or interrupted")
    apt_source = raw.get("apt_source", "ok")
    if apt_source not in ("ok", "dead"):
        raise ScenarioError(f"{source}: profile {name!r}: apt_source must be ok or dead")
    return Profile(
        **_replacement_side(name, raw, source),
        name=name,
        packages=packages,
        small_fs_path=str(small["path"]) if small else None,
        small_fs_mb=int(small.get("size_mb", 8)) if small else 0,
        sshd_down=sshd == "down",
        dpkg_interrupted=dpkg == "interrupted",
        dead_apt_source=apt_source == "dead",
    )


def _replacement_side(name: str, raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A profile's faults for the replacements' stand-ins, its replacement and its group."""
    faults = tuple(raw.get("faults") or ())
    for fault in faults:
        if fault not in FAULTS:
            raise ScenarioError(f"{source}: profile {name!r}: unknown fault {fault!r}; known: "
                                f"{', '.join(FAULTS)}")
    replacement = raw.get("replacement")
    if replacement is not None and not isinstance(replacement, str):
        raise ScenarioError(f"{source}: profile {name!r}: replacement must be a catalogue id")
    group = raw.get("group")
    if group is not None and not (isinstance(group, str) and group.isidentifier()):
        raise ScenarioError(f"{source}: profile {name!r}: group must be a group name")
    return {"faults": faults, "replacement": replacement, "group": group}


def load(path: Path | None) -> Scenario:
    data, source = load_yaml(
        path, ("orchestrator.lab", "scenarios/default.yml", "default scenario"), ScenarioError)
    if not isinstance(data, dict) or "profiles" not in data or "default" not in data:
        raise ScenarioError(f"{source}: needs `default`, `profiles` and optionally `special`")
    profiles_raw = data["profiles"]
    if not isinstance(profiles_raw, dict):
        raise ScenarioError(f"{source}: `profiles` must be a mapping of name to profile")
    profiles = {name: _profile(name, raw, source) for name, raw in profiles_raw.items()}

    def pick(name: Any) -> Profile:
        if name not in profiles:
            raise ScenarioError(f"{source}: unknown profile {name!r}; defined: "
                                f"{', '.join(sorted(profiles))}")
        return profiles[name]

    return Scenario(
        source=source,
        default=pick(data["default"]),
        special=tuple(pick(n) for n in data.get("special") or ()),
    )
