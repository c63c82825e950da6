"""`python -m orchestrator` is the avmigrate command."""

from orchestrator.cli.cli import main

main()
