"""The memory bank's schema, as append-only named migrations.

Each migration runs once, inside the transaction that records its name in
`migrations`. A file that records a migration this code does not know was
written by a newer edge and is refused rather than guessed at.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edge.bank.records import now
from edge.errors import BankError

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_memories_and_history(db, dim: int) -> None:
    db.execute(
        """
        CREATE TABLE memories (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            tier TEXT NOT NULL CHECK (tier IN ('core', 'semantic', 'episodic')),
            text TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            event_time TEXT,
            source_turns TEXT NOT NULL DEFAULT '[]',
            metadata TEXT NOT NULL DEFAULT '{}',
            deleted_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX memories_owner ON memories (owner, deleted_at, tier)")
    db.execute(
        """
        CREATE TABLE history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            op_group TEXT NOT NULL,
            owner TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('ADD', 'UPDATE', 'DELETE', 'RESTORE', 'UNDO')),
            before TEXT,
            after TEXT,
            actor TEXT NOT NULL,
            turn TEXT,
            at TEXT NOT NULL,
            reverts INTEGER REFERENCES history (seq),
            undone_by INTEGER REFERENCES history (seq)
        )
        """
    )
    db.execute("CREATE INDEX history_memory ON history (memory_id, seq)")
    db.execute("CREATE INDEX history_owner ON history (owner, seq)")


@migration
def m002_search_indexes(db, dim: int) -> None:
    db.execute(
        "CREATE VIRTUAL TABLE memory_fts USING fts5(text, owner UNINDEXED, tokenize = 'porter unicode61')"
    )
    # The owner is a partition key: a KNN query for one owner only scans that owner's vectors.
    db.execute(
        f"CREATE VIRTUAL TABLE memory_vec USING vec0(owner TEXT PARTITION KEY, embedding float[{int(dim)}])"
    )


@migration
def m003_binary_vectors(db, dim: int) -> None:
    """A compact copy of every live vector for fast approximate search at 10^4..10^5 memories.

    `memory_bin` holds, per owner partition, each vector's binary code (see
    `edge.bank.retrieval.binary_codes`) and the vector itself in float16 for
    re-scoring; rows mirror `memory_vec` exactly. Existing vectors are copied
    in here.
    """
    import numpy as np

    from edge.bank.retrieval import VECTOR_CODE, binary_codes, code_bits

    db.execute(
        f"CREATE VIRTUAL TABLE memory_bin USING vec0(owner TEXT PARTITION KEY, code bit[{code_bits(dim)}], +half BLOB)"
    )
    # Read everything before writing: interleaving writes with vec0's full scan makes the scan ~10x slower.
    # What is held is ~0.9 kB a vector (code + float16), ~90 MB for 10^5 memories.
    pending = []
    cursor = db.execute("SELECT rowid, owner, embedding FROM memory_vec")
    while rows := cursor.fetchmany(2048):
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), int(dim))
        codes = binary_codes(vectors)
        halves = vectors.astype(np.float16)
        pending += [(r[0], r[1], codes[i].tobytes(), halves[i].tobytes()) for i, r in enumerate(rows)]
    db.executemany("INSERT INTO memory_bin (rowid, owner, code, half) VALUES (?, ?, vec_bit(?), ?)", pending)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('vector_code', ?)", (VECTOR_CODE,))


@migration
def m004_episodic_log_and_superseded_facts(db, dim: int) -> None:
    """Superseded facts, and search tables that know what each row is, with no per-owner allocation.

    - `memories` gains `valid_until` (when a superseded fact stopped holding:
      the time of the turn that replaced it), `superseded_by` (the id of its
      newer version, NULL when it was retracted) and `superseded_turn`.
    - Every search row carries `kind`: "turn" for the episodic log,
      "fact" for current facts, "old" for superseded ones, so one query can
      ask for facts, turns, or both, current or not.
    - The owner becomes a metadata column of the vector tables instead of a
      partition key: sqlite-vec allocated a whole chunk (1024 vectors, about
      1.6 MB) for every owner's partition, so each idle user of a shared file
      cost megabytes. Owner and kind are filtered inside the KNN scan.
    Existing vectors are copied over unchanged.
    """
    for column in ("valid_until", "superseded_by", "superseded_turn"):
        db.execute(f"ALTER TABLE memories ADD COLUMN {column} TEXT")
    kinds = {r[0]: ("turn" if r[1] == "episodic" else "fact") for r in db.execute("SELECT rowid, tier FROM memories")}
    texts = db.execute("SELECT rowid, text, owner FROM memory_fts").fetchall()
    pending = []
    cursor = db.execute("SELECT v.rowid, v.owner, v.embedding, b.code, b.half FROM memory_vec v JOIN memory_bin b ON b.rowid = v.rowid")
    while rows := cursor.fetchmany(2048):
        pending += [(r[0], r[1], kinds.get(r[0], "fact"), r[2], r[3], r[4]) for r in rows]
    for table in ("memory_fts", "memory_vec", "memory_bin"):
        db.execute(f"DROP TABLE {table}")
    create_search_tables(db, dim)
    db.executemany(
        "INSERT INTO memory_fts (rowid, text, owner, kind) VALUES (?, ?, ?, ?)",
        [(r[0], r[1], r[2], kinds.get(r[0], "fact")) for r in texts],
    )
    db.executemany("INSERT INTO memory_vec (rowid, owner, kind, embedding) VALUES (?, ?, ?, ?)", [p[:4] for p in pending])
    db.executemany(
        "INSERT INTO memory_bin (rowid, owner, kind, code, half) VALUES (?, ?, ?, vec_bit(?), ?)",
        [(p[0], p[1], p[2], p[4], p[5]) for p in pending],
    )


@migration
def m005_turns_keyword_index(db, dim: int) -> None:
    """The episodic log gets its own keyword table, `turn_fts`; `memory_fts` keeps the facts.

    FTS5 computes bm25's document frequencies and mean length over its whole
    table, so with turns and facts in one table every fact the Manager
    wrote changed how the turns were ranked: the turn log of a bank with
    facts ranked differently from the same log alone (on LoCoMo conv-26,
    top-20 evidence recall 72.3 % against 73.3 %). Split, a search of the
    log ranks exactly as plain retrieval over raw turns does. Existing turn
    rows move over unchanged.
    """
    db.execute(TURN_FTS)
    db.execute("INSERT INTO turn_fts (rowid, text, owner) SELECT rowid, text, owner FROM memory_fts WHERE kind = 'turn'")
    db.execute("DELETE FROM memory_fts WHERE kind = 'turn'")


TURN_FTS = "CREATE VIRTUAL TABLE turn_fts USING fts5(text, owner UNINDEXED, tokenize = 'porter unicode61')"
SUBSTRING_FTS = ("CREATE VIRTUAL TABLE memory_tri USING fts5(text, owner UNINDEXED, kind UNINDEXED, "
                 "tokenize = 'trigram case_sensitive 0')")


@migration
def m006_substring_index(db, dim: int) -> None:
    """`memory_tri`: a trigram index of the texts the keyword tables cannot split into words
    (`edge.bank.retrieval.needs_substring_index`: CJK and Indic scripts, "C++"), so a keyword search for a word
    inside them finds it. Only those texts: an English bank's keyword index stays the size it was."""
    from edge.bank.retrieval import needs_substring_index

    db.execute(SUBSTRING_FTS)
    rows = db.execute(
        "SELECT rowid, text, owner, tier, valid_until, metadata FROM memories WHERE deleted_at IS NULL").fetchall()
    for rowid, text, owner, tier, valid_until, metadata in rows:
        speaker = (json.loads(metadata or "{}") or {}).get("speaker") if tier == "episodic" else None
        search_text = f"{speaker}: {text}" if speaker else text
        if needs_substring_index(search_text):
            kind = "turn" if tier == "episodic" else "old" if valid_until else "fact"
            db.execute("INSERT INTO memory_tri (rowid, text, owner, kind) VALUES (?, ?, ?, ?)",
                       (rowid, search_text, owner, kind))


def create_search_tables(db, dim: int) -> None:
    """The keyword, vector and binary-code tables as m004 defines them (m005 adds `turn_fts`)."""
    from edge.bank.retrieval import code_bits

    db.execute(
        "CREATE VIRTUAL TABLE memory_fts USING fts5(text, owner UNINDEXED, kind UNINDEXED, tokenize = 'porter unicode61')"
    )
    db.execute(f"CREATE VIRTUAL TABLE memory_vec USING vec0(owner TEXT, kind TEXT, embedding float[{int(dim)}])")
    db.execute(
        f"CREATE VIRTUAL TABLE memory_bin USING vec0(owner TEXT, kind TEXT, code bit[{code_bits(dim)}], +half BLOB)"
    )


def names() -> list[str]:
    """The names of every migration this edge knows, oldest first."""
    return [fn.__name__ for fn in MIGRATIONS]


def migrate(db, path: Path, dim: int) -> None:
    """Run every migration `db` has not recorded yet, in order, and record each.

    Runs inside the caller's write transaction (the bank opens one around
    it), so a failed step leaves the file as it was. `dim` is the
    embedder's dimension, which the vector tables are created with.
    Raises `BankError` for a file that records steps this edge does not
    know (it was written by a newer edge).
    """
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {r[0] for r in db.execute("SELECT name FROM migrations")}
    known = names()
    unknown = applied - set(known)
    if unknown:
        raise BankError(
            f"The bank {path} was written by a newer edge (schema steps {', '.join(sorted(unknown))}).",
            hint="Upgrade edge to open it.",
        )
    for fn in MIGRATIONS:
        if fn.__name__ not in applied:
            fn(db, int(dim))
            db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, now()))
    db.execute(f"PRAGMA user_version = {len(known)}")
