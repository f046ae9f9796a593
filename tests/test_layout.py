"""The package's shape: imports flow one way, bottom to top, with no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import imgclf

PACKAGE = Path(imgclf.__file__).parent

# Bottom to top: a module may import its own floor and the floors below, never one above.
FLOORS = (
    ("files",),
    ("config",),
    ("devices", "caches", "data", "wheels"),
    ("models",),
    ("runs",),
    ("deploy",),
    ("evaluation",),
    ("training",),
    ("audit", "demo"),
    ("serve",),
    ("studio",),
    ("cli", "__main__", "__init__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    return next(number for number, names in enumerate(FLOORS) if top in names)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imgclf_imports(path: Path) -> set[str]:
    """The imgclf modules `path` imports anywhere (inside functions too), except under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imgclf":
            base = node.module.removeprefix("imgclf").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in MODULES else base or "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("imgclf.") for a in node.names if a.name.startswith("imgclf."))
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name}


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imgclf_imports(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_floor():
    assert [name for name in MODULES if not any(name.split(".")[0] in names for names in FLOORS)] == []


def test_no_module_imports_from_a_floor_above_its_own():
    upward = [
        f"{module} imports {imported}"
        for module, imports in GRAPH.items()
        for imported in imports
        if floor_of(imported) > floor_of(module)
    ]
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as a list of modules (first = last), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], path[len(path) :] = "open", [module]
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported) :] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(GRAPH) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"data": {"runs"}, "runs": {"export"}, "export": {"data"}}) == ["data", "runs", "export", "data"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
# Functions that are nothing but one argparse option table: one `add_argument` call per option reads better in a
# column than spread over helpers. Only such tables belong here.
OPTION_TABLES = {"cli.parser._add_training_options"}


def function_lengths(path: Path) -> dict[str, int]:
    """Every function of `path` (nested and methods too) by qualified name: the lines after its `def` line."""
    lengths: dict[str, int] = {}
    pending = [(node, "") for node in ast.parse(path.read_text()).body]
    while pending:
        node, prefix = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            prefix = f"{prefix}.{node.name}"
            if not isinstance(node, ast.ClassDef):
                lengths[prefix.lstrip(".")] = node.end_lineno - node.lineno
        pending.extend((child, prefix) for child in ast.iter_child_nodes(node))
    return lengths


def test_no_module_is_over_450_lines():
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: count for name, count in lines.items() if count > MAX_MODULE_LINES} == {}


def test_no_function_is_over_60_lines():
    long = {
        f"{module}.{function}": length
        for module, path in MODULES.items()
        for function, length in function_lengths(path).items()
        if length > MAX_FUNCTION_LINES and f"{module}.{function}" not in OPTION_TABLES
    }
    assert long == {}


def test_function_lengths_count_nested_functions_and_methods(tmp_path):
    source = tmp_path / "sample.py"
    body = "\n".join(f"        x{i} = {i}" for i in range(61))
    source.write_text(f"class A:\n    def method(self):\n        pass\n\n\ndef outer():\n    def inner():\n{body}\n")
    assert function_lengths(source) == {"A.method": 1, "outer": 62, "outer.inner": 61}
