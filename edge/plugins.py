"""Parts of edge found through package metadata, so the runtime never imports the export side.

`edge/` (the bank, the agents, the CLI) does not import `edge.export`
(quantisation, ONNX builds, the export pipeline: torch, transformers,
llama.cpp's converter). What the runtime needs from that side it finds by
name through entry points (the Python packaging specification's plug-in
registry, read with `importlib.metadata`; the way simonw/llm finds its
plug-ins). edge's own `pyproject.toml` declares them:

    [project.entry-points."edge.commands"]     command name -> click command
    export = "edge.export.command:export"

    [project.entry-points."edge.first_run"]    what the first run builds
    default-bundle = "edge.export.default_bundle:build_default"
    default-embedder = "edge.export.embedder:build_default_minilm"

Another installed package may declare the same names; edge's own
declaration wins, so installing a plug-in never changes what the default
bundle is.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from edge.errors import EdgeError

COMMANDS = "edge.commands"
FIRST_RUN = "edge.first_run"
DISTRIBUTION = "edge-memory"


class MissingPluginError(EdgeError):
    """An entry point edge needs is not declared by any installed package (a stale or partial install)."""


def _declared(group: str) -> dict[str, EntryPoint]:
    """name -> entry point of `group`; for a name declared twice, edge's own declaration."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        own = point.dist is not None and point.dist.name == DISTRIBUTION
        if point.name not in found or own:
            found[point.name] = point
    return found


def declared(group: str) -> dict[str, str]:
    """The entry points of `group` as `name -> "module:attribute"`, nothing imported (for lazy CLI commands)."""
    return {name: point.value for name, point in _declared(group).items()}


def load(group: str, name: str) -> Any:
    """The object the entry point `name` of `group` names, imported now.

    Raises `MissingPluginError` when no installed package declares it: with
    the names the group has when it has some, else with how to reinstall
    (edge installed without its metadata, or a checkout whose pyproject.toml
    changed since `pip install -e .`).
    """
    found = _declared(group)
    point = found.get(name)
    if point is None:
        if found:  # the group is there: a name nobody declares, not a broken install
            raise MissingPluginError(f"No installed package declares {name!r} in {group}.",
                                     hint=f"declared there: {', '.join(sorted(found))}")
        raise MissingPluginError(
            f"No installed package declares {name!r} in {group}: edge's install is stale or partial.",
            hint="Reinstall edge: `pip install -e .` in a checkout (or `make setup`), or "
                 "`pip install --force-reinstall --no-deps edge-memory`.",
        )
    return point.load()
