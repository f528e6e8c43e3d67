"""Language-model backends behind one small contract (see `base.py`).

    from edge.backends import load_backend, Message
    backend = load_backend("llama.cpp", model_path=path, adapters={"manager": lora})
    reply = backend.complete([Message("user", "Hi")], max_tokens=32)

Kinds: "llama.cpp" (GGUF in process), "http" (an OpenAI-compatible server),
"onnx-genai" (an onnxruntime-genai model folder), "scripted" (queued replies
for tests). Each implementation is imported only when asked for, so a
missing optional dependency fails only the backend that needs it.
Other code may add a kind with `register_backend`; one registered with a
`from_bundle` loader can be named by a bundle's manifest (`models.<key>.backend`),
and `edge.bundle.Bundle.load_backend` loads it through that loader.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.backends.base import Backend, Completion, Message, parse_json
from edge.errors import BackendError

__all__ = [
    "Backend",
    "Completion",
    "Message",
    "BACKENDS",
    "BundleModel",
    "bundle_kinds",
    "load_backend",
    "load_bundle_model",
    "register_backend",
    "parse_json",
]

# kind -> "module:ClassName" (imported lazily) or a factory callable
BACKENDS: dict[str, str | Callable[..., Backend]] = {
    "llama.cpp": "edge.backends.llama_cpp:LlamaCppBackend",
    "http": "edge.backends.http:OpenAIHTTPBackend",
    "onnx-genai": "edge.backends.onnx_genai:OnnxGenAIBackend",
    "scripted": "edge.backends.scripted:ScriptedBackend",
}


@dataclass(frozen=True)
class BundleModel:
    """One model of a bundle as its manifest and the caller describe it: what a `from_bundle` loader is given.

    `path`: its file or folder (None for a served model); `server`: a served
    model's table (url, model, structured_output, api_key_env, timeout_s);
    `adapters`: the LoRA adapters made for it (name -> file); `n_ctx`: the
    context window in tokens; `repeat_penalty`; `n_threads` (None: the
    backend's choice).
    """

    path: Path | None = None
    server: Mapping[str, Any] = field(default_factory=dict)
    adapters: Mapping[str, Path] = field(default_factory=dict)
    n_ctx: int = 4096
    repeat_penalty: float = 1.0
    n_threads: int | None = None


def _llama_cpp_model(model: BundleModel) -> Backend:
    return load_backend("llama.cpp", model_path=model.path, n_ctx=model.n_ctx, adapters=dict(model.adapters) or None,
                        repeat_penalty=model.repeat_penalty, n_threads=model.n_threads)


def _onnx_genai_model(model: BundleModel) -> Backend:
    return load_backend("onnx-genai", model_dir=model.path, adapters=dict(model.adapters) or None,
                        repeat_penalty=model.repeat_penalty)


def _http_model(model: BundleModel) -> Backend:
    from edge.backends.http import http_backend

    return http_backend(model.server, n_ctx=model.n_ctx)


# kind -> how a bundle's model of that kind is loaded (`load_bundle_model`); kinds without one are for code only
BUNDLE_LOADERS: dict[str, Callable[[BundleModel], Backend]] = {
    "llama.cpp": _llama_cpp_model,
    "onnx-genai": _onnx_genai_model,
    "http": _http_model,
}


def register_backend(kind: str, factory: str | Callable[..., Backend], *,
                     from_bundle: Callable[[BundleModel], Backend] | None = None) -> None:
    """Make `load_backend(kind, ...)` build a backend with `factory(**kwargs)`.

    With `from_bundle`, a bundle's manifest may name `kind` for a model
    (it needs a `path`), loaded by `from_bundle(BundleModel(...))`.
    """
    BACKENDS[kind] = factory
    if from_bundle is not None:
        BUNDLE_LOADERS[kind] = from_bundle


def bundle_kinds() -> tuple[str, ...]:
    """The backend kinds a bundle's manifest may name."""
    return tuple(BUNDLE_LOADERS)


def load_bundle_model(kind: str, model: BundleModel) -> Backend:
    """Load one model of a bundle with the loader registered for `kind`; `BackendError` for a kind without one."""
    loader = BUNDLE_LOADERS.get(kind)
    if loader is None:
        raise BackendError(f"No backend kind {kind!r} can load a bundle's model.",
                           hint=f"bundles may name: {', '.join(BUNDLE_LOADERS)} (or a kind registered with "
                           "register_backend(..., from_bundle=...))")
    return loader(model)


def load_backend(kind: str, **kwargs) -> Backend:
    """Build the backend registered as `kind`, passing `kwargs` to its constructor."""
    factory = BACKENDS.get(kind)
    if factory is None:
        raise BackendError(f"Unknown backend {kind!r}.", hint=f"choose one of: {', '.join(BACKENDS)}")
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**kwargs)


def __getattr__(name: str):
    # `from edge.backends import LlamaCppBackend` without importing every backend up front.
    for spec in BACKENDS.values():
        if isinstance(spec, str) and spec.endswith(f":{name}"):
            module_name = spec.partition(":")[0]
            return getattr(importlib.import_module(module_name), name)
    raise AttributeError(f"module 'edge.backends' has no attribute {name!r}")
