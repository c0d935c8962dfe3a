"""Check the house's import rules (`.importlinter` at the repo root) with import-linter.

    python scripts/lint_imports.py             # exit 0 when every contract holds, 1 when one is broken
    python scripts/lint_imports.py --root DIR  # another checkout (the tests lint a deliberately broken copy)

import-linter builds its import graph with grimp, which scans packages only; this repository is flat, one
top-level module per role. So this script builds the same graph itself, one node per top-level `*.py` and
one edge per import of another top-level module (found with `ast`, at any depth: an import inside a
function counts too, marked lazy), and hands it to import-linter, which reads the contracts and checks them
as it always does. The modules of the graph are the `root_packages` of `.importlinter`.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import grimp
from importlinter import configuration
from importlinter.application import use_cases
from importlinter.application.app_config import settings
from importlinter.application.ports.building import GraphBuilder

REPO = Path(__file__).resolve().parent.parent


def imported_names(node: ast.AST) -> list[str]:
    """Top-level module names an Import / ImportFrom statement brings in (relative imports: none here)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def module_imports(path: Path) -> list[tuple[str, int, str, bool]]:
    """(imported module, line, line text, inside a function?) for every import statement of a file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        for name in imported_names(node):
            out.append((name, node.lineno, lines[node.lineno - 1].strip(), id(node) not in top_level))
    return out


class TopLevelModulesGraphBuilder(GraphBuilder):
    """The import graph of the top-level modules in `root` (root_packages names them)."""

    def __init__(self, root: Path):
        self.root = root

    def build(self, root_package_names, cache_dir=None, include_external_packages=False,
              exclude_type_checking_imports=False) -> grimp.ImportGraph:
        modules = set(root_package_names)
        missing = sorted(m for m in modules if not (self.root / f"{m}.py").is_file())
        if missing:
            raise ValueError(f".importlinter names modules that are not files in {self.root}: {missing}")
        graph = grimp.ImportGraph()
        for module in sorted(modules):
            graph.add_module(module)
        for module in sorted(modules):
            for imported, line, text, lazy in module_imports(self.root / f"{module}.py"):
                if imported in modules and imported != module:
                    graph.add_import(importer=module, imported=imported, line_number=line, line_contents=text,
                                     is_lazy=lazy)
        return graph


def lint(root: Path = REPO) -> bool:
    """True when every contract in root/.importlinter holds (import-linter prints its report)."""
    configuration.configure()
    settings.configure(GRAPH_BUILDER=TopLevelModulesGraphBuilder(root))
    # import-linter refuses single-file modules as root packages by looking them up on sys.path (grimp could
    # not scan them); our builder reads the files itself, so the repo must not be importable here.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (root.resolve(), REPO)]
    return use_cases.lint_imports(config_filename=str(root / ".importlinter"), cache_dir=None, no_logo=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO, help="checkout to lint (default: this one)")
    args = p.parse_args(argv)
    sys.exit(0 if lint(args.root.resolve()) else 1)


if __name__ == "__main__":
    main()
