"""Pure helpers for search: keyword query building, rank fusion, binary vector codes."""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)

RRF_K = 60

# Function words carry almost no bm25 weight in a large bank (they occur in a
# large share of all memories), yet every memory holding one must be scored:
# dropping them keeps keyword search fast at 10^5 memories. A query made only
# of them keeps them.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been before being below
    between both but by can cannot could couldn d did didn do does doesn doing don down during each few for
    from further had hadn has hasn have haven having he her here hers herself him himself his how i if in
    into is isn it its itself just ll m me more most my myself no nor not now o of off on once only or
    other our ours ourselves out over own re s same shan she should shouldn so some such t than that the
    their theirs them themselves then there these they this those through to too under until up ve very
    was wasn we were weren what when where which while who whom why will with won would wouldn y you your
    yours yourself yourselves
    """.split()
)

# Keyword search computes bm25 for at most about this many rows: the rarest
# query words (whose document counts add up to this) choose the rows, and the
# remaining words only re-rank them (see `edge.bank.search.SearchIndex.keyword`).
KEYWORD_RANK_BUDGET = 5000


def query_words(text: str) -> list[str]:
    """The words of a query worth matching: lower-cased, unique, stopwords dropped (unless that is all)."""
    words = [w for w in _TOKEN.findall(text.lower()) if len(w) > 1 or w.isdigit()]
    unique = list(dict.fromkeys(words))
    content = [w for w in unique if w not in STOPWORDS]
    return content or unique


# Text FTS5's unicode61 tokenizer cannot split into the words a person searches for: scripts written without
# spaces (CJK, Thai, Lao, Khmer, Myanmar, Japanese kana) or whose words it cuts at vowel signs (Devanagari and
# the other Indic scripts: combining marks), and names ending in symbols (C++, C#, F#).
_SCRIPT_RANGES = ((0x0900, 0x0DFF), (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF),
                  (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
_SYMBOL_NAME = re.compile(r"\w[+#]+(?!\w)")


def _needs_substrings(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _SCRIPT_RANGES)


def needs_substring_index(text: str) -> bool:
    """Whether `text` holds words the keyword tables cannot find (`substring_terms`): it goes into the
    substring (trigram) index too."""
    return bool(_SYMBOL_NAME.search(text)) or any(_needs_substrings(c) for c in text)


def substring_terms(query: str) -> list[str]:
    """The query's terms to find as substrings: each whitespace-separated piece of the query that holds a
    character of those scripts, or a name ending in "+" or "#" ("C++"), lower-cased, its outer punctuation
    stripped."""
    terms = []
    for piece in query.lower().split():
        piece = piece.strip(".,;:!?\"'()[]{}«»“”‘’「」『』。、，！？")
        if piece and (_SYMBOL_NAME.search(piece) or any(_needs_substrings(c) for c in piece)):
            terms.append(piece)
    return list(dict.fromkeys(terms))


def fts_or(words: list[str]) -> str:
    """An FTS5 MATCH expression that ORs the words, each quoted (any text is safe inside quotes)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression that ORs the query's words, each quoted.

    Quoting makes any user text safe (no FTS5 syntax errors); None when the
    text holds no word at all.
    """
    words = query_words(text)
    return fts_or(words) if words else None


def split_by_frequency(words: list[str], doc_freq: dict[str, int], budget: int) -> tuple[list[str], list[str]]:
    """(rare, common): the rarest words whose document counts add up to at most `budget`
    (always at least one word), and the others, rarest first in both lists."""
    order = sorted(words, key=lambda w: (doc_freq.get(w, 0), words.index(w)))
    rare: list[str] = []
    total = 0
    for word in order:
        if rare and total + doc_freq.get(word, 0) > budget:
            break
        rare.append(word)
        total += doc_freq.get(word, 0)
    return rare, order[len(rare):]


def reciprocal_rank_fusion(*rankings: list[int], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked lists of keys: score = sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


# ----------------------------------------------------------------------------- binary codes
#
# A vector's binary code is the sign of each of its components followed by
# the sign of its projection on `dim` fixed Gaussian hyperplanes (2 * dim
# bits). Hamming distance between codes approximates the angle between
# vectors well enough to pick a few dozen candidates out of 10^5, which are
# then re-scored with their stored float16 vectors. The hyperplanes come from
# NumPy's legacy RandomState, whose stream is frozen, so a code computed today
# matches one computed by a later install. Changing the scheme means a new
# VECTOR_CODE and a new migration that recomputes the codes.

CODE_SEED = 1729
VECTOR_CODE = f"sign+gauss-hyperplanes/seed={CODE_SEED}/v1"


def code_bits(dim: int) -> int:
    """Bits in the binary code of a `dim`-dimensional vector (a multiple of 8)."""
    return (2 * dim + 7) // 8 * 8


@lru_cache(maxsize=4)
def _hyperplanes(dim: int) -> np.ndarray:
    return np.random.RandomState(CODE_SEED).standard_normal((dim, dim)).astype(np.float32).T.copy()


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """(n, code_bits(dim) / 8) uint8: packed codes of float vectors, one row each."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    signs = np.concatenate([vectors > 0, vectors @ _hyperplanes(vectors.shape[1]) > 0], axis=1)
    return np.packbits(signs, axis=1, bitorder="little")
