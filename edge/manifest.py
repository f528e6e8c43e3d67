"""A bundle's manifest (`bundle.json`), typed: what every writer builds and the one reader checks.

    Manifest.from_json(json.loads(text), source="bundle x")   # raises BundleError listing what is wrong
    manifest.to_json()                                       # the dict `write_manifest` writes

The fields (see `edge.bundle` for the folder around them):

    format, format_version   "edge-bundle", 1
    name                     a label shown in the UI
    prompt_version           `edge.prompts.PROMPT_VERSION` the models were trained/checked with
    backend                  the kind serving models that name none: a kind registered with
                             `edge.backends.register_backend` ("llama.cpp", "onnx-genai", "http", ...)
    server                   (older manifests, backend "http") the server of every model
    models                   {key: ModelEntry}: "path" (a file or folder in the bundle; a served model has
                             none), "format", "quantization", "base", "backend", "server"
    adapters                 {key: AdapterEntry}: "path", "base_model" (the model key it was trained on)
    roles                    {"manager"|"answer"|"chat": RoleEntry}: "model" (a key of models), "adapter"
    embedder                 {"name", "dim", "path"}
    generation               decoding settings (`edge.generation.GenerationConfig`, read by the bundle)
    files                    {relative path: {"sha256", "bytes"}}, filled in by `write_manifest`
    created_at, edge_version, notes, and any other key (kept as written: `extra`)

Reading checks the structure only (types, references between tables, the
backend kinds); the files themselves are checked by `edge.bundle.Bundle`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from edge.errors import BundleError
from edge.prompts import PROMPT_VERSION

FORMAT = "edge-bundle"
FORMAT_VERSION = 1
ROLES = ("manager", "answer", "chat")  # the agents' roles; a manifest must name "answer"
SERVED_KINDS = ("http",)  # backends whose models are a server's, not a file's


@dataclass(frozen=True)
class ModelEntry:
    """One model: a file or folder of the bundle (`path`), or a served one (`server`: url, model, ...)."""

    path: str | None = None
    format: str | None = None
    quantization: str | None = None
    base: str | None = None
    backend: str | None = None  # None: the manifest's `backend`
    server: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> "ModelEntry":
        """A `models` entry as JSON holds it; keys this edge does not know go to `extra`."""
        return cls(**{k: spec.get(k) for k in _MODEL_KEYS}, extra={k: v for k, v in spec.items() if k not in _MODEL_KEYS})


@dataclass(frozen=True)
class AdapterEntry:
    """A LoRA adapter file and the key of the model it was trained on (None: any, as older bundles wrote)."""

    path: str
    base_model: str | None = None


@dataclass(frozen=True)
class RoleEntry:
    """The model (a key of `models`) and the adapter (a key of `adapters`, or None) serving one role."""

    model: str
    adapter: str | None = None


@dataclass(frozen=True)
class EmbedderEntry:
    name: str
    dim: int
    path: str


_KNOWN = ("format", "format_version", "name", "prompt_version", "backend", "server", "models", "adapters", "roles",
          "embedder", "generation", "files", "created_at", "edge_version", "notes")


@dataclass(frozen=True)
class Manifest:
    name: str
    backend: str
    models: Mapping[str, ModelEntry]
    roles: Mapping[str, RoleEntry]
    embedder: EmbedderEntry
    adapters: Mapping[str, AdapterEntry] = field(default_factory=dict)
    generation: Mapping[str, Any] | None = None
    server: Mapping[str, Any] | None = None
    prompt_version: str = PROMPT_VERSION
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    created_at: str | None = None
    edge_version: str | None = None
    notes: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this edge does not know, kept as written

    # ------------------------------------------------------------------ reading and writing

    @classmethod
    def from_json(cls, data: Any, *, source: str = "the bundle", kinds: tuple[str, ...] | None = None) -> "Manifest":
        """The manifest `data` (parsed JSON) describes; raises `BundleError` naming `source` and every problem.

        `kinds`: the backend kinds a model may name (default: those
        registered in `edge.backends`).
        """
        problems = structure_problems(data, kinds=kinds)
        if problems:
            raise BundleError(f"The bundle {source} is broken: " + "; ".join(problems),
                              hint="Rebuild or re-export it, or mend bundle.json by hand (backends: "
                              f"{', '.join(kinds or registered_kinds())}; a served model needs a 'server' with "
                              "'url' and 'model').")
        return cls(
            name=str(data.get("name") or ""),
            backend=data["backend"],
            models={key: ModelEntry.from_json(spec) for key, spec in data["models"].items()},
            roles={role: RoleEntry(spec["model"], spec.get("adapter") or None) for role, spec in data["roles"].items()},
            embedder=EmbedderEntry(str(data["embedder"].get("name", "")), int(data["embedder"].get("dim", 0)),
                                   str(data["embedder"].get("path", ""))),
            adapters={key: AdapterEntry(spec["path"], spec.get("base_model"))
                      for key, spec in (data.get("adapters") or {}).items()},
            generation=data.get("generation"),
            server=data.get("server"),
            prompt_version=data.get("prompt_version", PROMPT_VERSION),
            format=data.get("format", FORMAT),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
            files=data.get("files") or {},
            created_at=data.get("created_at"),
            edge_version=data.get("edge_version"),
            notes=data.get("notes"),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as `bundle.json` holds it (what `from_json` reads back); None fields are left out."""
        out: dict[str, Any] = {
            "format": self.format, "format_version": self.format_version, "name": self.name,
            "prompt_version": self.prompt_version, "backend": self.backend,
            "models": {key: _model_json(m) for key, m in self.models.items()},
            "adapters": {key: _drop_none({"path": a.path, "base_model": a.base_model}) for key, a in self.adapters.items()},
            "roles": {role: {"model": r.model, "adapter": r.adapter} for role, r in self.roles.items()},
            "embedder": {"name": self.embedder.name, "dim": self.embedder.dim, "path": self.embedder.path},
        }
        for key in ("generation", "server", "created_at", "edge_version", "notes"):
            if getattr(self, key) is not None:
                out[key] = _plain(getattr(self, key))
        out.update(_plain(self.extra))
        out["files"] = _plain(self.files)
        return out

    # ------------------------------------------------------------------ what the tables say

    def role(self, role: str) -> RoleEntry:
        """A role's entry; a role the manifest does not name is served like "answer"."""
        return self.roles.get(role) or self.roles["answer"]

    def model_backend(self, key: str) -> str:
        """The backend kind serving the model `key`: its own `backend`, else the manifest's (older manifests)."""
        return self.models[key].backend or self.backend

    def model_server(self, key: str) -> Mapping[str, Any]:
        """A served model's `server` table (url, model, ...): its own, else the manifest's (older manifests)."""
        return self.models[key].server or self.server or {}

    def with_model(self, key: str, model: ModelEntry) -> "Manifest":
        """A copy with `model` under `key` in `models`."""
        return replace(self, models={**self.models, key: model})

    def with_role(self, role: str, model: str, adapter: str | None = None) -> "Manifest":
        """A copy with `role` served by the model `model` (a key of `models`) and `adapter` (None: its base weights)."""
        return replace(self, roles={**self.roles, role: RoleEntry(model, adapter)})

    def with_generation(self, changes: Mapping[str, Any]) -> "Manifest":
        """A copy whose `generation` table has `changes` over its own."""
        return replace(self, generation={**(self.generation or {}), **changes})


def registered_kinds() -> tuple[str, ...]:
    """The backend kinds a bundle may name: those `edge.backends` can load from a bundle."""
    from edge.backends import bundle_kinds

    return bundle_kinds()


def structure_problems(data: Any, *, kinds: tuple[str, ...] | None = None) -> list[str]:
    """What is wrong with a manifest's structure, one phrase each (empty when it reads)."""
    if not isinstance(data, Mapping):
        return [f"the manifest is {type(data).__name__}, not an object"]
    if data.get("format") != FORMAT:
        return [f"format is {data.get('format')!r}, not {FORMAT!r}"]
    try:
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            return [f"written by a newer edge (bundle format {data.get('format_version')})"]
    except (TypeError, ValueError):
        return [f"format_version {data.get('format_version')!r} is not a number"]
    problems = [f"manifest has no {key!r}" for key in ("prompt_version", "backend", "models", "roles", "embedder")
                if key not in data]
    if problems:
        return problems
    for key in ("models", "roles", "embedder"):
        if not isinstance(data[key], Mapping):
            problems.append(f"{key!r} must be an object")
    adapters = data.get("adapters") or {}
    if not isinstance(adapters, Mapping):
        problems.append("'adapters' must be an object")
    if problems:
        return problems
    kinds = kinds or registered_kinds()
    if data["backend"] not in kinds:
        problems.append(f"unknown backend {data['backend']!r}")
    for key, spec in data["models"].items():
        if not isinstance(spec, Mapping):
            problems.append(f"model {key!r} must be an object")
            continue
        kind = spec.get("backend") or data["backend"]
        server = spec.get("server") or data.get("server") or {}
        if kind not in kinds:
            problems.append(f"model {key!r}: unknown backend {kind!r}")
        elif kind in SERVED_KINDS and not (isinstance(server, Mapping) and {"url", "model"} <= set(server)):
            problems.append(f"model {key!r}: backend {kind!r} needs a 'server' with 'url' and 'model'")
        elif kind not in SERVED_KINDS and "path" not in spec:
            problems.append(f"model {key!r}: backend {kind!r} needs a 'path'")
    for key, spec in adapters.items():
        if not isinstance(spec, Mapping) or "path" not in spec:
            problems.append(f"adapter {key!r} needs a 'path'")
    for role, spec in data["roles"].items():
        if not isinstance(spec, Mapping):
            problems.append(f"role {role!r} must be an object")
            continue
        if spec.get("model") not in data["models"]:
            problems.append(f"role {role!r} names unknown model {spec.get('model')!r}")
        if spec.get("adapter") and spec["adapter"] not in adapters:
            problems.append(f"role {role!r} names unknown adapter {spec['adapter']!r}")
    if "answer" not in data["roles"]:
        problems.append("no model for the 'answer' role")
    if not isinstance(data.get("files", {}), Mapping):
        problems.append("'files' must be an object")
    return problems


_MODEL_KEYS = ("path", "format", "quantization", "base", "backend", "server")


def _model_json(model: ModelEntry) -> dict[str, Any]:
    return {**_drop_none({k: _plain(getattr(model, k)) for k in _MODEL_KEYS}), **_plain(model.extra)}


def _drop_none(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if v is not None}


def _plain(value: Any) -> Any:
    """Mappings as dicts (a manifest's tables may be read-only views), for JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
