"""Pure helpers for search: keyword query building and rank fusion."""
from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+", re.UNICODE)

RRF_K = 60


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression that ORs the query's words, each quoted.

    Quoting makes any user text safe (no FTS5 syntax errors); None when the
    text holds no word at all.
    """
    words = [w for w in _TOKEN.findall(text.lower()) if len(w) > 1 or w.isdigit()]
    if not words:
        return None
    unique = list(dict.fromkeys(words))
    return " OR ".join(f'"{w}"' for w in unique)


def reciprocal_rank_fusion(*rankings: list[int], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked lists of keys: score = sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
