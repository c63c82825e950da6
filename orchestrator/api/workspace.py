"""What every operation works with: the state store (opened once), the catalogue, the
credentials, an executor; and what a caller is told and asked meanwhile (the Observer)."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from orchestrator.core.errors import AvmigrateError
from orchestrator.core.lazy import lazy
from orchestrator.core.models import HostRecord, Plan
from orchestrator.inputs.sources import Given, Sources
from orchestrator.store import open_store
from orchestrator.store.sqlstore import SqlStore

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from orchestrator.core.catalogue import Catalogue
    from orchestrator.engine import session as session_mod
    from orchestrator.engine.session import Session, SessionSpec
    from orchestrator.execute import executor as executor_mod
    from orchestrator.execute import nodes as nodes_mod
    from orchestrator.execute import step as step_mod
    from orchestrator.execute import stepfiles, stepguard
    from orchestrator.execute.step import Executor
    from orchestrator.inputs import ansiblecfg, catalogue, inventory
    from orchestrator.inputs import secrets as secretlib
else:
    ansiblecfg = lazy("orchestrator.inputs.ansiblecfg")
    catalogue = lazy("orchestrator.inputs.catalogue")
    executor_mod = lazy("orchestrator.execute.executor")
    nodes_mod = lazy("orchestrator.execute.nodes")
    secretlib = lazy("orchestrator.inputs.secrets")
    session_mod = lazy("orchestrator.engine.session")
    step_mod = lazy("orchestrator.execute.step")
    stepfiles = lazy("orchestrator.execute.stepfiles")
    stepguard = lazy("orchestrator.execute.stepguard")


def operator_name() -> str:
    """Who runs this command, as the run records and the lease name them."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


class Observer(Protocol):
    """What a caller is told, and asked, while an operation runs."""

    def log(self, message: str) -> None:
        """A line of progress (steps, budget, hosts left unprotected)."""

    def notice(self, message: str) -> None:
        """Something the operator must know: hosts left to another run, a lost lease."""

    def confirm(self, question: str) -> None:
        """Asked before hosts are changed; raise Aborted to decline."""

    def changed(self, record: HostRecord) -> None:
        """A host's committed transition."""

    def watching(self, the_plan: Plan, records: dict[str, HostRecord]
                 ) -> AbstractContextManager[object]:
        """Held while the plan runs (a live view); log and changed may go there meanwhile."""


class Silent:
    """An observer that says nothing and takes the call itself as the consent to go ahead."""

    def log(self, message: str) -> None:
        del message

    def notice(self, message: str) -> None:
        del message

    def confirm(self, question: str) -> None:
        del question

    def changed(self, record: HostRecord) -> None:
        del record

    def watching(self, the_plan: Plan, records: dict[str, HostRecord]
                 ) -> AbstractContextManager[object]:
        del the_plan, records
        return contextlib.nullcontext()


@dataclass(frozen=True)
class Settings:
    """Where the state is, which catalogue, and the credentials steps may need."""

    state: str = "avmigrate.db"
    catalogue: Path | None = None
    verbose: int = 0  # Ansible's verbosity in the artifacts
    credentials: Path | None = None
    vault_password_file: Path | None = None


class Workspace:
    """The state store (opened once), catalogue and credentials every operation uses."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: SqlStore | None = None
        self._ansible: ansiblecfg.AnsibleSettings | None = None

    def ansible(self) -> ansiblecfg.AnsibleSettings:
        """The user's Ansible configuration, found as Ansible finds it (read once)."""
        if self._ansible is None:
            self._ansible = ansiblecfg.load()
        return self._ansible

    def sources(self, given: Given) -> Sources:
        """The inventory as ansible-playbook would take it: the configuration's inventory
        when none is given, its vault identities and the global --vault-password-file."""
        src = Sources.of(given)
        if self.settings.vault_password_file is not None:
            src = dataclasses.replace(
                src, vault_ids=(f"default@{self.settings.vault_password_file}", *src.vault_ids))
        cfg = self.ansible()
        resolved = src.resolved(cfg.inventory, cfg.vault_ids)
        if not resolved.paths:
            raise AvmigrateError("no inventory given: pass -i, or name one in ansible.cfg "
                                 "([defaults] inventory)")
        return resolved

    def forks(self, given: int | None) -> int:
        """--forks, else the configuration's forks, else 10."""
        return given or self.ansible().forks or 10

    @property
    def state_url(self) -> str:
        return self.settings.state

    def store(self) -> SqlStore:
        if self._store is None:
            self._store = open_store(self.settings.state)
        return self._store

    def existing_store(self) -> SqlStore:
        """The store, refusing to create one where nothing was ever recorded."""
        path = Path(self.settings.state)
        if "://" not in self.settings.state and not path.exists():
            raise AvmigrateError(f"no state at {path}; run `avmigrate discover` or pass --state")
        return self.store()

    def catalogue(self) -> Catalogue:
        return catalogue.load(self.settings.catalogue)

    def secrets(self) -> secretlib.Secrets:
        if self.settings.credentials is None:
            return secretlib.Secrets()
        return secretlib.load(self.settings.credentials, self.catalogue().secret_names(),
                              self.settings.vault_password_file)

    def executor(self, inv: inventory.Inventory, forks: int | None, observer: Observer
                 ) -> Executor:
        """Ansible through ansible-runner, on this machine or the inventory's nodes, with the
        user's inventory sources and Ansible configuration."""
        ansible = self.ansible()
        given = inv.given or Sources.of(inv.source)
        answered = {"become_ask_pass": given.become_password is not None,
                    "ask_vault_pass": given.vault_password is not None}
        for setting, option in ansible.prompts:
            if not answered.get(setting, False):
                raise AvmigrateError(f"{ansible.path or 'the environment'}: {setting} is set, "
                                     f"so ansible-playbook would stop at a prompt: use {option}")
        cfg = step_mod.ExecConfig(
            artifacts_dir=stepfiles.default_artifacts_dir(self.settings.state),
            forks=self.forks(forks), verbosity=self.settings.verbose,
            state_key=stepguard.state_key(self.settings.state),
            sources=tuple(str(p) for p in given.paths), vault_ids=given.vault_ids,
            user_playbook_dir=given.playbook_dir,
            ansible_config=ansible.path, ssh_args=ansible.ssh_args,
            pipelining=ansible.pipelining, user_collections=ansible.collections,
            prompts=step_mod.Prompts(given.vault_password, given.become_password))
        nodes = [nodes_mod.ExecutionNode.from_host(h) for h in inv.nodes]
        if nodes:
            observer.log(f"execution nodes: {', '.join(n.name for n in nodes)}")
        # The observer's log: it goes to the progress view while one is shown.
        return executor_mod.RunnerExecutor(cfg, self.secrets(), nodes, log=observer.log,
                                           notes=tuple(ansible.overrides()))

    def session(self, inv: inventory.Inventory, executor: Executor, spec: SessionSpec,
                observer: Observer) -> Session:
        """The lease, narrowed inventory and run record of one command (engine/session.py)."""
        return session_mod.Session(self.store(), lambda: open_store(self.settings.state),
                                   operator_name(), executor, inv, spec, observer.notice)
