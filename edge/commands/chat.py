"""`edge chat`: the terminal assistant (the Textual app in `edge.tui`)."""
from __future__ import annotations

from pathlib import Path

import click

from edge.commands import db_option, user_option


@click.command()
@click.option(
    "--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Bundle folder with the models and embedder. [default: the default bundle under $EDGE_HOME, "
    "built on first run]",
)
@db_option
@user_option
def chat(bundle: Path | None, db: Path | None, user: str) -> None:
    """Chat with edge in the terminal while it remembers what you tell it.

    The conversation is on the left; on the right, your memories, a search
    box, and the changes the Memory Manager made after each message (added,
    updated, deleted). Edit, delete and undo any of them from the panel.

    \b
    Keys (F1 or ? shows them all):
      enter    send          escape  cancel the reply
      ctrl+z   undo          ctrl+f  search memories
      e / d    edit / delete the highlighted memory
      ctrl+q   quit

    The first run with no --bundle builds the default bundle
    (SmolLM2-135M-Instruct + all-MiniLM-L6-v2, offline) under $EDGE_HOME.
    """
    from edge.tui.app import run
    from edge.tui.service import ChatConfig

    run(ChatConfig(bundle=bundle, db=db, user=user))
