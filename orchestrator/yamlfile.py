"""Read a YAML data file (or a built-in one) with errors that name the file and the line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import AvmigrateError


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
