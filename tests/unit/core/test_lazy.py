"""A lazy import is an import: no module loads a layer above its own, nor the lab, lazily, and
each lazy alias is also imported under TYPE_CHECKING so mypy and import-linter see it."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from orchestrator.core.lazy import lazy

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "orchestrator"


def _layers() -> list[str]:
    """The layers, top first, as the import-linter contract in pyproject.toml lists them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c["layers"] for c in contracts if c["type"] == "layers")


def _layer_of(module: str, layers: list[str]) -> int | None:
    return next((i for i, layer in enumerate(layers)
                 if module == layer or module.startswith(layer + ".")), None)


def _lazy_calls(tree: ast.Module) -> list[tuple[int, str]]:
    return [(node.lineno, node.args[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "lazy" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def _type_checking_imports(tree: ast.Module) -> set[str]:
    """The modules imported under `if TYPE_CHECKING:` (`from a import b` counts a.b too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module:
                found.add(stmt.module)
                found.update(f"{stmt.module}.{alias.name}" for alias in stmt.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _production_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts)


def test_the_layers_are_read_from_pyproject() -> None:
    layers = _layers()
    assert layers[0] == "orchestrator.cli" and layers[-1] == "orchestrator.core"


def test_no_module_lazily_imports_a_layer_above_its_own_or_the_lab() -> None:
    layers = _layers()
    wrong = []
    for path in _production_files():
        module = _module_name(path)
        own = _layer_of(module, layers)
        for line, target in _lazy_calls(ast.parse(path.read_text(), str(path))):
            theirs = _layer_of(target, layers)
            if target.startswith("orchestrator.lab") or (
                    own is not None and theirs is not None and theirs < own):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} -> {target}")
    assert not wrong, "lazy imports against the layers:\n" + "\n".join(wrong)


def test_every_lazy_alias_is_also_imported_for_type_checking() -> None:
    missing = []
    for path in _production_files():
        tree = ast.parse(path.read_text(), str(path))
        typed = _type_checking_imports(tree)
        missing += [f"{path.relative_to(ROOT)}:{line}: {target}"
                    for line, target in _lazy_calls(tree) if target not in typed]
    assert not missing, "lazy() without a TYPE_CHECKING import:\n" + "\n".join(missing)


def test_the_scan_finds_the_lazy_imports() -> None:
    """The checks above are not vacuous: the api and the cli do import lazily."""
    calls = {target for path in _production_files()
             for _, target in _lazy_calls(ast.parse(path.read_text()))}
    assert {"orchestrator.report.render", "orchestrator.engine.session"} <= calls


def test_a_lazy_module_loads_on_first_use() -> None:
    name = "orchestrator.core.classify"
    saved = sys.modules.pop(name, None)
    try:
        module = lazy(name)
        assert sys.modules[name] is module
        assert lazy(name) is module  # the same module, once
        assert callable(module.in_doubt)  # its body runs on this first attribute
    finally:
        if saved is not None:
            sys.modules[name] = saved
