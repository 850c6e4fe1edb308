"""The engine's modules import each other in one direction only: no import circles in core/.

Lazy imports inside functions count too: a circle that only closes at run time still couples the
modules both ways (backends.py and the two backends once did).
"""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"


def _core_imports(path: Path) -> set:
    """The core modules `path` imports (relative `from .x import` and `from . import x`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("sar_cloud_removal.core."):
            names.add(node.module.split(".")[2])
    return {name for name in names if (CORE / f"{name}.py").is_file()}


def _cycle(graph: dict):
    """One import circle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_core_has_no_import_circle():
    graph = {path.stem: _core_imports(path) for path in CORE.glob("*.py")}
    assert graph["backend_onnx"] == {"backend_base", "errors", "runtime_packages"}
    assert "backends" not in graph["backend_torch"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_sees_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
