"""Bring your own model: a GGUF file or an OpenAI-compatible server, wherever a bundle is accepted.

Every command that runs the agents takes one *model source*:

    --bundle DIR                     a bundle folder (`edge export`, `edge bundle create`)
    --model FILE.gguf                any GGUF file, run in process by llama.cpp
    --server URL --model NAME        any OpenAI-compatible chat server (llama-server, Ollama, vLLM, ...)
    (none)                           the `[model]` table of $EDGE_HOME/config.toml, else the default bundle

A GGUF file or a server becomes a `Bundle` held in memory (`gguf_bundle`,
`server_bundle`): the same object `edge.Agent` gets from a bundle folder, its
models pointing at the file (or the server) and its embedder the default one
(all-MiniLM-L6-v2), so a bank filled with one model can be read with another.
`create_bundle` writes the same thing to a folder, with checksums, for
`edge bundle create`.

Settings follow the model's size, read from the GGUF header (`GENERATION_BY_SIZE`), and are
written as the manifest's `generation` table, which `Bundle.generation` reads (`edge.generation`):
a sub-1B model chooses spans of what was said (extractive text, as the
bundled 135M model does) and reads up to 20 memories in 300 tokens; bigger ones
write their own text and read more. The user overrides any of them with
--text-mode / --answer-k / --n-ctx or `edge config set generation.*`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from edge.backends.http import SCHEMA_FORMATS, server_table
from edge.bundle import ROLES, Bundle, build_default, write_manifest
from edge.config import generation_overrides
from edge.manifest import AdapterEntry, EmbedderEntry, Manifest, ModelEntry, RoleEntry
from edge.errors import BundleError, InvalidInputError
from edge.files import link_or_copy, staged_dir
from edge.gguf_info import GgufInfo, read_gguf_info
from edge.prompts import REPEAT_PENALTY
from edge.role_models import RoleModel, with_role_models

Progress = Callable[[str], None]

# (largest size in billions of parameters, settings). answer_k / answer_tokens: the Answer Agent reads up to
# answer_k memories as windows within answer_tokens tokens, and prompt evaluation on a laptop CPU slows with
# the model's size: 280 tokens (extractive lines, no ids) answer in about 1.5 s with the 135M model on 2 cores (bench/bench_agent.py);
# a bigger model reads more and better (bench/bench_answer_context.py: 300 tokens hold 61 % of conv-26's
# evidence, 500 tokens 71 %); Memory-R1 reads 60 memories with an 8B model on a GPU. text_mode: below 1B
# the model chooses among the turn's clauses (README, "Faithful memory"); from 1B on it writes the
# fact, and the grounding checks still refuse text nobody said. n_ctx: the file's trained context, capped
# where the KV cache of a laptop-sized model stays small.
GENERATION_BY_SIZE: tuple[tuple[float, dict[str, Any]], ...] = (
    (1.0, {"answer_k": 20, "answer_tokens": 280, "text_mode": "extractive", "n_ctx_cap": 4096}),
    (4.5, {"answer_k": 20, "answer_tokens": 600, "text_mode": "free", "n_ctx_cap": 8192}),
    (float("inf"), {"answer_k": 30, "answer_tokens": 1000, "text_mode": "free", "n_ctx_cap": 8192}),
)
# A served model's size is not known; servers usually run models of 1B and more.
SERVER_GENERATION: dict[str, Any] = {"answer_k": 20, "answer_tokens": 600, "text_mode": "free", "n_ctx": 4096,
                                     "repeat_penalty": 1.0}


def generation_for(info: GgufInfo) -> dict[str, Any]:
    """The `generation` settings for a model of this size: answer_k, answer_tokens, text_mode, n_ctx, repeat_penalty."""
    for ceiling, settings in GENERATION_BY_SIZE:
        if info.billions < ceiling:
            break
    n_ctx = min(info.context_length or 4096, settings["n_ctx_cap"])
    return {"answer_k": settings["answer_k"], "answer_tokens": settings["answer_tokens"],
            "text_mode": settings["text_mode"], "n_ctx": n_ctx, "repeat_penalty": REPEAT_PENALTY}


def default_embedder(progress: Progress = lambda _: None) -> EmbedderEntry:
    """The default embedder's manifest entry (name, dim, path) with an absolute path.

    The default bundle's copy when it exists; else the cached ONNX export of
    all-MiniLM-L6-v2, built on the first run (once, by the export side through
    the `edge.first_run` entry point "default-embedder", as `open_bank` does).
    """
    from edge import paths, plugins

    default = paths.default_bundle_dir()
    if (default / "bundle.json").is_file():
        try:
            bundle = Bundle.load(default)
            return EmbedderEntry(bundle.embedder_name, bundle.embedder_dim, str(bundle.embedder_dir))
        except BundleError:
            pass
    from edge.onnx_embedder import default_minilm_built, load_default_minilm

    if not default_minilm_built():
        progress("First run: building the default embedder (all-MiniLM-L6-v2, once)")
        plugins.load(plugins.FIRST_RUN, "default-embedder")()
    progress("Loading the default embedder (all-MiniLM-L6-v2)")
    embedder = load_default_minilm()
    return EmbedderEntry(embedder.name, embedder.dim, str(Path(embedder.model_dir).resolve()))


# ---------------------------------------------------------------------- bundles in memory


def _in_memory(root: Path, manifest: Manifest) -> Bundle:
    return Bundle(root, manifest.to_json())


def gguf_manifest(info: GgufInfo, model_path: str, embedder: EmbedderEntry,
                  adapters: dict[str, str] | None = None, generation: dict[str, Any] | None = None) -> Manifest:
    """A bundle manifest serving every role from one GGUF file (with optional manager/answer adapters)."""
    adapters = adapters or {}
    return Manifest(
        name=info.path.stem,
        backend="llama.cpp",
        models={"base": ModelEntry(path=model_path, format="gguf", quantization=info.quantization, base=info.name)},
        adapters={key: AdapterEntry(path, "base") for key, path in adapters.items()},
        roles={role: RoleEntry("base", role if role in adapters else None) for role in ROLES},
        embedder=embedder,
        generation={**generation_for(info), **(generation or {})},
    )


def server_manifest(url: str, name: str, embedder: EmbedderEntry, *, structured_output: str = "auto",
                    api_key_env: str | None = None, adapters: dict[str, str] | None = None,
                    generation: dict[str, Any] | None = None, timeout: float | None = None) -> Manifest:
    """A bundle manifest whose models are served by an OpenAI-compatible server (backend "http").

    `adapters` maps "manager"/"answer" to the model names the server serves
    those adapters under. The API key is never written: only the name of the
    environment variable that holds it.
    """
    if structured_output not in SCHEMA_FORMATS:
        raise InvalidInputError(f"Unknown structured output {structured_output!r}.",
                                hint=f"use one of {', '.join(SCHEMA_FORMATS)}")
    return Manifest(
        name=f"{name} @ {url}",
        backend="http",
        server=server_table(url, name, structured_output=structured_output, api_key_env=api_key_env,
                            adapters=adapters, timeout=timeout),
        models={"base": ModelEntry(format="served", base=name)},
        roles={role: RoleEntry("base", None) for role in ROLES},
        embedder=embedder,
        generation={**SERVER_GENERATION, **(generation or {})},
    )


def gguf_bundle(path: Path | str, *, generation: dict[str, Any] | None = None,
                progress: Progress = lambda _: None) -> Bundle:
    """A bundle in memory that runs `path` (any GGUF chat model) for every role, with the default embedder.

    Raises BackendError when the file is missing, is not GGUF, or has no chat template.
    """
    path = Path(path).expanduser().resolve()
    info = read_gguf_info(path)
    info.require_chat_template()
    progress(f"Model: {path.name} ({info.billions:.2f}B parameters)")
    manifest = gguf_manifest(info, str(path), default_embedder(progress), generation=generation)
    return _in_memory(path.parent, replace(manifest, name=path.name))


def server_bundle(url: str, name: str, *, structured_output: str = "auto", api_key_env: str | None = None,
                  generation: dict[str, Any] | None = None, progress: Progress = lambda _: None,
                  timeout: float | None = None) -> Bundle:
    """A bundle in memory whose models are `name` on the server at `url`, with the default embedder.

    `timeout`: seconds to wait for the server's answer (default `DEFAULT_TIMEOUT_S`)."""
    manifest = server_manifest(url, name, default_embedder(progress), structured_output=structured_output,
                               api_key_env=api_key_env, generation=generation, timeout=timeout)
    return _in_memory(Path.cwd(), manifest)


def with_generation(bundle: Bundle, generation: dict[str, Any]) -> Bundle:
    """`bundle` with some `generation` settings replaced (the user's overrides); the folder is not touched.

    Raises `BundleError` for an override `GenerationConfig` refuses (checked here, before any model loads).
    """
    if not generation:
        return bundle
    changed = Bundle(bundle.root, bundle.spec.with_generation(generation).to_json())
    changed.generation  # noqa: B018 - validates the merged table once
    return changed


# ---------------------------------------------------------------------- bundles on disk


def create_bundle(out: Path, *, gguf: Path | None = None, manager_adapter: Path | None = None,
                  answer_adapter: Path | None = None, server: str | None = None, name: str | None = None,
                  structured_output: str = "auto", api_key_env: str | None = None,
                  generation: dict[str, Any] | None = None, force: bool = False,
                  log: Progress = print) -> Bundle:
    """Write a bundle folder for a GGUF file (and LoRA adapters over it) or for a served model.

    The folder holds the model (hard-linked when the filesystem allows),
    the adapters, the default embedder and a checksummed manifest; it is
    built beside `out` and renamed into place. Raises BundleError when `out`
    exists (unless `force`), InvalidInputError for a wrong combination of
    arguments, BackendError for a file that is not a usable GGUF chat model.
    """
    out = Path(out).expanduser()
    if bool(gguf) == bool(server):
        raise InvalidInputError("Give either a GGUF file or a server.", hint="--gguf FILE, or --server URL --model NAME")
    if server and not name:
        raise InvalidInputError("A served model needs its name.", hint="--server URL --model NAME")
    if server and (manager_adapter or answer_adapter):
        raise InvalidInputError("Adapters are files for a GGUF bundle; a server serves its own.",
                                hint="serve the adapter under a model name of its own and use that name")
    if out.exists() and not force:
        raise BundleError(f"{out} already exists.", hint="choose another --out, or pass --force to replace it")
    embedder = default_embedder(log)
    with staged_dir(out) as staging:
        log("[1/3] embedder: " + embedder.name)
        shutil.copytree(embedder.path, staging / "embedder")
        embedder = replace(embedder, path="embedder")
        if gguf:
            info = read_gguf_info(gguf)
            info.require_chat_template()
            log(f"[2/3] model: {Path(gguf).name} ({info.billions:.2f}B parameters)")
            link_or_copy(gguf, staging / "model.gguf")
            adapters = {}
            for key, adapter in (("manager", manager_adapter), ("answer", answer_adapter)):
                if adapter:
                    read_gguf_info(adapter)  # a GGUF at least; llama.cpp checks it fits the model when verified
                    link_or_copy(adapter, staging / "adapters" / f"{key}.gguf")
                    adapters[key] = f"adapters/{key}.gguf"
            manifest = replace(gguf_manifest(info, "model.gguf", embedder, adapters, generation),
                               notes=f"Made by `edge bundle create --gguf {Path(gguf).name}`.")
        else:
            log(f"[2/3] model: {name} served at {server}")
            manifest = replace(server_manifest(server, name, embedder, structured_output=structured_output,
                                               api_key_env=api_key_env, generation=generation),
                               notes="Made by `edge bundle create --server`; the API key is read from the environment.")
        log("[3/3] checksums and manifest")
        write_manifest(staging, manifest)
    return Bundle.load(out)


# ---------------------------------------------------------------------- what the user chose


@dataclass(frozen=True)
class ModelChoice:
    """Where the models come from (one of bundle / gguf / server) and the user's generation overrides."""

    bundle: Path | None = None
    gguf: Path | None = None
    server: str | None = None
    name: str | None = None  # the served model's name (with `server`)
    structured_output: str = "auto"
    api_key_env: str | None = None
    timeout: float | None = None  # seconds to wait for the server (with `server`; None: DEFAULT_TIMEOUT_S)
    generation: dict[str, Any] = field(default_factory=dict)  # answer_k / text_mode / n_ctx set by the user
    origin: str = "default"  # "options" (command line), "config" (config.toml) or "default"
    # Roles served by a model of their own (`edge.role_models`): ((role, RoleModel), ...), from --role,
    # --chat-model and --chat-server, else config.toml's [roles] table.
    roles: tuple[tuple[str, RoleModel], ...] = ()

    @classmethod
    def from_options(cls, *, bundle: Path | None = None, model: str | None = None, server: str | None = None,
                     structured_output: str | None = None, api_key_env: str | None = None,
                     timeout: float | None = None, answer_k: int | None = None, text_mode: str | None = None, n_ctx: int | None = None,
                     config: dict[str, Any] | None = None,
                     roles: dict[str, RoleModel] | None = None) -> "ModelChoice":
        """The choice from command-line options; with no source among them, from `config` (`edge.config`).

        `model` is a GGUF path without `server`, the served model's name with
        it. Options override the config's `generation.*` one by one. `roles`
        (`edge.role_models.role_models`) puts roles on models of their own;
        without it, config.toml's `roles.*` do.
        """
        config = config if config is not None else {}
        source = cls._source(bundle=bundle, model=model, server=server, structured_output=structured_output,
                             api_key_env=api_key_env, timeout=timeout, answer_k=answer_k, text_mode=text_mode,
                             n_ctx=n_ctx, config=config)
        origin = source.origin
        if roles:
            origin = "options"  # saved by `edge chat` for next time, as a model option is
        else:
            roles = {key.split(".", 1)[1]: RoleModel.parse(value, role=key)
                     for key, value in config.items() if key.startswith("roles.")}
            origin = "config" if roles and origin == "default" else origin
        return replace(source, roles=tuple(sorted(roles.items())), origin=origin)

    @classmethod
    def _source(cls, *, bundle: Path | None, model: str | None, server: str | None, structured_output: str | None,
                api_key_env: str | None, timeout: float | None, answer_k: int | None, text_mode: str | None,
                n_ctx: int | None, config: dict[str, Any]) -> "ModelChoice":
        given = {"answer_k": answer_k, "text_mode": text_mode, "n_ctx": n_ctx}
        generation = generation_overrides(config)
        generation.update({key: value for key, value in given.items() if value is not None})
        if bundle and (model or server):
            raise InvalidInputError("--bundle and --model/--server are two ways to choose the model; give one.")
        if server:
            if not model:
                raise InvalidInputError(f"Which model should {server} run?",
                                        hint="--server URL --model NAME (the name the server lists at /v1/models)")
            return cls(server=server, name=model, structured_output=structured_output or "auto",
                       api_key_env=api_key_env, timeout=timeout or config.get("model.timeout"), generation=generation,
                       origin="options")
        if model:
            if not (model.lower().endswith(".gguf") or Path(model).expanduser().is_file()):
                raise InvalidInputError(f"--model {model!r} is not a .gguf file.",
                                        hint="give a path to a GGUF file, or add --server URL to use a served model")
            return cls(gguf=Path(model).expanduser().resolve(), generation=generation, origin="options")
        if bundle:
            return cls(bundle=Path(bundle), generation=generation, origin="options")
        if config.get("model.server"):
            return cls(server=config["model.server"], name=config.get("model.name") or "default",
                       structured_output=structured_output or config.get("model.structured_output", "auto"),
                       api_key_env=api_key_env or config.get("model.api_key_env"),
                       timeout=timeout or config.get("model.timeout"), generation=generation, origin="config")
        if config.get("model.gguf"):
            return cls(gguf=Path(config["model.gguf"]), generation=generation, origin="config")
        if config.get("model.bundle"):
            return cls(bundle=Path(config["model.bundle"]), generation=generation, origin="config")
        return cls(generation=generation)

    @property
    def is_default(self) -> bool:
        return not (self.bundle or self.gguf or self.server or self.roles)

    def describe(self) -> str:
        if self.server:
            text = f"{self.name} @ {self.server}"
        elif self.gguf:
            text = str(self.gguf)
        else:
            text = str(self.bundle) if self.bundle else "the default bundle"
        return text + "".join(f", {role} on {model.describe()}" for role, model in self.roles)

    def settings(self) -> dict[str, Any]:
        """This choice as `edge.config` settings (what `edge chat` saves for next time)."""
        settings: dict[str, Any] = {}
        if self.server:
            settings.update({"model.server": self.server, "model.name": self.name,
                             "model.structured_output": self.structured_output})
            if self.api_key_env:
                settings["model.api_key_env"] = self.api_key_env
            if self.timeout:
                settings["model.timeout"] = self.timeout
        elif self.gguf:
            settings["model.gguf"] = str(self.gguf)
        elif self.bundle:
            settings["model.bundle"] = str(Path(self.bundle).expanduser().resolve())
        settings.update({f"roles.{role}": model.text for role, model in self.roles})
        return settings

    def open(self, progress: Progress = lambda _: None) -> Bundle:
        """The bundle this choice names (built, read or made in memory), with the user's overrides applied."""
        if self.server:
            bundle = server_bundle(self.server, self.name or "default", structured_output=self.structured_output,
                                   api_key_env=self.api_key_env, progress=progress, timeout=self.timeout)
        elif self.gguf:
            bundle = gguf_bundle(self.gguf, progress=progress)
        elif self.bundle:
            progress(f"Reading the bundle {self.bundle}")
            bundle = Bundle.load(self.bundle)
        else:
            bundle = build_default(log=progress)
        for role, model in self.roles:
            progress(f"The {role} role: {model.describe()}")
        bundle = with_role_models(bundle, dict(self.roles), structured_output=self.structured_output,
                                  api_key_env=self.api_key_env, timeout=self.timeout)
        return with_generation(bundle, self.generation)

    def with_generation(self, **generation: Any) -> "ModelChoice":
        return replace(self, generation={**self.generation, **{k: v for k, v in generation.items() if v is not None}})


def remember_choice(choice: ModelChoice) -> Path | None:
    """Save `choice`'s model source in the config file (what `edge chat` does); None for the default bundle."""
    from edge import config

    if choice.is_default:
        return None
    settings = {k: v for k, v in config.load_config().items() if not k.startswith(("model.", "roles."))}
    settings.update(choice.settings())
    return config.save_config(settings)
