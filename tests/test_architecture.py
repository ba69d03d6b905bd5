"""The house: bertkit's packages by stage, each importing only from the floors below it. Every
import counts — module level and inside functions (`TYPE_CHECKING` blocks aside) — so neither a
cycle nor an arrow running back up can hide in a function body."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bertkit"

# Lowest first. A package imports its own modules and those of lower floors; packages on one
# floor do not import each other. Root modules (errors, options; fileio, runtime, hub) are the ground floors;
# `bertkit/__init__.py` (the public API) and `__main__` stand above the house.
FLOORS: list[tuple[str, ...]] = [
    ("bertkit.errors", "bertkit.options"),
    ("bertkit.fileio", "bertkit.runtime", "bertkit.hub"),
    ("bertkit.tokenization",),
    ("bertkit.data", "bertkit.models", "bertkit.evaluation"),
    ("bertkit.engine",),
    ("bertkit.tasks",),
    ("bertkit.training", "bertkit.inference"),
    ("bertkit.serve",),
    ("bertkit.cli",),
]
ABOVE = ("bertkit", "bertkit.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """The bertkit modules `name` imports anywhere in its source (a name imported from a package
    counts as the submodule when it is one)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: imports_of(m) for m in MODULES}


def floor_of(module: str) -> tuple[int, str] | None:
    """(floor, package) of a module; None for the public API above the house."""
    if module in ABOVE:
        return None
    for level, packages in enumerate(FLOORS):
        for pkg in packages:
            if module == pkg or module.startswith(pkg + "."):
                return level, pkg
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def test_every_module_is_on_a_floor():
    for m in MODULES:
        floor_of(m)


def test_no_import_cycle_even_inside_functions():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                cycle = path[path.index(d) :] if d in path else path
                pytest.fail("import cycle: " + " -> ".join([*cycle, d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    # loading a task from a directory is the registry's: neither side needs the other
    assert "bertkit.training.finetune" not in GRAPH["bertkit.inference.pipelines"]
    assert "bertkit.inference.pipelines" not in GRAPH["bertkit.training.finetune"]


def test_imports_follow_the_floors():
    wrong = []
    for m, deps in sorted(GRAPH.items()):
        here = floor_of(m)
        for d in sorted(deps):
            there = floor_of(d)
            if here is None or there is None:
                wrong += [f"{m} -> {d}"] if there is None and here is not None else []
                continue
            if there[1] != here[1] and there[0] >= here[0]:
                wrong.append(f"{m} (floor {here[0]}) -> {d} (floor {there[0]})")
    assert not wrong, "imports against the package order:\n" + "\n".join(wrong)


def test_every_package_says_what_it_owns():
    packages = [p for floor in FLOORS for p in floor if MODULES[p].name == "__init__.py"]
    assert len(packages) >= 9
    for pkg in packages:
        doc = ast.get_docstring(ast.parse(MODULES[pkg].read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 20 and "import" in doc, f"{pkg}/__init__.py: say what it owns and imports"
