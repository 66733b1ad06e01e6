"""The import structure of src/reslab, read statically (ast, nothing imported): no module
imports itself back through others, each layer imports only the layers below it, and using a
trained model needs nothing of the training package.

Every ``import`` counts, those inside functions too: an import put off until first use is
still an arrow. Only imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first: a module may import its own layer and those before it, never one after
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("reslab", "reslab.errors", "reslab.io", "reslab.paths", "reslab.limits",
              "reslab.settings",
              "reslab.tables", "reslab.memory", "reslab.zoo_figures",
              "reslab.zoo_figures_table")),
    ("models", ("reslab.models",)),
    ("data", ("reslab.data",)),
    ("runtime", ("reslab.runtime", "reslab.inference")),
    ("training", ("reslab.training",)),
    ("applications", ("reslab.experiments", "reslab.deploy", "reslab.export", "reslab.grow",
                      "reslab.hub", "reslab.model_card", "reslab.trained")),
    ("cli", ("reslab.cli", "reslab.__main__")),
]
# what a user of a trained model runs: none of it may need the training package
USING_A_MODEL = ("reslab.inference", "reslab.export", "reslab.deploy", "reslab.grow",
                 "reslab.trained", "reslab.hub")
# and beyond those, only what runs training imports it (the public reslab.train and fit are
# looked up by name on first use, in reslab/__init__.py)
RUNS_TRAINING = ("reslab.training", "reslab.experiments", "reslab.cli")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "reslab").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(module: str) -> dict[str, int]:
    """The reslab modules ``module`` imports, each with the line of its first import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from reslab import memory` imports the module reslab.memory
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member != "reslab" and module.startswith(member + ".")):
                return index
    return None


def _where(source: str, target: str) -> str:
    return f"{MODULES[source].relative_to(SRC)}:{GRAPH[source][target]} imports {target}"


def _cycles() -> list[list[str]]:
    """The shortest cycle through each module that is on one, each cycle once: the groups of
    modules that reach each other are found first (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    cycles: dict[frozenset, list[str]] = {}
    for group in groups:
        for start in sorted(group):
            cycle = _cycle_through(start, group)
            cycles.setdefault(frozenset(zip(cycle, cycle[1:], strict=False)), cycle)
    return list(cycles.values())


def _cycle_through(start: str, group: set[str]) -> list[str]:
    """The shortest way from ``start`` back to itself within its group (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(GRAPH[node]):
                if target == start:
                    return paths[node] + [start]
                if target in group and target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {group}")


def test_the_graph_is_read():
    # a reader that found no arrows would pass every test below
    assert len(MODULES) > 50 and sum(map(len, GRAPH.values())) > 200
    assert "reslab.models.spec" in GRAPH["reslab.models.build"]


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(cycle) + "\n    " + "\n    ".join(_where(a, b) for a, b in
                                                    zip(cycle, cycle[1:], strict=False))
        for cycle in cycles)


def test_no_module_imports_a_higher_layer():
    upward = [f"{_where(source, target)} ({LAYERS[_layer(source)][0]} -> "
              f"{LAYERS[_layer(target)][0]})"
              for source in sorted(GRAPH) for target in sorted(GRAPH[source])
              if _layer(source) is not None and _layer(target) is not None
              and _layer(target) > _layer(source)]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", USING_A_MODEL)
def test_using_a_trained_model_needs_no_training_package(module):
    assert [_where(module, t) for t in sorted(GRAPH[module])
            if t == "reslab.training" or t.startswith("reslab.training.")] == []


def test_only_training_experiments_and_the_cli_import_training():
    assert [_where(source, target) for source in sorted(GRAPH) for target in GRAPH[source]
            if _layer(target) == _layer("reslab.training")
            and not any(source == m or source.startswith(m + ".") for m in RUNS_TRAINING)] == []


def test_the_spec_is_plain_data():
    # a spec's names are looked up where the registries are (models.build.check_names): the
    # spec imports only its own choices from models, never a module that builds layers
    spec = "reslab.models.spec"
    assert [_where(spec, t) for t in sorted(GRAPH[spec])
            if t.startswith("reslab.models.") and t != "reslab.models.choices"] == []


def test_fit_reads_on_one_screen():
    # fit says the order of a run (set up, epochs, test); each job lives where it belongs
    tree = ast.parse(MODULES["reslab.training.loop"].read_text())
    fit = next(node for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= 60
