"""Turning text into vectors for the memory bank.

An `Embedder` has a stable `name`, a dimension `dim`, and `embed(texts)`
returning an (n, dim) float32 array of unit-length rows. The bank records
name and dim when it is created and refuses another embedder afterwards.
"""
from __future__ import annotations

import hashlib
import re
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return one unit-length float32 row per text."""
        ...


_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """A model-free embedder: hashed bag of words and character trigrams.

    Useful where no model is available (quick experiments, retrieval-scale
    benchmarks where the vectors' meaning does not matter). Deterministic.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = f"hash-bow-{dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = words + [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                index = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, index] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


def embedder_for(name: str, dim: int) -> Embedder:
    """The embedder a bank records by name, rebuilt from what is installed."""
    if name.startswith("hash-bow-"):
        return HashEmbedder(dim)
    return load_default_embedder()


def load_default_embedder() -> Embedder:
    """The default embedder: all-MiniLM-L6-v2 on onnxruntime, as `edge bundle build-default` built it.

    Never builds it (building needs torch; the runtime never imports it):
    raises `BundleError` saying what to run when it is not built yet.
    """
    from edge.onnx_embedder import load_default_minilm

    return load_default_minilm()
