"""`edge config show|set|unset`: the settings in $EDGE_HOME/config.toml (`edge.config`)."""
from __future__ import annotations

import json

import click

from edge.commands import json_option


@click.group()
def config() -> None:
    """Your settings in $EDGE_HOME/config.toml: the model, a model per role, and decoding settings.

    The model source (model.*) and roles.* are used when a command is given
    no --bundle, --model or --server. generation.* settings apply over every
    bundle's own, whichever model is chosen (`edge bundle show` names the
    ones in force); command options (--answer-k, ...) win over both.

    \b
      edge config set model.gguf ~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf
      edge config set model.server http://localhost:11434
      edge config set model.name qwen2.5:1.5b
      edge config set generation.answer_k 20
      edge config set generation.unknown_margin 0
      edge config show --all
      edge config unset model.gguf
    """


@config.command()
@click.option("--all", "every", is_flag=True, help="Also list the settings not set, with what each one is.")
@json_option
def show(every: bool, as_json: bool) -> None:
    """Print the settings (and where they are kept)."""
    from edge.config import KEYS, config_path, load_config

    settings = load_config()
    if as_json:
        shown = {"path": str(config_path()), "settings": settings}
        if every:
            shown["known"] = {name: what for name, (what, _) in KEYS.items()}
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"# {config_path()}" + ("" if settings else "  (no settings: the default bundle is used)"))
    for name, (what, _) in KEYS.items():
        if name in settings:
            click.echo(f"{name} = {settings[name]!r}" + (f"  # {what}" if every else ""))
        elif every:
            click.echo(click.style(f"# {name}: {what}", dim=True))


@config.command(name="set", context_settings={"ignore_unknown_options": True})  # a VALUE of -1 is a value
@click.argument("name")
@click.argument("value")
@json_option
def set_(name: str, value: str, as_json: bool) -> None:
    """Set NAME (e.g. model.gguf, model.server, generation.answer_k) to VALUE.

    `edge config show --all` lists every NAME and what it is: the model
    source, a model per role, and every decoding setting of a bundle
    (generation.*, e.g. generation.unknown_margin).
    Setting a model source (model.bundle, model.gguf, model.server) replaces
    the one set before. The API key is never a setting: model.api_key_env
    names the environment variable that holds it.
    """
    from edge.config import KEYS, config_path, set_value

    settings = set_value(name, value)
    if as_json:
        click.echo(json.dumps({"path": str(config_path()), "settings": settings}, indent=2))
    else:
        click.echo(f"{name} = {settings[name]!r}  ({KEYS[name][0]}; saved in {config_path()})")


@config.command()
@click.argument("name")
@json_option
def unset(name: str, as_json: bool) -> None:
    """Remove NAME from the settings (also a name this edge does not know, left in the file by another version)."""
    from edge.config import config_path, unset_value

    settings, was_set = unset_value(name)
    if as_json:
        click.echo(json.dumps({"path": str(config_path()), "settings": settings, "was_set": was_set}, indent=2))
    else:
        click.echo(f"{name} unset" if was_set else f"{name} was not set; nothing changed")
