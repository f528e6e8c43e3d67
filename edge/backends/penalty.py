"""llama.cpp's repeat penalty, written once for the local backends that apply it themselves.

Among the tokens of the reply's last `PENALTY_LAST_N` (llama.cpp's window,
`Llama.last_n_tokens_size`), a positive logit is divided by the penalty and
a negative one multiplied: llama.cpp's `llama_sampler_penalties` with only
the repeat term (no frequency or presence term). The fast greedy path of
`LlamaCppBackend` and `OnnxGenAIBackend` call it; training decodes with the
torch version (`edge.train.constrained.RepeatPenaltyProcessor`), and a test
holds the two equal.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PENALTY_LAST_N = 64  # tokens of the reply the penalty looks back over


def repeat_penalised(logits: np.ndarray, recent: Iterable[int], penalty: float) -> np.ndarray:
    """`logits` (one row over the vocabulary, float) with the tokens of `recent` penalised, in place; returned.

    Each token counts once however often it recurs, as in llama.cpp.
    `penalty` 1.0 (or no recent token) leaves the row as it is.
    """
    seen = np.fromiter(set(recent), dtype=np.int64)
    if penalty == 1.0 or not len(seen):
        return logits
    picked = logits[seen]
    logits[seen] = np.where(picked <= 0, picked * penalty, picked / penalty)
    return logits
