"""llama.cpp's grammar sampler walked token by token, for checks against what constrained decoding allows.

`LlamaCppBackend.grammar_walk(schema)` makes one; tests compare it with the
training side's grammar and with reported replies.
"""
from __future__ import annotations

import ctypes

import numpy as np


class GrammarWalk:
    """A grammar sampler walked token by token: which tokens it allows next (`LlamaCppBackend.grammar_walk`).

    What the runtime's constrained decoding consults at each step, for
    checks against it (the training side's grammar, a reported reply).
    Close it (or use it as a context manager) to free the sampler.
    """

    def __init__(self, lib, sampler, vocab_size: int) -> None:
        """`lib`: the llama_cpp module; `sampler`: a grammar sampler it made (freed by `close`)."""
        self._lib, self._sampler, self.vocab_size = lib, sampler, vocab_size
        self._data = (self._lib.llama_token_data * self.vocab_size)()
        self._view = np.ctypeslib.as_array(self._data)

    def allowed(self) -> np.ndarray:
        """A boolean mask over the vocabulary: the tokens the grammar accepts next."""
        self._view["id"], self._view["logit"], self._view["p"] = np.arange(self.vocab_size), 0.0, 0.0
        array = self._lib.llama_token_data_array(self._data, self.vocab_size, -1, False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        out = np.zeros(self.vocab_size, dtype=bool)
        out[self._view["id"][np.isfinite(self._view["logit"])]] = True
        return out

    def accept(self, token: int) -> None:
        """Advance the grammar past `token`."""
        self._lib.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler is not None:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None

    def __enter__(self) -> "GrammarWalk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
