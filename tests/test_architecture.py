"""The floors of ARCHITECTURE.md hold: no import goes up a floor, no package imports itself through others, and no
file in ``t3vis/`` grows past ~400 lines without saying why. Imports are read with ``ast`` (lazy imports inside
functions count too: they are dependencies all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module may import from its own floor and the floors below it.
FLOORS = [
    ["t3vis.errors", "t3vis.paths", "t3vis.argtypes", "t3vis.version", "t3vis.lazy", "t3vis.processes"],
    ["t3vis.store", "t3vis.data"],
    ["t3vis.models"],
    ["t3vis.tasks"],
    ["t3vis.analysis"],
    ["t3vis.serving"],
    ["t3vis.training"],
    ["pipelines"],
    ["t3vis.ui"],
    ["apps", "t3vis", "t3vis.cli", "t3vis.serve", "commands", "__main__"],  # the top: façade, CLI, entry points
]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}
LONG_FILE = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The floor unit a module belongs to: ``t3vis.<package>`` (or a top-level module of t3vis), ``pipelines``,
    ``apps``; every CLI registration module (``*.commands``) is the CLI's, on the top, as are entry points
    (``python -m pipelines``)."""
    parts = module.split(".")
    if parts[-1] in ("commands", "__main__"):
        return parts[-1]
    if parts[0] == "t3vis" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def sources() -> list[Path]:
    return sorted([*ROOT.glob("t3vis/**/*.py"), *ROOT.glob("pipelines/**/*.py"), *ROOT.glob("apps/*.py")])


def imported_modules(path: Path) -> set[str]:
    """Every project module ``path`` imports, relative imports resolved; ``from pkg import name`` counts as
    ``pkg.name`` when that is a module."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {m for m in found if m.split(".")[0] in ("t3vis", "pipelines", "apps")}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def edges() -> list[tuple[str, str, str]]:
    """``(importer package, imported package, file)`` for every import between different packages."""
    out = []
    for path in sources():
        here = package_of(module_name(path))
        for target in imported_modules(path):
            there = package_of(target if _is_module(target) else target.rpartition(".")[0])
            if there != here:
                out.append((here, there, str(path.relative_to(ROOT))))
    return out


def test_every_package_has_a_floor():
    packages = {package_of(module_name(p)) for p in sources()}
    assert packages - set(FLOOR) == set(), "add the new package to FLOORS here and to ARCHITECTURE.md"


def test_no_import_goes_up_a_floor():
    upward = sorted(f"{file}: {here} (floor {FLOOR[here]}) imports {there} (floor {FLOOR[there]})"
                    for here, there, file in edges() if FLOOR[there] > FLOOR[here])
    assert upward == []


def test_no_cycles_among_packages():
    graph: dict[str, set[str]] = {}
    for here, there, _ in edges():
        graph.setdefault(here, set()).add(there)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := cycle_from(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            assert cycle_from(node, []) is None


def test_the_walk_sees_imports(tmp_path):
    """The checker itself: an upward lazy import and a cycle are found (so the tests above can fail)."""
    found = imported_modules(ROOT / "t3vis" / "__init__.py")
    assert "t3vis.ui.explorer" in found  # a lazy import inside a function
    assert package_of("t3vis.training.commands") == "commands" and package_of("t3vis.store.reader") == "t3vis.store"
    assert FLOOR[package_of("t3vis.ui.state")] > FLOOR[package_of("pipelines.run")]


@pytest.mark.parametrize("path", sorted(ROOT.glob("t3vis/**/*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_long_files_say_why(path):
    lines = len(path.read_text().splitlines())
    if lines > LONG_FILE:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Long file:" in doc, f"{lines} lines: split it, or say why in its docstring ('Long file: ...')"
