"""The `edge` command: a thin layer over `edge.MemoryBank` and `edge.Agent`.

Commands live in `edge.commands.*`; heavy ones (chat, train, eval) import
their packages only when run, so `edge --help` stays fast. Commands of the
export side (`edge export`) are declared as `edge.commands` entry points
(`edge.plugins`) and imported the same lazy way.
"""
from __future__ import annotations

import sys

import click

from edge import __version__, plugins
from edge.commands import LazyGroup
from edge.errors import EdgeError

COMMANDS = {
    "memory": "edge.commands.memory:memory",
    "remember": "edge.commands.agent:remember",
    "ask": "edge.commands.agent:ask",
    "run": "edge.commands.agent:run_script",
    "bundle": "edge.commands.bundle:bundle",
    "config": "edge.commands.config:config",
    "chat": "edge.commands.chat:chat",
    "train": "edge.commands.train:train",
    "eval": "edge.commands.evaluate:evaluate",
    "mcp": "edge.commands.mcp:mcp",
    "serve": "edge.commands.serve:serve",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, plugin_group=plugins.COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
def cli() -> None:
    """edge: an on-device memory agent.

    A Memory Manager turns conversation turns into memory operations on a
    local SQLite bank; an Answer Agent answers from what the bank holds.
    Everything runs offline. State lives under $EDGE_HOME (default: the
    platform's user data folder).

    \b
    Start here:
      edge chat                       the terminal assistant
      edge memory add "I like tea"    store a memory by hand
      edge memory search tea          find it again
      edge chat --model FILE.gguf     chat on your own model (or --server URL --model NAME)
    """


def _json_error(message: str, hint: str | None) -> None:
    """With --json, an error is also one JSON object on stdout ({"error", "hint"}), so a script can read it."""
    if "--json" in sys.argv[1:]:
        from edge.commands import json_text

        click.echo(json_text({"error": message, "hint": hint}))


def main() -> None:
    try:
        # Without standalone mode click hands back the code of a command's `Exit` instead of exiting with it.
        code = cli.main(standalone_mode=False)
    except EdgeError as exc:
        _json_error(exc.message, exc.hint)
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):  # Ctrl-C before a command's own handler, or at a prompt
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _json_error(exc.format_message(), None)
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
