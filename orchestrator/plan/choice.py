"""Which replacement each host gets. Pure.

In this order, the first that says wins: the host's inventory variable `avmigrate_replacement`
(as Ansible resolves it: host_vars over group_vars), the policy's `replacement.groups` (the
first group listed that the host is in), the default (the command line's --replacement, else
the policy's `replacement.default`, else the catalogue's `default_replacement`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.errors import UsageError
from orchestrator.inputs.inventory import Inventory
from orchestrator.inputs.policy import Policy

VARIABLE = "avmigrate_replacement"


@dataclass(frozen=True)
class Choice:
    """The default replacement and the hosts that get another one."""

    default: str
    others: Mapping[str, str] = field(default_factory=dict)

    def of(self, name: str) -> str:
        return self.others.get(name, self.default)

    def counts(self, names: Iterable[str]) -> collections.Counter[str]:
        """Hosts per replacement among `names`."""
        counts: collections.Counter[str] = collections.Counter()
        others = self.others
        total = 0
        for n in names:
            total += 1
            rid = others.get(n)
            if rid is not None:
                counts[rid] += 1
        counts[self.default] += total - sum(counts.values())
        return +counts


def default_of(policy: Policy, given: str | None, catalogue: Catalogue) -> str:
    return given or policy.replacement or catalogue.default


def choose(inventory: Inventory, policy: Policy, catalogue: Catalogue,
           given: str | None = None) -> Choice:
    """Each host's replacement; an id the catalogue lacks is refused, naming where it is."""
    default = default_of(policy, given, catalogue)
    known = catalogue.replacements
    if default not in known:
        where = "--replacement" if given else f"{policy.source}: replacement.default"
        raise UsageError(f"{where}: no replacement {default!r} in the catalogue; known: "
                         f"{', '.join(sorted(known))}")
    for group, rid in policy.replacement_groups:
        if rid not in known:
            raise UsageError(f"{policy.source}: replacement.groups.{group}: no replacement "
                             f"{rid!r} in the catalogue; known: {', '.join(sorted(known))}")
    by_groups: dict[tuple[str, ...], str] = {}
    others: dict[str, str] = {}
    for host in inventory.hosts:
        value = host.own.get(VARIABLE, host.shared.get(VARIABLE))
        if value is not None:
            rid = str(value)
            if rid not in known:
                raise UsageError(
                    f"host {host.name}: inventory variable {VARIABLE}={rid!r} names no "
                    f"replacement of the catalogue; known: {', '.join(sorted(known))}")
        else:
            rid = by_groups.get(host.groups) or ""
            if not rid:
                rid = by_groups[host.groups] = (policy.replacement_for(host.groups)
                                                or default)
        if rid != default:
            others[host.name] = rid
    return Choice(default, others)
