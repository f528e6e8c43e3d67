"""`MemoryBank`: one SQLite file holding a user's memories and an append-only history of every change.

Every change goes through `apply`, which validates all of its operations
before it writes anything, then writes them and their history rows in one
transaction. Deletes are soft (`deleted_at`), so every change can be undone.
Search goes through the bank's `SearchIndex` (`edge.bank.search`), which
the bank keeps in step with the memories inside the same transactions.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edge.bank import db as sqlite
from edge.bank.opening import GuardedConnection, prepare, prepare_read_only, unusable
from edge.bank.records import (
    EPISODIC,
    MEMORY_COLUMNS,
    Memory,
    SearchHit,
    SearchMode,
    SearchScope,
    clean_name,
    clean_text,
    memory_from_row,
    memory_row,
    new_id,
    searchable,
    now,
    text_limit,
)
from edge.bank.reads import BankReads
from edge.bank.repair import BankRepair
from edge.bank.search import Ranked, SearchIndex
from edge.bank.transfer import BankTransfer
from edge.bank.undo import BankUndo
from edge.embedder import Embedder
from edge.errors import BankError, EmbedderMismatchError, InvalidInputError, MemoryNotFoundError, ReadOnlyBankError
from edge.operations import (ACTORS, TIERS, AddOp, AppliedOp, DeleteOp, ExtendOp, Op, RestoreOp, SupersedeOp, UpdateOp,
                             consolidated_text)
from edge.paths import DEFAULT_USER


_WRITER_LOCKS: dict[str, threading.RLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def writer_lock(path: Path) -> threading.RLock:
    """One lock per bank file in this process, held around each write transaction.

    Connections of one process to one file (a server's per-user agents and
    their background Managers) then queue for writing in this process
    instead of polling SQLite's busy handler, which under load let a writer
    miss its turn again and again until its busy timeout ran out ("database
    is locked", 8 chat requests at once on 2 busy cores). Other processes
    still meet SQLite's own lock and busy timeout.
    """
    key = os.path.realpath(path)
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(key, threading.RLock())


def _op_search_text(op: Op) -> str | None:
    """The text an operation puts into the search indexes (None: it embeds nothing new)."""
    if isinstance(op, AddOp):
        speaker = op.metadata.get("speaker") if op.tier == EPISODIC else None
        return searchable(f"{speaker}: {op.text}" if speaker else op.text)
    if isinstance(op, (UpdateOp, SupersedeOp)):
        return None if op.text is None else searchable(op.text)
    return None


class MemoryBank(BankReads, BankRepair, BankUndo, BankTransfer):
    """A user-scoped memory store in one SQLite file.

    `user` is the default owner for every call; each call may name another.
    A search for one owner never returns another owner's memories.
    """

    def __init__(self, conn, path: Path, embedder: Embedder | None, user: str) -> None:
        conn = conn if isinstance(conn, GuardedConnection) else GuardedConnection(conn, path)
        self._conn = conn
        self.path = path
        self._embedder = embedder
        self.user = user
        self._lock = threading.RLock()
        self._speaker_cache: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}  # owner -> `speakers`
        self.read_only = False  # opened on a file or folder this process may not write (`open`)
        meta = self.meta()
        self.embedder_name = meta["embedder_name"]
        self.dim = int(meta["embedder_dim"])
        self.index = SearchIndex.of(conn, meta)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: Path | str,
        embedder: Embedder | None = None,
        *,
        user: str = DEFAULT_USER,
        create: bool = True,
        busy_timeout_ms: int = sqlite.BUSY_TIMEOUT_MS,
    ) -> "MemoryBank":
        """Open (or create) a bank. A new bank records the embedder it is built with.

        With no embedder, the default one (MiniLM on onnxruntime, as
        `edge bundle build-default` built it) is loaded when a search or a
        write first needs it; opening never builds it. `busy_timeout_ms` is
        how long to wait for another process that holds the file's lock
        (when opening and at every write) before `BankLockedError`.
        """
        path = Path(path)
        user = clean_name(user)
        if not path.exists() and not create:
            raise BankError(f"No memory bank at {path}.", hint="Check --db, or add a memory to create it.")
        if path.is_dir():
            raise BankError(f"{path} is a folder, not a memory bank file.", hint="Point --db at a .db file.")
        read_only = path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BankError(f"Cannot create the folder {path.parent} for a new bank ({exc.strerror}).",
                                hint="Point --db at a folder you can write to.") from exc
            if not os.access(path.parent, os.W_OK):
                raise ReadOnlyBankError(f"Cannot create a bank in {path.parent}: the folder is not writable.",
                                        hint="Point --db at a folder you can write to.")
        try:
            conn = sqlite.connect(path, busy_timeout_ms=busy_timeout_ms, read_only=read_only)
        except sqlite.DatabaseError as exc:
            raise unusable(path, exc, "opening it") from exc
        try:
            (prepare_read_only if read_only else prepare)(conn, path, embedder)
        except BaseException:
            conn.close()
            raise
        bank = cls(conn, path, embedder, user)
        bank.read_only = read_only
        return bank

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _owner(self, user: str | None) -> str:
        """Whose memories a call means: this bank's user when None, else `user` checked (`clean_name`).

        An empty name is refused, never read as "this bank's user" or "all users".
        """
        return self.user if user is None else clean_name(user)

    def __enter__(self) -> "MemoryBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the file and empty it (before measuring the file's size)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ metadata

    def pragma(self, name: str, value: int | None = None) -> Any:
        """Read (or, with `value`, set) one SQLite PRAGMA of this bank's connection, e.g. `page_count`.

        For diagnostics and limits (`max_page_count` caps the file's size, as
        a full disk would). Raises `InvalidInputError` for a name that is not
        a PRAGMA's spelling.
        """
        if not name.replace("_", "").isalpha():
            raise InvalidInputError(f"{name!r} is not a PRAGMA name.", hint="e.g. page_count, max_page_count")
        with self._lock:
            sql = f"PRAGMA {name}" if value is None else f"PRAGMA {name} = {int(value)}"
            row = self._conn.execute(sql).fetchone()
        return None if row is None else row[0]


    def meta(self) -> dict[str, str]:
        try:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite.DatabaseError as exc:
            raise unusable(self.path, exc, "reading it") from exc

    def set_meta(self, key: str, value: str) -> None:
        """Record a fact about the bank (e.g. the prompt version its memories were managed with)."""
        with self._transaction() as conn:
            self._write_meta(conn, {key: value})

    def schema_version(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM migrations ORDER BY name")]

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from edge.embedder import embedder_for

            embedder = embedder_for(self.embedder_name, self.dim)
            if embedder.name != self.embedder_name or embedder.dim != self.dim:
                raise EmbedderMismatchError(
                    f"The bank {self.path} was built with {self.embedder_name} ({self.dim}-d), "
                    f"not the default {embedder.name} ({embedder.dim}-d).",
                    hint="Open it with the embedder it was built with.",
                )
            self._embedder = embedder
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors from the bank's embedder, as the bank indexes them.

        Raises `EmbedderMismatchError` when the embedder returns another shape.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise EmbedderMismatchError(
                f"The embedder returned vectors of shape {vectors.shape}, expected ({len(texts)}, {self.dim})."
            )
        return vectors

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        raw = self._conn.raw  # BEGIN, COMMIT and ROLLBACK unguarded: their errors are said as writing errors
        if self.read_only:
            raise ReadOnlyBankError(
                f"The bank {self.path} is read-only (its file or its folder cannot be written): reading it works, "
                "changing it does not; nothing was changed.",
                hint="Check the permissions of the file and its folder (ls -l), or copy the bank somewhere writable.")
        with self._lock, writer_lock(self.path):
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite.DatabaseError as exc:  # locked past the busy timeout, read-only, disk full, ...
                raise unusable(self.path, exc, "writing to it") from exc
            try:
                yield self._conn
                raw.execute("COMMIT")
            except BaseException as exc:
                # SQLite rolls back by itself on some errors (a full disk, an I/O error): a second ROLLBACK
                # would raise "no transaction is active" and hide the real cause.
                if raw.in_transaction:
                    try:
                        raw.execute("ROLLBACK")
                    except sqlite.DatabaseError:
                        pass  # the first error is the one to say
                if isinstance(exc, sqlite.DatabaseError) and not isinstance(exc, sqlite.IntegrityError):
                    raise unusable(self.path, exc, "writing to it") from exc
                raise

    def apply(
        self,
        ops: Sequence[Op],
        *,
        user: str | None = None,
        actor: str = "api",
        turn: str | None = None,
        meta: Mapping[str, str | None] | None = None,
    ) -> list[AppliedOp]:
        """Apply operations all together or not at all, each with a history row.

        Everything is validated before the first write; any failure leaves
        the bank exactly as it was. `meta`: bank meta entries written in the
        same transaction (None removes one), so a record about the change
        (a turn queued for the Manager, or gone over) commits with it or
        not at all.
        """
        owner = self._owner(user)
        if actor not in ACTORS:
            raise InvalidInputError(f"Unknown actor {actor!r}; expected one of {', '.join(ACTORS)}.")
        ops = list(ops)
        if not ops:
            if meta:
                with self._transaction() as conn:
                    self._write_meta(conn, meta)
            return []
        cleaned: list[Op] = []
        for op in ops:
            if isinstance(op, AddOp):
                if op.tier not in TIERS:
                    raise InvalidInputError(f"Unknown tier {op.tier!r}; expected one of {', '.join(TIERS)}.")
                what = "turn" if op.tier == EPISODIC else "memory text"
                cleaned.append(replace(op, text=clean_text(op.text, what=what, max_chars=text_limit(op.tier)),
                                       source_turns=tuple(op.source_turns), metadata=dict(op.metadata)))
            elif isinstance(op, UpdateOp):
                cleaned.append(UpdateOp(op.id, clean_text(op.text), op.event_time, tuple(op.source_turns)))
            elif isinstance(op, SupersedeOp):
                text = None if op.text is None else clean_text(op.text)
                cleaned.append(replace(op, text=text, source_turns=tuple(op.source_turns), metadata=dict(op.metadata)))
            elif isinstance(op, ExtendOp):
                cleaned.append(replace(op, clause=clean_text(op.clause), source_turns=tuple(op.source_turns)))
            elif isinstance(op, (DeleteOp, RestoreOp)):
                cleaned.append(op)
            else:
                raise InvalidInputError(f"Not an operation: {op!r}")
        texts = [_op_search_text(op) for op in cleaned if _op_search_text(op) is not None]
        vectors = iter(self.embed(texts))  # type: ignore[arg-type]
        plan = [(op, next(vectors) if _op_search_text(op) is not None else None) for op in cleaned]
        group = secrets.token_hex(6)
        with self._lock:  # the write and the speakers it adds, before another thread's write
            with self._transaction() as conn:
                known = self._kept_speakers(owner)
                applied = [self._apply_one(conn, op, vec, owner, actor, turn, group) for op, vec in plan]
                self._write_meta(conn, meta or {})
            self._keep_speakers_of(owner, known, applied)
            return applied

    @staticmethod
    def _write_meta(conn, meta: Mapping[str, str | None]) -> None:
        for key, value in meta.items():
            if key in ("embedder_name", "embedder_dim"):
                raise InvalidInputError(f"{key} is fixed when the bank is created.")
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def _current(self, conn, memory_id: str, owner: str) -> tuple[int, Memory]:
        row = conn.execute(
            f"SELECT rowid, {MEMORY_COLUMNS} FROM memories WHERE id = ? AND owner = ?", (memory_id, owner)
        ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory {memory_id!r} for user {owner!r}.", hint="`edge memory list` shows ids.")
        return row[0], memory_from_row(row[1:])

    def _apply_one(self, conn, op: Op, vec, owner: str, actor: str, turn: str | None, group: str) -> AppliedOp:
        stamp = now()
        if isinstance(op, AddOp):
            memory = Memory(
                id=new_id(), owner=owner, tier=op.tier, text=op.text, created_at=stamp, updated_at=stamp,
                event_time=op.event_time, source_turns=tuple(op.source_turns), metadata=dict(op.metadata),
            )
            while conn.execute("SELECT 1 FROM memories WHERE id = ?", (memory.id,)).fetchone():
                memory = replace(memory, id=new_id())
            self._insert_row(conn, memory, vec)
            return self._log(conn, group, "ADD", memory.id, owner, None, memory, actor, turn, stamp)
        rowid, before = self._current(conn, op.id, owner)
        if before.tier == EPISODIC and actor == "manager":
            raise InvalidInputError(
                f"Memory {op.id!r} is a turn of the episodic log; the Manager cannot change or delete it.",
                hint="Only a user can edit or delete the episodic log (recoverably).",
            )
        if isinstance(op, SupersedeOp):
            return self._supersede(conn, op, rowid, before, vec, owner, actor, turn, group, stamp)
        if isinstance(op, ExtendOp):
            if before.deleted_at or before.superseded:
                raise MemoryNotFoundError(f"Memory {op.id!r} is not a current fact; only current facts can be grown.")
            after = replace(before, text=clean_text(consolidated_text(before.text, op.clause, op.speaker)),
                            updated_at=stamp, source_turns=tuple(dict.fromkeys(before.source_turns + op.source_turns)))
            # Embedded here: the text it joins is the fact as it is now, inside the transaction.
            self._write_row(conn, rowid, after, self.embed([searchable(after.text)])[0])
            return self._log(conn, group, "UPDATE", op.id, owner, before, after, actor, turn, stamp)
        if isinstance(op, UpdateOp):
            if before.deleted_at:
                raise MemoryNotFoundError(f"Memory {op.id!r} is deleted; restore it before updating it.")
            after = replace(
                before, text=op.text, updated_at=stamp, event_time=op.event_time or before.event_time,
                source_turns=tuple(dict.fromkeys(before.source_turns + tuple(op.source_turns))),
            )
            self._write_row(conn, rowid, after, None if before.tier == EPISODIC else vec)
            return self._log(conn, group, "UPDATE", op.id, owner, before, after, actor, turn, stamp)
        if isinstance(op, DeleteOp):
            if before.deleted_at:
                raise MemoryNotFoundError(f"Memory {op.id!r} is already deleted.")
            after = replace(before, deleted_at=stamp)
            self._write_row(conn, rowid, after, None)
            return self._log(conn, group, "DELETE", op.id, owner, before, after, actor, turn, stamp)
        if not before.deleted_at and not before.superseded:
            raise InvalidInputError(f"Memory {op.id!r} is current; there is nothing to restore.")
        after = replace(before, deleted_at=None, valid_until=None, superseded_by=None, superseded_turn=None,
                        updated_at=stamp)
        self._write_row(conn, rowid, after, None)
        return self._log(conn, group, "RESTORE", op.id, owner, before, after, actor, turn, stamp)

    def _supersede(self, conn, op: SupersedeOp, rowid: int, before: Memory, vec, owner: str, actor: str,
                   turn: str | None, group: str, stamp: str) -> AppliedOp:
        """Retire `before` (kept, searchable on request) and, for an UPDATE, add its newer version."""
        if before.deleted_at or before.superseded:
            raise MemoryNotFoundError(f"Memory {op.id!r} is not a current fact; only current facts can be superseded.")
        newer = None
        if op.text is not None:
            newer = Memory(
                id=new_id(), owner=owner, tier=before.tier, text=op.text, created_at=stamp, updated_at=stamp,
                event_time=op.event_time, source_turns=tuple(op.source_turns),
                metadata={**op.metadata, "supersedes": before.id},
            )
            while conn.execute("SELECT 1 FROM memories WHERE id = ?", (newer.id,)).fetchone():
                newer = replace(newer, id=new_id())
        retired = replace(before, updated_at=stamp, valid_until=op.at or stamp,
                          superseded_by=newer.id if newer else None, superseded_turn=op.turn_id)
        conn.execute("UPDATE memories SET updated_at = ?, valid_until = ?, superseded_by = ?, superseded_turn = ? "
                     "WHERE rowid = ?", (retired.updated_at, retired.valid_until, retired.superseded_by,
                                         retired.superseded_turn, rowid))
        self.index.set_kind(rowid, retired.kind)
        action = "UPDATE" if newer else "DELETE"
        applied = self._log(conn, group, action, before.id, owner, before, retired, actor, turn, stamp)
        if newer is None:
            return applied
        self._insert_row(conn, newer, vec)
        added = self._log(conn, group, "ADD", newer.id, owner, None, newer, actor, turn, stamp)
        # The op's result names the new version; the retired one is in `before` and in history.
        return AppliedOp(seq=added.seq, action="UPDATE", memory_id=newer.id, before=applied.before, after=added.after)

    def _insert_row(self, conn, memory: Memory, vec) -> int:
        cur = conn.execute(f"INSERT INTO memories ({MEMORY_COLUMNS}) VALUES ({', '.join('?' * 13)})", memory_row(memory))
        rowid = cur.lastrowid
        if memory.deleted_at is None:
            self.index.add(rowid, memory.search_text(), memory.owner, memory.kind, vec)
        return rowid

    def _write_row(self, conn, rowid: int, memory: Memory, vec) -> None:
        """Overwrite a memory's row; its search entries follow (removed when deleted)."""
        conn.execute(
            "UPDATE memories SET tier = ?, text = ?, updated_at = ?, event_time = ?, source_turns = ?, "
            "metadata = ?, deleted_at = ?, valid_until = ?, superseded_by = ?, superseded_turn = ? WHERE rowid = ?",
            (
                memory.tier, memory.text, memory.updated_at, memory.event_time,
                json.dumps(list(memory.source_turns)), json.dumps(memory.metadata), memory.deleted_at,
                memory.valid_until, memory.superseded_by, memory.superseded_turn, rowid,
            ),
        )
        self.index.remove(rowid)
        if memory.deleted_at is None:
            if vec is None:
                vec = self.embed([memory.search_text()])[0]
            self.index.add(rowid, memory.search_text(), memory.owner, memory.kind, vec)

    def _log(self, conn, group, action, memory_id, owner, before, after, actor, turn, stamp, reverts=None) -> AppliedOp:
        before_d = before.to_dict() if isinstance(before, Memory) else before
        after_d = after.to_dict() if isinstance(after, Memory) else after
        cur = conn.execute(
            "INSERT INTO history (op_group, owner, memory_id, action, before, after, actor, turn, at, reverts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                group, owner, memory_id, action,
                json.dumps(before_d) if before_d else None, json.dumps(after_d) if after_d else None,
                actor, turn, stamp, reverts,
            ),
        )
        return AppliedOp(seq=cur.lastrowid, action=action, memory_id=memory_id, before=before_d, after=after_d,
                         reverts=reverts)

    # convenience wrappers ------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        tier: str = "semantic",
        event_time: str | None = None,
        source_turns: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        user: str | None = None,
        actor: str = "api",
        turn: str | None = None,
    ) -> Memory:
        """Store one memory and return it."""
        op = AddOp(text, tier, event_time, tuple(source_turns), metadata or {})  # type: ignore[arg-type]
        applied = self.apply([op], user=user, actor=actor, turn=turn)[0]
        return Memory.from_dict(applied.after)  # type: ignore[arg-type]

    def add_many(self, texts: Sequence[str], *, tier: str = "semantic", user: str | None = None, actor: str = "api") -> list[str]:
        """Store many memories in one transaction (one embedding batch); returns their ids."""
        applied = self.apply([AddOp(t, tier) for t in texts], user=user, actor=actor)  # type: ignore[arg-type]
        return [a.memory_id for a in applied]

    def update(self, memory_id: str, text: str, *, user: str | None = None, actor: str = "api", turn: str | None = None) -> Memory:
        applied = self.apply([UpdateOp(memory_id, text)], user=user, actor=actor, turn=turn)[0]
        return Memory.from_dict(applied.after)  # type: ignore[arg-type]

    def delete(self, memory_id: str, *, user: str | None = None, actor: str = "api", turn: str | None = None) -> Memory:
        """Soft-delete: the memory leaves search and lists, and `undo` or `restore` brings it back."""
        applied = self.apply([DeleteOp(memory_id)], user=user, actor=actor, turn=turn)[0]
        return Memory.from_dict(applied.after)  # type: ignore[arg-type]

    def restore(self, memory_id: str, *, user: str | None = None, actor: str = "api") -> Memory:
        applied = self.apply([RestoreOp(memory_id)], user=user, actor=actor)[0]
        return Memory.from_dict(applied.after)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ undo

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        user: str | None = None,
        query_vector: np.ndarray | None = None,
        scope: SearchScope = "all",
        include_superseded: bool = False,
        min_similarity: float | None = None,
        vector_text: str | None = None,
    ) -> list[SearchHit]:
        """Find one owner's memories for a query: by meaning, by keywords, or both fused (RRF).

        `scope` picks facts (core + semantic), the episodic turn log, or
        both; superseded facts are left out unless `include_superseded`
        ("where did Ana live before?"). Vector search always returns its k
        nearest memories, however far; `min_similarity` (a cosine, e.g.
        `edge.bank.MIN_SIMILARITY`) keeps only hits that match a keyword of
        the query or are at least that close in meaning, as a search box
        must. `query_vector` is the query's embedding when the caller has
        it already; `vector_text`, the text to embed in its place (the
        keywords still come from `query`). Raises `InvalidInputError` for
        an empty or overlong query and an unknown mode or scope.
        """
        owner = self._owner(user)
        if k < 1:
            return []
        query = searchable(clean_text(query, what="query"))
        with self._lock:
            vector = None
            if mode != "keyword":
                if query_vector is None:
                    query_vector = self.embed([searchable(vector_text) if vector_text else query])[0]
                vector = query_vector
            ranked = self.index.ranked(query, vector, owner, k, mode=mode, scope=scope,
                                       include_superseded=include_superseded, min_similarity=min_similarity)
            return self.hits(ranked)

    def hits(self, ranked: Ranked) -> list[SearchHit]:
        """The live memories behind (rowid, score) pairs of a `SearchIndex` ranking, ranked from 1 in that order."""
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT rowid, {MEMORY_COLUMNS} FROM memories WHERE rowid IN ({marks}) AND deleted_at IS NULL",
                [r for r, _ in ranked],
            ).fetchall()
        by_rowid = {r[0]: memory_from_row(r[1:]) for r in rows}
        found = [(by_rowid[r], s) for r, s in ranked if r in by_rowid]
        return [SearchHit(memory=m, score=float(s), rank=i) for i, (m, s) in enumerate(found, start=1)]

    # ------------------------------------------------------------------ checks

    # ------------------------------------------------------------------ whole-bank copies (JSONL export and import)
