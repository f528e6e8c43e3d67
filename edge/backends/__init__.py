"""Language-model backends behind one small contract (see `base.py`).

    from edge.backends import load_backend, Message
    backend = load_backend("llama.cpp", model_path=path, adapters={"manager": lora})
    reply = backend.complete([Message("user", "Hi")], max_tokens=32)

Kinds: "llama.cpp" (GGUF in process), "http" (an OpenAI-compatible server),
"onnx-genai" (an onnxruntime-genai model folder), "scripted" (queued replies
for tests). Each implementation is imported only when asked for, so a
missing optional dependency fails only the backend that needs it.
Other code may add a kind with `register_backend`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from edge.backends.base import Backend, Completion, Message, parse_json
from edge.errors import BackendError

__all__ = [
    "Backend",
    "Completion",
    "Message",
    "BACKENDS",
    "load_backend",
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


def register_backend(kind: str, factory: str | Callable[..., Backend]) -> None:
    """Make `load_backend(kind, ...)` build a backend with `factory(**kwargs)`."""
    BACKENDS[kind] = factory


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
