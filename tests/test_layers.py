"""The layers hold: no import cycle in the product, errors import nothing of the service, the
model core imports no web code, the client imports no server code. Imports inside functions
count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> the folder that holds it (the client is a distribution of its own, in client/)
PACKAGES = {"model": ROOT, "service": ROOT, "iris_client": ROOT / "client"}


def imports() -> dict[str, set[str]]:
    """Module name -> the product modules it imports (anywhere in its code)."""
    modules = {
        ".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__"): path
        for package, base in PACKAGES.items()
        for path in (base / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        # a package imports its own modules; that is not a cycle through it
        graph[name] = {t for t in found if not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_no_module_of_the_product_imports_itself_through_others() -> None:
    assert cycles(imports()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_errors_import_nothing_of_the_service() -> None:
    assert {t for t in imports()["service.errors"] if t.startswith("service")} == set()


def test_the_model_core_imports_neither_the_service_nor_the_client() -> None:
    for name, targets in imports().items():
        if name.startswith("model"):
            assert not {t for t in targets if not t.startswith("model")}, name


def test_the_client_imports_no_server_code() -> None:
    for name, targets in imports().items():
        if name.startswith("iris_client"):
            assert not {t for t in targets if not t.startswith("iris_client")}, name
