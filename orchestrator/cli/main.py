"""The root `avmigrate` group: its options, its commands, the command groups other packages
register (the lab's), and main()."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator import __version__
from orchestrator.cli import evidence, hosts, ksc, migration
from orchestrator.cli.base import Context

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

# Command groups other packages add, loaded only when asked for: `avmigrate lab` is the lab's
# (orchestrator.lab.cli, registered in pyproject.toml), which production code never names.
ENTRY_POINT_GROUP = "avmigrate.commands"


def command_entry_points() -> tuple[EntryPoint, ...]:
    """The registered command groups. importlib.metadata is imported here, not at startup:
    it costs `avmigrate status` some 40 ms."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    return tuple(entry_points(group=ENTRY_POINT_GROUP))


class RootGroup(click.Group):
    """The built-in commands first; then the command groups of the entry points."""

    def _extra(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in command_entry_points() if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._extra()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        point = self._extra().get(cmd_name)
        if point is None:
            return None
        try:
            loaded = point.load()
        except ImportError:  # a registered group whose package is gone: not offered
            return None
        return loaded if isinstance(loaded, click.Command) else None


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="avmigrate")
@click.option("--state", envvar="AVMIGRATE_STATE", default="avmigrate.db", show_default=True,
              help="State database file (env AVMIGRATE_STATE).")
@click.option("--catalogue", "catalogue_path", type=click.Path(path_type=Path),
              help="Product catalogue YAML (default: the built-in one).")
@click.option("-v", "--verbose", count=True, help="More Ansible output in the artifacts.")
@click.option("--credentials", type=click.Path(path_type=Path), envvar="AVMIGRATE_CREDENTIALS",
              help="YAML file of credentials (uninstall passwords, become_password), mode 0600 "
                   "or ansible-vault encrypted (env AVMIGRATE_CREDENTIALS).")
@click.option("--vault-password-file", type=click.Path(path_type=Path),
              envvar="AVMIGRATE_VAULT_PASSWORD_FILE",
              help="Vault password file for vault-encrypted credentials, mode 0600.")
@click.pass_context
def cli(  # noqa: PLR0913, PLR0917 - one parameter per click option
        ctx: click.Context, state: str, catalogue_path: Path | None, verbose: int,
        credentials: Path | None, vault_password_file: Path | None) -> None:
    """Move a fleet off a banned antivirus product without leaving any host unprotected."""
    ctx.obj = Context(state, catalogue_path, verbose, credentials, vault_password_file)


for _command in (hosts.discover, hosts.sweep, migration.plan, migration.run,
                 migration.remediate, migration.approve, hosts.budget, hosts.status,
                 evidence.report, evidence.audit, ksc.ksc):
    cli.add_command(_command)


def main() -> None:
    cli()
