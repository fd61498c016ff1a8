"""docs/sandbox.md stays true to the emulator: it names every public method and property of ``Sandbox``, every
sandbox-only control route, every Canvas route the sandbox answers and every option of ``sisdaemon sandbox``, and
nothing of the kind that does not exist."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

from sisdaemon.sandbox import ROUTES, Sandbox
from sisdaemon.sandbox.cli import add_arguments
from sisdaemon.sandbox.control import CONTROL_MAP

DOC = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text(encoding="utf-8")


def public_members() -> set[str]:
    """Sandbox's public methods and properties (its instance attributes, the parts a test reaches into, are not
    its API's methods)."""
    return {
        name
        for name, value in inspect.getmembers(Sandbox)
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    }


def test_every_public_method_and_property_of_sandbox_is_named_and_every_one_named_exists() -> None:
    named = set(re.findall(r"`Sandbox\.([A-Za-z_]\w*)", DOC))
    members = public_members()
    assert members - named == set(), "public members of Sandbox the doc does not name"
    assert named - members == set(), "members the doc names that Sandbox does not have"
    # Each one has its row in the table of members.
    rows = set(re.findall(r"^\| `Sandbox\.([A-Za-z_]\w*)", DOC, re.MULTILINE))
    assert rows == members


def control_routes_in_the_code() -> dict[str, set[str]]:
    """Each control route's path as the doc writes it (``:id`` for a parameter) -> its methods."""
    routes: dict[str, set[str]] = {}
    for rule in CONTROL_MAP.iter_rules():
        path = re.sub(r"<(?:\w+:)?\w+>", ":id", rule.rule)
        routes[path] = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
    return routes


def test_every_control_route_is_named_with_a_method_it_takes_and_every_one_named_exists() -> None:
    named: dict[str, set[str]] = {}
    for method, path in re.findall(r"`(GET|PUT|POST|DELETE) (/sandbox/[^`?\s]*)", DOC):
        named.setdefault(path, set()).add(method)
    routes = control_routes_in_the_code()
    assert set(named) == set(routes)
    for path, methods in named.items():
        assert methods <= routes[path], path


def test_the_routes_table_names_every_canvas_route_the_sandbox_answers_and_no_other() -> None:
    table = DOC.split("## Routes", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\[([a-z_]+)\]", table))
    assert named == set(ROUTES)


def test_every_option_of_the_sandbox_command_is_named_and_every_one_named_exists() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    first_cells = re.findall(r"^\| (`--[^|]*)\|", DOC, re.MULTILINE)  # the options table's rows
    named = {option for cell in first_cells for option in re.findall(r"`(--[a-z][a-z-]*)", cell)}
    assert options - named == set(), "options of `sisdaemon sandbox` the doc does not name"
    assert named - options == set(), "options the doc names that `sisdaemon sandbox` does not have"
