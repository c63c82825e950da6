"""`python -m orchestrator.cli.cli`: the command line's entry point (cli/main.py defines the
root group and `main`; the command groups have one module each)."""

from __future__ import annotations

from orchestrator.cli.main import cli, main

__all__ = ["cli", "main"]  # the console script and `python -m` name this module

if __name__ == "__main__":
    main()
