"""Opening SQLite with sqlite-vec loaded.

The stdlib `sqlite3` is used when it can load extensions; otherwise the
drop-in `sqlean` module (same DB-API, bundled SQLite) takes its place.
Callers never see which one was chosen, except through `DatabaseError`.
"""
from __future__ import annotations

import os
import sqlite3 as _stdlib_sqlite3
from pathlib import Path
from types import ModuleType

import sqlite_vec


def _pick_driver() -> ModuleType:
    probe = _stdlib_sqlite3.connect(":memory:")
    try:
        if hasattr(probe, "enable_load_extension"):
            try:
                probe.enable_load_extension(True)
                sqlite_vec.load(probe)
                return _stdlib_sqlite3
            except Exception:  # noqa: BLE001 - any failure means: use the fallback
                pass
    finally:
        probe.close()
    import sqlean  # a dependency of edge; bundles a SQLite that loads extensions

    return sqlean


driver: ModuleType = _pick_driver()
DatabaseError = driver.DatabaseError
OperationalError = driver.OperationalError
IntegrityError = driver.IntegrityError


BUSY_TIMEOUT_MS = 15_000  # how long a connection waits for another process's lock


def connect(path: Path | str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, read_only: bool = False):
    """A connection in autocommit mode (transactions are explicit) with sqlite-vec loaded.

    `read_only`: opened with SQLite's `mode=ro` (a file this process may not
    write), `immutable=1` when its folder is not writable either (WAL
    reading then cannot create the shared-memory file; the file must not be
    written by anyone while it is open).
    """
    if read_only:
        from urllib.parse import quote

        writable_folder = os.access(Path(path).resolve().parent, os.W_OK)
        flags = "mode=ro" if writable_folder else "mode=ro&immutable=1"
        target, uri = f"file:{quote(str(Path(path).resolve()))}?{flags}", True
    else:
        target, uri = str(path), False
    conn = driver.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn
