"""Read a YAML data file (or a built-in one) with errors that name the file and the line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.errors import AvmigrateError


def load_yaml(path: Path | None, builtin: tuple[str, str, str], error: type[AvmigrateError]
              ) -> tuple[Any, str]:
    """Return (data, source name). `builtin` is (package, resource path, name) for path None."""
    if path is None:
        package, resource, source = builtin
        text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text), source
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise error(f"{source}{where}: not valid YAML; fix the syntax") from exc
    except ValueError as exc:  # a value YAML reads as a date or time that cannot exist
        raise error(f"{source}{bad_value_line(text)}: {exc}: a date or time that does not "
                    "exist; fix the value") from exc


def bad_value_line(text: str) -> str:
    """':LINE' of the first scalar YAML cannot turn into a value (e.g. 2026-12-37), or ''."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop(0)
        if isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(node)
            except ValueError:
                return f":{node.start_mark.line + 1}"
    return ""


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line number (1-based) of every key and list item, by its path, for error messages."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                sub = (*path, index)
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        lines[()] = root.start_mark.line + 1
        walk(root, ())
    return lines


def load_yaml_located(path: Path, error: type[AvmigrateError]
                      ) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """Like load_yaml for a user's file, also returning where each key is."""
    data, _ = load_yaml(path, ("", "", ""), error)
    return data, key_lines(path.read_text(encoding="utf-8"))
