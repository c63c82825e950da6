"""One exception hierarchy; each error carries the exit code the CLI returns for it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code avmigrate returns; the README's table is checked against this enum."""

    OK = 0  # every host migrated or clean
    BAD_INPUT = 2  # missing inventory, unreadable state, bad plan or catalogue: one line says what
    HOSTS_LEFT = 3  # some hosts left as they were (unreachable, blocked, pending)
    STEP_FAILED = 4  # a step failed on some host (it is still protected by one product)
    UNPROTECTED = 5  # some host is unprotected
    ANSIBLE = 6  # Ansible could not be started
    LAB = 7  # lab error
    LEASE = 8  # another run holds the state (or took over this run's lease)
    AUDIT = 9  # `audit verify`: the audit log was tampered with
    INTERNAL = 70  # internal error; the traceback is written to a file named in the message
    INTERRUPTED = 130  # the operator declined or interrupted the run



class AvmigrateError(Exception):
    """Base of every error a user can cause or fix; the message says how to fix it."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(AvmigrateError):
    """A command was called with options or files that cannot work."""


class InventoryError(AvmigrateError):
    """The inventory is missing, unreadable or malformed."""


class CatalogueError(AvmigrateError):
    """The product catalogue is missing or malformed."""


class ScenarioError(AvmigrateError):
    """A lab scenario file is missing or malformed."""


class StateError(AvmigrateError):
    """The state database cannot be opened, read or migrated."""


class PolicyError(AvmigrateError):
    """A policy file is missing or invalid; the message names the file, the line and the key."""


class PlanError(AvmigrateError):
    """A plan file is missing, malformed or does not match the inventory."""


class AuditError(AvmigrateError):
    """The audit log failed verification: an entry was altered, removed or reordered."""

    exit_code = ExitCode.AUDIT


class ExecutionError(AvmigrateError):
    """Ansible could not be started or did not finish a step."""

    exit_code = ExitCode.ANSIBLE


class LabError(AvmigrateError):
    """The lab cannot be built, reached or taken down."""

    exit_code = ExitCode.LAB


class Aborted(AvmigrateError):
    """The operator declined or interrupted the run."""

    exit_code = ExitCode.INTERRUPTED
