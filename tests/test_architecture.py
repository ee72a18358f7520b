"""The package's structure: no import cycle, a torch-free options module, a repository that stands alone."""

import ast
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "onepfrac"


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules: set[str]) -> set[str]:
    """Every onepfrac module `path` imports, at module level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from onepfrac.train import data` imports the submodule onepfrac.train.data
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def test_the_graph_sees_lazy_imports_inside_functions():
    graph = import_graph()
    assert "onepfrac.datasets.onthefly" in graph["onepfrac.train.data"]  # imported inside RenderedDataset


def test_no_import_cycle_inside_the_package_counting_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_package_modules_below_import_nothing_above_them():
    graph = import_graph()
    for low in ("onepfrac.ifs", "onepfrac.render", "onepfrac.png", "onepfrac.errors", "onepfrac.cores"):
        assert not {m for m in graph[low] if m.startswith(("onepfrac.train", "onepfrac.generate", "onepfrac.sweep"))}, low
    for name, imported in graph.items():
        if name.startswith("onepfrac.datasets"):
            assert not {m for m in imported if m.startswith(("onepfrac.train", "onepfrac.generate"))}, name
        if name.startswith("onepfrac.train"):
            assert "onepfrac.generate" not in imported, name


def test_the_trainers_options_load_without_torch():
    code = "import sys, onepfrac.train.options; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_no_file_of_the_repository_points_outside_it():
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        import pytest

        pytest.skip("not a git checkout")
    outside = "../" + "shared"  # written in two pieces so that this file does not match itself
    offenders = [name for name in listed.stdout.splitlines()
                 if (REPO / name).is_file() and outside in (REPO / name).read_text(errors="ignore")]
    assert offenders == []
