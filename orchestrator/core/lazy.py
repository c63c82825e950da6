"""Modules loaded on their first use, so that cheap commands skip the heavy imports."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def lazy(name: str) -> Any:
    """A module loaded on its first use: `status`, `--help` and bad input need none of the
    heavy ones (Ansible, paramiko, jinja2), and start in a fraction of the time.

    Give every alias made with it an `if TYPE_CHECKING:` import of the same module, so that
    mypy types its calls and import-linter sees the edge (tests/unit/core/test_lazy.py)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - our own modules
        raise ImportError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
