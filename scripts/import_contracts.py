"""import-linter contract types for this repo's flat layout, so that the stock `lint-imports` checks the house's
import rules (`.importlinter`):

    lint-imports                      # from the repo root; exit 0 when every contract holds

import-linter builds its import graph with grimp, which scans packages only, and this repository is flat: one
top-level module per role. The contract types below are import-linter's own `forbidden` and `layers`
contracts, checked against the graph of those top-level modules instead: one node per `*.py` beside this
folder, one edge per import of another of them (found with `ast`, at any depth: an import inside a function
counts too, marked lazy). `.importlinter` names `scripts` as its root package only so that the stock command
starts; that graph is not used.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import grimp
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

REPO = Path(__file__).resolve().parent.parent


def imported_names(node: ast.AST) -> list[str]:
    """Top-level module names an Import / ImportFrom statement brings in (relative imports: none here)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


@functools.cache
def top_level_graph(root: Path = REPO) -> grimp.ImportGraph:
    """The import graph of the top-level modules in root."""
    modules = sorted(p.stem for p in root.glob("*.py"))
    graph = grimp.ImportGraph()
    for module in modules:
        graph.add_module(module)
    for module in modules:
        source = (root / f"{module}.py").read_text(encoding="utf-8")
        tree = ast.parse(source)
        top_level, lines = {id(node) for node in tree.body}, source.splitlines()
        for node in ast.walk(tree):
            for imported in imported_names(node):
                if imported in modules and imported != module:
                    graph.add_import(importer=module, imported=imported, line_number=node.lineno,
                                     line_contents=lines[node.lineno - 1].strip(), is_lazy=id(node) not in top_level)
    return graph


class TopLevelForbiddenContract(ForbiddenContract):
    """import-linter's `forbidden` contract over the top-level modules."""

    def check(self, graph, verbose):
        return super().check(top_level_graph(), verbose)


class TopLevelLayersContract(LayersContract):
    """import-linter's `layers` contract over the top-level modules."""

    def check(self, graph, verbose):
        return super().check(top_level_graph(), verbose)
