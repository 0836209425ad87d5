"""fjord's import graph, read from the source with ``ast``: no import cycle, and the layer
rules of docs/architecture.md.

Every ``import`` counts, at module level and inside functions (a function-level import
is still a dependency; it only moves the moment it runs), with relative imports
resolved. Imports under ``if TYPE_CHECKING:`` count too: a cycle of annotations only
still means two modules that cannot be understood (or moved) one without the other.
``from fjord.x import name`` counts as an import of ``fjord.x.name`` when that is a
module, else of ``fjord.x``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import fjord

SRC = Path(fjord.__file__).resolve().parent

# Cycles that are known and about to go (none now). Each entry is a set of modules that
# may form one strongly connected component.
ALLOWED_CYCLES: list[frozenset[str]] = []

# The command modules: they parse, call and print; nothing but themselves imports them.
# cli loads the others by module path when their group is used (not an import the graph
# sees: no cycle), and they take cli's shared options (-c, --json, require_root). The
# manual page is written from cli's click definitions; __main__ runs cli.
COMMANDS = {"fjord.cli", "fjord.commands", "fjord.commands.container", "fjord.commands.image",
            "fjord.commands.lab"}
COMMAND_IMPORTERS = COMMANDS | {"fjord.manpage", "fjord.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules
                       else prefix for alias in node.names]
        for target in targets:
            # The deepest fjord module the name is in (`import fjord.a.b` imports fjord.a.b).
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("fjord") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return sorted(found)


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, for the message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return component


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    assert "fjord.errors" in graph["fjord.runner"]
    # cli loads the container commands inside a function, by module path.
    assert graph["fjord.engine.plan"], "relative imports resolved"


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(a_cycle(graph, c)) + (f"  (component: {', '.join(c)})" if len(c) > 2
                                          else "")
        for c in cycles)


def test_nothing_imports_the_command_modules() -> None:
    graph = import_graph()
    assert COMMANDS <= graph.keys()
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items()
                   for target in targets & COMMANDS if name not in COMMAND_IMPORTERS)
    assert not wrong, wrong


def test_the_commands_are_in_one_place() -> None:
    """Command modules are fjord.cli and fjord.commands.*: every module under
    fjord.commands is one, and no other module but the manual page (written from the
    click definitions) and --host (which walks them to forward a command) uses click."""
    graph = import_graph()
    assert {n for n in graph if n.startswith("fjord.commands")} == COMMANDS - {"fjord.cli"}
    clicking = {name for name, path in all_modules().items()
                if any(isinstance(node, ast.Import) and "click" in {a.name for a in node.names}
                       or isinstance(node, ast.ImportFrom) and node.module == "click"
                       for node in _imports(ast.parse(path.read_text())))}
    assert clicking - COMMANDS == {"fjord.manpage", "fjord.remote"}, clicking


def test_lower_layers_do_not_import_higher_ones() -> None:
    graph = import_graph()
    rules = {
        # the bottom: nothing of fjord but errors
        "fjord.errors": {"fjord"},
        "fjord.runner": {"fjord", "fjord.errors"},
        # the run's environment, built at the command-line edge: below every layer
        "fjord.environment": {"fjord", "fjord.errors"},
        # config turns the file into Desired: it knows no resource, driver or engine, and
        # reads nothing but the file (what the host holds, fjord.state, is an argument)
        "fjord.config": {"fjord", "fjord.errors", "fjord.config"},
        # the state layer: fjord's files under /var/lib/fjord (the allocations, the
        # containers' records); fjord.state.known reads what the desired state needs
        "fjord.state": {"fjord", "fjord.errors", "fjord.state", "fjord.environment",
                        "fjord.config"},
        # the engine: Resource, Change, order, plan, apply
        "fjord.engine": {"fjord", "fjord.errors", "fjord.state", "fjord.config",
                         "fjord.engine", "fjord.ui", "fjord.runner", "fjord.environment"},
    }
    wrong = []
    for name, targets in sorted(graph.items()):
        for layer, allowed in rules.items():
            if name == layer or name.startswith(layer + "."):
                for target in sorted(targets):
                    if not any(target == a or target.startswith(a + ".") for a in allowed
                               if a != "fjord") and target != "fjord":
                        wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_lazy_command_groups_name_modules_that_exist() -> None:
    """cli registers its sub-groups by module path (a string no import checks)."""
    import importlib

    import click

    from fjord.cli import LAZY_GROUPS

    for name, (module, attr, _) in LAZY_GROUPS.items():
        assert isinstance(getattr(importlib.import_module(module), attr), click.Group), name
