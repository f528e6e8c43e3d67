"""The memory bank's schema, as append-only named migrations.

Each migration runs once, inside the transaction that records its name in
`migrations`. A file that records a migration this code does not know was
written by a newer edge and is refused rather than guessed at.
"""
from __future__ import annotations

from typing import Callable

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


def names() -> list[str]:
    return [fn.__name__ for fn in MIGRATIONS]
