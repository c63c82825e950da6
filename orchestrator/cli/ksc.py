"""`avmigrate ksc import`: Kaspersky Security Center's list of managed hosts into the state."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator import api
from orchestrator.cli.base import Context, _secret, command
from orchestrator.cli.display import out
from orchestrator.core.errors import UsageError


@click.group()
def ksc() -> None:
    """Kaspersky Security Center as the list of record: which hosts it manages, with which
    Kaspersky product, reconciled with the inventory by the plan and the report."""


@command("import")
@click.argument("report", required=False, type=click.Path(path_type=Path))
@click.option("--server", help="Read the hosts from this Administration Server's Open API "
                               "(https://ksc.example:13299) with KlAkOAPI, instead of a report.")
@click.option("--user", help="The KSC account --server logs in with (password: prompted, or "
                             "env AVMIGRATE_KSC_PASSWORD).")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False),
              help="The CA certificate that signed the server's (KSC's is self-signed).")
def ksc_import(obj: Context, report: Path | None, server: str | None, user: str | None,
               ca_bundle: str | None) -> None:
    """Import KSC's hosts report (CSV or JSON: device, DNS name, IP, group, last visible,
    application, version), or read it from the server: it replaces the list imported before.
    The plan then shows hosts KSC manages that the inventory lacks, and the report the hosts
    to retire from KSC once migrated."""
    if (report is None) == (server is None):
        raise UsageError("give a KSC hosts report (FILE) or --server, not both nor neither")
    password = None
    if server is not None:
        if not user:
            raise UsageError("--server needs --user, the KSC account to log in with")
        password = os.environ.get("AVMIGRATE_KSC_PASSWORD")
        if password is None and not sys.stdin.isatty():
            raise UsageError("no terminal to ask the KSC password on: set "
                             "AVMIGRATE_KSC_PASSWORD")
        if password is None:
            password = _secret(f"KSC password for {user}: ").decode()
    done = api.ksc_import(obj, api.KscOptions(report, server, user, password, ca_bundle))
    out.print(f"imported {done.hosts} host(s) from {done.source}, {done.with_kaspersky} with "
              "a Kaspersky product; `avmigrate plan` reconciles them with the inventory",
              markup=False)


ksc.add_command(ksc_import)
