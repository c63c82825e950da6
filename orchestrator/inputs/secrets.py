"""Secrets: uninstall passwords and the become password.

They come from a credentials file only its owner can read, or an ansible-vault encrypted one,
never from the command line or the environment. In memory they are a `Secrets` whose repr
hides them. Each Ansible step gets them as a vars file encrypted with a one-time vault password,
and that password is handed to ansible-playbook through a private socket: it is never on disk,
on a command line or in the environment ansible-runner records in its artifacts.
"""

from __future__ import annotations

import contextlib
import os
import secrets as pysecrets
import shutil
import socket
import stat
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.errors import AvmigrateError


class SecretsError(AvmigrateError):
    """The credentials file is missing, unsafe or malformed."""


BECOME = "become_password"


@dataclass(frozen=True)
class Secrets:
    """Named secrets; printing one never shows a value."""

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(sorted(self.values))} hidden)"

    def __bool__(self) -> bool:
        return bool(self.values)

    def ansible_vars(self) -> dict[str, str]:
        """The variables the playbooks read: avmigrate_secret_<name>, ansible_become_password."""
        out = {}
        for name, value in self.values.items():
            out["ansible_become_password" if name == BECOME else f"avmigrate_secret_{name}"] = value
        return out


def _check_private(path: Path, what: str) -> None:
    try:
        info = path.stat()
    except OSError as exc:
        raise SecretsError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SecretsError(f"{what} {path} is not a regular file")
    if info.st_uid != os.getuid():
        raise SecretsError(f"{what} {path} belongs to another user (uid {info.st_uid}); it must "
                           "be yours")
    if info.st_mode & 0o077:
        raise SecretsError(f"{what} {path} can be read by others (mode "
                           f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")


def load(path: Path, allowed: set[str], vault_password_file: Path | None = None) -> Secrets:
    """Read the credentials: a YAML mapping of name to string, plain (mode 0600) or vaulted."""
    _check_private(path, "credentials file")
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"$ANSIBLE_VAULT"):
        if vault_password_file is None:
            raise SecretsError(f"credentials file {path} is vault-encrypted; pass "
                               "--vault-password-file")
        _check_private(vault_password_file, "vault password file")
        from ansible.errors import AnsibleError  # noqa: PLC0415
        from ansible.parsing.vault import VaultLib, VaultSecret  # noqa: PLC0415

        password = vault_password_file.read_bytes().strip()
        try:
            raw = VaultLib([("default", VaultSecret(password))]).decrypt(raw)
        except AnsibleError:
            raise SecretsError(f"credentials file {path} cannot be decrypted with "
                               f"{vault_password_file}; check the vault password") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: undecodable, or a bad date
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        # Never quote the content: it is a secret.
        raise SecretsError(f"{path}{where}: not valid YAML; fix the syntax") from None
    if not isinstance(data, dict):
        raise SecretsError(f"{path}: must be a mapping of credential names to values")
    known = allowed | {BECOME}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise SecretsError(f"{path}: unknown credential {str(key)!r}; known: "
                               f"{', '.join(sorted(known))}")
        if not isinstance(value, str) or not value:
            raise SecretsError(f"{path}: credential {key!r} must be a non-empty string")
        values[str(key)] = value
    return Secrets(values)


class VaultChannel:
    """For one ansible-playbook run: the secrets as a vars file encrypted with a one-time vault
    password, and that password served over a private UNIX socket to the vault password
    script ansible-playbook runs. It is served once, and only to a process of this user that
    descends from this one (the step's own ansible-playbook); later asks get nothing."""

    def __init__(self, secrets: Secrets, directory: Path) -> None:
        from ansible.parsing.vault import VaultLib, VaultSecret  # noqa: PLC0415

        self.directory = directory
        self.vars_file = directory / "secret-vars.yml"
        self.script = directory / "vault-pass"
        # Short path: a socket path must stay under 108 bytes.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="avm-v-", dir="/tmp"))
        self.socket_path = self._sock_dir / "s"
        self._password = pysecrets.token_urlsafe(32).encode()
        self._stop = threading.Event()
        self.served = 0
        text = yaml.safe_dump(secrets.ansible_vars())
        vault = VaultLib([("default", VaultSecret(self._password))])
        _write_private(self.vars_file, vault.encrypt(text), 0o600)
        _write_private(self.script, _CLIENT.format(python=sys.executable,
                                                   path=str(self.socket_path)).encode(), 0o700)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.socket_path))
        self.socket_path.chmod(0o600)
        self._server.listen(8)
        self._server.settimeout(0.5)
        self._thread = threading.Thread(target=self._serve, name="vault-pass", daemon=True)
        self._thread.start()

    def cmdline(self) -> list[str]:
        # A vault id of its own: it may sit beside the user's ids and --ask-vault-pass.
        return ["-e", f"@{self.vars_file}", "--vault-id", f"avmigrate@{self.script}"]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                pid, uid, _gid = struct.unpack("3i", creds)
                if self.served or uid != os.getuid() or not _descends_from_us(pid):
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(self._password)
                    self.served += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        for path in (self.vars_file, self.script):
            with contextlib.suppress(OSError):
                path.unlink()

    def __enter__(self) -> VaultChannel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _descends_from_us(pid: int) -> bool:
    """Is `pid` this process or one of its descendants (read from /proc)?"""
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid <= 1:
            return False
    return False


# The vault password script ansible-playbook runs: it holds no secret, only where to ask.
_CLIENT = """#!{python}
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({path!r})
data = b""
while chunk := s.recv(4096):
    data += chunk
sys.stdout.write(data.decode())
"""


def _write_private(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
