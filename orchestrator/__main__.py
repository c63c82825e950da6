"""`python -m orchestrator` is the avmigrate command."""

from orchestrator.cli.main import main

main()
