"""`python -m orchestrator.cli.cli` and the names the command line was imported by before it
was split into one module per command group (cli/main.py has the root group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.api.workspace import lazy
from orchestrator.cli.base import Context, boundary, pass_ctx
from orchestrator.cli.main import cli, main

if TYPE_CHECKING:
    from orchestrator.execute import executor as executor_mod
else:
    executor_mod = lazy("orchestrator.execute.executor")

__all__ = ["Context", "boundary", "cli", "executor_mod", "main", "pass_ctx"]

if __name__ == "__main__":
    main()
