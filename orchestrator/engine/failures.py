"""What a host becomes when a strategy's step fails on it: install failed, or UNPROTECTED."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.core.models import HostState, StepResult
from orchestrator.core.protection import protecting_products

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


def not_installed(engine: Engine, name: str, why: str) -> None:
    """The replacement could not be installed, staged or verified on this host. Its banned
    product is untouched by this run; if none of its products protected it at its last
    probe (its KESL stopped earlier, or it only had the Network Agent), it has no
    protection at all: an alarm, not a failed install."""
    record = engine.record(name)
    if record.facts is not None and not record.facts.banned:
        # A host that had no antivirus at all (protect_unprotected): no worse than before,
        # and nothing this run did took protection from it.
        engine.move(name, HostState.INSTALL_FAILED, f"{why}; it still has no antivirus at all")
    elif record.facts is not None and not protecting_products(record.facts, engine.catalogue):
        engine.move(name, HostState.UNPROTECTED,
                    f"UNPROTECTED: {why}; no protecting product ran at its last probe and "
                    "its replacement is not verified")
        engine.log(f"!!! {name} is UNPROTECTED: {why}")
    else:
        engine.move(name, HostState.INSTALL_FAILED, f"{why}; banned product untouched")


def unreachable_in_window(engine: Engine, name: str, result: StepResult) -> None:
    """A host that did not answer for the whole reconnect window after its removal began."""
    window = engine.policy.reconnect_seconds
    engine.move(name, HostState.UNPROTECTED,
                f"UNPROTECTED: did not answer for {window:.0f}s after its banned product "
                f"was stopped ({result.message}); its protection is unknown")
    engine.log(f"!!! {name} is UNPROTECTED: unreachable inside its protection window")
