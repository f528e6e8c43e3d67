"""The user's settings: `$EDGE_HOME/config.toml`, read with the standard library.

    [model]
    gguf = "/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"   # or: bundle = "...", or: server + name
    server = "http://localhost:11434"
    name = "qwen2.5:1.5b"
    structured_output = "auto"
    api_key_env = "OPENAI_API_KEY"                         # the variable's *name*; the key is never written here

    [roles]                                                # a role on a model of its own (edge.role_models)
    chat = "qwen2.5:3b@http://localhost:11434"            # or a .gguf file; manager / answer likewise

    [generation]                                           # any of edge.generation's settings, over the bundle's
    answer_k = 20
    text_mode = "free"
    n_ctx = 8192
    unknown_margin = 1.5

Every command that runs a model (`chat`, `remember`, `ask`, `run`, `eval`)
uses the `[model]` table when it is given no --bundle, --model or --server;
`edge chat` given one of those writes it here, so the next `edge chat` opens
the same model. `edge config show|set|unset` read and change it by hand.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from functools import partial
from typing import Any, Callable

from edge import paths
from edge.errors import InvalidInputError
from edge.generation import SETTING_HELP, parse_setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "config.toml"
SOURCE_KEYS = ("model.bundle", "model.gguf", "model.server", "model.name")
STRUCTURED_OUTPUTS = ("auto", "json_object", "json_schema", "grammar", "ollama", "none")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in options:
            raise ValueError(f"use one of {', '.join(options)}")
        return value
    return check


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _path(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _env_name(value: str) -> str:
    if not value.replace("_", "").isalnum() or value[0].isdigit():
        raise ValueError("an environment variable's name (letters, digits, _), not the key itself")
    return value


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("a number of seconds above 0")
    return seconds


def _generation_setting(name: str, value: str) -> Any:
    try:
        return parse_setting(name, value)
    except InvalidInputError as exc:
        raise ValueError(exc.message.rstrip(".")) from None


def _role_model(value: str) -> str:
    from edge.role_models import RoleModel

    try:
        model = RoleModel.parse(value)
    except InvalidInputError as exc:
        raise ValueError(exc.message.rstrip(".")) from None
    if model.gguf is not None and not model.gguf.is_file():
        raise ValueError(f"there is no file {model.gguf}")
    return model.text


# key -> (what it is, how a string from the command line becomes its value)
KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model.bundle": ("a bundle folder", _path),
    "model.gguf": ("a .gguf model file", _path),
    "model.server": ("an OpenAI-compatible server's URL", str),
    "model.name": ("the model name to request from the server", str),
    "model.structured_output": (f"how JSON is asked of the server: {', '.join(STRUCTURED_OUTPUTS)}",
                                _choice(STRUCTURED_OUTPUTS)),
    "model.api_key_env": ("the environment variable holding the server's API key", _env_name),
    "model.timeout": ("seconds to wait for the server's answer before it counts as timed out", _positive_seconds),
    **{f"roles.{role}": (f"the model serving the {role} role: a .gguf file or NAME@http://host:port",
                         _role_model) for role in ("chat", "manager", "answer")},
    # every decoding setting of a bundle (edge.generation), over the bundle's own
    **{f"generation.{name}": (what, partial(_generation_setting, name)) for name, what in SETTING_HELP.items()},
}


def config_path() -> Path:
    return paths.home() / CONFIG_FILE


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The settings as a flat {"model.gguf": ..., ...} dict; {} when there is no file.

    Raises InvalidInputError for a file that is not TOML or holds an unknown key or a bad value.
    """
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid TOML ({exc}).",
                                hint="fix it, or delete it and use `edge config set`") from exc
    flat: dict[str, Any] = {}
    for table, values in document.items():
        if not isinstance(values, dict):
            raise InvalidInputError(f"{path}: {table!r} must be a table ([{table}]).", hint="see `edge config show`")
        for key, value in values.items():
            name = f"{table}.{key}"
            if name not in KEYS:
                raise InvalidInputError(f"{path}: unknown setting {name!r}.", hint=f"known: {', '.join(KEYS)}")
            flat[name] = _convert(name, str(value))
    return flat


def save_config(settings: dict[str, Any], path: Path | None = None) -> Path:
    """Write the flat `settings` as TOML tables, atomically; empty tables are left out."""
    import tomli_w

    path = path or config_path()
    document: dict[str, dict[str, Any]] = {}
    for name, value in sorted(settings.items()):
        if value is None:
            continue
        table, key = name.split(".", 1)
        document.setdefault(table, {})[key] = value
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(document), encoding="utf-8")
    os.replace(tmp, path)
    return path


def set_value(name: str, value: str, path: Path | None = None) -> dict[str, Any]:
    """Set one setting from its text form; setting a model source clears the other sources. Returns the settings."""
    settings = load_config(path)
    converted = _convert(name, value)
    if name in ("model.bundle", "model.gguf", "model.server"):
        for other in SOURCE_KEYS:
            if other != name and not (name == "model.server" and other == "model.name"):
                settings.pop(other, None)
    settings[name] = converted
    save_config(settings, path)
    return settings


def unset_value(name: str, path: Path | None = None) -> dict[str, Any]:
    if name not in KEYS:
        raise InvalidInputError(f"Unknown setting {name!r}.", hint=f"known: {', '.join(KEYS)}")
    settings = load_config(path)
    settings.pop(name, None)
    save_config(settings, path)
    return settings


def _convert(name: str, value: str) -> Any:
    if name not in KEYS:
        raise InvalidInputError(f"Unknown setting {name!r}.", hint=f"known: {', '.join(KEYS)}")
    what, convert = KEYS[name]
    try:
        return convert(value)
    except ValueError as exc:
        raise InvalidInputError(f"{value!r} is not a valid {name} ({what}): {exc}.", hint=f"{name} is {what}") from exc
