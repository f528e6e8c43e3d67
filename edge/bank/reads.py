"""Reading a bank: one memory, an owner's memories in log order, the turn after a turn, the log's speakers,
counts, history.

`BankReads` is part of `MemoryBank` (`edge.bank.store`); nothing here writes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from edge.bank.records import (
    EPISODIC,
    HISTORY_COLUMNS,
    MEMORY_COLUMNS,
    HistoryEntry,
    Memory,
    history_from_row,
    memory_from_row,
)
from edge.errors import MemoryNotFoundError

if TYPE_CHECKING:
    from edge.operations import AppliedOp


def _names(values: Iterable[Any]) -> frozenset[str]:
    """The speaker names among `values` (metadata as stored: a name may be missing, blank or not text)."""
    return frozenset(v for v in values if isinstance(v, str) and v.strip())


def _tier_filter(tier: str | Sequence[str] | None, args: list[Any]) -> str:
    """SQL condition for one tier or several (appending their arguments); "" for all."""
    if not tier:
        return ""
    tiers = [tier] if isinstance(tier, str) else list(tier)
    args += tiers
    return f" AND tier IN ({','.join('?' * len(tiers))})"


class BankReads:
    """`MemoryBank`'s reads (see the module)."""

    def get(self, memory_id: str, *, user: str | None = None) -> Memory:
        owner = self._owner(user)
        row = self._conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ? AND owner = ?", (memory_id, owner)
        ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory {memory_id!r} for user {owner!r}.", hint="`edge memory list` shows ids.")
        return memory_from_row(row)

    def list(
        self,
        *,
        user: str | None = None,
        tier: str | Sequence[str] | None = None,
        include_deleted: bool = False,
        include_superseded: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Memory]:
        """Memories of one owner, oldest first: current ones, and on request deleted and superseded ones."""
        sql = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE owner = ?"
        args: list[Any] = [self._owner(user)]
        sql += _tier_filter(tier, args)
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        if not include_superseded:
            sql += " AND valid_until IS NULL"
        sql += " ORDER BY rowid LIMIT ? OFFSET ?"
        args += [-1 if limit is None else int(limit), int(offset)]
        return [memory_from_row(r) for r in self._conn.execute(sql, args)]

    def next_turns(self, memories: Sequence[Memory], *, user: str | None = None) -> dict[str, Memory]:
        """For each episodic turn of `memories`, the turn the log kept right after it (its reply, most often).

        Keyed by the given turn's id; a turn with none after it (the log's
        last, or one deleted since) is left out, as are facts. One indexed
        lookup per turn (the log's order is its rowid order), so it costs
        the same at 10^5 memories as at 10^2.
        """
        owner = self._owner(user)
        out: dict[str, Memory] = {}
        with self._lock:
            for memory in memories:
                if memory.tier != EPISODIC:
                    continue
                row = self._conn.execute(
                    f"SELECT {MEMORY_COLUMNS} FROM memories WHERE owner = ? AND tier = ? AND deleted_at IS NULL "
                    "AND rowid > (SELECT rowid FROM memories WHERE id = ?) ORDER BY rowid LIMIT 1",
                    (owner, EPISODIC, memory.id)).fetchone()
                if row is not None:
                    out[memory.id] = memory_from_row(row)
        return out

    def speakers(self, *, user: str | None = None) -> frozenset[str]:
        """The names the owner's episodic log gives its speakers ("Caroline", "User"), as written.

        The Answer Agent embeds a question without them (`edge.answer.without_speakers`).
        Reading them scans the log (68 ms at 10^5 turns, bench/bench_retrieval.py --scale-turns), so the
        set is kept per owner and read again only when another connection
        changed the file (`PRAGMA data_version`), or this one deleted or
        restored a turn or changed the file other than through `apply` (an
        import, an undo); every other `apply` (a turn kept, the Manager's
        facts) adds the speakers of the turns it kept to the kept set.
        """
        owner = self._owner(user)
        with self._lock:
            kept = self._kept_speakers(owner)
            if kept is not None:
                return kept
            rows = self._conn.execute(
                "SELECT DISTINCT json_extract(metadata, '$.speaker') FROM memories "
                "WHERE owner = ? AND tier = ? AND deleted_at IS NULL", (owner, EPISODIC)).fetchall()
            names = _names(r[0] for r in rows)
            self._speaker_cache[owner] = (self._data_version(), names)
            return names

    def _kept_speakers(self, owner: str) -> frozenset[str] | None:
        """The owner's kept set of speakers while the file is as it was when it was read, else None."""
        cached = self._speaker_cache.get(owner)
        return cached[1] if cached is not None and cached[0] == self._data_version() else None

    def _keep_speakers_of(self, owner: str, known: frozenset[str] | None, applied: Sequence[AppliedOp]) -> None:
        """After `apply`: the speakers of the turns it kept join `known` (the set kept before it, None: none), unless
        it deleted or restored a turn, which can take a speaker away or bring one back (then `speakers` reads again)."""
        if known is None or any(a.action in ("DELETE", "RESTORE") and (a.before or {}).get("tier") == EPISODIC
                                for a in applied):
            return
        said = _names((a.after or {}).get("metadata", {}).get("speaker") for a in applied
                      if a.action == "ADD" and (a.after or {}).get("tier") == EPISODIC)
        self._speaker_cache[owner] = (self._data_version(), known | said)

    def _data_version(self) -> tuple[int, int]:
        """What changes when the file does: other connections' commits, and this connection's own changes."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0], self._conn.total_changes

    def count(self, *, user: str | None = None, tier: str | Sequence[str] | None = None) -> int:
        """Current memories of one owner (not deleted, not superseded), of some tiers or all."""
        sql = "SELECT COUNT(*) FROM memories WHERE owner = ? AND deleted_at IS NULL AND valid_until IS NULL"
        args: list[Any] = [self._owner(user)]
        sql += _tier_filter(tier, args)
        return self._conn.execute(sql, args).fetchone()[0]

    def turn_frequency(self, word: str, *, user: str | None = None) -> int:
        """How many turns of one owner's episodic log hold `word` (a document frequency, in turns).

        Counted on the log's keyword table (SQLite FTS5, its Porter
        tokenizer: "traded" counts the turns saying "trade" or "trading"),
        deleted turns left out. A `word` FTS5 reads as nothing counts 0.
        """
        from edge.bank.retrieval import fts_or

        if not word.strip():
            return 0
        return self._conn.execute("SELECT count(*) FROM turn_fts WHERE turn_fts MATCH ? AND owner = ?",
                                  (fts_or([word.strip()]), self._owner(user))).fetchone()[0]

    def history(self, memory_id: str | None = None, *, user: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
        """History rows of one memory, or of the whole owner when no id is given; oldest first."""
        owner = self._owner(user)
        if memory_id is not None:
            rows = self._conn.execute(
                f"SELECT {HISTORY_COLUMNS} FROM history WHERE memory_id = ? AND owner = ? ORDER BY seq", (memory_id, owner)
            ).fetchall()
            if not rows:
                self.get(memory_id, user=owner)  # raises a clear not-found error
        else:
            rows = self._conn.execute(
                f"SELECT {HISTORY_COLUMNS} FROM (SELECT * FROM history WHERE owner = ? ORDER BY seq DESC LIMIT ?) "
                "ORDER BY seq",
                (owner, -1 if limit is None else int(limit)),
            ).fetchall()
        return [history_from_row(r) for r in rows]
