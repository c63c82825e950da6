"""One exception hierarchy; each error carries the exit code the CLI returns for it."""

from __future__ import annotations


class AvmigrateError(Exception):
    """Base of every error a user can cause or fix; the message says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
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

    exit_code = 9


class ExecutionError(AvmigrateError):
    """Ansible could not be started or did not finish a step."""

    exit_code = 6


class LabError(AvmigrateError):
    """The lab cannot be built, reached or taken down."""

    exit_code = 7


class Aborted(AvmigrateError):
    """The operator declined or interrupted the run."""

    exit_code = 130
