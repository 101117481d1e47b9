"""The application package's house: counted from its own imports, each top-level module or
sub-package of `imagetasks` one node, the imports form no circle and are at most seven floors deep
(the entry points on top, the domain and identity at the bottom)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "layers" / "common" / "python" / "imagetasks"
MAX_FLOORS = 7


def node_of(module: str) -> str | None:
    """`imagetasks.services.tasks` -> `services`; the package itself is no node."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "imagetasks" else None


def imported(path: Path, module: str) -> set[str]:
    names: set[str] = set()
    for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(statement, ast.Import):
            names.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                package = module.split(".")[: -statement.level if path.name != "__init__.py" else None]
                if path.name == "__init__.py" and statement.level > 1:
                    package = package[: 1 - statement.level]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in statement.names)
    return names


def import_graph() -> dict[str, set[str]]:
    nodes = {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    nodes |= {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    graph: dict[str, set[str]] = {node: set() for node in nodes}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        source = node_of(module)
        if source is None:
            continue
        for name in imported(path, module):
            target = node_of(name)
            if target in nodes and target != source:
                graph[source].add(target)
    return graph


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    @functools.cache
    def floor(node: str, path: tuple[str, ...] = ()) -> int:
        assert node not in path, f"a circle of imports: {' -> '.join((*path, node))}"
        return 1 + max((floor(target, (*path, node)) for target in graph[node]), default=0)

    return {node: floor(node) for node in graph}


def test_the_package_has_no_circle_and_at_most_seven_floors() -> None:
    graph = import_graph()
    assert {"domain", "services", "adapters", "entrypoints", "composition"} <= set(graph)
    by_node = floors(graph)
    assert max(by_node.values()) <= MAX_FLOORS, by_node
    assert by_node["entrypoints"] > by_node["composition"] > by_node["services"] > by_node["domain"]


def test_a_circle_is_found() -> None:
    try:
        floors({"a": {"b"}, "b": {"a"}})
    except AssertionError as error:
        assert "a -> b -> a" in str(error)
    else:
        raise AssertionError("the circle a -> b -> a was not found")


def test_relative_imports_are_read_as_the_package_names_them(tmp_path: Path) -> None:
    source = tmp_path / "tasks.py"
    source.write_text("from ..domain import errors\nfrom . import ports\n")
    names = imported(source, "imagetasks.services.tasks")
    assert {"imagetasks.domain", "imagetasks.domain.errors", "imagetasks.services.ports"} <= names
