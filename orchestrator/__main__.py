"""`python -m orchestrator` is the avmigrate command."""

from orchestrator.cli import main

main()
