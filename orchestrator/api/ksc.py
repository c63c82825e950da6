"""Kaspersky Security Center as the list of record: import its hosts report (or read its
Open API through KlAkOAPI) into the state, where the plan and the evidence reconcile it with
the inventory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.api.workspace import Workspace, operator_name
from orchestrator.core.errors import UsageError
from orchestrator.core.ksc import KscHost


@dataclass(frozen=True)
class KscOptions:
    """Where KSC's list comes from: a report file, or the Administration Server's API."""

    report: Path | None = None
    server: str | None = None  # https://ksc.example:13299
    user: str | None = None
    password: str | None = None  # never on a command line: the CLI prompts or reads the env
    ca_bundle: str | None = None  # the server's CA (KSC's own certificate is self-signed)


@dataclass(frozen=True)
class KscImported:
    """What the import stored."""

    source: str
    hosts: int
    with_kaspersky: int


def ksc_import(ws: Workspace, opts: KscOptions) -> KscImported:
    """Replace the state's KSC list with the report's (or the server's) hosts."""
    hosts: list[KscHost]
    if (opts.report is None) == (opts.server is None):
        raise UsageError("give a KSC hosts report (FILE) or --server, not both nor neither")
    if opts.report is not None:
        from orchestrator.inputs import ksc as ksc_report  # noqa: PLC0415 - only for imports

        hosts, source = ksc_report.read_report(opts.report), str(opts.report)
    else:
        from orchestrator.inputs import kscapi  # noqa: PLC0415 - only for imports

        assert opts.server is not None  # noqa: S101 - checked above
        if not opts.user or opts.password is None:
            raise UsageError("--server needs --user and the password (prompted, or "
                             "AVMIGRATE_KSC_PASSWORD)")
        hosts = kscapi.fetch(opts.server, opts.user, opts.password,
                             opts.ca_bundle if opts.ca_bundle else True)
        source = opts.server
    if not hosts:
        raise UsageError(f"{source}: no host found; nothing was imported")
    ws.store().replace_ksc_hosts(hosts, source, operator_name())
    return KscImported(source, len(hosts), sum(1 for h in hosts if h.kaspersky))
