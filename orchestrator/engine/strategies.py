"""The migration strategies by name, and which one each host is migrated with."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from orchestrator.core.models import Strategy
from orchestrator.engine.make_before_break import MakeBeforeBreak
from orchestrator.engine.swap import Swap

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


class Migration(Protocol):
    """One strategy: moves a wave's hosts off their banned product."""

    CHECK_STEP: ClassVar[tuple[str, str]]  # step and playbook `plan --check` runs for it

    def __init__(self, engine: Engine) -> None: ...

    def migrate(self, names: list[str], wave: int) -> str | None: ...


# In the order a wave runs them: make-before-break hosts first, then swap hosts.
STRATEGIES: dict[Strategy, type[Migration]] = {
    Strategy.MAKE_BEFORE_BREAK: MakeBeforeBreak,
    Strategy.SWAP: Swap,
}


def by_strategy(engine: Engine, names: list[str]) -> dict[Strategy, list[str]]:
    """`names` grouped by the strategy each host is migrated with, in their order."""
    groups: dict[Strategy, list[str]] = {strategy: [] for strategy in STRATEGIES}
    for n in names:
        # Every host not made before broken is swapped; a host with no banned product at all
        # (protect_unprotected) has nothing to swap out: its replacement is simply installed.
        record = engine.record(n)
        bare = record.facts is not None and not record.facts.banned
        mbb = bare or engine.strategy_of(record) == Strategy.MAKE_BEFORE_BREAK
        groups[Strategy.MAKE_BEFORE_BREAK if mbb else Strategy.SWAP].append(n)
    return groups
