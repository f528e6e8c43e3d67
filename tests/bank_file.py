"""Reading (or damaging) a bank's tables through a connection of a test's own, never the bank's."""
from __future__ import annotations

from pathlib import Path

from edge.bank import db as sqlite


def sql(path: Path | str, statement: str, args: tuple = ()) -> list[tuple]:
    """Run one statement on the bank file at `path` (committed at once) and return its rows."""
    conn = sqlite.connect(path)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()
