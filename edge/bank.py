"""The memory bank: one SQLite file holding a user's memories, their vectors,
a keyword index and an append-only history of every change.

Every change goes through `apply`, which validates all of its operations
before it writes anything, then writes them and their history rows in one
transaction. Deletes are soft (`deleted_at`), so every change can be undone.
"""
from __future__ import annotations

import json
import secrets
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from edge import db as sqlite
from edge import migrations
from edge.embedder import Embedder
from edge.errors import (
    BankError,
    BankLockedError,
    CorruptBankError,
    EmbedderMismatchError,
    InvalidInputError,
    MemoryNotFoundError,
    NothingToUndoError,
)
from edge.operations import ACTORS, TIERS, AddOp, AppliedOp, DeleteOp, Op, RestoreOp, SupersedeOp, UpdateOp
from edge.paths import DEFAULT_USER
from edge.retrieval import (
    KEYWORD_RANK_BUDGET,
    VECTOR_CODE,
    binary_codes,
    fts_or,
    query_words,
    reciprocal_rank_fusion,
    split_by_frequency,
)

MAX_TEXT_CHARS = 4000
# A turn of the episodic log is kept whole (the Manager sees it in pieces); this only stops runaway input.
MAX_TURN_CHARS = 100_000
# Approximate vector search fetches this many times k candidates by binary code
# (at least MIN_CANDIDATES), then re-scores them exactly; see `_vector`.
OVERSAMPLE = 4
MIN_CANDIDATES = 64
MMAP_BYTES = 1 << 30
SearchMode = Literal["vector", "keyword", "hybrid"]
# What a search reads: "facts" (core + semantic), "episodic" (the turn log) or both.
SearchScope = Literal["all", "facts", "episodic"]
SCOPES: tuple[str, ...] = ("all", "facts", "episodic")
EPISODIC = "episodic"


@dataclass(frozen=True)
class Memory:
    id: str
    owner: str
    tier: str
    text: str
    created_at: str
    updated_at: str
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted_at: str | None = None
    valid_until: str | None = None  # a superseded fact: when the turn that replaced it was said
    superseded_by: str | None = None  # ... the id of its newer version (None: retracted)
    superseded_turn: str | None = None  # ... and the id of that turn

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source_turns"] = list(self.source_turns)
        return data

    @property
    def superseded(self) -> bool:
        return self.valid_until is not None

    @property
    def speaker(self) -> str | None:
        """Who said it: the speaker of an episodic turn (None for facts)."""
        value = self.metadata.get("speaker")
        return str(value) if value else None

    def search_text(self) -> str:
        """What the keyword and vector indexes hold: a turn with its speaker's name, a fact as it is."""
        return f"{self.speaker}: {self.text}" if self.tier == EPISODIC and self.speaker else self.text

    @property
    def kind(self) -> str:
        """The search tables' kind of row: "turn" (episodic log), "fact", or "old" (superseded fact)."""
        if self.tier == EPISODIC:
            return "turn"
        return "old" if self.superseded else "fact"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Memory":
        return cls(**{**data, "source_turns": tuple(data.get("source_turns") or ())})


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float
    rank: int


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    op_group: str
    owner: str
    memory_id: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    turn: str | None
    at: str
    reverts: int | None
    undone_by: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def clean_text(text: object, *, what: str = "memory text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """Reject what is not text: non-strings, empty, binary or mis-decoded, or huge text.

    "Not text" is decided by code point, never by Python's Unicode tables:
    those are older than what people type (an emoji of Unicode 16 is
    "unassigned" to Python 3.11's Unicode 14), so unassigned and private-use characters
    pass. Refused: C0 and C1 control characters other than newline, tab and
    carriage return (binary data), lone surrogates (how Python carries
    invalid UTF-8 from argv or a file), and the non-characters U+FDD0..U+FDEF
    and U+xFFFE/U+xFFFF, which Unicode never assigns.
    """
    if isinstance(text, (bytes, bytearray)):
        raise InvalidInputError(f"The {what} is bytes, not text.", hint="Decode it to a str first.")
    if not isinstance(text, str):
        raise InvalidInputError(f"The {what} must be a string, not {type(text).__name__}.")
    stripped = text.strip()
    if not stripped:
        raise InvalidInputError(f"The {what} is empty.")
    asking = what in ("query", "question")
    if len(stripped) > max_chars:
        raise InvalidInputError(
            f"The {what} is {len(stripped)} characters; at most {max_chars} are allowed.",
            hint="Search with a shorter text: a question or a few key words." if asking
            else "Store a summary, or split it into several memories.",
        )

    def not_text(c: str) -> bool:
        return (
            (c < " " and c not in "\n\t\r") or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff"
            or "\ufdd0" <= c <= "\ufdef" or ord(c) & 0xFFFE == 0xFFFE
        )

    bad = [(i, c) for i, c in enumerate(stripped) if not_text(c)]
    if bad:
        position, char = bad[0]
        raise InvalidInputError(
            f"The {what} holds {len(bad)} {'characters that are' if len(bad) > 1 else 'character that is'} not text "
            f"(the first is U+{ord(char):04X} at position {position + 1}); it looks binary or wrongly decoded.",
            hint=f"Remove the control characters from the {what}; text from a file must be read as UTF-8.",
        )
    return stripped


def _error_kind(exc: Exception) -> str:
    """"busy" (locked by another connection), "corrupt" (not a database, malformed) or "other"."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF  # an extended code (SQLITE_BUSY_RECOVERY...) holds its primary code there
        return {5: "busy", 6: "busy", 11: "corrupt", 26: "corrupt"}.get(primary, "other")
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "busy"
    return "corrupt" if "not a database" in text or "malformed" in text else "other"


def _unusable(path: Path, exc: Exception, doing: str) -> BankError:
    """The user-facing error for a SQLite error: a lock is a lock, never reported as corruption."""
    kind = _error_kind(exc)
    if kind == "busy":
        return BankLockedError(
            f"The bank {path} stayed locked by another process while {doing} ({exc}).",
            hint="Another edge process is writing to it or opening it; retry when it is done.",
        )
    if kind == "corrupt":
        return CorruptBankError(
            f"{path} is not a readable SQLite file ({exc}).",
            hint="Restore it from a JSONL export (`edge memory import`), or move it aside to start a new bank.",
        )
    return BankError(f"The bank {path} cannot be used ({exc}).",
                     hint="Check the file's and its folder's permissions and the free disk space.")


def _op_search_text(op: Op) -> str | None:
    """The text an operation puts into the search indexes (None: it embeds nothing new)."""
    if isinstance(op, AddOp):
        speaker = op.metadata.get("speaker") if op.tier == EPISODIC else None
        return f"{speaker}: {op.text}" if speaker else op.text
    if isinstance(op, (UpdateOp, SupersedeOp)):
        return op.text
    return None


def _new_id() -> str:
    return "m" + secrets.token_hex(4)


def _row_to_memory(row: Sequence[Any]) -> Memory:
    return Memory(
        id=row[0],
        owner=row[1],
        tier=row[2],
        text=row[3],
        created_at=row[4],
        updated_at=row[5],
        event_time=row[6],
        source_turns=tuple(json.loads(row[7])),
        metadata=json.loads(row[8]),
        deleted_at=row[9],
        valid_until=row[10],
        superseded_by=row[11],
        superseded_turn=row[12],
    )


_MEMORY_COLUMNS = (
    "id, owner, tier, text, created_at, updated_at, event_time, source_turns, metadata, deleted_at, "
    "valid_until, superseded_by, superseded_turn"
)


def _tier_filter(tier: str | Sequence[str] | None, args: list[Any]) -> str:
    """SQL condition for one tier or several (appending their arguments); "" for all."""
    if not tier:
        return ""
    tiers = [tier] if isinstance(tier, str) else list(tier)
    args += tiers
    return f" AND tier IN ({','.join('?' * len(tiers))})"


def _kind_filter(scope: str, include_superseded: bool) -> tuple[str, tuple[str, ...]]:
    """SQL condition on the search tables' `kind` column for a scope, and its arguments."""
    if scope not in SCOPES:
        raise InvalidInputError(f"Unknown search scope {scope!r}; use one of {', '.join(SCOPES)}.")
    if scope == "episodic":
        return " AND kind = ?", ("turn",)
    if scope == "facts":
        return (" AND kind != ?", ("turn",)) if include_superseded else (" AND kind = ?", ("fact",))
    return ("", ()) if include_superseded else (" AND kind != ?", ("old",))
_HISTORY_COLUMNS = "seq, op_group, owner, memory_id, action, before, after, actor, turn, at, reverts, undone_by"


def _row_to_history(row: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(
        seq=row[0],
        op_group=row[1],
        owner=row[2],
        memory_id=row[3],
        action=row[4],
        before=json.loads(row[5]) if row[5] else None,
        after=json.loads(row[6]) if row[6] else None,
        actor=row[7],
        turn=row[8],
        at=row[9],
        reverts=row[10],
        undone_by=row[11],
    )


class MemoryBank:
    """A user-scoped memory store in one SQLite file.

    `user` is the default owner for every call; each call may name another.
    A search for one owner never returns another owner's memories.
    """

    def __init__(self, conn, path: Path, embedder: Embedder | None, user: str) -> None:
        self._conn = conn
        self.path = path
        self._embedder = embedder
        self.user = user
        self._lock = threading.RLock()
        meta = self.meta()
        self.embedder_name = meta["embedder_name"]
        self.dim = int(meta["embedder_dim"])
        # Binary codes are used only when they were computed by this code's scheme.
        self._binary_search = meta.get("vector_code") == VECTOR_CODE

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

        With no embedder, the default one (MiniLM on onnxruntime) is loaded
        when a search or a write first needs it. `busy_timeout_ms` is how
        long to wait for another process that holds the file's lock (when
        opening and at every write) before `BankLockedError`.
        """
        path = Path(path)
        if not path.exists() and not create:
            raise BankError(f"No memory bank at {path}.", hint="Check --db, or add a memory to create it.")
        if path.is_dir():
            raise BankError(f"{path} is a folder, not a memory bank file.", hint="Point --db at a .db file.")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite.connect(path, busy_timeout_ms=busy_timeout_ms)
        try:
            cls._prepare(conn, path, embedder)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, embedder, user)

    @staticmethod
    def _prepare(conn, path: Path, embedder: Embedder | None) -> None:
        """Switch the file to WAL, check it is a bank, and create or migrate its schema.

        Several processes may open one new file at the same moment. The
        first one's switch to WAL writes the file's header under an
        exclusive lock, and another connection's switch in that moment fails
        at once with SQLITE_BUSY: SQLite's busy timeout does not cover it
        (about 1 open in 800 when 4 processes create banks together). So the
        switch and the first read are retried with backoff for as long as
        the busy timeout. An error is sorted by its SQLite code: busy or
        locked is `BankLockedError`, never corruption; only "not a database"
        and "malformed" are `CorruptBankError`; anything else (permissions,
        disk) a plain `BankError`.
        """
        import random
        import time

        deadline = time.monotonic() + conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
        delay = 0.002
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                break
            except sqlite.DatabaseError as exc:
                if _error_kind(exc) != "busy" or time.monotonic() > deadline:
                    raise _unusable(path, exc, "opening it") from exc
            time.sleep(delay * (0.5 + random.random()))  # jittered, so racing processes do not retry in step
            delay = min(delay * 2, 0.1)
        if tables and "meta" not in tables:
            raise CorruptBankError(
                f"{path} is a SQLite file but not an edge memory bank (tables: {', '.join(sorted(tables)[:5])}).",
                hint="Point --db at an edge bank, or at a new file.",
            )
        default = None
        if embedder is None and "meta" not in tables:
            # A new bank records its embedder: load the default now, not while holding the write lock below.
            from edge.embedder import load_default_embedder

            default = load_default_embedder()
        conn.execute("PRAGMA synchronous = NORMAL")
        # Search reads many pages per query (binary codes, vectors, keyword lists); reading them through a
        # memory map instead of one read() call per page roughly halves the time of a search at 10^5 memories.
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite.DatabaseError as exc:
            raise _unusable(path, exc, "creating or upgrading its schema") from exc
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "embedder_name" not in meta:
                if embedder is None:
                    from edge.embedder import load_default_embedder

                    embedder = default or load_default_embedder()
                meta = {"embedder_name": embedder.name, "embedder_dim": str(embedder.dim), "created_at": now()}
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            elif embedder is not None and (
                meta["embedder_name"] != embedder.name or int(meta["embedder_dim"]) != embedder.dim
            ):
                raise EmbedderMismatchError(
                    f"The bank {path} was built with the embedder {meta['embedder_name']} "
                    f"({meta['embedder_dim']}-d); it cannot be searched with {embedder.name} ({embedder.dim}-d).",
                    hint="Use the bank's own embedder (its bundle), or export it to JSONL and import it "
                    "into a new bank built with the new embedder.",
                )
            applied = {r[0] for r in conn.execute("SELECT name FROM migrations")}
            known = migrations.names()
            unknown = applied - set(known)
            if unknown:
                raise BankError(
                    f"The bank {path} was written by a newer edge (schema steps {', '.join(sorted(unknown))}).",
                    hint="Upgrade edge to open it.",
                )
            for fn in migrations.MIGRATIONS:
                if fn.__name__ not in applied:
                    fn(conn, int(meta["embedder_dim"]))
                    conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, now()))
            conn.execute(f"PRAGMA user_version = {len(known)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "MemoryBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ metadata

    def meta(self) -> dict[str, str]:
        try:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite.DatabaseError as exc:
            raise _unusable(self.path, exc, "reading it") from exc

    def set_meta(self, key: str, value: str) -> None:
        """Record a fact about the bank (e.g. the prompt version its memories were managed with)."""
        if key in ("embedder_name", "embedder_dim"):
            raise InvalidInputError(f"{key} is fixed when the bank is created.")
        with self._transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (key, value))

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

    def _embed(self, texts: list[str]) -> np.ndarray:
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
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite.DatabaseError as exc:  # locked past the busy timeout, read-only, disk full, ...
                raise _unusable(self.path, exc, "writing to it") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def apply(
        self,
        ops: Sequence[Op],
        *,
        user: str | None = None,
        actor: str = "api",
        turn: str | None = None,
    ) -> list[AppliedOp]:
        """Apply operations all together or not at all, each with a history row.

        Everything is validated before the first write; any failure leaves
        the bank exactly as it was.
        """
        owner = user or self.user
        if actor not in ACTORS:
            raise InvalidInputError(f"Unknown actor {actor!r}; expected one of {', '.join(ACTORS)}.")
        ops = list(ops)
        if not ops:
            return []
        cleaned: list[Op] = []
        for op in ops:
            if isinstance(op, AddOp):
                if op.tier not in TIERS:
                    raise InvalidInputError(f"Unknown tier {op.tier!r}; expected one of {', '.join(TIERS)}.")
                limit = MAX_TURN_CHARS if op.tier == EPISODIC else MAX_TEXT_CHARS
                what = "turn" if op.tier == EPISODIC else "memory text"
                cleaned.append(replace(op, text=clean_text(op.text, what=what, max_chars=limit),
                                       source_turns=tuple(op.source_turns), metadata=dict(op.metadata)))
            elif isinstance(op, UpdateOp):
                cleaned.append(UpdateOp(op.id, clean_text(op.text), op.event_time, tuple(op.source_turns)))
            elif isinstance(op, SupersedeOp):
                text = None if op.text is None else clean_text(op.text)
                cleaned.append(replace(op, text=text, source_turns=tuple(op.source_turns), metadata=dict(op.metadata)))
            elif isinstance(op, (DeleteOp, RestoreOp)):
                cleaned.append(op)
            else:
                raise InvalidInputError(f"Not an operation: {op!r}")
        texts = [_op_search_text(op) for op in cleaned if _op_search_text(op) is not None]
        vectors = iter(self._embed(texts))  # type: ignore[arg-type]
        plan = [(op, next(vectors) if _op_search_text(op) is not None else None) for op in cleaned]
        group = secrets.token_hex(6)
        with self._transaction() as conn:
            return [self._apply_one(conn, op, vec, owner, actor, turn, group) for op, vec in plan]

    def _current(self, conn, memory_id: str, owner: str) -> tuple[int, Memory]:
        row = conn.execute(
            f"SELECT rowid, {_MEMORY_COLUMNS} FROM memories WHERE id = ? AND owner = ?", (memory_id, owner)
        ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory {memory_id!r} for user {owner!r}.", hint="`edge memory list` shows ids.")
        return row[0], _row_to_memory(row[1:])

    def _apply_one(self, conn, op: Op, vec, owner: str, actor: str, turn: str | None, group: str) -> AppliedOp:
        stamp = now()
        if isinstance(op, AddOp):
            memory = Memory(
                id=_new_id(), owner=owner, tier=op.tier, text=op.text, created_at=stamp, updated_at=stamp,
                event_time=op.event_time, source_turns=tuple(op.source_turns), metadata=dict(op.metadata),
            )
            while conn.execute("SELECT 1 FROM memories WHERE id = ?", (memory.id,)).fetchone():
                memory = replace(memory, id=_new_id())
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
                id=_new_id(), owner=owner, tier=before.tier, text=op.text, created_at=stamp, updated_at=stamp,
                event_time=op.event_time, source_turns=tuple(op.source_turns),
                metadata={**op.metadata, "supersedes": before.id},
            )
            while conn.execute("SELECT 1 FROM memories WHERE id = ?", (newer.id,)).fetchone():
                newer = replace(newer, id=_new_id())
        retired = replace(before, updated_at=stamp, valid_until=op.at or stamp,
                          superseded_by=newer.id if newer else None, superseded_turn=op.turn_id)
        conn.execute("UPDATE memories SET updated_at = ?, valid_until = ?, superseded_by = ?, superseded_turn = ? "
                     "WHERE rowid = ?", (retired.updated_at, retired.valid_until, retired.superseded_by,
                                         retired.superseded_turn, rowid))
        conn.execute("UPDATE memory_fts SET kind = ? WHERE rowid = ?", (retired.kind, rowid))
        conn.execute("UPDATE memory_vec SET kind = ? WHERE rowid = ?", (retired.kind, rowid))
        conn.execute("UPDATE memory_bin SET kind = ? WHERE rowid = ?", (retired.kind, rowid))
        action = "UPDATE" if newer else "DELETE"
        applied = self._log(conn, group, action, before.id, owner, before, retired, actor, turn, stamp)
        if newer is None:
            return applied
        self._insert_row(conn, newer, vec)
        added = self._log(conn, group, "ADD", newer.id, owner, None, newer, actor, turn, stamp)
        # The op's result names the new version; the retired one is in `before` and in history.
        return AppliedOp(seq=added.seq, action="UPDATE", memory_id=newer.id, before=applied.before, after=added.after)

    def _insert_row(self, conn, memory: Memory, vec) -> int:
        cur = conn.execute(
            f"INSERT INTO memories ({_MEMORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                memory.id, memory.owner, memory.tier, memory.text, memory.created_at, memory.updated_at,
                memory.event_time, json.dumps(list(memory.source_turns)), json.dumps(memory.metadata),
                memory.deleted_at, memory.valid_until, memory.superseded_by, memory.superseded_turn,
            ),
        )
        rowid = cur.lastrowid
        if memory.deleted_at is None:
            self._index(conn, rowid, memory, vec)
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
        conn.execute("DELETE FROM memory_fts WHERE rowid = ?", (rowid,))
        conn.execute("DELETE FROM memory_vec WHERE rowid = ?", (rowid,))
        conn.execute("DELETE FROM memory_bin WHERE rowid = ?", (rowid,))
        if memory.deleted_at is None:
            if vec is None:
                vec = self._embed([memory.search_text()])[0]
            self._index(conn, rowid, memory, vec)

    @staticmethod
    def _index(conn, rowid: int, memory: Memory, vec) -> None:
        vec = np.asarray(vec, dtype=np.float32)
        kind = memory.kind
        conn.execute("INSERT INTO memory_fts (rowid, text, owner, kind) VALUES (?, ?, ?, ?)",
                     (rowid, memory.search_text(), memory.owner, kind))
        conn.execute(
            "INSERT INTO memory_vec (rowid, owner, kind, embedding) VALUES (?, ?, ?, ?)",
            (rowid, memory.owner, kind, vec.tobytes()),
        )
        conn.execute(
            "INSERT INTO memory_bin (rowid, owner, kind, code, half) VALUES (?, ?, ?, vec_bit(?), ?)",
            (rowid, memory.owner, kind, binary_codes(vec)[0].tobytes(), vec.astype(np.float16).tobytes()),
        )

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
        return AppliedOp(seq=cur.lastrowid, action=action, memory_id=memory_id, before=before_d, after=after_d)

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

    def undo(self, steps: int = 1, *, user: str | None = None, actor: str = "user") -> list[AppliedOp]:
        """Revert the last `steps` changes (a change = all operations of one `apply`), newest first.

        The revert is itself recorded in history (action UNDO) and marks
        the original rows as undone, so history is never rewritten.
        """
        owner = user or self.user
        if steps < 1:
            raise InvalidInputError("Undo needs at least one step.")
        with self._transaction() as conn:
            groups = [
                r[0]
                for r in conn.execute(
                    "SELECT op_group FROM history WHERE owner = ? AND action != 'UNDO' AND undone_by IS NULL "
                    "GROUP BY op_group ORDER BY MAX(seq) DESC LIMIT ?",
                    (owner, steps),
                )
            ]
            if not groups:
                raise NothingToUndoError(f"Nothing to undo for user {owner!r}.")
            undo_group = secrets.token_hex(6)
            results = []
            for group in groups:
                rows = conn.execute(
                    f"SELECT {_HISTORY_COLUMNS} FROM history WHERE op_group = ? ORDER BY seq DESC", (group,)
                ).fetchall()
                for entry in map(_row_to_history, rows):
                    results.append(self._revert(conn, entry, owner, actor, undo_group))
            return results

    def _revert(self, conn, entry: HistoryEntry, owner: str, actor: str, group: str) -> AppliedOp:
        stamp = now()
        rowid, current = self._current(conn, entry.memory_id, owner)
        if entry.action == "ADD":
            target = replace(current, deleted_at=stamp, updated_at=stamp)
        else:
            target = Memory.from_dict(entry.before)  # type: ignore[arg-type]
        self._write_row(conn, rowid, target, None)
        applied = self._log(conn, group, "UNDO", entry.memory_id, owner, current, target, actor, None, stamp, reverts=entry.seq)
        conn.execute("UPDATE history SET undone_by = ? WHERE seq = ?", (applied.seq, entry.seq))
        return applied

    # ------------------------------------------------------------------ reading

    def get(self, memory_id: str, *, user: str | None = None) -> Memory:
        owner = user or self.user
        row = self._conn.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ? AND owner = ?", (memory_id, owner)
        ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"No memory {memory_id!r} for user {owner!r}.", hint="`edge memory list` shows ids.")
        return _row_to_memory(row)

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
        sql = f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE owner = ?"
        args: list[Any] = [user or self.user]
        sql += _tier_filter(tier, args)
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        if not include_superseded:
            sql += " AND valid_until IS NULL"
        sql += " ORDER BY rowid LIMIT ? OFFSET ?"
        args += [-1 if limit is None else int(limit), int(offset)]
        return [_row_to_memory(r) for r in self._conn.execute(sql, args)]

    def count(self, *, user: str | None = None, tier: str | Sequence[str] | None = None) -> int:
        """Current memories of one owner (not deleted, not superseded), of some tiers or all."""
        sql = "SELECT COUNT(*) FROM memories WHERE owner = ? AND deleted_at IS NULL AND valid_until IS NULL"
        args: list[Any] = [user or self.user]
        sql += _tier_filter(tier, args)
        return self._conn.execute(sql, args).fetchone()[0]

    def history(self, memory_id: str | None = None, *, user: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
        """History rows of one memory, or of the whole owner when no id is given; oldest first."""
        owner = user or self.user
        if memory_id is not None:
            rows = self._conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM history WHERE memory_id = ? AND owner = ? ORDER BY seq", (memory_id, owner)
            ).fetchall()
            if not rows:
                self.get(memory_id, user=owner)  # raises a clear not-found error
        else:
            rows = self._conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM (SELECT * FROM history WHERE owner = ? ORDER BY seq DESC LIMIT ?) "
                "ORDER BY seq",
                (owner, -1 if limit is None else int(limit)),
            ).fetchall()
        return [_row_to_history(r) for r in rows]

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
    ) -> list[SearchHit]:
        """Find one owner's memories for a query: by meaning, by keywords, or both fused (RRF).

        `scope` picks facts (core + semantic), the episodic turn log, or
        both; superseded facts are left out unless `include_superseded`
        ("where did Ana live before?").
        """
        owner = user or self.user
        if k < 1:
            return []
        query = clean_text(query, what="query")
        if mode not in ("vector", "keyword", "hybrid"):
            raise InvalidInputError(f"Unknown search mode {mode!r}; use vector, keyword or hybrid.")
        kinds = _kind_filter(scope, include_superseded)
        pool = max(k, 20)
        with self._lock:
            if mode == "keyword":
                ranked = [(rowid, score) for rowid, score in self._keyword(query, owner, k, kinds)]
            else:
                vec = query_vector if query_vector is not None else self._embed([query])[0]
                by_vector = self._vector(vec, owner, k if mode == "vector" else pool, kinds)
                if mode == "vector":
                    ranked = by_vector
                else:
                    by_keyword = self._keyword(query, owner, pool, kinds)
                    ranked = reciprocal_rank_fusion([r for r, _ in by_vector], [r for r, _ in by_keyword])[:k]
            return self._hits(ranked)

    def _vector(self, vec: np.ndarray, owner: str, k: int, kinds=("", ())) -> list[tuple[int, float]]:
        """The owner's k nearest memories as (rowid, cosine similarity), best first.

        sqlite-vec's brute-force float32 KNN costs ~0.4 ms of CPU per 1000
        vectors, too slow at 10^5. So the nearest OVERSAMPLE * k memories by
        Hamming distance between binary codes are fetched first (about 4x
        cheaper), with their float16 vectors, and re-scored by exact distance.
        When the owner has no more memories than that, every one of them is
        re-scored and the ranking is exact. Banks whose codes were built by
        another scheme use the exact float32 search.
        """
        query = np.asarray(vec, dtype=np.float32).reshape(-1)
        k = min(int(k), 4096)
        if not self._binary_search:
            return self._vector_exact(query, owner, k, kinds)
        candidates = min(max(k * OVERSAMPLE, MIN_CANDIDATES), 4096)
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

    def _vector_exact(self, query: np.ndarray, owner: str, k: int, kinds=("", ())) -> list[tuple[int, float]]:
        rows = self._conn.execute(
            "SELECT rowid, distance FROM memory_vec WHERE embedding MATCH ? AND k = ? AND owner = ?" + kinds[0],
            (query.tobytes(), k, owner, *kinds[1]),
        ).fetchall()
        # Unit vectors: cosine similarity = 1 - d^2 / 2.
        return [(rowid, 1.0 - (dist * dist) / 2.0) for rowid, dist in rows]

    def _keyword(self, query: str, owner: str, k: int, kinds=("", ())) -> list[tuple[int, float]]:
        """The owner's k best keyword matches as (rowid, -bm25), best first.

        bm25 must be computed for every row that matches, so a query word
        found in a large share of the bank makes ranking slow. The query's
        words are counted first (cheap); the rarest, with document counts
        adding up to KEYWORD_RANK_BUDGET, decide which rows match, and the
        others only add to their scores. If that leaves fewer than k hits, the
        most recent matches of the other words fill up the list.
        """
        words = query_words(query)
        counts = {
            w: self._conn.execute("SELECT count(*) FROM memory_fts WHERE memory_fts MATCH ?", (fts_or([w]),)).fetchone()[0]
            for w in words
        }
        words = [w for w in words if counts[w]]
        if not words:
            return []
        rare, common = split_by_frequency(words, counts, KEYWORD_RANK_BUDGET)
        if sum(counts[w] for w in rare) > KEYWORD_RANK_BUDGET:
            # Even the rarest word is everywhere: rank only its most recent matches.
            rows = self._keyword_recent(fts_or(words), owner, k, set(), kinds)
        else:
            match = fts_or(rare) if not common else f"({fts_or(rare)}) AND ({fts_or(rare + common)})"
            rows = self._conn.execute(
                "SELECT rowid, rank FROM memory_fts WHERE memory_fts MATCH ? AND owner = ?" + kinds[0]
                + " ORDER BY rank LIMIT ?",
                (match, owner, *kinds[1], int(k)),
            ).fetchall()
            if common and len(rows) < k:
                rows += self._keyword_recent(fts_or(common), owner, k - len(rows), {r[0] for r in rows}, kinds)
        return [(rowid, -rank) for rowid, rank in rows]

    def _keyword_recent(self, match: str, owner: str, k: int, skip: set[int], kinds=("", ())) -> list[tuple[int, float]]:
        """bm25-ranked top k among the owner's KEYWORD_RANK_BUDGET most recent matches."""
        rows = self._conn.execute(
            "SELECT rowid, rank FROM (SELECT rowid, rank FROM memory_fts WHERE memory_fts MATCH ? AND owner = ?"
            + kinds[0] + " ORDER BY rowid DESC LIMIT ?) ORDER BY rank LIMIT ?",
            (match, owner, *kinds[1], KEYWORD_RANK_BUDGET, int(k) + len(skip)),
        ).fetchall()
        return [r for r in rows if r[0] not in skip][: int(k)]

    def _hits(self, ranked: list[tuple[int, float]]) -> list[SearchHit]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = self._conn.execute(
            f"SELECT rowid, {_MEMORY_COLUMNS} FROM memories WHERE rowid IN ({marks}) AND deleted_at IS NULL",
            [r for r, _ in ranked],
        ).fetchall()
        by_rowid = {r[0]: _row_to_memory(r[1:]) for r in rows}
        hits = [(by_rowid[r], s) for r, s in ranked if r in by_rowid]
        return [SearchHit(memory=m, score=float(s), rank=i) for i, (m, s) in enumerate(hits, start=1)]

    # ------------------------------------------------------------------ checks

    def check(self) -> list[str]:
        """Problems found in the file and its indexes; empty when the bank is consistent."""
        problems = [r[0] for r in self._conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        live = self._conn.execute("SELECT COUNT(*) FROM memories WHERE deleted_at IS NULL").fetchone()[0]
        fts = self._conn.execute("SELECT COUNT(*) FROM memory_fts").fetchone()[0]
        vec = self._conn.execute("SELECT COUNT(*) FROM memory_vec").fetchone()[0]
        codes = self._conn.execute("SELECT COUNT(*) FROM memory_bin").fetchone()[0]
        if not live == fts == vec == codes:
            problems.append(
                f"index counts differ: {live} live memories, {fts} keyword rows, {vec} vectors, {codes} binary codes"
            )
        orphans = self._conn.execute(
            "SELECT COUNT(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.memory_id = m.id)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} memories have no history")
        return problems

    # ------------------------------------------------------------------ JSONL

    def export_jsonl(self, path: Path | str, *, user: str | None = None) -> int:
        """Write the bank (all owners, or one) with its history to JSONL; returns the lines written."""
        from edge.bank_io import export_jsonl

        return export_jsonl(self, Path(path), owner=user)

    def import_jsonl(self, path: Path | str, *, progress: bool = False) -> int:
        """Load a JSONL export in one transaction; returns the memories imported."""
        from edge.bank_io import import_jsonl

        return import_jsonl(self, Path(path), progress=progress)
