"""The runtime finds the export side through entry points and never imports it (`edge.plugins`)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge import plugins
from edge.cli import cli
from edge.errors import EdgeError

RUNTIME = Path(__file__).resolve().parents[1] / "edge"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions (`import a.b`, `from a.b import c`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_runtime_never_imports_the_export_side():
    reaching = {str(path.relative_to(RUNTIME)): sorted(name for name in imported_modules(path)
                                                       if name == "edge.export" or name.startswith("edge.export."))
                for path in RUNTIME.rglob("*.py")}
    assert {path: names for path, names in reaching.items() if names} == {}


def test_every_declared_entry_point_loads():
    first_run = plugins.declared(plugins.FIRST_RUN)
    assert set(first_run) == {"default-bundle", "default-embedder"}
    for name in first_run:
        assert callable(plugins.load(plugins.FIRST_RUN, name))
    assert plugins.declared(plugins.COMMANDS) == {"export": "edge.export.command:export"}


def test_a_missing_entry_point_says_what_is_there_or_how_to_reinstall():
    with pytest.raises(plugins.MissingPluginError) as caught:
        plugins.load(plugins.FIRST_RUN, "no-such-builder")
    assert isinstance(caught.value, EdgeError)
    assert "default-bundle, default-embedder" in caught.value.hint, "a misspelt name is told the declared ones"
    with pytest.raises(plugins.MissingPluginError) as caught:
        plugins.load("edge.no-such-group", "export")
    assert "stale or partial" in caught.value.message and "pip install" in caught.value.hint


def test_edge_export_is_a_command_of_the_cli():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "export" in result.output.split("Commands:")[1]
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0, result.output
    assert "--answer-adapter" in result.output
