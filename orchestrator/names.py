"""What avmigrate accepts from an inventory before it connects to anything.

Host names must be RFC 1123 host names or IP addresses: nothing else (no shell metacharacter,
no space, no quote) can then reach a command line or a file name. Group and variable names
follow Ansible's identifier rule. Inventory settings that would turn host key checking off are
refused: a changed key must stop a host, never be accepted silently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from typing import Any

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The common cases, decided by one regex each; anything else takes the careful path below.
_NAME_FAST = re.compile(r"(?=.{1,253}$)(?=.*[A-Za-z-])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_FAST = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# Names that start with a letter need neither lookahead (they cannot be IP addresses): the
# commonest case, a third of the cost of _NAME_FAST. Callers check the length (<= 253).
_LETTER_FIRST = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                           r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
name_fast = _LETTER_FIRST.fullmatch
ipv4_fast = _IPV4_FAST.fullmatch
# ssh options that accept unknown or changed host keys, or hide them in a throwaway file.
_LAX_SSH = re.compile(
    r"StrictHostKeyChecking\s*=?\s*(no|off|accept-new)\b|UserKnownHostsFile\s*=?\s*/dev/null",
    re.IGNORECASE)
_SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args",
                 "ansible_scp_extra_args", "ansible_sftp_extra_args")
_KEY_CHECK_VARS = ("ansible_host_key_checking", "ansible_ssh_host_key_checking",
                   "ansible_paramiko_host_key_checking")


WATCHED = frozenset(_SSH_ARG_VARS + _KEY_CHECK_VARS)


def host_problem(name: str) -> str | None:
    """Why `name` is not an acceptable host name, or None. (For speed, bulk callers may first
    accept what `name_fast` or `ipv4_fast` match in full, with len(name) <= 253.)"""
    if not isinstance(name, str) or not name:
        return "is empty"
    if (len(name) <= 253 and name_fast(name)) or _NAME_FAST.fullmatch(name) \
            or _IPV4_FAST.fullmatch(name):
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return None
    if len(name) > 253:
        return "is longer than 253 characters"
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if all(_LABEL.fullmatch(label) for label in labels) and not name.replace(".", "").isdigit():
        return None
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in ".-"))})
    what = f"contains {' '.join(repr(c) for c in bad)}" if bad else "has an empty, too long or " \
        "badly placed part"
    return (f"{what}: host names must be RFC 1123 names (letters, digits, '-' inside, parts of "
            "1-63 separated by '.') or IP addresses")


def identifier_problem(name: str, what: str) -> str | None:
    if isinstance(name, str) and _IDENT.fullmatch(name):
        return None
    return (f"{what} {name!r} is not a valid name (letters, digits and '_', not starting "
            "with a digit)")


def host_key_problem(variables: dict[str, Any]) -> str | None:
    """An inventory setting that would accept an unknown or changed host key, or None."""
    if WATCHED.isdisjoint(variables):
        return None
    for var in _KEY_CHECK_VARS:
        value = variables.get(var)
        if value is not None and str(value).strip().lower() in ("false", "no", "off", "0"):
            return f"{var}={value} turns host key checking off; avmigrate never does that"
    for var in _SSH_ARG_VARS:
        value = variables.get(var)
        if isinstance(value, str) and (m := _LAX_SSH.search(value)):
            return (f"{var} has {m.group(0)!r}, which accepts unknown or changed host keys; "
                    "record the hosts' keys in known_hosts instead")
    return None
