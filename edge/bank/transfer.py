"""The whole bank at once: a consistent snapshot, every row in order, and loading rows back (JSONL export
and import, `edge.bank.jsonl`).

`BankTransfer` is part of `MemoryBank` (`edge.bank.store`).
"""
from __future__ import annotations

import secrets
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from edge.bank import db as sqlite
from edge.bank.records import (
    HISTORY_COLUMNS,
    MEMORY_COLUMNS,
    HistoryEntry,
    Memory,
    clean_name,
    history_from_row,
    memory_from_row,
    new_id,
    now,
)
from edge.errors import BankError, InvalidInputError
from edge.operations import ACTORS

if TYPE_CHECKING:
    from edge.bank.store import MemoryBank


class BankTransfer:
    """`MemoryBank`'s whole-bank reads and loads (see the module)."""

    @contextmanager
    def snapshot(self) -> Iterator["MemoryBank"]:
        """Read the bank as of one moment: reads inside see no write made meanwhile by another process."""
        raw = self._conn.raw
        with self._lock:
            raw.execute("BEGIN")
            try:
                yield self
            finally:
                if raw.in_transaction:  # a read found a damaged page: SQLite may have ended it already
                    try:
                        raw.execute("COMMIT")
                    except sqlite.DatabaseError:  # nothing was written: ending it is all that matters
                        if raw.in_transaction:
                            raw.execute("ROLLBACK")

    def iter_memories(self, *, owner: str | None = None) -> Iterator[Memory]:
        """Every memory row (deleted and superseded ones too) of one owner, or of all when None, oldest first."""
        where, args = ("WHERE owner = ?", [clean_name(owner)]) if owner is not None else ("", [])
        for row in self._conn.execute(f"SELECT {MEMORY_COLUMNS} FROM memories {where} ORDER BY rowid", args):
            yield memory_from_row(row)

    def iter_history(self, *, owner: str | None = None) -> Iterator[HistoryEntry]:
        """Every history row of one owner, or of all when None, oldest first."""
        where, args = ("WHERE owner = ?", [clean_name(owner)]) if owner is not None else ("", [])
        for row in self._conn.execute(f"SELECT {HISTORY_COLUMNS} FROM history {where} ORDER BY seq", args):
            yield history_from_row(row)

    def load(self, memories: Sequence[Memory], history: Sequence[HistoryEntry],
             vectors: Mapping[str, np.ndarray]) -> int:
        """Put memories and their history back as they were written (ids, owners, times), in one transaction.

        `vectors` holds the vector of every live memory by id (see `embed`).
        History rows get new sequence numbers; their links (`reverts`,
        `undone_by`) follow. Raises `BankError`, writing nothing, when a
        memory's id is already in the bank. Returns the memories loaded.
        """
        with self._transaction() as conn:
            clash = self._taken_ids(conn, [m.id for m in memories])
            if clash:
                raise BankError(f"Memory {sorted(clash)[0]!r} is already in the bank; nothing was loaded.")
            for memory in memories:
                self._insert_row(conn, memory, vectors.get(memory.id))
            seq_map: dict[int, int] = {}
            for entry in history:
                applied = self._log(conn, entry.op_group, entry.action, entry.memory_id, entry.owner, entry.before,
                                    entry.after, entry.actor, entry.turn, entry.at, reverts=seq_map.get(entry.reverts))
                seq_map[entry.seq] = applied.seq
            for entry in history:
                if entry.undone_by is not None:
                    conn.execute("UPDATE history SET undone_by = ? WHERE seq = ?",
                                 (seq_map.get(entry.undone_by), seq_map[entry.seq]))
        return len(memories)

    def adopt(self, memories: Sequence[Memory], vectors: Mapping[str, np.ndarray], *, owner: str | None = None,
              actor: str = "import") -> dict[str, str]:
        """Give `owner` these memories as one change that `undo` takes back whole: an ADD by `actor` each.

        Unlike `load`, the memories' own history is not kept. Ids the bank
        already holds get new ones, and links between the memories
        (`superseded_by`, metadata "supersedes") follow them. `vectors` holds
        each memory's vector by its old id. Returns old id -> new id.
        """
        owner = owner or self.user
        if actor not in ACTORS:
            raise InvalidInputError(f"Unknown actor {actor!r}; expected one of {', '.join(ACTORS)}.")
        group = secrets.token_hex(6)
        with self._transaction() as conn:
            taken = self._taken_ids(conn, [m.id for m in memories])
            ids: dict[str, str] = {}
            for memory in memories:
                fresh = memory.id
                while fresh in taken:
                    fresh = new_id()
                taken.add(fresh)
                ids[memory.id] = fresh
            stamp = now()
            for memory in memories:
                mine = _relinked(memory, owner, ids)
                self._insert_row(conn, mine, vectors[memory.id])
                self._log(conn, group, "ADD", mine.id, owner, None, mine, actor, None, stamp)
        return ids

    def taken_ids(self, ids: Sequence[str]) -> set[str]:
        """Those of `ids` the bank holds already (any owner)."""
        return self._taken_ids(self._conn, ids)

    @staticmethod
    def _taken_ids(conn, ids: Sequence[str]) -> set[str]:
        """Those of `ids` the bank holds already."""
        taken: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            taken |= {r[0] for r in conn.execute(f"SELECT id FROM memories WHERE id IN ({marks})", chunk)}
        return taken

    def export_jsonl(self, path: Path | str, *, user: str | None = None) -> int:
        """Write the bank (all owners, or one) with its history to JSONL; returns the lines written."""
        from edge.bank.jsonl import export_jsonl

        return export_jsonl(self, Path(path), owner=None if user is None else clean_name(user))

    def import_jsonl(self, path: Path | str, *, progress: bool = False, skip_bad: bool = False) -> int:
        """Load a JSONL export in one transaction; returns the memories imported (`edge.bank.jsonl.import_jsonl`)."""
        from edge.bank.jsonl import import_jsonl

        return import_jsonl(self, Path(path), progress=progress, skip_bad=skip_bad)


def _relinked(memory: Memory, owner: str, ids: Mapping[str, str]) -> Memory:
    """`memory` as `owner`'s, with ids that point into its set renamed as `ids` renames them."""
    changes: dict[str, Any] = {"owner": owner, "id": ids[memory.id]}
    if memory.superseded_by in ids:
        changes["superseded_by"] = ids[memory.superseded_by]
    if memory.metadata.get("supersedes") in ids:
        changes["metadata"] = {**memory.metadata, "supersedes": ids[memory.metadata["supersedes"]]}
    return replace(memory, **changes)
