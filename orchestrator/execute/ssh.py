"""Direct SSH for the tool's own work (probes, lab checks): paramiko with host keys verified."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.core.errors import AvmigrateError


class SSHError(AvmigrateError):
    """A host could not be reached or refused us over SSH."""


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to log in to one host; the key is checked against known_hosts."""

    address: str
    user: str
    key_file: Path
    known_hosts: Path
    port: int = 22


def connect(target: SSHTarget, timeout: float = 10.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(target.known_hosts))
    # Unknown or changed keys are refused, never accepted: known_hosts is the only truth.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=str(target.key_file),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SSHError(f"{target.address}: host key changed; refusing to connect") from exc
    except paramiko.SSHException as exc:
        client.close()
        raise SSHError(f"{target.address}: {exc}") from exc
    except OSError as exc:
        client.close()
        raise SSHError(f"{target.address}: {exc.strerror or exc}") from exc
    return client


def run(target: SSHTarget, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run one command; return (exit status, stdout, stderr)."""
    client = connect(target)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err
    except (TimeoutError, paramiko.SSHException) as exc:
        raise SSHError(f"{target.address}: {exc}") from exc
    finally:
        client.close()


def port_open(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
