"""Roles on different models: the trained memory agents beside the user's own chat model.

A bundle serves three roles (`edge.bundle.ROLES`): the Memory Manager, the
Answer Agent and the chat reply. The default bundle serves all three from the
bundled 135M model, the first two with their trained LoRA adapters. A user
who already chats with a bigger model keeps those trained agents and sends
only the reply to it:

    --chat-model FILE.gguf                  the reply from a GGUF run in process
    --chat-server URL --chat-model NAME     the reply from an OpenAI-compatible server
    --role answer=FILE.gguf                 any role on any model
    --role chat=NAME@URL                    (a served model: its name, "@", the server's URL)

A role given its own model is served by that model's base weights: the
bundle's adapters are LoRAs of the bundle's model and do not fit another
(`Bundle.load_backend` loads a model's own adapters only). The result is
the same `Bundle`, held in memory, with one `models` entry per named model
carrying its own `backend` kind (and `server` table), which
`Bundle.load_backend`, `edge bundle verify` and `edge.Agent` read per role.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edge.bundle import ROLES, Bundle
from edge.manifest import ModelEntry
from edge.errors import InvalidInputError

SERVER_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class RoleModel:
    """Where one role's model comes from: a GGUF file run in process, or a model on an OpenAI-compatible server."""

    gguf: Path | None = None
    server: str | None = None
    name: str | None = None  # the served model's name (with `server`)

    @classmethod
    def parse(cls, text: str, *, role: str = "the role") -> "RoleModel":
        """A role's model from its text form: "FILE.gguf", or "NAME@URL" for a served model.

        Raises `InvalidInputError` for anything else, saying both forms.
        """
        text = text.strip()
        name, at, url = text.rpartition("@")
        if at and url.startswith(SERVER_SCHEMES):
            if not name:
                raise InvalidInputError(f"{text!r} names no model for {role} on {url}.",
                                        hint=f"write NAME@{url}, NAME being what the server lists at /v1/models")
            return cls(server=url.rstrip("/"), name=name)
        if text.startswith(SERVER_SCHEMES):
            raise InvalidInputError(f"{text!r} names no model for {role}.",
                                    hint=f"write NAME@{text}, NAME being what the server lists at /v1/models")
        path = Path(text).expanduser()
        if not (text.lower().endswith(".gguf") or path.is_file()):
            served = " (or --chat-server URL with --chat-model NAME)" if role == "--chat-model" else ""
            raise InvalidInputError(f"{text!r} is neither a .gguf file nor NAME@URL ({role}).",
                                    hint=f"give a GGUF file, or a served model as NAME@http://host:port{served}")
        return cls(gguf=path.resolve())

    @property
    def text(self) -> str:
        """The form `parse` reads (what `edge config` stores)."""
        return f"{self.name}@{self.server}" if self.server else str(self.gguf)

    def describe(self) -> str:
        return f"{self.name} @ {self.server}" if self.server else str(self.gguf)


def role_models(*, roles: tuple[str, ...] | list[str] = (), chat_model: str | None = None,
                chat_server: str | None = None) -> dict[str, RoleModel]:
    """The roles the user put on their own models, from `--role ROLE=MODEL`, `--chat-model` and `--chat-server`.

    Raises `InvalidInputError` for an unknown role, a role named twice, a
    `--chat-server` without `--chat-model NAME`, or a model that is neither
    a GGUF file nor NAME@URL.
    """
    chosen: dict[str, RoleModel] = {}
    for item in roles:
        role, sep, model = item.partition("=")
        role = role.strip()
        if not sep or not model.strip():
            raise InvalidInputError(f"--role takes ROLE=MODEL, not {item!r}.",
                                    hint="for example --role answer=~/models/qwen.gguf or --role chat=qwen2.5:3b@http://localhost:11434")
        if role not in ROLES:
            raise InvalidInputError(f"No role {role!r}.", hint=f"roles: {', '.join(ROLES)}")
        if role in chosen:
            raise InvalidInputError(f"The {role} role is given two models.", hint="name each role once")
        chosen[role] = RoleModel.parse(model, role=f"the {role} role")
    if chat_server or chat_model:
        if "chat" in chosen:
            raise InvalidInputError("The chat role is given twice (--role chat=... and --chat-model/--chat-server).",
                                    hint="use one of them")
        if chat_server:
            if not chat_model:
                raise InvalidInputError(f"Which model should {chat_server} run for the chat reply?",
                                        hint="--chat-server URL --chat-model NAME (the name it lists at /v1/models)")
            if not chat_server.startswith(SERVER_SCHEMES):
                raise InvalidInputError(f"--chat-server {chat_server!r} is not an http(s) URL.",
                                        hint="for example --chat-server http://localhost:11434")
            chosen["chat"] = RoleModel(server=chat_server.rstrip("/"), name=chat_model)
        else:
            chosen["chat"] = RoleModel.parse(chat_model or "", role="--chat-model")
    return chosen


def with_role_models(bundle: Bundle, chosen: Mapping[str, RoleModel], *, structured_output: str = "auto",
                     api_key_env: str | None = None, timeout: float | None = None) -> Bundle:
    """`bundle` (held in memory, its folder untouched) with each role of `chosen` served by its own model.

    Every other role keeps the bundle's model and adapter. A served model's
    `server` table takes `structured_output`, `api_key_env` and `timeout`
    (seconds) as `--server` does. Raises `BackendError` for a GGUF that is
    missing, not GGUF, or without a chat template.
    """
    from edge.gguf_info import read_gguf_info
    from edge.backends.http import server_table

    if not chosen:
        return bundle
    manifest = bundle.spec
    keys: dict[RoleModel, str] = {}  # roles on one model share one entry (and one loaded copy)
    for role, model in chosen.items():
        if model not in keys:
            keys[model] = f"{role}-model"
            if model.server:
                entry = ModelEntry(format="served", base=model.name, backend="http", server=server_table(
                    model.server, model.name, structured_output=structured_output, api_key_env=api_key_env,
                    timeout=timeout))
            else:
                info = read_gguf_info(model.gguf)
                info.require_chat_template()
                entry = ModelEntry(path=str(model.gguf), format="gguf", backend="llama.cpp",
                                   quantization=info.quantization, base=info.name)
            manifest = manifest.with_model(keys[model], entry)
        manifest = manifest.with_role(role, keys[model])
    return Bundle(bundle.root, manifest.to_json())
