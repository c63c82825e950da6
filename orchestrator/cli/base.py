"""What every command shares: the resolved root options (Context), the error boundary built
into the `command` decorator, and the common options."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator import api
from orchestrator.api.workspace import Settings, Workspace
from orchestrator.cli.display import err
from orchestrator.core.errors import AvmigrateError, ExitCode

F = TypeVar("F", bound=Callable[..., Any])


class Context(Workspace):
    """Options shared by every command, resolved once: the library's workspace."""

    def __init__(self, state: str, catalogue_path: Path | None, verbose: int,
                 credentials: Path | None = None, vault_password_file: Path | None = None
                 ) -> None:
        super().__init__(Settings(state, catalogue_path, verbose, credentials,
                                  vault_password_file))


pass_ctx = click.make_pass_decorator(Context)


def boundary(fn: F) -> F:
    """Expected errors: one line and their exit code. Unexpected: traceback to a file."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AvmigrateError as exc:
            err.print(f"avmigrate: error: {exc}", markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("avmigrate: interrupted; state is saved, run the command again to resume")
            sys.exit(ExitCode.INTERRUPTED)
        except Exception:  # noqa: BLE001 - the boundary: log it, say where, exit 70
            fd, path = tempfile.mkstemp(prefix="avmigrate-crash-", suffix=".log")
            with os.fdopen(fd, "w") as fh:
                fh.write(traceback.format_exc())
            err.print(f"avmigrate: internal error; the traceback is in {path}. Please report it.")
            sys.exit(ExitCode.INTERNAL)

    return wrapper  # type: ignore[return-value]


def command(name: str | None = None, *, context: bool = True
            ) -> Callable[[Callable[..., Any]], click.Command]:
    """A click command inside the error boundary; given the Context first unless not
    `context`. Options are declared below it, as with click.command."""

    def make(fn: Callable[..., Any]) -> click.Command:
        body = boundary(fn)
        return click.command(name)(pass_ctx(body) if context else body)

    return make


def INVENTORY(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The inventory options ansible-playbook has: -i (repeatable; default the inventory of
    ansible.cfg), --limit, --playbook-dir, --vault-id, --vault-password-file,
    --ask-vault-pass, --ask-become-pass. The command gets them as one `inventory_path`
    (api.Sources)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        files = tuple(kwargs.pop("inv_vault_password_files"))
        ask_vault = kwargs.pop("ask_vault_pass")
        ask_become = kwargs.pop("ask_become_pass")
        vault_ids = (*kwargs.pop("vault_ids"), *(f"default@{f}" for f in files))
        kwargs["inventory_path"] = api.Sources(
            tuple(kwargs.pop("inventory_paths")), kwargs.pop("limit"), vault_ids,
            _secret("Vault password: ") if ask_vault else None,
            _secret("BECOME password: ") if ask_become else None,
            kwargs.pop("playbook_dir"))
        return fn(*args, **kwargs)

    options = [
        click.option("-i", "--inventory", "inventory_paths", multiple=True,
                     type=click.Path(path_type=Path),
                     help="Ansible inventory: a file, directory, script or plugin "
                          "configuration; repeat for several (default: ansible.cfg's)."),
        click.option("-l", "--limit", default=None,
                     help="Only the hosts this Ansible host pattern selects."),
        click.option("--playbook-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="Where your playbooks live: its group_vars/ and host_vars/ apply "
                          "as they do to your playbooks."),
        click.option("--vault-id", "vault_ids", multiple=True,
                     help="Vault identity label@file-or-script, as ansible-playbook takes it."),
        click.option("--vault-password-file", "inv_vault_password_files", multiple=True,
                     type=click.Path(path_type=Path),
                     help="Vault password file or executable script."),
        click.option("-J", "--ask-vault-pass", is_flag=True,
                     help="Ask once for the vault password."),
        click.option("-K", "--ask-become-pass", is_flag=True,
                     help="Ask once for the become (sudo) password of the steps."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _secret(prompt: str) -> bytes:
    """A password typed at the terminal (not echoed), kept only in memory."""
    return click.prompt(prompt.rstrip(": "), hide_input=True, prompt_suffix=": ",
                        err=True).encode()


REPLACEMENT = click.option(
    "--replacement", default=None,
    help="Default replacement product id from the catalogue (else the policy's "
         "replacement.default, else clamav). The policy's replacement.groups and the "
         "inventory variable avmigrate_replacement choose per host.")
PROTECT_UNPROTECTED = click.option(
    "--protect-unprotected", is_flag=True, default=None,
    help="Also install and prove the replacement on hosts with no antivirus at all (no "
         "banned product, no proven replacement); the policy's protect_unprotected.")
FORKS = click.option("--forks", default=None, type=click.IntRange(1, 500),
                     help="Hosts Ansible works on at once.")
POLICY = click.option("--policy", "policy_path", type=click.Path(path_type=Path),
                      help="Policy YAML: waves, order, windows, blackouts, deadline, budget, "
                           "gates, approvals (see inventory/policy.example.yml).")
YES = click.option("--yes", "-y", is_flag=True, envvar="AVMIGRATE_YES",
                   help="Do not ask for confirmation (env AVMIGRATE_YES).")
