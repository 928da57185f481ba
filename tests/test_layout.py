"""The house's rules, checked on the source: data flows recorder -> schema -> replay, schema
imports neither side, replay never imports recorder, and no module imports itself back through
others (lazy imports inside functions included)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("recorder", "schema", "replay", "ingest", "cli")


def _modules():
    """{dotted name under tfblackbox: file path} of every module in the three packages."""
    found = {}
    for pkg in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, pkg)):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "migrations")]
            rel = os.path.relpath(dirpath, ROOT).replace(os.sep, ".")
            for fn in filenames:
                if fn.endswith(".py"):
                    name = rel if fn == "__init__.py" else f"{rel}.{fn[:-3]}"
                    found[name] = os.path.join(dirpath, fn)
    return found


def _imports(name, path, modules):
    """The package modules `name` imports anywhere in its file (resolved to module names)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()

    def add(target):
        # `from a.b import c`: a.b.c if it is a module, else a.b
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tfblackbox."):
                    add(a.name[len("tfblackbox."):])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - (node.level - 1)]
                mod = ".".join(parent + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("tfblackbox."):
                mod = node.module[len("tfblackbox."):]
            else:
                continue
            for a in node.names:
                add(f"{mod}.{a.name}")
    return out


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_data_flows_recorder_to_schema_to_replay(graph):
    allowed = {"schema": {"schema"}, "recorder": {"recorder", "schema"},
               "replay": {"replay", "schema", "cli.exits"},
               "ingest": {"ingest", "schema", "cli.exits"},
               "cli": {"cli", "schema", "replay", "ingest"}}
    wrong = sorted((a, b) for a, deps in graph.items() for b in deps
                   if not {b, b.split(".")[0]} & allowed[a.split(".")[0]])
    assert wrong == []


def test_no_import_cycles(graph):
    # a package's __init__ re-exporting its own modules is not a cycle of theirs
    edges = {a: {b for b in deps if not (graph_is_init(b) and a.startswith(b + "."))}
             for a, deps in graph.items()}
    cycles = _cycles(edges)
    assert cycles == []


def graph_is_init(name):
    return os.path.isdir(os.path.join(ROOT, *name.split(".")))


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
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
    return sorted(out)
