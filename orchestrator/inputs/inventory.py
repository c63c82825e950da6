"""Load an Ansible inventory into plain host records (Ansible's own loader, no templating)."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import marshal
import os
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core import names
from orchestrator.core.errors import InventoryError
from orchestrator.core.models import InventoryHost, bulk_constructor
from orchestrator.inputs import ansiblecfg, ansibleinv, invbuilder, staticinv, varsdirs
from orchestrator.inputs.sources import Given, Sources, limit_names


@dataclass(frozen=True)
class Inventory:
    """The hosts of one inventory source, with the digest a plan is pinned to."""

    source: str
    hosts: tuple[InventoryHost, ...]
    digest: str
    # Per-host digests when the loader computed them (load() does); else computed on demand.
    digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Hosts of the `execution_nodes` group: they run Ansible for us and are never migrated.
    nodes: tuple[InventoryHost, ...] = field(default=(), compare=False)
    # What the user gave (-i sources, --limit, vault ids): the steps run against these.
    given: Sources | None = field(default=None, compare=False, repr=False)

    @cached_property
    def _by_name(self) -> dict[str, InventoryHost]:
        return {h.name: h for h in self.hosts}

    def get(self, name: str) -> InventoryHost:
        try:
            return self._by_name[name]
        except KeyError:
            raise InventoryError(f"{self.source}: no host {name!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def only(self, names: Iterable[str]) -> Inventory:
        """The same inventory with only `names` (in the inventory's order)."""
        wanted = set(names)
        hosts = tuple(h for h in self.hosts if h.name in wanted)
        if not self.digests:
            return Inventory(source=self.source, hosts=hosts, digest=digest_of(hosts),
                             nodes=self.nodes, given=self.given)
        digests = {h.name: self.digests[h.name] for h in hosts}
        return Inventory(self.source, hosts, _digest_of_digests(digests), digests, self.nodes,
                         self.given)

    def host_digests(self) -> dict[str, str]:
        """One digest per host (groups and variables), to say what changed since a plan."""
        return self.digests or _host_digests(self.hosts)


_plain = invbuilder.plain
_SIMPLE = (str, int, bool, type(None))
NODE_GROUP = ansibleinv.NODE_GROUP
_new_host = bulk_constructor(InventoryHost)


_DIGESTS: dict[int, tuple[tuple[InventoryHost, ...], dict[str, str]]] = {}


def _host_digests(hosts: tuple[InventoryHost, ...]) -> dict[str, str]:
    """Per-host digests, computed once per host tuple (a plan and its checks ask twice)."""
    cached = _DIGESTS.get(id(hosts))
    if cached is not None and cached[0] is hosts:
        return cached[1]
    dumps = json.JSONEncoder(sort_keys=True).encode
    sha = hashlib.sha256
    digests = {h.name: sha(dumps([list(h.groups), h.vars]).encode()).hexdigest()[:16]
               for h in hosts}
    _DIGESTS.clear()  # one inventory at a time: keep memory flat
    _DIGESTS[id(hosts)] = (hosts, digests)
    return digests


def digest_of(hosts: tuple[InventoryHost, ...]) -> str:
    """The inventory's digest: every host's name and digest, in order."""
    return _digest_of_digests(_host_digests(hosts))


def _digest_of_digests(digests: dict[str, str]) -> str:
    lines = "".join(f"{name} {d}\n" for name, d in digests.items())
    return hashlib.sha256(lines.encode()).hexdigest()


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


def read_hosts(given: Given, *, fast: bool = True) -> list[invbuilder.Found]:
    """(name, groups, shared group vars, own vars) of every host, by the fast static loader
    when it can (one static file, its group_vars/host_vars, a simple --limit), else by
    Ansible's (whose merged vars are all 'own')."""
    src = Sources.of(given)
    path = src.single_file
    if fast and path is not None:
        try:
            found = _fast_hosts(path, src.limit, src.playbook_dir)
        except invbuilder.Unsupported:
            pass
        except OSError as exc:
            raise InventoryError(f"inventory {path} cannot be read ({exc.strerror})") from exc
        else:
            return found
    first = src.paths[0]
    return ansibleinv.hosts(
        src, lambda said, exc: _parse_failure(first, _text(first), said, exc))


def _fast_hosts(path: Path, limit: str | None, playbook_dir: Path | None = None
                ) -> list[invbuilder.Found]:
    if not ansiblecfg.load().default_merging:
        raise invbuilder.Unsupported("the configuration changes how variables merge")
    layers = [varsdirs.VarsDirs([path.parent])]
    if playbook_dir is not None:
        layers.append(varsdirs.VarsDirs([playbook_dir]))
    found = staticinv.load(path, [layer for layer in layers if layer])
    if _templated_connection(found):
        raise invbuilder.Unsupported("connection values written as templates")
    if limit:  # execution nodes are not targets: a --limit does not take them away
        keep = limit_names(found, limit)
        found = [row for row in found if row[0] in keep or NODE_GROUP in row[1]]
    return found


def _templated_connection(found: list[invbuilder.Found]) -> bool:
    """Does any host's connection value need templating (left to Ansible's loader)?"""
    seen: set[int] = set()
    keys = ansibleinv.CONNECTION
    for _, _, gvars, own in found:
        for variables in (gvars, own):
            if id(variables) in seen or keys.isdisjoint(variables):
                continue
            seen.add(id(variables))
            if any(isinstance(variables[k], str) and "{" in variables[k]
                   for k in keys.intersection(variables)):
                return True
    return False


def load(given: Given, *, fast: bool = True) -> Inventory:
    """The inventory the user gave: one static INI/YAML file (and its group_vars/host_vars) by
    our loader, anything else by Ansible's."""
    with bulk():
        return _load(Sources.of(given), fast=fast)


def load_in_background(given: Given, *, fast: bool = True) -> BackgroundLoad:
    """`load(path)` in a forked child process, while this one does other work (a plan reads
    the state meanwhile: on two cores, about a quarter of a 100k-host plan). Call the
    result to wait for the inventory; close it if it is not needed after all. The child only
    reads the file; it sends back plain data (marshal), and an InventoryError as its one
    line. Anything else, no fork(), or other threads running, and the inventory is loaded
    here, as `load` would."""
    return BackgroundLoad(given, fast)


class BackgroundLoad:
    """An inventory being loaded by a child process (see `load_in_background`)."""

    def __init__(self, given: Given, fast: bool) -> None:
        self.src, self.fast = Sources.of(given), fast
        self.pid: int | None = None
        self.pipe: int | None = None
        if not hasattr(os, "fork") or self.src.single_file is None \
                or threading.active_count() > 1:
            return  # fork() copies only this thread: a lock another one holds stays held
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: parse, send, and leave without any cleanup of the parent's
            status = 0
            try:
                os.close(read_end)
                try:
                    with bulk():
                        payload: tuple[Any, ...] = ("ok", *_checked(self.src, fast=fast))
                except InventoryError as exc:
                    payload = ("error", str(exc), exc.exit_code)
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(marshal.dumps(payload))
            except BaseException:  # noqa: BLE001 - the parent then loads it itself
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        self.pid, self.pipe = pid, read_end

    def __call__(self) -> Inventory:
        if self.pid is None or self.pipe is None:
            return load(self.src, fast=self.fast)
        with os.fdopen(self.pipe, "rb") as pipe:
            self.pipe = None
            data = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if status != 0 or not data:
            return load(self.src, fast=self.fast)
        payload = marshal.loads(data)  # noqa: S302 - our own child's output, through a pipe
        del data
        if payload[0] == "error":
            raise InventoryError(payload[1], exit_code=payload[2])
        with bulk():
            return _inventory(self.src, *payload[1:])

    def close(self) -> None:
        """Stop the child if its inventory was never asked for (the command failed first)."""
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None


def _inventory(src: Sources, hosts: list[invbuilder.Found], nodes: list[invbuilder.Found],
               digests: dict[str, str]) -> Inventory:
    """An Inventory from checked rows (name, groups, shared group vars, own vars)."""
    return Inventory(str(src), tuple(_new_host(n, g, own, gv) for n, g, gv, own in hosts),
                     _digest_of_digests(digests), digests,
                     tuple(_new_host(n, g, own, gv) for n, g, gv, own in nodes), src)


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Python's cyclic GC paused while a large inventory or state is read: it would scan the
    hundreds of thousands of new (acyclic) objects again and again, a third of the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load(src: Sources, *, fast: bool = True) -> Inventory:
    return _inventory(src, *_checked(src, fast=fast))


def _checked(src: Sources, *, fast: bool = True
             ) -> tuple[list[invbuilder.Found], list[invbuilder.Found], dict[str, str]]:
    """The hosts of the sources, every name and setting checked: (hosts, execution nodes,
    per-host digests). Plain data, so that a child process can send it (marshal)."""
    if not src.paths:
        raise InventoryError("no inventory given; pass -i with an inventory file")
    for path in src.paths:
        if "," in str(path) and not path.exists():
            continue  # a host list ("web1,web2,"), as Ansible takes it
        if not path.exists():
            raise InventoryError(f"inventory {path} does not exist; pass -i with an inventory "
                                 "file, directory or script")
        if path.is_file() and not os.access(path, os.R_OK):
            raise InventoryError(f"inventory {path} is not readable; check its permissions")
    found = read_hosts(src, fast=fast)
    path = src.paths[0]
    checker = _RowChecker(path)
    shared_part, check_host = checker.shared_part, checker.check_host
    simple = frozenset(_SIMPLE).issuperset
    hosts: list[invbuilder.Found] = []
    nodes: list[invbuilder.Found] = []
    digests: dict[str, str] = {}
    for row in found:
        name, groups, gvars, own = row
        part, gvars_unwatched = shared_part(name, groups, gvars)
        check_host(name, gvars, own, gvars_unwatched)
        if NODE_GROUP in groups:
            nodes.append(row)
            continue
        hosts.append(row)
        # A host's own variables are mostly a few scalars: their sorted repr is canonical
        # and a tenth of the cost of a JSON dump.
        own_text = (repr(sorted(own.items())) if simple(map(type, own.values()))
                    else _dumps(own))
        digest = part.copy()  # the shared part is hashed once per group set
        digest.update(own_text.encode())
        digests[name] = digest.hexdigest()[:16]
    if not hosts:
        if src.limit:
            raise InventoryError(f"--limit {src.limit!r} matches no host of {src}; fix the "
                                 "pattern (Ansible's host patterns: names, groups, globs, "
                                 "'!' to exclude, '&' to intersect)")
        raise InventoryError(f"inventory {src} has no hosts")
    return hosts, nodes, digests


_dumps = json.JSONEncoder(sort_keys=True).encode


class _RowChecker:
    """Checks an inventory's rows one by one, naming the file and line of a problem.

    What hosts share (their groups and those groups' merged variables) is checked and
    serialised once per group set; each host then costs its name, its own few variables
    and one small hash. 100,000 hosts take a fraction of a second.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text: str | None = None
        self.shared: dict[int, tuple[Any, bool, tuple[str, ...]]] = {}
        self.checked_vars: set[str] = set()

    def where(self, needle: str) -> str:
        self.text = _text(self.path) if self.text is None else self.text
        return _line_of(self.text, needle)

    def check_names(self, names_: Iterable[str], what: str, host: str = "") -> None:
        for name in names_:
            problem = (names.group_problem(name) if what == "group"
                       else names.identifier_problem(name, what))
            if problem is not None:
                raise InventoryError(f"{self.path}{self.where(name)}: "
                                     + (f"host {host}: {problem}" if host else
                                        f"{problem}; rename it"))

    def shared_part(self, name: str, groups: tuple[str, ...], gvars: dict[str, Any]
                    ) -> tuple[Any, bool]:
        """The hash of a host's groups and group variables so far, and whether those
        variables are free of the watched (connection) ones; checked once per group set."""
        # Both loaders give each group set one shared-variables dict of its own (Ansible's:
        # an empty one per host), so the dict's identity stands for the pair.
        known = self.shared.get(id(gvars))
        if known is None or known[2] is not groups:
            self.check_names(groups, "group")
            self.check_names([v for v in gvars if v not in self.checked_vars], "variable", name)
            self.checked_vars.update(gvars)
            serialised = _dumps([list(groups), gvars])
            known = self.shared[id(gvars)] = (hashlib.sha256(f"{serialised}|".encode()),
                                              names.WATCHED.isdisjoint(gvars), groups)
        return known[0], known[1]

    def check_host(self, name: str, gvars: dict[str, Any], own: dict[str, Any],
                   gvars_unwatched: bool) -> None:
        """The host's name, its own variables' names, its connection settings, its address."""
        path, ip_ok = self.path, names.ipv4_fast
        if not ((len(name) <= 253 and names.name_fast(name)) or ip_ok(name)) and (
                problem := names.alias_problem(name)) is not None:
            raise InventoryError(f"{path}{self.where(name)}: host {name!r} "
                                 f"{problem}; fix the inventory (nothing was contacted)")
        if not self.checked_vars.issuperset(own):
            self.check_names([v for v in own if v not in self.checked_vars], "variable", name)
            self.checked_vars.update(own)
        if not (gvars_unwatched and names.WATCHED.isdisjoint(own)) and (
                problem := names.host_key_problem({**gvars, **own})) is not None:
            raise InventoryError(f"{path}: host {name}: {problem}")
        address = own.get("ansible_host")
        if address is None:
            address = gvars.get("ansible_host", name)
        if isinstance(address, str) and address.startswith("<vaulted:"):
            raise InventoryError(f"{path}: host {name}: ansible_host is vault-encrypted; "
                                 "avmigrate needs the address itself (sweep, execution "
                                 "nodes, the plan): keep addresses out of vault")
        if address != name and not (type(address) is str and ip_ok(address)) and (
                problem := names.host_problem(str(address))) is not None:
            raise InventoryError(f"{path}{self.where(str(address))}: host {name}: "
                                 f"ansible_host {str(address)!r} {problem}")
