"""`avmigrate lab up|status|down`: real Debian hosts on this machine, for demos and tests.
Registered under the entry-point group `avmigrate.commands`; production code never imports it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from orchestrator.cli.base import command
from orchestrator.cli.display import err, out
from orchestrator.core.errors import AvmigrateError


@click.group()
def lab() -> None:
    """Real Debian hosts on this machine (systemd-nspawn), for demos and tests."""


LAB_NAME = click.option("--lab", "lab_name", default="demo", show_default=True,
                        envvar="AVMIGRATE_LAB", help="Lab name (env AVMIGRATE_LAB).")


@command("up", context=False)
@LAB_NAME
@click.option("--hosts", "count", default=12, show_default=True, type=int,
              help="How many hosts.")
@click.option("--scenario", "scenario_file", type=click.Path(path_type=Path),
              help="Scenario YAML (default: the built-in fleet mix).")
@click.option("--nodes", default=0, show_default=True, type=int,
              help="Execution nodes (group execution_nodes) that run `ansible-runner worker`.")
def lab_up(lab_name: str, count: int, scenario_file: Path | None, nodes: int) -> None:
    """Build the lab (cleaning up what an earlier one left) and boot its hosts."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    log: list[str] = []
    t0 = time.monotonic()
    try:
        info = Lab(lab_name).up(count, scenario_file, log, nodes=nodes)
    finally:
        for line in log:
            err.print(line, markup=False)
    out.print(f"lab {info.name}: {len(info.hosts)} hosts"
              + (f" and {len(info.nodes)} execution nodes" if info.nodes else "")
              + f" up in {time.monotonic() - t0:.0f}s")
    out.print(f"inventory: {info.inventory}")
    out.print(f"known_hosts: {info.known_hosts}")


@command("status", context=False)
@LAB_NAME
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_status(lab_name: str, as_json: bool) -> None:
    """Show the lab's hosts, addresses and how to log in to them."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    data = Lab(lab_name).status()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"lab {data['lab']} ({data['inventory']})")
    for col in ("host", "address", "profile", "running", "ssh"):
        table.add_column(col)
    for h in data["hosts"]:
        table.add_row(h["name"], h["address"], h["profile"], str(h["running"]),
                      "open" if h["ssh_port_open"] else "closed")
    out.print(table)


@command("down", context=False)
@LAB_NAME
def lab_down(lab_name: str) -> None:
    """Stop the lab's hosts and remove its mounts, namespaces, links and files."""
    from orchestrator.lab.lab import Lab  # noqa: PLC0415

    lab_obj = Lab(lab_name)
    log: list[str] = []
    lab_obj.down(log)
    left = lab_obj.leftovers()
    for line in log:
        err.print(line, markup=False)
    if left:
        raise AvmigrateError(f"lab {lab_name} left behind: {', '.join(left)}")
    out.print(f"lab {lab_name} is down; nothing left behind")


for _command in (lab_up, lab_status, lab_down):
    lab.add_command(_command)
