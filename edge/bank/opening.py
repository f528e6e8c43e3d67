"""Opening a bank's SQLite file: WAL, schema and embedder checks, and SQLite errors users can act on."""
from __future__ import annotations

import random
import time
from pathlib import Path

from edge.bank import db as sqlite
from edge.bank import migrations
from edge.bank.records import now
from edge.embedder import Embedder
from edge.errors import BankError, BankLockedError, CorruptBankError, EmbedderMismatchError, ReadOnlyBankError

# Search reads many pages per query (binary codes, vectors, keyword lists); reading them through a
# memory map instead of one read() call per page roughly halves the time of a search at 10^5 memories.
MMAP_BYTES = 1 << 30


def error_kind(exc: Exception) -> str:
    """"busy" (locked by another connection), "corrupt" (not a database, malformed), "full" (the disk, or
    the file's size limit) or "other"."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF  # an extended code (SQLITE_BUSY_RECOVERY...) holds its primary code there
        known = {5: "busy", 6: "busy", 8: "read-only", 11: "corrupt", 13: "full", 26: "corrupt"}.get(primary)
        if known:
            return known
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "busy"
    if "disk is full" in text:
        return "full"
    if "readonly" in text or "read-only" in text:
        return "read-only"
    damaged = ("not a database", "malformed", "could not open", "corrupt", "vtable constructor failed")
    return "corrupt" if any(words in text for words in damaged) else "other"


class GuardedConnection:
    """A bank's connection whose every statement and fetch turns SQLite's errors into the bank's own.

    A damaged page can surface in any query, or only while its rows are
    fetched; each path used to show its own traceback ("database disk image
    is malformed", "could not open vectors blob"). Constraint violations
    (`IntegrityError`) pass through: they are the caller's to handle.
    """

    def __init__(self, conn, path: Path) -> None:
        self.raw = conn
        self.path = path

    def execute(self, sql: str, args=()) -> "GuardedCursor":
        try:
            return GuardedCursor(self.raw.execute(sql, args), self.path)
        except sqlite.DatabaseError as exc:
            raise _converted(self.path, exc) from exc

    def executemany(self, sql: str, rows) -> "GuardedCursor":
        try:
            return GuardedCursor(self.raw.executemany(sql, rows), self.path)
        except sqlite.DatabaseError as exc:
            raise _converted(self.path, exc) from exc

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


class GuardedCursor:
    """A cursor whose rows, fetched one by one or all at once, raise the bank's errors (see `GuardedConnection`)."""

    def __init__(self, cursor, path: Path) -> None:
        self._cursor, self._path = cursor, path

    def fetchone(self):
        try:
            return self._cursor.fetchone()
        except sqlite.DatabaseError as exc:
            raise _converted(self._path, exc) from exc

    def fetchall(self):
        try:
            return self._cursor.fetchall()
        except sqlite.DatabaseError as exc:
            raise _converted(self._path, exc) from exc

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._cursor)
        except sqlite.DatabaseError as exc:
            raise _converted(self._path, exc) from exc

    def __getattr__(self, name: str):
        return getattr(self._cursor, name)


def _converted(path: Path, exc: Exception) -> Exception:
    return exc if isinstance(exc, sqlite.IntegrityError) else unusable(path, exc, "using it")


# What to do about a damaged search table: rebuild it from the memories, or, when the damage reaches further than
# reindex can drop and rebuild, move the readable memories into a new bank.
REINDEX_REMEDY = ("a search table: `edge memory reindex` rebuilds it; if reindex cannot, `edge memory export` "
                  "and `edge memory import` into a new bank")


def unusable(path: Path, exc: Exception, doing: str) -> BankError:
    """The user-facing error for a SQLite error: a lock is a lock, never reported as corruption."""
    kind = error_kind(exc)
    if kind == "busy":
        return BankLockedError(
            f"The bank {path} stayed locked by another process while {doing} ({exc}).",
            hint="Another edge process is writing to it or opening it; retry when it is done.",
        )
    if kind == "corrupt" and doing == "opening it" and not _has_sqlite_header(path):
        return CorruptBankError(
            f"{path} is not a readable SQLite file ({exc}): it does not begin as one, so it is another kind of "
            "file, or a bank whose first page was overwritten.",
            hint="Check that --db (or EDGE_HOME) names your bank. If this file was a bank, restore it from an "
            "earlier export (`edge memory import FILE --db NEW.db`); keep it for `sqlite3 FILE .recover`.",
        )
    if kind == "corrupt" and doing == "opening it":  # the schema itself: neither check nor export can read past it
        return CorruptBankError(
            f"{path} is not a readable SQLite file ({exc}): the pages that say what it holds are damaged.",
            hint="Restore the bank from an earlier export (`edge memory import FILE --db NEW.db`); keep this file "
            "for a recovery tool (`sqlite3 FILE .recover`).",
        )
    if kind == "corrupt":
        return CorruptBankError(
            f"{path} is not a readable SQLite file ({exc}).",
            hint=f"`edge memory check --db {path}` says which part; `edge memory reindex` rebuilds the search "
            "tables; `edge memory export` saves every memory still readable, to import into a new bank "
            "(or restore one from an earlier export with `edge memory import`).",
        )
    if kind == "read-only":
        return ReadOnlyBankError(
            f"The bank {path} is read-only (its file or its folder cannot be written): reading it works, "
            f"{doing} does not ({exc}).",
            hint="Check the permissions of the file and its folder (ls -l), or copy the bank somewhere writable.")
    if kind == "full":
        return BankError(f"The bank {path} could not be written: the disk is full ({exc}). Nothing of this change "
                         "was written.", hint="Free some disk space (or move the bank with --db), then try again.")
    return BankError(f"The bank {path} cannot be used ({exc}).",
                     hint="Check the file's and its folder's permissions and the free disk space.")


def _has_sqlite_header(path: Path) -> bool:
    """Whether the file begins with SQLite's 16-byte header string (https://sqlite.org/fileformat.html)."""
    try:
        with open(path, "rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return True  # unreadable here: say nothing more than SQLite did


def prepare_read_only(conn, path: Path, embedder: Embedder | None) -> None:
    """Check a bank opened read-only, writing nothing: it is an edge bank at this edge's schema, and fits `embedder`.

    Raises `BankError` for a bank whose schema would have to be upgraded
    first (that is a write), `CorruptBankError` for another file, and
    `EmbedderMismatchError` as `prepare` does.
    """
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
        applied = {r[0] for r in conn.execute("SELECT name FROM migrations")} if "migrations" in tables else set()
    except sqlite.DatabaseError as exc:
        raise unusable(path, exc, "opening it") from exc
    if "meta" not in tables or "embedder_name" not in meta:
        raise CorruptBankError(f"{path} is a SQLite file but not an edge memory bank.",
                               hint="Point --db at an edge bank, or at a new file.")
    if applied != set(migrations.names()):
        raise BankError(f"The bank {path} is read-only and was written by another edge version: it cannot be "
                        "upgraded in place.", hint="Copy it somewhere writable (or make it writable) and open it there.")
    if embedder is not None and (meta["embedder_name"] != embedder.name or int(meta["embedder_dim"]) != embedder.dim):
        raise EmbedderMismatchError(
            f"The bank {path} was built with the embedder {meta['embedder_name']} ({meta['embedder_dim']}-d); it "
            f"cannot be searched with {embedder.name} ({embedder.dim}-d).",
            hint="Use the bank's own embedder (its bundle).")


def prepare(conn, path: Path, embedder: Embedder | None) -> None:
    """Switch the file to WAL, check it is a bank, and create or migrate its schema.

    A new bank records the embedder it is built with; with none given,
    the default embedder is loaded (never built: see
    `edge.embedder.load_default_embedder`). An existing bank refuses an
    embedder of another name or dimension (`EmbedderMismatchError`).

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
    deadline = time.monotonic() + conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            break
        except sqlite.DatabaseError as exc:
            if error_kind(exc) != "busy" or time.monotonic() > deadline:
                raise unusable(path, exc, "opening it") from exc
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
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    conn.execute("PRAGMA foreign_keys = ON")
    if {"meta", "migrations"} <= tables and (meta := _current_meta(conn, path)) is not None:
        # Already at this edge's schema: opening writes nothing, so a writer holding the lock does not stop a read.
        _check_embedder(meta, embedder, path)
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite.DatabaseError as exc:
        raise unusable(path, exc, "creating or upgrading its schema") from exc
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "embedder_name" not in meta:
            if embedder is None:
                from edge.embedder import load_default_embedder

                embedder = default or load_default_embedder()
            meta = {"embedder_name": embedder.name, "embedder_dim": str(embedder.dim), "created_at": now()}
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        else:
            _check_embedder(meta, embedder, path)
        migrations.migrate(conn, path, int(meta["embedder_dim"]))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _current_meta(conn, path: Path) -> dict[str, str] | None:
    """The bank's meta when its schema is this edge's already (every migration recorded), else None."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        applied = {r[0] for r in conn.execute("SELECT name FROM migrations")}
    except sqlite.DatabaseError as exc:
        raise unusable(path, exc, "opening it") from exc
    return meta if "embedder_name" in meta and applied == set(migrations.names()) else None


def _check_embedder(meta: dict[str, str], embedder: Embedder | None, path: Path) -> None:
    """Raise `EmbedderMismatchError` when `embedder` is not the one the bank was built with (None: any)."""
    if embedder is not None and (meta["embedder_name"] != embedder.name or int(meta["embedder_dim"]) != embedder.dim):
        raise EmbedderMismatchError(
            f"The bank {path} was built with the embedder {meta['embedder_name']} "
            f"({meta['embedder_dim']}-d); it cannot be searched with {embedder.name} ({embedder.dim}-d).",
            hint="Use the bank's own embedder (its bundle), or export it to JSONL and import it "
            "into a new bank built with the new embedder.",
        )
