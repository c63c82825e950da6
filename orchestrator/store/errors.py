"""Why the state store refused a write: a lease held or lost, the budget full, no evidence."""

from __future__ import annotations

from orchestrator.core.errors import ExitCode, StateError


class LeaseHeld(StateError):
    """Another run holds the state."""

    exit_code = ExitCode.LEASE


class Fenced(StateError):
    """This run lost its lease (it expired and another run took it); it must stop writing."""

    exit_code = ExitCode.LEASE


class LeaseLost(StateError):
    """This run's lease could not be kept: it stopped before another run could take its
    hosts."""

    exit_code = ExitCode.LEASE


class BudgetFull(StateError):
    """Every slot of the protection budget is held: no host's protection may be stopped now."""

    exit_code = ExitCode.HOSTS_LEFT

    def __init__(self, message: str, held: list[str]) -> None:
        super().__init__(message)
        self.held = held


class ProofRequired(StateError):
    """A host whose protection is unproven may leave its budget slot only with evidence."""
