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
from functools import partial
from pathlib import Path
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
    document = _read_document(path)
    flat: dict[str, Any] = {}
    for table, values in document.items():
        if not isinstance(values, dict):
            where = f"[{_table_of(table)}]" if _table_of(table) else "its table ([model], [roles], [generation])"
            raise InvalidInputError(f"{path}: {table!r} must be a setting inside a table, not at the top.",
                                    hint=f"move it under {where}, or remove it: edge config unset {table}")
        for key, value in values.items():
            name = f"{table}.{key}"
            if name not in KEYS:
                raise InvalidInputError(f"{path}: unknown setting {name!r} (from another edge version, or a typo).",
                                        hint=f"remove it: edge config unset {name}  (`edge config show --all` "
                                             "lists the settings)")
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # TOML's 15.0 for a whole-number setting, as a bundle's JSON 20.0 is read
            try:
                flat[name] = _convert(name, str(value))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{path}: {exc.message}", hint=f"fix it: edge config set {name} VALUE, "
                                        f"or edge config unset {name}  ({name} is {KEYS[name][0]})") from None
    return flat


def generation_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    """The `generation.*` settings of `settings` (`load_config`'s) by their `GenerationConfig` names: what is
    served over a bundle's own decoding settings."""
    return {name.split(".", 1)[1]: value for name, value in settings.items() if name.startswith("generation.")}


def _table_of(key: str) -> str | None:
    """The table a setting written at the top of the file belongs in (`answer_k` -> generation)."""
    tables = [name.split(".", 1)[0] for name in KEYS if name.split(".", 1)[1] == key]
    return tables[0] if len(tables) == 1 else None


def _read_document(path: Path) -> dict[str, Any]:
    """config.toml's tables as written, nothing checked but the TOML (so a bad key can still be removed)."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid TOML ({exc}).",
                                hint="fix it, or delete it and use `edge config set`") from exc


def save_config(settings: dict[str, Any], path: Path | None = None) -> Path:
    """Write the flat `settings` as TOML tables, atomically; empty tables are left out."""
    document: dict[str, dict[str, Any]] = {}
    for name, value in sorted(settings.items()):
        if value is None:
            continue
        table, key = name.split(".", 1)
        document.setdefault(table, {})[key] = value
    return _write_document(document, path or config_path())


def _write_document(document: dict[str, Any], path: Path) -> Path:
    import tomli_w

    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(document), encoding="utf-8")
    os.replace(tmp, path)
    return path


def set_value(name: str, value: str, path: Path | None = None) -> dict[str, Any]:
    """Set one setting from its text form; setting a model source clears the other sources.

    Returns the settings in the file, as written. The rest of the file is
    kept as it is, so a bad value can be replaced by setting it again
    (`load_config` names the command). Raises `InvalidInputError` for an
    unknown name or a bad value, and leaves the file as it was then.
    """
    path = path or config_path()
    converted = _convert(name, value)
    document = _read_document(path)
    if name in ("model.bundle", "model.gguf", "model.server"):
        for other in SOURCE_KEYS:
            if other != name and not (name == "model.server" and other == "model.name"):
                table, key = other.split(".", 1)
                if isinstance(document.get(table), dict):
                    document[table].pop(key, None)
    table, key = name.split(".", 1)
    if not isinstance(document.get(table), dict):
        document[table] = {}
    document[table][key] = converted
    _write_document({t: v for t, v in document.items() if v != {}}, path)
    return _flat(document)


def _flat(document: dict[str, Any]) -> dict[str, Any]:
    return {f"{t}.{k}": v for t, values in document.items() if isinstance(values, dict) for k, v in values.items()}


def unset_value(name: str, path: Path | None = None) -> tuple[dict[str, Any], bool]:
    """Remove one setting: (the settings left in the file, as written; whether it was set).

    A name the file holds is removed even when edge does not know it (a key
    left by another edge version), so a file `load_config` refuses can be
    repaired with edge itself. Raises `InvalidInputError` for a name that is
    neither known nor in the file.
    """
    path = path or config_path()
    document = _read_document(path)
    table, _, key = name.partition(".")
    values = document.get(table)
    held = (isinstance(values, dict) and key in values) or (not key and table in document)
    if name not in KEYS and not held:
        raise InvalidInputError(f"Unknown setting {name!r}.", hint="`edge config show --all` lists the settings")
    if held:
        if isinstance(values, dict) and key:
            values.pop(key)
            if not values:
                document.pop(table)
        else:
            document.pop(table)
        _write_document(document, path)
    return _flat(document), held


def _convert(name: str, value: str) -> Any:
    if name not in KEYS:
        raise InvalidInputError(f"Unknown setting {name!r}.", hint="`edge config show --all` lists the settings")
    what, convert = KEYS[name]
    try:
        return convert(value)
    except ValueError as exc:
        raise InvalidInputError(f"{value!r} is not a valid {name}: {str(exc).rstrip('.')}.",
                                hint=f"{name} is {what}") from exc
