"""How a run may proceed (RunPolicy), how it ended (RunSummary), and the operator's stop."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.errors import UsageError
from orchestrator.core.models import STRATEGY_NAMES, HostRecord, Strategy, exit_code_for_states
from orchestrator.core.protection import budget_problem
from orchestrator.inputs.policy import Policy

DEFAULT_RECONNECT_S = 600.0


@dataclass(frozen=True)
class RunPolicy:
    """How a run may proceed: strategy, protection budget, reconnect window and wave gates."""

    strategy: str = Strategy.AUTO
    # Hosts at once whose protection is unproven (removal to verification), fleet-wide: a
    # count (3) or a share of the fleet ("1%").
    max_unprotected: int | str = 1
    max_failed_percent: float = 0.0
    soak_seconds: float = 0.0
    require_approval: bool = False
    plan_key: str = ""
    # Maintenance windows and blackout dates: a wave starts only while its window is open.
    windows: Policy | None = None
    # How long a host in its protection window that does not answer is retried.
    reconnect_seconds: float = DEFAULT_RECONNECT_S
    # Clean hosts (no banned product, no protection proven) get the replacement too.
    protect_unprotected: bool = False
    # Reboots a removal needs: in the host's maintenance window ("window"), or "never".
    reboot: str = "window"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGY_NAMES)}")
        if (problem := budget_problem(str(self.max_unprotected))) is not None:
            raise UsageError(f"--max-unprotected: {problem}")
        if not 0 <= self.max_failed_percent <= 100:
            raise UsageError("--max-failed-percent must be between 0 and 100")
        if self.reconnect_seconds < 0:
            raise UsageError("--reconnect-window must be 0 or more seconds")

    @property
    def budget_spec(self) -> str:
        return str(self.max_unprotected).strip()


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: per-state counts and the exit code the CLI returns."""

    counts: dict[str, int]
    exit_code: int
    stopped_early: str | None


class Stopped(Exception):
    """The operator asked to stop: no new step starts."""


def exit_code_for(records: list[HostRecord]) -> int:
    """0 all migrated or clean; 3 some not migrated (unreachable, blocked, pending);
    4 a step failed on some host; 5 some host is unprotected."""
    return exit_code_for_states({r.state for r in records})
