"""Commands that give evidence: the report and the audit log."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator import api
from orchestrator.cli.base import Context, command
from orchestrator.cli.display import err, out
from orchestrator.core.errors import AuditError
from orchestrator.core.lazy import lazy

if TYPE_CHECKING:
    from orchestrator.report import timefmt
else:
    timefmt = lazy("orchestrator.report.timefmt")


@command()
@click.option("--format", "fmt", type=click.Choice(api.REPORT_FORMATS), default="md",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output.")
def report(obj: Context, fmt: str, as_json: bool, out_file: Path | None) -> None:
    """Evidence: every host's before and after, its transitions with times and operators,
    its gap, the approvals, a BOD 17-01 summary and the audit log's head."""
    made = api.report(obj, "json" if as_json else fmt)
    if out_file is None:
        click.echo(made.text, nl=False)
    else:
        made.write(out_file)
        out.print(f"wrote {out_file}", markup=False)


@click.group()
def audit() -> None:
    """The append-only, hash-chained audit log of every run, transition, approval and lease."""


@command("verify")
def audit_verify(obj: Context) -> None:
    """Check the chain and that every recorded fact has its entry (exit 9 if not)."""
    verdict = api.audit_verify(obj)
    if not verdict.ok:
        for problem in verdict.problems:
            err.print(f"audit: {problem}", markup=False)
        raise AuditError(f"the audit log failed verification: {len(verdict.problems)} "
                         "problem(s) above; keep this state file as evidence")
    out.print(f"audit log intact: {verdict.entries} entries, head {verdict.head}",
              markup=False)


@command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def audit_show(obj: Context, as_json: bool) -> None:
    """Print the audit log's entries."""
    entries = api.audit_entries(obj)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
        return
    for e in entries:
        click.echo(f"{e.seq:6d} {timefmt.ts(e.at)} {e.kind:<10} {e.host or '-':<20} "
                   f"run {e.run_id or '-'} {json.dumps(e.detail, sort_keys=True)}")


audit.add_command(audit_verify)
audit.add_command(audit_show)
