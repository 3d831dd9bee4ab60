"""The layers of ``store/`` (see the README's layout): which part may import which, no import
cycles, a small top level, and a jobs layer that uses only what the store declares."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from tests.conftest import REPO

STORE = REPO / "store"
SUBPACKAGES = {"format", "inputs", "io", "table", "tiers"}
VERBS = {"writer", "reader", "features", "arrays"}
BELOW_VERBS = {"tiers", "table", "io", "format", "inputs", "errors", "config"}
# What each part of the store may import besides itself (a subpackage's modules import each other).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "endpoint_file": set(),
    "config": {"endpoint_file", "errors"},
    "format": {"errors"},
    "io": {"config", "endpoint_file", "errors"},
    "inputs": {"format", "errors"},
    "table": {"format", "io", "errors"},
    "tiers": {"table", "io", "format", "errors"},
    **{verb: BELOW_VERBS for verb in VERBS},
    "client": BELOW_VERBS | VERBS,
    "__init__": BELOW_VERBS | VERBS | {"client"},
}
MAX_TOP_MODULES = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The part of the store a module belongs to: its subpackage, or its own top-level name."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _imports(path: Path, *, runtime_only: bool = False) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every ``store`` import in ``path`` (``from m import names``;
    ``import m`` has no names). ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                and node.module.split(".")[0] == "store"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "store"]
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import statement loads: ``from store.format import keys`` loads
    ``store.format.keys`` (a submodule), ``from store.format.keys import X`` the module itself."""
    out = []
    for name in names or [""]:
        sub = f"{module}.{name}" if name else module
        out.append(sub if (STORE.parent / (sub.replace(".", "/") + ".py")).exists() else module)
    return out


def _store_modules() -> list[Path]:
    return sorted(p for p in STORE.rglob("*.py"))


def test_each_part_of_the_store_imports_only_the_layers_below_it() -> None:
    broken = []
    for path in _store_modules():
        module = _module_name(path)
        mine = _part(module)
        for imported, names, line in _imports(path):
            for target in _targets(imported, names):
                theirs = _part(target)
                if theirs != mine and theirs not in ALLOWED[mine]:
                    broken.append(f"{path.relative_to(REPO)}:{line}: {mine} imports {target}")
    assert not broken, "layer rules broken:\n" + "\n".join(broken)


def test_the_verbs_never_import_each_other() -> None:
    found = [f"{verb} imports {target}" for verb in VERBS for imported, names, _ in _imports(STORE / f"{verb}.py")
             for target in _targets(imported, names) if _part(target) in VERBS - {verb}]
    assert not found


def test_the_store_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in _store_modules():
        module = _module_name(path)
        graph[module] = {t for imported, names, _ in _imports(path, runtime_only=True)
                         for t in _targets(imported, names) if t != module}
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package's __init__ loading its own modules is not a cycle
            if state.get(nxt) == 1:
                cycle.extend([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if state.get(module) is None and visit(module, [module]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_top_level_is_small_and_each_subpackage_declares_its_api() -> None:
    top = [p.stem for p in STORE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)
    assert {p.name for p in STORE.iterdir() if (p / "__init__.py").exists()} == SUBPACKAGES
    for name in SUBPACKAGES:
        package = importlib.import_module(f"store.{name}")
        assert package.__all__ and all(hasattr(package, n) for n in package.__all__), name


def test_the_jobs_use_only_what_the_store_declares() -> None:
    """``ray_jobs`` imports ``store``'s public names and its modules' ``__all__``; no private
    name, no handle, no connection pool."""
    broken = []
    for path in sorted((REPO / "ray_jobs").rglob("*.py")):
        text = path.read_text()
        for imported, names, line in _imports(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if not names:
                broken.append(f"{where}: import {imported}")
                continue
            declared = getattr(importlib.import_module(imported), "__all__", None)
            if declared is None:
                broken.append(f"{where}: {imported} declares no __all__")
                continue
            broken += [f"{where}: {imported}.{n} is not declared" for n in names if n not in declared]
        broken += [f"{path.relative_to(REPO)}: reaches into .{m.group(1)}"
                   for m in re.finditer(r"\.(handle|pool)\b", text)]
    assert not broken, "\n".join(broken)
