"""The package's layout: layers that import only downward, and no import cycles.

`import_graph` holds the imports that run when a module is imported (module level,
try/except and if-blocks, not `if TYPE_CHECKING:`); `import_graph(all_depths=True)` every import
statement, inside functions included, since a lazy import still ties the two modules together.
Both must be free of cycles, and the second must respect `RANKS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kstruct", "tflite_export")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]):
    """The import statements executed when the module body runs (functions and classes' methods excluded)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _import_time_statements(node.body)


def _imported(module: str, path: Path, node: ast.stmt, modules: dict[str, Path]) -> set[str]:
    """The package modules `node` imports: `from a import b` names `a.b` when that is a module."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    own_packages = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are this module's own packages.
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own_packages
    return found


def _every_import(tree: ast.Module):
    """Every import statement of a module, inside functions and `if TYPE_CHECKING:` included."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph(all_depths: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports: at import time, or with `all_depths` anywhere."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        statements = _every_import(tree) if all_depths else _import_time_statements(tree.body)
        graph[module] = set().union(*(_imported(module, path, node, modules) for node in statements)) - {""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_relative_and_from_imports():
    graph = import_graph()
    assert "kstruct.cli.optimize" in graph["kstruct.cli"]
    assert "kstruct.cli._usage" in graph["kstruct.cli._files"]
    assert "tflite_export.analyze" in graph["tflite_export"]
    assert "kstruct.pruning.prune" in graph["kstruct.pruning.step"]
    assert "kstruct.pruning" not in graph["kstruct.pruning.step"]  # its own package is already importing
    assert "kstruct.search" not in graph["kstruct.cli.search"]  # imported inside run(): lazy, not counted


def test_importing_a_submodule_counts_its_parent_packages():
    node = ast.parse("from kstruct.pruning.prune import prune").body[0]
    modules = _modules()
    assert _imported("kstruct.report.measure", Path("kstruct/measure.py"), node, modules) == {
        "kstruct.pruning", "kstruct.pruning.prune"  # kstruct itself is measure's own package
    }
    relative = ast.parse("from . import masks").body[0]
    assert _imported("kstruct.pruning.prune", Path("kstruct/pruning/prune.py"), relative, modules) == {
        "kstruct.pruning.masks"
    }


def test_no_import_cycles_among_the_package_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycles_counting_imports_inside_functions_and_type_checking_blocks():
    assert cycles(import_graph(all_depths=True)) == []


def test_tflite_export_never_imports_kstruct():
    graph = import_graph()
    assert [m for m in graph if m.startswith("tflite_export") and any(t.startswith("kstruct") for t in graph[m])] == []


# Layers, bottom to top (../docs/architecture.md). A module imports only from its own rank or below,
# counting imports inside functions too (they run the same code, later); techniques never import each other.
RANKS = (
    ("tflite_export",),
    ("kstruct.errors", "kstruct.outputs", "kstruct.data", "kstruct.models", "kstruct._keras_objects", "kstruct.loading"),
    ("kstruct._graph",),
    ("kstruct.engine",),
    ("kstruct.pruning", "kstruct.quantization", "kstruct.clustering", "kstruct.distillation", "kstruct.factorize",
     "kstruct.search"),
    ("kstruct.strategy",),
    ("kstruct.report", "kstruct.plots"),
    ("kstruct.auto",),
    ("kstruct.pipeline",),
    ("kstruct.cli",),
)
TECHNIQUES = RANKS[4]


def _home(module: str) -> tuple[int, str] | None:
    """(rank, layer) of a module: the longest layer name it falls under."""
    best = None
    for rank, layers in enumerate(RANKS):
        for layer in layers:
            if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best[1])):
                best = (rank, layer)
    return best


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "kstruct" and _home(m) is None] == []


def test_no_module_imports_a_higher_layer_or_another_technique_at_any_depth():
    upward = []
    for module, targets in import_graph(all_depths=True).items():
        if module == "kstruct":  # the package's lazy public names point at every layer by design
            continue
        rank, layer = _home(module)
        for target in sorted(targets - {"kstruct"}):
            target_rank, target_layer = _home(target)
            if target_rank > rank or (layer in TECHNIQUES and target_layer in TECHNIQUES and target_layer != layer):
                upward.append(f"{module} -> {target}")
    assert upward == []
