"""The package's shape (docs/design.md "The parts"): dependencies point one way, and parts are composed, not inherited.

These read the code itself, so a change that brings back an import circle or a class extending another module's class
fails here, naming the modules.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import pkgutil
from pathlib import Path

import pydantic

import sisdaemon

PACKAGE_DIR = Path(sisdaemon.__file__).parent


def all_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> source file."""
    found = {"sisdaemon": PACKAGE_DIR / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="sisdaemon."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        found[info.name] = Path(spec.origin)
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (at module level or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    edges.add(submodule)
                elif base in modules:
                    edges.add(base)
    edges.discard(name)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` as a path that ends where it starts, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_find_cycle_reports_a_circle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_of_the_package_takes_part_in_an_import_circle() -> None:
    modules = all_modules()
    # A package's __init__ that re-exports its own submodules is not a circle with them; the edge from a
    # submodule to its own package's __init__ is dropped for that reason.
    graph = {
        name: {
            target
            for target in imports_of(name, path, modules)
            if not (name.startswith(target + ".") and modules[target].name == "__init__.py")
        }
        for name, path in modules.items()
    }
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_daemon_is_composed_of_parts_that_never_import_the_daemon_or_a_command() -> None:
    modules = all_modules()
    top = {
        "sisdaemon.cli",
        "sisdaemon.cli_base",
        "sisdaemon.cli_ops",
        "sisdaemon.cli_tools",
        "sisdaemon.daemon",
        "sisdaemon.submit",
        "sisdaemon.status",
        "sisdaemon.demo",
        "sisdaemon.ops",
        "sisdaemon.diff",
    }
    parts = [
        *("ledger", "gate", "intake", "flight", "filing", "worker", "upload", "recovery", "writers", "operations"),
        *("checker", "admission"),
    ]
    for part in (f"sisdaemon.{name}" for name in parts):
        assert not imports_of(part, modules[part], modules) & top, part
    core = [
        "sisdaemon.jobs",
        "sisdaemon.verdict",
        "sisdaemon.lost",
        "sisdaemon.polling",
        "sisdaemon.reload",
        "sisdaemon.guard",
        "sisdaemon.drift",
    ]
    io_modules = {"sisdaemon.state", "sisdaemon.spool", "sisdaemon.canvas", "sisdaemon.watcher", "sisdaemon.ledger"}
    for module in core:
        assert not imports_of(module, modules[module], modules) & (top | io_modules | {f"sisdaemon.{p}" for p in parts})


def test_no_class_extends_a_class_of_another_module_of_the_package() -> None:
    allowed = (BaseException, enum.Enum, pydantic.BaseModel)
    offenders = []
    for name in all_modules():
        if name.endswith(".__main__"):
            continue  # runs the command when imported; it defines no class
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name:
                continue
            for base in cls.__bases__:
                foreign = base.__module__.startswith("sisdaemon") and base.__module__ != name
                if foreign and not issubclass(base, allowed):
                    offenders.append(f"{name}.{cls.__name__}({base.__module__}.{base.__name__})")
    assert offenders == []
