"""The user's inventory read by Ansible itself: every `-i` source (files, directories, scripts,
plugins), `group_vars/` and `host_vars/` beside them, vault-encrypted files and values, and
`--limit`, each host's variables resolved as `ansible-inventory --list` resolves them
(VariableManager, stage 'all').

Secrets stay out of what avmigrate keeps: a vault-encrypted value (inline `!vault`, or any
value read from a vault-encrypted file) becomes `<vaulted:DIGEST>`, a digest of its
ciphertext, so that a plan still notices when it changes; Ansible decrypts it again in the
steps, which run against these same sources. Connection values written as templates
(`ansible_ssh_common_args: "-o ProxyJump={{ bastion }}"`) are templated here, as the step
would, so that sweep, discover and the host key checks see what ssh will be given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import Any

from orchestrator.core import names
from orchestrator.core.assets import PLAYBOOK_DIR
from orchestrator.core.errors import InventoryError
from orchestrator.inputs import invbuilder, varsdirs
from orchestrator.inputs.sources import Sources, split_vault_id

NODE_GROUP = "execution_nodes"
# Values avmigrate itself reads (sweep, nodes, the host key checks): templated when needed.
CONNECTION = frozenset({"ansible_host", "ansible_port", "ansible_user", "ansible_ssh_port",
                        "ansible_ssh_host", "ansible_ssh_user"}) | names.WATCHED


def vault_secrets(loader: Any, src: Sources) -> list[tuple[str, Any]]:
    """The vault secrets ansible-playbook would build from the same options."""
    from ansible.parsing.vault import VaultSecret, get_file_vault_secret  # noqa: PLC0415

    found: list[tuple[str, Any]] = []
    if src.vault_password is not None:
        found.append(("default", VaultSecret(src.vault_password)))
    for given in src.vault_ids:
        label, where = split_vault_id(given)
        path = Path(where).expanduser()
        if not path.exists():
            raise InventoryError(f"vault password file {where} does not exist; fix --vault-id "
                                 "or --vault-password-file")
        try:
            secret = get_file_vault_secret(filename=str(path), vault_id=label, loader=loader)
            secret.load()
        except Exception as exc:  # Ansible raises AnsibleError or OSError here
            raise InventoryError(f"vault password from {where} cannot be read "
                                 f"({str(exc).splitlines()[0] if str(exc) else exc!r}); fix "
                                 "the file or script") from exc
        found.append((label, secret))
    return found


class _Vaulted:
    """Tells vault-protected values apart: inline `!vault` values, and values that came from a
    vault-encrypted file (their Origin names it)."""

    def __init__(self, loader: Any, src: Sources) -> None:
        from ansible.module_utils._internal._datatag import AnsibleTagHelper  # noqa: PLC0415
        from ansible.parsing.vault import VaultHelper  # noqa: PLC0415

        self.ciphertext = VaultHelper.get_ciphertext
        self.tags = AnsibleTagHelper.tags
        # Vault-encrypted files read: path -> a digest of the file's ciphertext (None: plain).
        self.files: dict[str, str | None] = {}
        # Variables some vault-encrypted group_vars/host_vars file defines, with the file's
        # digest: a boolean or null carries no origin to tell it came from one.
        self.keys: dict[str, str] = {}
        for base in (p if p.is_dir() else p.parent for p in src.paths if p.exists()):
            for path in varsdirs.vault_files(base):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                data = loader.load_from_file(str(path))
                for key in data if isinstance(data, dict) else ():
                    self.keys[str(key)] = digest

    def _encrypted_file(self, value: Any) -> str | None:
        """The digest of the vault-encrypted file `value` was read from, or None."""
        for tag in self.tags(value):
            path = getattr(tag, "path", None)
            if type(tag).__name__ == "Origin" and path:
                if path not in self.files:
                    try:
                        raw = Path(path).read_bytes()
                    except OSError:
                        raw = b""
                    self.files[path] = (hashlib.sha256(raw).hexdigest()[:16]
                                        if raw.lstrip().startswith(b"$ANSIBLE_VAULT") else None)
                return self.files[path]
        return None

    def scrub(self, value: Any, key: str = "") -> Any:
        """`value` with every vault-protected value replaced by a digest of its ciphertext
        (never of the value: a digest of a short secret could be guessed offline)."""
        if isinstance(value, dict):
            return {k: self.scrub(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v, key) for v in value]
        ciphertext = self.ciphertext(value, with_tags=False)
        if ciphertext:
            return f"<vaulted:{hashlib.sha256(str(ciphertext).encode()).hexdigest()[:16]}>"
        from_file = self._encrypted_file(value)
        if from_file is None and key in self.keys and not self.tags(value):
            from_file = self.keys[key]  # untagged (a boolean, null): named by a vault file
        if from_file is not None:  # the file's digest and the variable's name, not the value
            return f"<vaulted:{hashlib.sha256(f'{from_file}|{key}'.encode()).hexdigest()[:16]}>"
        return value


def _templated(templar_of: Any, host: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The connection values that are templates, templated for this host over its variables
    (vault values already replaced by their digests: a secret never lands in what is kept).
    An address, port or user that cannot be templated (an undefined variable) stays as
    written: the step fails that host as ansible-playbook would. An ssh argument or host key
    setting that cannot be templated is refused: what it would become cannot be checked."""
    out: dict[str, Any] = {}
    templar = None
    for key in sorted(CONNECTION.intersection(variables)):
        value = variables[key]
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            templar = templar or templar_of(variables)
            try:
                out[key] = templar.template(value)
            except Exception as exc:  # Ansible's templating errors vary
                if key in names.WATCHED:
                    first = (str(exc).splitlines() or [repr(exc)])[0]
                    raise InventoryError(f"host {host}: {key} cannot be templated ({first}); "
                                         "avmigrate cannot check what ssh would be given: fix "
                                         "the variable") from exc
    return out


def hosts(src: Sources, describe_failure: Any) -> list[invbuilder.Found]:
    """(name, groups, {}, variables) of every host the sources give (after --limit), the
    variables resolved as ansible-inventory resolves them."""
    # Unparseable sources must be an error, not a warning and an empty inventory.
    os.environ["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"
    os.environ.setdefault("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True")
    try:
        from ansible import constants as C  # noqa: PLC0415 (slow import, when needed)
        from ansible.errors import AnsibleError  # noqa: PLC0415
        from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
        from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
        from ansible.template import Templar  # noqa: PLC0415
        from ansible.vars.manager import VariableManager  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - broken install
        raise InventoryError(f"ansible-core is not importable ({exc}); run `make venv`") from exc
    said = io.StringIO()  # Ansible's own warnings: folded into our one line, never printed
    loader = DataLoader()
    secrets = vault_secrets(loader, src)
    if secrets:
        loader.set_vault_secrets(secrets)
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            manager = InventoryManager(loader=loader, sources=[str(p) for p in src.paths])
            if src.limit:
                manager.subset(src.limit)
            chosen = manager.get_hosts()
            # Execution nodes are not targets: a --limit does not take them away.
            nodes = (manager.get_hosts(NODE_GROUP, ignore_limits=True)
                     if NODE_GROUP in manager.groups else [])
            chosen = sorted({*chosen, *nodes}, key=lambda h: h.name)
            # What ansible-playbook does: play-adjacent group_vars are the playbook's (the
            # user's --playbook-dir, else avmigrate's own, which has none), not the working
            # directory's.
            loader.set_basedir(str(src.playbook_dir or PLAYBOOK_DIR))
            variables = VariableManager(loader=loader, inventory=manager)
            vaulted = _Vaulted(loader, src)
            found: list[invbuilder.Found] = []
            internal = C.INTERNAL_STATIC_VARS
            for host in chosen:
                merged = variables.get_vars(host=host, include_hostvars=False, stage="all")
                own = {k: vaulted.scrub(v, k) for k, v in merged.items() if k not in internal}
                own.update(_templated(lambda v: Templar(loader=loader, variables=v),
                                      str(host.name), own))
                groups = tuple(sorted(g.name for g in host.get_groups() if g.name != "all"))
                found.append((str(host.name), groups, {}, invbuilder.plain(own)))
    except AnsibleError as exc:
        text = str(exc)
        if "vault" in text.lower() and ("password" in text.lower() or "decrypt" in text.lower()):
            first = text.strip().splitlines()[0]
            raise InventoryError(f"{src}: vault-encrypted values cannot be read ({first}); pass "
                                 "--vault-id, --vault-password-file or --ask-vault-pass") from exc
        raise InventoryError(describe_failure(said.getvalue(), exc)) from exc
    for group in manager.groups:
        if (problem := names.group_problem(group)) is not None:
            raise InventoryError(f"{src}: {problem}; rename it")
    return found
