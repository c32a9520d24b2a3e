"""The shape of the code base: no import cycles, no oversized modules (issue 15's bars).

Static checks (``ast``, nothing is imported): every ``import`` counts, also those inside functions
and ``if __name__ == "__main__"`` blocks, since they run too and a cycle among them is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fer_edge", "edge", "convert", "bench", "dashboard")
MAX_LINES = 450
# Modules over the limit that their owners are splitting right now. Each entry is a strict xfail:
# the test fails as soon as the module fits, so the entry has to go with the split.
BEING_SPLIT: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python module of the packages."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that importing ``name`` (maybe ``module.attribute``) runs, or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name` imports pkg.name when that is a module, else an attribute of pkg.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        targets.update(t for t in map(_resolve, names) if t and t != module)
    return targets


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m, p) for m, p in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few dozen modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    return [_cycle_through(comp[0], graph, set(comp)) for comp in components]


def _cycle_through(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """The shortest import path ``start -> ... -> start`` inside one component (breadth first)."""
    prev: dict[str, str | None] = {start: None}
    queue = [start]
    for v in queue:  # the queue grows while it is walked
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is not on a cycle")  # cannot happen for a component of 2+


def test_finds_the_packages():
    assert {"edge.int8", "convert.drift", "fer_edge.cli"} <= set(MODULES)


def test_cycle_finder_catches_function_level_imports(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from convert.cli import register\n")
    assert imports_of("convert.x", a) == {"convert.cli"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_library_modules_do_not_import_the_cli():
    """The command registries (``*.cli``) sit on top: nothing below imports them."""
    cli = {m for m in MODULES if m.endswith(".cli")}
    offenders = {m: sorted(deps & cli) for m, deps in import_graph().items() if m not in cli and deps & cli}
    offenders.pop("fer_edge.__main__", None)  # `python -m fer_edge` is the CLI's own entry point
    assert not offenders, f"library modules importing a CLI module: {offenders}"


def _line_params():
    for module, path in MODULES.items():
        rel = path.relative_to(ROOT).as_posix()
        marks = [pytest.mark.xfail(strict=True, reason=f"{rel}: {BEING_SPLIT[rel]}")] if rel in BEING_SPLIT else []
        yield pytest.param(rel, id=rel, marks=marks)


@pytest.mark.parametrize("rel", list(_line_params()))
def test_module_fits_the_line_limit(rel):
    lines = len((ROOT / rel).read_text().splitlines())
    assert lines <= MAX_LINES, f"{rel} has {lines} lines (limit {MAX_LINES}): split it into cohesive modules"
