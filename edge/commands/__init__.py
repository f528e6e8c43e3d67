"""Sub-commands of `edge`, each module a thin layer over the Python API."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from edge import paths


class LazyGroup(click.Group):
    """A group whose commands are imported only when used (or listed in --help)."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attr = self.lazy_commands[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("edge"):
                    return None
                raise
            return getattr(module, attr)
        return super().get_command(ctx, name)


def db_option(fn):
    return click.option(
        "--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Memory bank file. [default: $EDGE_HOME/memory.db]",
    )(fn)


def user_option(fn):
    return click.option("--user", "-u", default=paths.DEFAULT_USER, show_default=True, help="Whose memories.")(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(fn)
