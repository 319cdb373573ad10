"""The package's shape, read from the source with the standard library's ast: no import cycle
between modules, no module reaching into another's private names, no torch in the analysis."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import in the file, those
    inside functions included: a lazy import is a dependency all the same."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            # `from harness.analysis import fit` imports the module harness.analysis.fit
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            found += [(s, [], node.lineno) for s in subs]
            found.append((base, [n for n in names if f"{base}.{n}" not in modules], node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(name, path, modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A module importing its own package's __init__ (to reach a sibling) is no cycle.
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names() -> None:
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for target, names, line in _imports(name, path, modules):
            if target.startswith("harness") and target != name:
                bad += [
                    f"{path.relative_to(ROOT)}:{line}: {target}.{n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_analysis_never_imports_torch() -> None:
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if name.startswith("harness.analysis"):
            for target, _, line in _imports(name, path, modules):
                if target.split(".")[0] in ("torch", "transformers") or target in (
                    "harness.train",
                    "harness.model",
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not bad, "the analysis must run without torch:\n" + "\n".join(bad)
