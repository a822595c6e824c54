"""The layers show the data path: the foundation imports nothing above it, and no two modules import each other,
directly or round a loop, whether at the top of a module or inside a function (imports inside functions exist for
start-up time only: the command line lists its commands and attacks without importing torch)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PACKAGES = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    for path in sorted((REPO / "diffmia").rglob("*.py")):  # subpackages of diffmia/ (core, cli)
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1]) if rel.name == "__init__" else ".".join(rel.parts)
        found.setdefault(name, path)
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_the_foundation_imports_nothing_above_it():
    for name, deps in graph().items():
        if name.startswith("diffmia.core"):
            above = sorted(d for d in deps if not d.startswith("diffmia.core") and d != "diffmia")
            assert not above, f"{name} (the foundation) imports {above}"


def test_no_import_cycles():
    g = graph()
    for pkg_init in [n for n in g if n in PACKAGES or n in ("diffmia.core", "diffmia.cli")]:
        g[pkg_init] = {d for d in g[pkg_init] if not d.startswith(pkg_init + ".")}  # a package lists its modules
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            visit(dep)
        stack.pop()

    for node in sorted(g):
        visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
