"""`edge chat`: the terminal assistant (the Textual app in `edge.tui`)."""
from __future__ import annotations

from pathlib import Path

import click

from edge.commands import db_option, model_options, user_option


@click.command()
@model_options(chat=True)
@db_option
@user_option
def chat(source, db: Path | None, user: str) -> None:
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

    \b
    Models (the choice is saved in $EDGE_HOME/config.toml for the next `edge chat`):
      edge chat --model ~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf
      edge chat --server http://localhost:11434 --model qwen2.5:1.5b
      edge chat --bundle DIR

    The first run with no model builds the default bundle
    (SmolLM2-135M-Instruct + all-MiniLM-L6-v2, offline) under $EDGE_HOME.
    """
    from edge.model_source import remember_choice
    from edge.tui.app import run
    from edge.tui.service import ChatConfig

    if source.origin == "options":
        saved = remember_choice(source)
        if saved:
            click.echo(f"edge chat will use {source.describe()} from now on (saved in {saved}).", err=True)
    run(ChatConfig(source=source, db=db, user=user))
