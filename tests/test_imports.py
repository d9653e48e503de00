"""The package's import structure: every module imports on its own, and no two modules import
each other, directly or through others (a circle makes the import order matter and ties modules
that should be read apart).

Edges are read from the source (``ast``), module-level and function-level imports alike; imports
under ``if TYPE_CHECKING:`` (annotations only) are not edges. A package's ``__init__`` only hands
names on, so ``from .. import fit`` is an edge to the module that defines ``fit``
(``jaxfactor._fit``), not to the package."""

import ast
import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxfactor"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
PACKAGES = {name for name, p in MODULES.items() if p.name == "__init__.py"}


def _resolve(current: str, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if current in PACKAGES else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(node) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str):
    """(target module, imported names or None) of every runtime import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for child in node.body for n in ast.walk(child)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            yield _resolve(name, node.level, node.module), [a.name for a in node.names]


def _origin(package: str, attr: str, seen=()) -> str | None:
    """The module that defines what ``package.__init__`` hands on as ``attr``."""
    if f"{package}.{attr}" in MODULES:
        return f"{package}.{attr}"
    for target, names in _imports(package):
        if names and attr in names and target in MODULES and (target, attr) not in seen:
            return _origin(target, attr, seen + ((target, attr),)) if target in PACKAGES else target
    return None


def _graph():
    edges = {name: set() for name in MODULES if name not in PACKAGES}
    for name in edges:
        for target, names in _imports(name):
            if target not in MODULES:
                continue
            if target not in PACKAGES:
                edges[name].add(target)
                continue
            for attr in names or ():
                origin = _origin(target, attr)
                if origin and origin not in PACKAGES:
                    edges[name].add(origin)
    for name in edges:
        edges[name].discard(name)
    return edges


def _circles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    edges = _graph()
    assert sum(len(t) for t in edges.values()) > 50  # the reader sees the package's imports
    circles = _circles(edges)
    assert not circles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_reader_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "jaxfactor.__main__"))
def test_every_module_imports_on_its_own(name):
    saved = {k: v for k, v in sys.modules.items() if k == "jaxfactor" or k.startswith("jaxfactor.")}
    for k in saved:
        del sys.modules[k]
    try:
        importlib.import_module(name)
    finally:
        for k in [k for k in sys.modules if k == "jaxfactor" or k.startswith("jaxfactor.")]:
            del sys.modules[k]
        sys.modules.update(saved)
