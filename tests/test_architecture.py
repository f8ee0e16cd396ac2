"""The package's shape (issue 28): stages as packages, imports only flow down, no circles, light core, short modules.

The import graph is read from the source (ast), function-level imports included: an import hidden in a function is
still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_indosent"

LAYERS = {
    "core": 0,
    "data": 1,
    "metrics": 1,
    "modeling": 2,
    "inference": 3,
    "sharing": 4,
    "serving": 4,
    "training": 5,
    "experiments": 6,
    "cli": 7,
    "__main__": 7,
    "__init__": 7,
}
TOP = {"cli", "__main__", "__init__"}
"""Bottom to top: a module imports from its own package and from the layers below it, never from above."""

HEAVY = ("torch", "transformers", "datasets", "accelerate")
LIGHT_EXCEPTIONS = {"transformers.HfArgumentParser"}
"""core/ parses arguments through transformers' HfArgumentParser, a light module (no torch: test_model_folder checks
that parsing never imports torch)."""

MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}
"""Modules allowed over MAX_LINES, with the reason."""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "metric_modules" in path.parts:
            continue  # loaded by `evaluate` from its path, not imported
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Every module named by an import in ``path`` (``from a import b`` counts as ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {other for other in imports(path) if other in known and other != name} for name, path in known.items()
    }


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


def test_every_package_has_a_layer():
    for module in modules():
        assert layer(module)[0] in LAYERS, f"{module}: add its package to LAYERS"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = []
    for module, targets in graph().items():
        package, level = layer(module)
        for target in targets:
            target_package, target_level = layer(target)
            same_room = target_package == package or {package, target_package} <= TOP
            if not same_room and target_level >= level and target != "hf_indosent":
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that go up (or sideways between packages of one layer):\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer(m)[0] == "core"))
def test_core_imports_no_heavy_library_at_module_level(module):
    heavy = {
        name
        for name in imports(modules()[module], module_level_only=True)
        if name.split(".")[0] in HEAVY and name not in LIGHT_EXCEPTIONS and f"{name}" != "transformers"
    }
    assert not heavy, f"{module} imports {sorted(heavy)} at module level"


def test_modules_are_short():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES and name not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_sees_function_level_imports():
    """The check is only as good as its graph: an import inside a function counts."""
    assert "hf_indosent.inference.baseline" in graph()["hf_indosent.inference.predictor"]
