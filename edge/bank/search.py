"""The bank's search tables: vectors (sqlite-vec), binary codes, keywords (FTS5), and rank fusion.

Every live memory has one row in each of three tables, keyed by the
memory's rowid and carrying its owner and `kind` ("turn", "fact", "old"):
`memory_vec` (float32 vector, exact KNN), `memory_bin` (binary code plus
a float16 copy of the vector, for fast approximate KNN) and a keyword
table for bm25 ranking: `turn_fts` for the episodic log, `memory_fts` for
facts, so that each is ranked with its own term statistics. `SearchIndex`
is the only code that reads or writes them; `MemoryBank` calls it inside its own transactions
and under its own lock, so an index is not meant to be shared between threads by itself.
"""
from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from edge.bank.opening import REINDEX_REMEDY
from edge.bank.records import SCOPES, SEARCH_MODES
from edge.errors import InvalidInputError
from edge.bank.retrieval import (
    KEYWORD_RANK_BUDGET,
    VECTOR_CODE,
    binary_codes,
    fts_or,
    needs_substring_index,
    query_words,
    reciprocal_rank_fusion,
    split_by_frequency,
    substring_terms,
)

# Approximate vector search fetches this many times k candidates by binary code
# (at least MIN_CANDIDATES), then re-scores them exactly; see `SearchIndex.nearest`.
OVERSAMPLE = 4
MIN_CANDIDATES = 64
MAX_K = 4096  # sqlite-vec's limit on k
HYBRID_POOL = 20  # hybrid search fuses at least this many candidates from each side
# A search box's filter (the chat app, `edge memory search`): hits that match no keyword must be at least
# this close in meaning (cosine, all-MiniLM-L6-v2: related short sentences score above, unrelated ones below).
MIN_SIMILARITY = 0.3

Ranked = list[tuple[int, float]]  # (rowid, score), best first


def kind_filter(scope: str, include_superseded: bool) -> tuple[str, tuple[str, ...]]:
    """SQL condition on the search tables' `kind` column for a scope, and its arguments.

    Raises `InvalidInputError` for a scope not in SCOPES.
    """
    if scope not in SCOPES:
        raise InvalidInputError(f"Unknown search scope {scope!r}; use one of {', '.join(SCOPES)}.")
    if scope == "episodic":
        return " AND kind = ?", ("turn",)
    if scope == "facts":
        return (" AND kind != ?", ("turn",)) if include_superseded else (" AND kind = ?", ("fact",))
    return ("", ()) if include_superseded else (" AND kind != ?", ("old",))


def keyword_tables(scope: str, include_superseded: bool) -> list[tuple[str, str, tuple[str, ...]]]:
    """The keyword tables a scope reads, each as (table, SQL condition, arguments).

    Raises `InvalidInputError` for a scope not in SCOPES.
    """
    if scope not in SCOPES:
        raise InvalidInputError(f"Unknown search scope {scope!r}; use one of {', '.join(SCOPES)}.")
    facts = ("memory_fts", "", ()) if include_superseded else ("memory_fts", " AND kind = ?", ("fact",))
    return {"episodic": [TURNS], "facts": [facts], "all": [TURNS, facts]}[scope]


TURNS = ("turn_fts", "", ())


class SearchIndex:
    """The vector, binary-code and keyword tables of one bank file, and the searches over them.

    `binary` says whether the file's binary codes were computed by this
    code's scheme (`edge.bank.retrieval.VECTOR_CODE`); when not, vector search
    uses the exact float32 table only.
    """

    def __init__(self, conn: Any, *, binary: bool) -> None:
        self._conn = conn
        self.binary = binary
        # Keyword ranking scores at most about this many rows (see `keyword`); tests lower it.
        self.keyword_rank_budget = KEYWORD_RANK_BUDGET

    @classmethod
    def of(cls, conn: Any, meta: dict[str, str]) -> "SearchIndex":
        """The index of a file whose `meta` table reads `meta`."""
        return cls(conn, binary=meta.get("vector_code") == VECTOR_CODE)

    # ------------------------------------------------------------------ writing

    def add(self, rowid: int, text: str, owner: str, kind: str, vector: np.ndarray) -> None:
        """Index one memory: its search text, its (unit, float32) vector and that vector's binary code."""
        vec = np.asarray(vector, dtype=np.float32)
        if kind == "turn":
            self._conn.execute("INSERT INTO turn_fts (rowid, text, owner) VALUES (?, ?, ?)", (rowid, text, owner))
        else:
            self._conn.execute("INSERT INTO memory_fts (rowid, text, owner, kind) VALUES (?, ?, ?, ?)",
                               (rowid, text, owner, kind))
        if needs_substring_index(text):
            self._conn.execute("INSERT INTO memory_tri (rowid, text, owner, kind) VALUES (?, ?, ?, ?)",
                               (rowid, text, owner, kind))
        self._conn.execute("INSERT INTO memory_vec (rowid, owner, kind, embedding) VALUES (?, ?, ?, ?)",
                           (rowid, owner, kind, vec.tobytes()))
        self._conn.execute(
            "INSERT INTO memory_bin (rowid, owner, kind, code, half) VALUES (?, ?, ?, vec_bit(?), ?)",
            (rowid, owner, kind, binary_codes(vec)[0].tobytes(), vec.astype(np.float16).tobytes()),
        )

    def remove(self, rowid: int) -> None:
        """Take a memory out of every search table (nothing happens when it is not there)."""
        for table in ("turn_fts", "memory_fts", "memory_tri", "memory_vec", "memory_bin"):
            self._conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))

    def set_kind(self, rowid: int, kind: str) -> None:
        """Relabel a fact's rows ("fact" <-> "old", when superseded or restored); its vector stays.

        Raises `InvalidInputError` for "turn": the episodic log's rows are never relabelled.
        """
        if kind == "turn":
            raise InvalidInputError("A fact cannot become a turn of the episodic log.")
        for table in ("memory_fts", "memory_tri", "memory_vec", "memory_bin"):
            self._conn.execute(f"UPDATE {table} SET kind = ? WHERE rowid = ?", (kind, rowid))

    # ------------------------------------------------------------------ searching

    def ranked(
        self,
        query: str,
        vector: np.ndarray | None,
        owner: str,
        k: int,
        *,
        mode: str = "hybrid",
        scope: str = "all",
        include_superseded: bool = False,
        min_similarity: float | None = None,
    ) -> Ranked:
        """The owner's best k rows for a query, as (rowid, score), best first.

        `vector` is the query's embedding (unused in keyword mode). Hybrid
        fuses the vector and keyword rankings (reciprocal rank fusion).
        `min_similarity` filters like a search box: a hit must match a
        keyword of the query or have a cosine similarity of at least this
        much (None keeps the k best, however far). Raises
        `InvalidInputError` for an unknown mode or scope.
        """
        if mode not in SEARCH_MODES:
            raise InvalidInputError(f"Unknown search mode {mode!r}; use vector, keyword or hybrid.")
        kinds = kind_filter(scope, include_superseded)
        if k < 1:
            return []
        if mode == "keyword":
            return self.keyword(query, owner, k, scope=scope, include_superseded=include_superseded)
        if vector is None:
            raise InvalidInputError("A vector or hybrid search needs the query's vector.")
        if mode == "vector":
            by_vector = self.nearest(vector, owner, k, kinds=kinds)
            return [(r, s) for r, s in by_vector if min_similarity is None or s >= min_similarity]
        pool = max(k, HYBRID_POOL)
        by_vector = self.nearest(vector, owner, pool, kinds=kinds)
        by_keyword = self.keyword(query, owner, pool, scope=scope, include_superseded=include_superseded)
        fused = reciprocal_rank_fusion([r for r, _ in by_vector], [r for r, _ in by_keyword])
        if min_similarity is not None:
            keep = {r for r, _ in by_keyword} | {r for r, s in by_vector if s >= min_similarity}
            fused = [(r, s) for r, s in fused if r in keep]
        return fused[:k]

    def nearest(self, vector: np.ndarray, owner: str, k: int, *, kinds: tuple[str, tuple] = ("", ()),
                exact: bool = False) -> Ranked:
        """The owner's k nearest rows as (rowid, cosine similarity), best first.

        sqlite-vec's brute-force float32 KNN costs ~0.4 ms of CPU per 1000
        vectors, too slow at 10^5. So the nearest OVERSAMPLE * k memories by
        Hamming distance between binary codes are fetched first (about 4x
        cheaper), with their float16 vectors, and re-scored by exact distance.
        When the owner has no more memories than that, every one of them is
        re-scored and the ranking is exact. `exact` (and a file whose codes
        were built by another scheme) uses the exact float32 search.
        `kinds` is a `kind_filter` condition.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        k = min(int(k), MAX_K)
        if exact or not self.binary:
            rows = self._conn.execute(
                "SELECT rowid, distance FROM memory_vec WHERE embedding MATCH ? AND k = ? AND owner = ?" + kinds[0],
                (query.tobytes(), k, owner, *kinds[1]),
            ).fetchall()
            # Unit vectors: cosine similarity = 1 - d^2 / 2.
            return [(rowid, 1.0 - (dist * dist) / 2.0) for rowid, dist in rows]
        candidates = min(max(k * OVERSAMPLE, MIN_CANDIDATES), MAX_K)
        rows = self._conn.execute(
            "SELECT rowid, half FROM memory_bin WHERE code MATCH vec_bit(?) AND k = ? AND owner = ?" + kinds[0],
            (binary_codes(query)[0].tobytes(), candidates, owner, *kinds[1]),
        ).fetchall()
        if not rows:
            return []
        halves = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
        vectors = halves.astype(np.float32)
        # Same score as the exact path: 1 - |q - v|^2 / 2, the cosine for unit vectors.
        dist2 = np.sum((vectors - query) ** 2, axis=1)
        order = np.lexsort((np.arange(len(rows)), dist2))[:k]
        return [(rows[i][0], float(1.0 - dist2[i] / 2.0)) for i in order]

    def keyword(self, query: str, owner: str, k: int, *, scope: str = "all",
                include_superseded: bool = True) -> Ranked:
        """The owner's k best keyword matches as (rowid, -bm25), best first.

        Turns and facts are ranked in their own tables (`keyword_tables`),
        each with its own term statistics; a scope that reads both merges
        the two rankings by score. Raises `InvalidInputError` for an
        unknown scope.
        """
        words = query_words(query)
        if k < 1:
            return []
        found = self._substrings(substring_terms(query), owner, k, kind_filter(scope, include_superseded))
        if not words:
            return found
        rankings = [self._keyword_in(table, words, owner, k, (cond, args))
                    for table, cond, args in keyword_tables(scope, include_superseded)]
        ranked = rankings[0] if len(rankings) == 1 else list(heapq.merge(*rankings, key=lambda hit: -hit[1]))
        if not found:
            return ranked[:k]
        # A word the keyword tables cannot split ("里斯本" inside a sentence, "C++") is the rarest kind of
        # match there is: those hits lead, scored above every bm25 score, then the others.
        top = max((score for _, score in ranked), default=0.0) + 1.0
        seen = {rowid for rowid, _ in found}
        return ([(rowid, top + score) for rowid, score in found] + [h for h in ranked if h[0] not in seen])[:k]

    def _substrings(self, terms: list[str], owner: str, k: int, kinds: tuple[str, tuple]) -> Ranked:
        """The owner's newest texts holding any of `terms` as a substring (the trigram index, `memory_tri`),
        scored by how many of the terms each holds."""
        if not terms:
            return []
        escaped = [t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for t in terms]
        hits = " + ".join("(text LIKE ? ESCAPE '\\')" for _ in terms)
        rows = self._conn.execute(
            f"SELECT rowid, {hits} AS n FROM memory_tri WHERE ({hits.replace(' + ', ' OR ')}) AND owner = ?"
            + kinds[0] + " ORDER BY n DESC, rowid DESC LIMIT ?",
            (*[f"%{t}%" for t in escaped], *[f"%{t}%" for t in escaped], owner, *kinds[1], int(k)),
        ).fetchall()
        return [(rowid, float(n)) for rowid, n in rows]

    def _keyword_in(self, table: str, words: list[str], owner: str, k: int, kinds: tuple[str, tuple]) -> Ranked:
        """The best k matches in one keyword table.

        bm25 must be computed for every row that matches, so a query word
        found in a large share of the bank makes ranking slow. The query's
        words are counted first (cheap); the rarest, with document counts
        adding up to `keyword_rank_budget`, decide which rows match, and the
        others only add to their scores. If that leaves fewer than k hits, the
        most recent matches of the other words fill up the list.
        """
        budget = self.keyword_rank_budget
        counts = {
            w: self._conn.execute(f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (fts_or([w]),)).fetchone()[0]
            for w in words
        }
        words = [w for w in words if counts[w]]
        if not words:
            return []
        rare, common = split_by_frequency(words, counts, budget)
        if sum(counts[w] for w in rare) > budget:
            # Even the rarest word is everywhere: rank only its most recent matches.
            rows = self._keyword_recent(table, fts_or(words), owner, k, set(), kinds)
        else:
            match = fts_or(rare) if not common else f"({fts_or(rare)}) AND ({fts_or(rare + common)})"
            rows = self._conn.execute(
                f"SELECT rowid, rank FROM {table} WHERE {table} MATCH ? AND owner = ?" + kinds[0]
                + " ORDER BY rank LIMIT ?",
                (match, owner, *kinds[1], int(k)),
            ).fetchall()
            if common and len(rows) < k:
                rows += self._keyword_recent(table, fts_or(common), owner, k - len(rows), {r[0] for r in rows}, kinds)
        return [(rowid, -rank) for rowid, rank in rows]

    def _keyword_recent(self, table: str, match: str, owner: str, k: int, skip: set[int], kinds) -> Ranked:
        """bm25-ranked top k among the owner's `keyword_rank_budget` most recent matches in `table`."""
        rows = self._conn.execute(
            f"SELECT rowid, rank FROM (SELECT rowid, rank FROM {table} WHERE {table} MATCH ? AND owner = ?"
            + kinds[0] + " ORDER BY rowid DESC LIMIT ?) ORDER BY rank LIMIT ?",
            (match, owner, *kinds[1], self.keyword_rank_budget, int(k) + len(skip)),
        ).fetchall()
        return [r for r in rows if r[0] not in skip][: int(k)]

    # ------------------------------------------------------------------ checks

    def check(self, live: int) -> list[str]:
        """Problems with the tables given `live` current memories in the file; empty when they agree."""
        fts = sum(self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("turn_fts", "memory_fts"))
        vec = self._conn.execute("SELECT COUNT(*) FROM memory_vec").fetchone()[0]
        codes = self._conn.execute("SELECT COUNT(*) FROM memory_bin").fetchone()[0]
        problems = [] if live == fts == vec == codes else [
            f"index counts differ: {live} live memories, {fts} keyword rows, {vec} vectors, {codes} binary codes"]
        # A damaged page inside a vector blob keeps the page's structure (SQLite's integrity check passes) and
        # reads as other numbers: every stored vector is unit length, so one that is not was damaged.
        damaged = 0
        for _, blob in self._conn.execute("SELECT rowid, embedding FROM memory_vec"):
            vector = np.frombuffer(blob, dtype=np.float32)
            norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else float("nan")
            if not abs(norm - 1.0) < 1e-2:
                damaged += 1
        if damaged:
            problems.append(f"memory_vec is damaged ({REINDEX_REMEDY}): {damaged} "
                            "stored vectors are not the unit vectors edge writes")
        return problems
