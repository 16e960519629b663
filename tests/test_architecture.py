"""The house rules of ``sr_core`` (ARCHITECTURE.md), checked on the source.

* Packages form a stack: a module imports only from its own package or from packages below it
  (:data:`LAYERS`), so there is no import cycle between packages; within a package there is no
  cycle between modules either.
* The library never imports Prefect.
* Every package says in its docstring what it owns and what it may import.
* Rooms stay small: modules up to ~500 lines, functions up to ~80 lines and 6 parameters, with
  the few exceptions listed in :data:`SIZE_EXCEPTIONS` and their reasons.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SR_CORE = ROOT / "sr_core"

# Bottom first. A package may import the ones before it in this list (and itself).
LAYERS = [
    "errors", "geometry", "imaging", "storage", "publication", "formats", "models", "quality",
    "compute", "reports", "training", "pipeline", "archive", "deploy", "api", "cli",
]

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 6

# (module, function or None) -> why it may exceed the limits above.
SIZE_EXCEPTIONS: dict[tuple[str, str | None], str] = {
    ("sr_core.models.edsr", "describe_edsr"):
        "the EDSR paper's hyper-parameters (Lim et al. 2017: blocks, features, residual scaling, "
        "scale, colours, mean) plus the project's band/range switches, bound by name from cards",
    ("sr_core.models.edsr", "EDSR.__init__"): "the same hyper-parameters as describe_edsr",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SR_CORE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """sr_core modules that ``module`` imports anywhere in its file (lazy imports included),
    with the line; ``from sr_core.pkg import name`` names the submodule when ``name`` is one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("sr_core")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and (node.module == "sr_core" or node.module.startswith("sr_core.")):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in known else node.module, node.lineno))
    return [(target, line) for target, line in found if target != module]


def _graph() -> dict[str, list[tuple[str, int]]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_the_layer_list_names_every_package():
    packages = {_package(m) for m in _modules()} - {""}
    assert packages == set(LAYERS), packages ^ set(LAYERS)


def test_imports_only_go_down_the_stack():
    wrong = []
    for module, targets in _graph().items():
        here = _package(module)
        for target, line in targets:
            there = _package(target)
            if target == "sr_core":
                continue  # the package root: __version__ only (checked below)
            if here and there and LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module}:{line} imports {target} ({there} is above {here})")
    assert not wrong, "\n".join(wrong)


def test_the_package_root_is_imported_for_its_version_only():
    wrong = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "sr_core":
                names = {a.name for a in node.names}
                if not names <= {"__version__"} | {_package(m) for m in _modules()}:
                    wrong.append(f"{module}:{node.lineno} from sr_core import {sorted(names)}")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    """A package's ``__init__`` that re-exports its own modules is not a cycle: the edges from a
    package root to its own submodules are left out."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target, _ in targets:
            if target == "sr_core" or target.startswith(module + "."):
                continue
            graph[module].add(target)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_prefect():
    wrong = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{module}:{node.lineno}" for n in names if n.split(".")[0] == "prefect"]
    assert not wrong


@pytest.mark.parametrize("package", [p for p in LAYERS if (SR_CORE / p).is_dir()])
def test_every_package_says_what_it_owns_and_may_import(package):
    doc = ast.get_docstring(ast.parse((SR_CORE / package / "__init__.py").read_text())) or ""
    assert len(doc.split()) >= 25, f"sr_core/{package}/__init__.py: docstring too short"
    assert "import" in doc, f"sr_core/{package}/__init__.py: docstring does not say what it imports"


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name (``Class.method``, ``outer.inner``)."""
    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def _size(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(lines, parameters other than self / cls)."""
    args = node.args
    params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs
              if a.arg not in ("self", "cls")]
    return node.end_lineno - node.lineno + 1, len(params)


def _oversized() -> list[str]:
    found = []
    for module, path in _modules().items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and (module, None) not in SIZE_EXCEPTIONS:
            found.append(f"{module}: {lines} lines")
        for name, node in _functions(ast.parse(text)):
            if (module, name) in SIZE_EXCEPTIONS:
                continue
            length, params = _size(node)
            if length > MAX_FUNCTION_LINES:
                found.append(f"{module}.{name}: {length} lines")
            if params > MAX_PARAMETERS:
                found.append(f"{module}.{name}: {params} parameters")
    return found


def test_rooms_stay_small():
    assert _oversized() == []


def test_every_size_exception_is_still_needed():
    """An exception whose module or function has come back under the limits is dropped."""
    modules = _modules()
    stale = []
    for (module, func), _why in SIZE_EXCEPTIONS.items():
        text = modules[module].read_text()
        if func is None:
            if len(text.splitlines()) <= MAX_MODULE_LINES:
                stale.append(module)
            continue
        found = dict(_functions(ast.parse(text)))
        assert func in found, f"{module}.{func} no longer exists"
        length, params = _size(found[func])
        if length <= MAX_FUNCTION_LINES and params <= MAX_PARAMETERS:
            stale.append(f"{module}.{func}")
    assert stale == []


def test_the_size_check_finds_a_long_function_and_a_method():
    code = "class A:\n    def m(self, a, b, c, d, e, f, g):\n        pass\n" + \
        "def f():\n" + "    x = 1\n" * 90
    sizes = {name: _size(node) for name, node in _functions(ast.parse(code))}
    assert sizes == {"A.m": (2, 7), "f": (91, 0)}
