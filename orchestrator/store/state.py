"""Where the state store's names were first defined; they are importable from here still.

New code imports from the module that defines each name (see orchestrator/store/__init__.py).
"""

from __future__ import annotations

import time  # noqa: F401 - tests reach the store's clock as orchestrator.store.state.time

from orchestrator.store import open_store
from orchestrator.store.errors import BudgetFull, Fenced, LeaseHeld, LeaseLost, ProofRequired
from orchestrator.store.interface import StateStore
from orchestrator.store.records import PROVEN, Budget, Lease, LeaseHolder, Move
from orchestrator.store.schema import SQLITE, migrations
from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.sqlstore import SqlStore

# The schema's migrations in SQLite's DDL (schema.py writes them once for both dialects).
MIGRATIONS = migrations(SQLITE)

__all__ = [
    "MIGRATIONS",
    "PROVEN",
    "Budget",
    "BudgetFull",
    "Fenced",
    "Lease",
    "LeaseHeld",
    "LeaseHolder",
    "LeaseLost",
    "Move",
    "ProofRequired",
    "SqlStore",
    "SqliteStore",
    "StateStore",
    "open_store",
]
