"""Sub-commands of `edge`, each module a thin layer over the Python API."""
from __future__ import annotations

import contextlib
import importlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edge import paths
from edge.generation import MIN_N_CTX
from edge.prompts import TEXT_MODES


class LazyGroup(click.Group):
    """A group whose commands are imported only when used (or listed in --help); with `plugin_group`, also
    the commands installed packages declare as entry points of that group (`edge export`)."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, plugin_group: str | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_commands or {})
        self.plugin_group = plugin_group

    @property
    def lazy_commands(self) -> dict[str, str]:
        """name -> "module:attribute": the group's own, then those installed packages declare (`edge.plugins`)."""
        if not self.plugin_group:
            return self._lazy
        from edge.plugins import declared

        return {**declared(self.plugin_group), **self._lazy}

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


def note_new_bank(db: Path | None) -> None:
    """Say on stderr that `--db` names no bank yet, so a mistyped path is noticed the first time it is used."""
    if db is not None and not db.exists():
        click.secho(f"new memory bank: {db.resolve()} (no file was there)", fg="yellow", err=True)


def checked_user(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--user as the bank stores it (`edge.bank.clean_name`): an empty name (an unset shell variable) never
    means every user; one with a line break, a control or invisible character, or too long, is refused."""
    from edge.bank import clean_name
    from edge.errors import InvalidInputError

    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter(f"the user name is empty (an unset shell variable?); it never means every user. "
                                 f"Name one, or leave --user out for the default user '{paths.DEFAULT_USER}'.",
                                 ctx=ctx, param=param)
    try:
        return clean_name(value, what="user name")
    except InvalidInputError as exc:
        raise click.BadParameter(f"{exc.message} {exc.hint or ''}".strip(), ctx=ctx, param=param) from exc


_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def for_terminal(text: str) -> str:
    """`text` as a terminal shows it safely: each text-direction control written out as <U+202E>, never obeyed.

    A stored right-to-left override would otherwise reverse the rest of the
    line it is printed on (and make "alice" read like another name). The
    stored text and `--json` keep it as typed.
    """
    if not any(ord(c) in _BIDI_CONTROLS for c in text):
        return text
    return "".join(f"<U+{ord(c):04X}>" if ord(c) in _BIDI_CONTROLS else c for c in text)


def user_option(fn):
    return click.option("--user", "-u", default=paths.DEFAULT_USER, show_default=True, callback=checked_user,
                        help="Whose memories.")(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(fn)


def model_options(*, generation: bool = True, answer_k: bool = True, chat: bool = False):
    """--bundle / --model / --server (and the generation overrides), handed to the command as one `source`.

    `chat`: the command writes chat replies, so --chat-model / --chat-server
    (the chat role on a model of its own) are offered too.

    The command receives `source`, an `edge.model_source.ModelChoice`: the
    options when any names a model, else the `[model]` table of
    $EDGE_HOME/config.toml, else the default bundle.
    """
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, bundle=None, model=None, server=None, structured_output=None, api_key_env=None,
                    timeout=None, role=(), chat_model=None, chat_server=None, **kwargs):
            from edge.config import load_config
            from edge.model_source import ModelChoice
            from edge.role_models import role_models

            # Only the options added here are taken; a command's own (eval's --n-ctx) pass through.
            text_mode = kwargs.pop("text_mode", None) if generation else None
            n_ctx = kwargs.pop("n_ctx", None) if generation else None
            default_k = kwargs.pop("default_k", None) if generation and answer_k else None

            source = ModelChoice.from_options(
                bundle=bundle, model=model, server=server, structured_output=structured_output,
                api_key_env=api_key_env, timeout=timeout, answer_k=default_k, text_mode=text_mode, n_ctx=n_ctx,
                config=load_config(), roles=role_models(roles=role, chat_model=chat_model, chat_server=chat_server),
            )
            return fn(*args, source=source, **kwargs)

        options = [
            click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Bundle folder. [default: config.toml's model, else the default bundle]"),
            click.option("--model", "-m", default=None, metavar="FILE.gguf|NAME",
                         help="A GGUF model file to run in process; with --server, the served model's name."),
            click.option("--server", default=None, metavar="URL",
                         help="An OpenAI-compatible chat server (llama-server, Ollama, vLLM, LM Studio), "
                         "e.g. http://localhost:11434."),
            click.option("--structured-output", type=click.Choice(["auto", "json_object", "json_schema", "grammar",
                                                                   "ollama", "none"]), default=None,
                         help="How JSON is asked of the server. [default: auto, asked of the server]"),
            click.option("--api-key-env", default=None, metavar="VAR",
                         help="Environment variable holding the server's API key. [default: EDGE_API_KEY]"),
            click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                         help="How long to wait for the server's answer before saying it timed out. "
                         "[default: config.toml's model.timeout, else 120]"),
            click.option("--role", multiple=True, metavar="ROLE=MODEL",
                         help="Serve a role (chat, manager, answer) from its own model: a .gguf file or NAME@URL. "
                         "Repeatable. [default: config.toml's [roles], else the bundle's]"),
        ]
        if chat:
            options += [
                click.option("--chat-model", default=None, metavar="FILE.gguf|NAME",
                             help="The chat reply from this model (a GGUF run in process; with --chat-server, the "
                             "served model's name); the Memory Manager and the Answer Agent stay the bundle's."),
                click.option("--chat-server", default=None, metavar="URL",
                             help="The chat reply from this OpenAI-compatible server (with --chat-model NAME)."),
            ]
        if generation:
            options += [
                click.option("--text-mode", type=click.Choice(TEXT_MODES), default=None,
                             help="Facts and answers chosen from what was said, or written by the model. "
                             "[default: config.toml's generation.text_mode, else the bundle's; for --model FILE, "
                             "from its size]"),
                click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=None,
                             help="Context window in tokens. [default: config.toml's generation.n_ctx, else the "
                             "bundle's; for --model FILE, its own, at most 8192]"),
            ]
        if generation and answer_k:
            options.append(click.option("--answer-k", "default_k", type=click.IntRange(min=1), default=None,
                                        help="Memories the Answer Agent reads. [default: config.toml's "
                                        "generation.answer_k, else the bundle's; for --model FILE, from its size]"))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


@contextlib.contextmanager
def interrupt_signals() -> Iterator[dict[str, bool]]:
    """Ctrl-C (SIGINT) and SIGTERM raise `KeyboardInterrupt` inside, and are remembered in the yielded `{"hit": ...}`.

    A native library can swallow the exception (llama.cpp loading a model
    calls back into Python, and an exception there is only printed), not the
    flag: a command checks it once the model is loaded. SIGTERM (a service
    manager, `kill`) then ends a command the way Ctrl-C does: what was done
    is said and the turn under way is kept. Outside the main thread (where
    no handler can be set) it does nothing.
    """
    state = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame) -> None:
        state["hit"] = True
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def json_text(document: Any) -> str:
    """`document` as the JSON a `--json` command prints: UTF-8 text kept as written.

    A character no UTF-8 can encode (an undecodable byte of a command-line
    argument, which Python keeps as a lone surrogate) is written as a
    `\\uXXXX` escape instead, so the output is always valid UTF-8 and valid
    JSON for `jq` or `json.loads`.
    """
    text = json.dumps(document, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(document, indent=2)
    return text
