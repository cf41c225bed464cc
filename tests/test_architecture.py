"""The import graph of `src/vitrine`, read from the source with `ast`: no circles between modules, and no package
importing one above it in the layer order. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "vitrine"

# The layer order, lowest first: a package may import only packages of lower layers (and itself).
LAYERS: list[set[str]] = [
    {"errors", "constants"},  # the error hierarchy and the shared names: every layer uses them; they import nothing
    {"vitrine", "failpoints", "config_file", "machine", "disk"},  # `vitrine`: the root package (its __version__)
    {"losses", "data"},
    {"models"},
    {"embed"},
    {"evaluate", "tagging", "index"},
    {"ranking"},
    {"train"},
    {"cir"},
    {"search"},
    {"serve"},
    {"cli"},
    {"__main__", "api"},  # entry points: nothing imports them (the root's lazy re-exports aside, see LAZY_EXPORTS)
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
# The root package's PEP 562 `__getattr__` re-exports the Python API (the top layer) when first asked for: a facade, not
# a
# dependency of the root, which everything imports for __version__. Its imports are checked apart from the graph.
LAZY_EXPORTS = {"vitrine": "__getattr__"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path], lazy: bool = False) -> set[str]:
    """The vitrine modules `name` imports: `from a.b import c` is module a.b.c when that is a module, else a.b.
    Those of its LAZY_EXPORTS function are left out, or, with `lazy`, the only ones read."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exports = [
        ast.walk(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == LAZY_EXPORTS.get(name)
    ]
    exported = {id(node) for nodes in exports for node in nodes}
    for node in ast.walk(tree):
        if (id(node) in exported) != lazy:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    out = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    circles.append(sorted(component))
    return circles


def test_every_package_has_a_layer():
    packages = {_package(module) for module in _modules()}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS"


def test_no_import_circles_between_modules():
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_package_imports_one_above_it_or_beside_it():
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _package(module) != _package(target) and RANK[_package(target)] >= RANK[_package(module)]
    )
    assert wrong == []


def test_the_root_package_imports_nothing_but_lazily_the_api():
    modules = _modules()
    assert _imports("vitrine", modules["vitrine"], modules) == set()
    assert _imports("vitrine", modules["vitrine"], modules, lazy=True) == {"vitrine.api"}
