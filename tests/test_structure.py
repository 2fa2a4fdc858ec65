"""The package's shape, checked: layers that only look down, small functions, imports at the top.

Read from the source with ``ast`` (nothing is imported): every ``import`` of a ``miniroberta`` module,
at module level or inside a function, is an edge of the module graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "miniroberta"
MAX_FUNCTION_LINES = 100
MAX_LOCAL_OWN_IMPORTS = 20


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods: dict[str, ast.Module]):
    """(module, imported module, inside a function?) for every import of a package module."""
    out = []
    for mod, tree in mods.items():
        is_pkg = (SRC.parent / Path(*mod.split("."))).is_dir()
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        local = {id(x) for f in funcs for x in ast.walk(f) if isinstance(x, (ast.Import, ast.ImportFrom))}
        type_only = {id(x) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
                     for x in ast.walk(n)}
        for n in ast.walk(tree):
            if id(n) in type_only:
                continue
            targets = []
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = _resolve(mod, n, is_pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in n.names]
            for t in targets:
                if t.startswith("miniroberta"):
                    while t not in mods and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t in mods and t != mod:
                        out.append((mod, t, id(n) in local))
    return out


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


def test_no_import_cycle_function_local_imports_included():
    """Every edge counts, a package's ``__init__`` importing its submodules included: the root's lazy public API
    (``miniroberta/__init__`` -> ``api`` -> ... -> a module importing the root) was such a cycle."""
    edges: dict[str, set[str]] = {}
    for a, b, _ in _imports(_modules()):
        edges.setdefault(a, set()).add(b)
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def test_few_function_local_imports_of_the_package_itself():
    local = sorted({(a, b) for a, b, is_local in _imports(_modules()) if is_local})
    assert len(local) <= MAX_LOCAL_OWN_IMPORTS, "\n".join(f"{a} imports {b} inside a function" for a, b in local)


def test_no_function_over_100_lines():
    long = []
    for mod, tree in _modules().items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = n.end_lineno - n.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{mod}.{n.name}: {length} lines")
    assert not long, "\n".join(long)
