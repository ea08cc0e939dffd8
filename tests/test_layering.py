"""Dependencies point one way, read from the source and proved by importing.

The AST scan sees every import a module can run, at module level and inside functions (only ``if
TYPE_CHECKING:`` blocks are left out, they never run): packages import only packages below them in ``ORDER``, no
two modules of one package import each other (directly or round a longer loop), and each package's
``pyproject.toml`` declares exactly the workspace packages and third-party distributions its source imports.
Subprocess imports then prove what the scan cannot: importing a package loads nothing above it, the pure
packages and the server process load no native code.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# The declared dependency order, bottom first: a package may import only packages before it.
ORDER = ["hypura_llama", "hypura_hardware", "hypura_placement", "hypura_hub", "hypura_synthetic", "hypura_streaming",
         "hypura_engine", "hypura_server", "hypura"]
PURE = {"hypura_hardware", "hypura_placement", "hypura_hub", "hypura_synthetic"}  # usable without the native build
# Declared but never imported by name, each for a reason the scan cannot see.
RUNTIME_ONLY = {"hypura-llama": {"cffi"}}  # the compiled _native module imports _cffi_backend


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Package:
    dist: str                  # distribution name (pyproject [project].name)
    name: str                  # import name
    src: Path                  # src/<name>
    declared: set[str]         # normalized distribution names of its dependencies
    modules: dict[str, Path] = field(default_factory=dict)   # dotted module name -> file


@cache
def packages() -> dict[str, Package]:
    """Every workspace package by import name, from packages/*/pyproject.toml and its src/ layout."""
    out = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        meta = tomllib.loads(pyproject.read_text())["project"]
        (src,) = [p.parent for p in (pyproject.parent / "src").glob("*/__init__.py")]
        pkg = Package(meta["name"], src.name, src, {_norm(Requirement(r).name) for r in meta.get("dependencies", [])})
        for f in sorted(src.rglob("*.py")):
            parts = f.relative_to(src.parent).with_suffix("").parts
            pkg.modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
        out[pkg.name] = pkg
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node that can run (anywhere in the tree, ``if TYPE_CHECKING:`` bodies left out)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports(ast.Module(body=[child], type_ignores=[])))
            continue
        yield from _imports(node)


@cache
def _all_modules() -> frozenset[str]:
    return frozenset(m for p in packages().values() for m in p.modules)


@cache
def imported_modules(module: str, path: Path) -> frozenset[str]:
    """The modules ``module`` imports, as absolute names: ``from a import b`` is ``a.b`` when that is a module,
    else ``a`` (whose ``__init__`` must run to its end to give ``b``). Parent packages a submodule import runs
    first are not counted: Python runs them before the importer, which is no cycle of the importer's making."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        for a in node.names:
            full = f"{base}.{a.name}"
            names.add(full if full in _all_modules() else base)
    return frozenset(names)


def _top(name: str) -> str:
    return name.split(".")[0]


def _workspace_imports(pkg: Package) -> dict[str, set[str]]:
    """Other workspace packages ``pkg`` imports -> the modules of pkg that import them."""
    found: dict[str, set[str]] = {}
    for mod, path in pkg.modules.items():
        for name in imported_modules(mod, path):
            if _top(name) in packages() and _top(name) != pkg.name:
                found.setdefault(_top(name), set()).add(mod)
    return found


def test_every_package_is_in_the_order():
    assert sorted(packages()) == sorted(ORDER)


@pytest.mark.parametrize("pkg", ORDER)
def test_imports_point_down_the_order(pkg):
    """Module-level and function-level imports alike: nothing imports a package above (or beside) it."""
    below = set(ORDER[: ORDER.index(pkg)])
    wrong = {dep: sorted(mods) for dep, mods in _workspace_imports(packages()[pkg]).items() if dep not in below}
    assert not wrong, f"{pkg} imports packages that are not below it: {wrong}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_hidden_loop():
    """Negative control: a loop closed only by a function-level import is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("import os\ndef f():\n    from .tensors import spec\nif TYPE_CHECKING:\n    import x\n")
    assert {getattr(n, "module", None) for n in _imports(tree)} == {None, "tensors"}


@pytest.mark.parametrize("pkg", ORDER)
def test_no_import_cycle_between_modules_of_a_package(pkg):
    """Between packages the order already forbids cycles; inside one, no two modules may need each other."""
    p = packages()[pkg]
    graph = {mod: {name for name in imported_modules(mod, path) if name in p.modules and name != mod}
             for mod, path in p.modules.items()}
    loops = [{m: sorted(graph[m] & set(c)) for m in c} for c in _cycles(graph)]
    assert not loops, f"import cycles in {pkg} (module: the modules of its loop it imports): {loops}"


@cache
def _distributions() -> dict[str, set[str]]:
    """Top-level import name -> normalized distributions providing it (from the installed metadata)."""
    return {k: {_norm(d) for d in v} for k, v in importlib.metadata.packages_distributions().items()}


def _third_party_imports(pkg: Package) -> set[str]:
    std = set(sys.stdlib_module_names) | {"__future__"}
    dists = set()
    for mod, path in pkg.modules.items():
        for name in imported_modules(mod, path):
            top = _top(name)
            if not top or top in std or top in packages():
                continue
            # not installed here (tomli on 3.11+): its import name is its distribution name
            dists |= _distributions().get(top, {_norm(top)})
    return dists


@pytest.mark.parametrize("pkg", ORDER)
def test_declared_dependencies_are_the_imported_ones(pkg):
    """pyproject.toml lists exactly what the source imports: the workspace packages and the third-party ones."""
    p = packages()[pkg]
    dist_of = {q.name: _norm(q.dist) for q in packages().values()}
    imported = {dist_of[name] for name in _workspace_imports(p)} | _third_party_imports(p)
    declared = p.declared
    assert declared - RUNTIME_ONLY.get(p.dist, set()) == imported, (
        f"{p.dist}: declared but not imported {sorted(declared - imported - RUNTIME_ONLY.get(p.dist, set()))}, "
        f"imported but not declared {sorted(imported - declared)}")


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys, json; {code}; "
                          "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hypura'))))"],
                         capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


@pytest.mark.parametrize("pkg", ORDER)
def test_package_imports_nothing_above_it(pkg):
    loaded = _loaded(f"import {pkg}")
    above = set(ORDER[ORDER.index(pkg) + 1:])
    assert not loaded & above, f"{pkg} imports {loaded & above}"
    if pkg in PURE:
        assert "hypura_llama" not in loaded, f"{pkg} must stay pure Python"


def test_server_process_imports_no_native_code():
    """Models run in worker processes; the HTTP server process itself never loads llama.cpp."""
    loaded = _loaded("import hypura_server")
    assert "hypura_llama" not in loaded, "import hypura_server loads hypura_llama (native code)"
