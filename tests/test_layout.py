"""The house rules of the code base, checked on its source (AST only: nothing is imported or started).

- small modules and short functions (style.md: about 50 lines a function; 400 a module);
- the planes stay apart: `trainables/` never imports the orchestrator, Ray or MLflow; Ray is imported only by the
  Ray adapter, MLflow only by the MLflow adapter (and the server launcher);
- no import circle between the project's modules, and no project import hidden inside a function (the usual way
  to dodge one).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainables")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 50
RAY_ADAPTER = {"orchestrator.ray_backend"}
MLFLOW_ADAPTER = {"orchestrator.tracking", "orchestrator.mlflow_server"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


@functools.cache
def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _imported(node: ast.AST, module: str) -> list[str]:
    """Absolute names an import statement brings in (`from x import y` counts as x and x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".")[: -node.level] if not MODULES[module].name == "__init__.py" else module.split(".")
            base = ".".join([*pkg, *([base] if base else [])])
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


@functools.cache
def _project_deps(name: str, *, top_level: bool) -> frozenset[str]:
    """Project modules `name` imports, at module level (outside functions) or inside functions."""
    deps: set[str] = set()
    tree = _tree(name)
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and ((id(node) not in inner) == top_level):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if top_level and _under_type_checking(tree, node):
                continue
            deps |= {m for m in _imported(node, name) if m in MODULES and m != name}
    return frozenset(deps)


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(n is target for n in ast.walk(node)):
                return True
    return False


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_function_sizes(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines (at most {MAX_MODULE_LINES})"
    long = [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines, line {n.lineno})"
        for n in ast.walk(_tree(name))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for d in graph[stack.pop()] - seen:
            seen.add(d)
            stack.append(d)
    return seen


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_level_import_dodges_a_circle(name: str) -> None:
    """A project import inside a function is allowed only where it is not hiding a circle (a CLI that launches
    its server before importing torch, say): the module imported there must not lead back here."""
    graph = {m: _project_deps(m, top_level=True) | _project_deps(m, top_level=False) for m in MODULES}
    dodges = [d for d in sorted(_project_deps(name, top_level=False)) if name in _reach(graph, d)]
    assert not dodges, f"{name} imports {dodges} inside a function, and they import {name} back"


def test_no_import_circle() -> None:
    graph = {m: _project_deps(m, top_level=True) for m in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import circle: " + " -> ".join(path[path.index(d) :] + [d])
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _third_party(name: str) -> set[str]:
    roots = set()
    for node in ast.walk(_tree(name)):
        roots |= {m.split(".")[0] for m in _imported(node, name) if m}
    return roots


@pytest.mark.parametrize("name", sorted(MODULES))
def test_planes_and_adapters(name: str) -> None:
    roots = _third_party(name)
    if name.startswith("trainables"):
        assert not roots & {"orchestrator", "ray", "mlflow"}, f"{name}: the data plane imports {roots}"
    if "ray" in roots:
        assert name in RAY_ADAPTER, f"{name} imports ray: Ray calls belong in {RAY_ADAPTER}"
    if "mlflow" in roots:
        assert name in MLFLOW_ADAPTER, f"{name} imports mlflow: MLflow calls belong in {MLFLOW_ADAPTER}"
