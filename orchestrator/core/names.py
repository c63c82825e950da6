"""What avmigrate accepts from an inventory before it connects to anything.

Host names must be RFC 1123 host names or IP addresses: nothing else (no shell metacharacter,
no space, no quote) can then reach a command line or a file name. Group and variable names
follow Ansible's identifier rule. Inventory settings that would turn host key checking off are
refused: a changed key must stop a host, never be accepted silently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import stat
from pathlib import Path
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
_SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args",
                 "ansible_scp_extra_args", "ansible_sftp_extra_args")
_KEY_CHECK_VARS = ("ansible_host_key_checking", "ansible_ssh_host_key_checking",
                   "ansible_paramiko_host_key_checking")

_EXECUTABLE_VARS = ("ansible_ssh_executable",)
# The ssh option avmigrate puts first on every ssh command line (ssh takes the first value).
STRICT = "-o StrictHostKeyChecking=yes"


WATCHED = frozenset(_SSH_ARG_VARS + _KEY_CHECK_VARS + _EXECUTABLE_VARS)


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


# Inventory names as Ansible accepts them (an alias `db_prod_01`, a group `web-servers`),
# without anything a host pattern, a shell or a template would read as syntax.
_ALIAS = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,254}")


def alias_problem(name: str) -> str | None:
    """Why `name` cannot be an inventory host name, or None: an RFC 1123 name, an address, or
    an alias of letters, digits, '_', '.' and '-' (Ansible's aliases need not be DNS names)."""
    if isinstance(name, str) and _ALIAS.fullmatch(name) and ".." not in name:
        return None
    if host_problem(name) is None:
        return None
    if not isinstance(name, str) or not name:
        return "is empty"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    what = f"contains {' '.join(repr(c) for c in bad)}" if bad else "has a badly placed '.'"
    return (f"{what}: host names are letters, digits, '_', '.' and '-' (an alias or an RFC "
            "1123 name, not starting or ending with '.' or '-'), or IP addresses")


def group_problem(name: str) -> str | None:
    """Why `name` cannot be a group name, or None (Ansible also accepts '-' and '.')."""
    if isinstance(name, str) and _GROUP.fullmatch(name):
        return None
    return (f"group {name!r} is not a valid name (letters, digits, '_', '-' and '.', starting "
            "with a letter or '_')")


def identifier_problem(name: str, what: str) -> str | None:
    if isinstance(name, str) and _IDENT.fullmatch(name):
        return None
    return (f"{what} {name!r} is not a valid name (letters, digits and '_', not starting "
            "with a digit)")


def host_key_problem(variables: dict[str, Any]) -> str | None:
    """An inventory setting that could accept an unknown or changed host key, or None.

    An allow-list: host key checking must stay strict, against known_hosts files. Any other
    value of StrictHostKeyChecking, a known_hosts file that is /dev/null or writable by
    others, a KnownHostsCommand, or an ssh program other than OpenSSH's is refused, also
    inside an ssh config file named with -F.
    """
    if WATCHED.isdisjoint(variables):
        return None
    for var in _KEY_CHECK_VARS:
        value = variables.get(var)
        if value is not None and str(value).strip().lower() not in ("true", "yes", "on", "1"):
            return f"{var}={value} turns host key checking off; avmigrate never does that"
    for var in _SSH_ARG_VARS:
        value = variables.get(var)
        if value is not None and (problem := ssh_args_problem(str(value))) is not None:
            return (f"{var}: {problem}; record the hosts' keys in known_hosts and keep "
                    "checking strict")
    exe = variables.get("ansible_ssh_executable")
    if exe is not None and not _is_openssh(str(exe)):
        return (f"ansible_ssh_executable={exe}: avmigrate runs OpenSSH's ssh (on PATH), whose "
                "host key checking it can enforce; remove the setting")
    return None


def _is_openssh(exe: str) -> bool:
    found = shutil.which("ssh")
    return found is not None and (
        os.path.realpath(shutil.which(exe) or exe) == os.path.realpath(found))


# Options of OpenSSH's ssh that take an argument (its getopt string): in "-4o X" the `o` takes
# the rest of the word or the next word, as ssh reads it.
_SSH_ARG_LETTERS = frozenset("bceilmopBDEFIJLOPQRSwW")


def ssh_args_problem(text: str) -> str | None:
    """Why these ssh command-line arguments could weaken host key checking, or None. They are
    split as Ansible splits them (shlex, each word stripped, empty words dropped) and read as
    ssh's getopt reads them (clustered flags, an option's argument glued or next). An option
    left without its argument is refused: Ansible puts the next setting's words right after
    it (`ansible_ssh_common_args: -o` then `ansible_ssh_extra_args: KnownHostsCommand=...`)."""
    try:
        words = [w.strip() for w in shlex.split(text) if w.strip()]
    except ValueError as exc:
        return f"cannot be read as ssh arguments ({exc})"
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or len(word) < 2:
            continue
        for j in range(1, len(word)):
            letter = word[j]
            if letter not in _SSH_ARG_LETTERS:
                continue
            value = word[j + 1:]
            if not value:
                if i == len(words):
                    return (f"-{letter} at the end has no argument; the words that follow it "
                            "on ssh's command line would become one")
                value = words[i]
                i += 1
            problem = (_option_problem(value) if letter == "o"
                       else _config_file_problem(value) if letter == "F" else None)
            if problem is not None:
                return problem
            break  # the rest of the word was this option's argument
    return None


def _option_words(option: str) -> tuple[str, list[str]] | None:
    """An ssh option or config line as ssh reads it: its keyword (lower case) and its values,
    the keyword ended by white space or '=', quotes removed. None: it cannot be read."""
    try:
        words = shlex.split(option, comments=False, posix=True)
    except ValueError:
        return None
    if not words:
        return "", []
    first, rest = words[0], words[1:]
    key, eq, glued = first.partition("=")
    if eq:
        rest = ([glued] if glued else []) + rest
    elif rest and rest[0].startswith("="):
        rest = ([rest[0][1:]] if rest[0][1:] else []) + rest[1:]
    return key.strip().lower(), [w for w in rest if w]


def _option_problem(option: str) -> str | None:
    """One ssh option ("Key=value" or "Key value"), judged against the allow-list."""
    read = _option_words(option)
    if read is None:
        return f"the ssh option {option!r} cannot be read (unbalanced quotes)"
    key, values = read
    value = " ".join(values)
    if key == "stricthostkeychecking" and value.lower() != "yes":
        return f"StrictHostKeyChecking {value or '(empty)'} is not strict host key checking"
    if key == "knownhostscommand":
        return "KnownHostsCommand lets a program vouch for host keys"
    if key in ("include", "match"):
        return (f"{key.capitalize()} is not followed by avmigrate's checks; put the host key "
                "settings in the file itself")
    if key in ("userknownhostsfile", "globalknownhostsfile"):
        return _known_hosts_problem(key, values)
    return None


def _known_hosts_problem(key: str, paths: list[str]) -> str | None:
    """A known-hosts file option's paths: each must be a file only we can write."""
    for path in paths or ["(empty)"]:
        if path.lower() in ("/dev/null", "none", "(empty)"):
            return f"{key} {path} throws every host key away"
        if "%" in path or "$" in path:
            return (f"{key} {path}: a path with ssh's % tokens or ${{}} variables cannot be "
                    "checked; name the file")
        if _writable_by_others(Path(path).expanduser()):
            return (f"{key} {path} (or a directory above it) can be written by other "
                    "users, who could add a key to it")
    return None


def _others_may_write(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or st.st_uid not in (0, os.getuid())


def _writable_by_others(path: Path) -> bool:
    """Could another user change what this file says: write it, replace it or a directory
    above it, or create it where it is missing? A sticky directory (/tmp) keeps others from
    replacing what we own in it, not from creating what is missing."""
    path = path.absolute()
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and _others_may_write(st):
        return True
    missing = st is None
    for parent in path.parents:
        try:
            dst = parent.stat()
        except OSError:
            missing = True  # a directory others might create
            continue
        if _others_may_write(dst) and (missing or not dst.st_mode & stat.S_ISVTX):
            return True
        missing = False
    return False


def _config_file_problem(path: str) -> str | None:
    """The options of an ssh config file named with -F (they also apply to ProxyJump hops,
    which command-line options do not reach)."""
    if path in ("none", "/dev/null"):
        return None
    if "%" in path or "$" in path:
        return f"ssh config file {path}: a path with % tokens or ${{}} variables cannot be checked"
    if _writable_by_others(Path(path).expanduser()):
        return (f"ssh config file {path} (or a directory above it) can be written by other "
                "users, who could turn host key checking off in it")
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"ssh config file {path} cannot be read ({exc.strerror})"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line and (problem := _option_problem(line)) is not None:
            return f"{path}:{number}: {problem}"
    return None
