"""The README documents the CLI as it is: every command, its options, and every exit code."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from orchestrator.cli.main import cli
from orchestrator.core.errors import ExitCode

README = Path(__file__).resolve().parents[3] / "README.md"

# The lab group is a test fixture's CLI: it may be attached to the root group elsewhere.
OPTIONAL_GROUPS = {"lab"}


def section(text: str, title: str) -> str:
    """The body of the README section headed `title` (any level), up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}\s*$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section headed {title!r}"
    return match.group(1)


def reference_lines() -> dict[str, str]:
    """The command reference: command path (`` for the root) -> its synopsis, continuations joined.

    The reference is the first fenced block of the Reference section; each synopsis starts
    with `avmigrate`, and an indented line continues the one above.
    """
    block = re.search(r"^```[^\n]*\n(.*?)^```", section(README.read_text(), "Reference"),
                      re.M | re.S)
    assert block, "the README's Reference section has no ``` block of synopses"
    synopses: list[str] = []
    for line in block.group(1).splitlines():
        if line.startswith("avmigrate"):
            synopses.append(line)
        elif line.strip():
            assert synopses and line[0].isspace(), f"stray line in the reference: {line!r}"
            synopses[-1] += " " + line.strip()
    out: dict[str, str] = {}
    for synopsis in synopses:
        words = re.findall(r"^avmigrate((?: [a-z][a-z-]*)*)", synopsis)[0].split()
        out.setdefault(" ".join(words), "")
        out[" ".join(words)] += " " + synopsis
    return out


def walk(group: click.Group, ctx: click.Context, path: str = ""
         ) -> list[tuple[str, click.Command]]:
    """Every command under `group`, groups included, as (path, command), the group first."""
    found: list[tuple[str, click.Command]] = [(path, group)]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{path} {name}: listed but cannot be loaded"
        sub = f"{path} {name}".strip()
        if isinstance(cmd, click.Group):
            found += walk(cmd, click.Context(cmd, info_name=name, parent=ctx), sub)
        else:
            found.append((sub, cmd))
    return found


COMMANDS = walk(cli, click.Context(cli, info_name="avmigrate"))


def test_the_command_tree_was_walked() -> None:
    paths = {path for path, _ in COMMANDS}
    assert {"", "run", "plan", "audit verify"} <= paths


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[p or "avmigrate" for p, _ in COMMANDS])
def test_every_command_has_help_and_a_line_in_the_reference(path: str, cmd: click.Command
                                                            ) -> None:
    assert (cmd.help or "").strip(), f"`avmigrate {path}` has no help text"
    documented = reference_lines()
    if isinstance(cmd, click.Group) and path:
        # A group is documented by its subcommands' lines.
        assert any(p.startswith(path + " ") for p in documented), (
            f"no `avmigrate {path} ...` line in the README's Reference section")
        return
    assert path in documented, (
        f"`avmigrate {path}` is missing from the README's Reference section; add its "
        f"synopsis (see `avmigrate {path} --help`)")


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[p or "avmigrate" for p, _ in COMMANDS])
def test_every_documented_option_exists(path: str, cmd: click.Command) -> None:
    synopsis = reference_lines().get(path, "")
    options = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
    for written in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", synopsis):
        assert written in options, (
            f"the README's synopsis of `avmigrate {path}` names {written}, which it does not "
            f"take (it takes {sorted(options)})")


def test_every_reference_line_names_a_command() -> None:
    commands = {path for path, _ in COMMANDS}
    root = {path.split()[0] for path in commands if path}
    for path in reference_lines():
        if path and path.split()[0] in OPTIONAL_GROUPS - root:
            continue  # that group is not attached to this CLI
        assert path in commands, (
            f"the README's Reference section documents `avmigrate {path}`, which is no command")


def test_the_exit_code_table_lists_exactly_the_exit_codes() -> None:
    rows = [line for line in section(README.read_text(), "Exit codes").splitlines()
            if line.startswith("|")]
    codes = [cell.split("|")[1].strip() for cell in rows]
    assert codes[:2] == ["code", "---"], f"the exit-code table's header changed: {rows[:2]}"
    listed = [int(code) for code in codes[2:]]
    assert len(listed) == len(set(listed)), f"an exit code is listed twice: {listed}"
    expected = {member.value: member.name for member in ExitCode}
    assert set(listed) == set(expected), (
        f"README lists exit codes {sorted(listed)}; ExitCode has {expected}: "
        f"missing {sorted(set(expected) - set(listed))}, "
        f"not an ExitCode {sorted(set(listed) - set(expected))}")
