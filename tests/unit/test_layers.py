"""Layers point one way (docs/architecture.md): checked on the import statements of the package.

Every import counts, at the top or inside a function, except those under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kafkapipe"

FORBIDDEN = {
    "kafkapipe.kafka": ("kafkapipe.stages", "kafkapipe.supervisor", "kafkapipe.supervision", "kafkapipe.worker",
                        "kafkapipe.cli"),
    "kafkapipe.storage": ("kafkapipe.stages", "kafkapipe.supervisor", "kafkapipe.supervision", "kafkapipe.worker",
                          "kafkapipe.cli", "kafkapipe.download"),
    "kafkapipe.security": ("kafkapipe.stages", "kafkapipe.supervisor", "kafkapipe.supervision", "kafkapipe.worker",
                           "kafkapipe.cli"),
    "kafkapipe.config": ("kafkapipe.security",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> set[str]:
    """Every kafkapipe module ``path`` imports at run time (``from kafkapipe import x`` → kafkapipe.x)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in known and name != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_layer_imports_what_sits_above_it():
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for layer, above in FORBIDDEN.items()
        if _under(module, layer)
        for target in targets
        if any(_under(target, a) for a in above)
    ]
    assert wrong == []


def test_the_import_graph_has_no_cycle():
    edges = graph()
    # A package's __init__ is imported with any of its modules: not an edge of its own.
    edges = {m: {t for t in ts if not _under(m, t)} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_the_checker_reads_a_modules_imports():
    sample = PACKAGE / "kafka" / "loop.py"
    assert "kafkapipe.kafka.offsets" in imports_of(sample)


def test_importing_any_module_leaves_prometheus_client_unloaded():
    code = (
        "import importlib, pkgutil, sys, kafkapipe\n"
        "for m in pkgutil.walk_packages(kafkapipe.__path__, 'kafkapipe.'):\n"
        "    if m.name not in ('kafkapipe.metricdefs', 'kafkapipe.__main__') and not m.name.endswith('.__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k.startswith('prometheus_client')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
