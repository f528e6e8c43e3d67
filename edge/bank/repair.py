"""Finding and mending damage: the integrity check, rebuilding the search tables, salvaging readable rows.

`BankRepair` is part of `MemoryBank` (`edge.bank.store`); `edge memory check`, `reindex` and a
salvaging `export` use it.
"""
from __future__ import annotations

from edge.bank import db as sqlite
from edge.bank.opening import REINDEX_REMEDY
from edge.bank.records import HISTORY_COLUMNS, MEMORY_COLUMNS, HistoryEntry, Memory, history_from_row, memory_from_row
from edge.errors import BankError, CorruptBankError

# The search tables, rebuilt from the memories by `reindex` (memory_tri: the substring index, `edge.bank.retrieval`)
SEARCH_TABLES = ("turn_fts", "memory_fts", "memory_tri", "memory_vec", "memory_bin")
FTS_TABLES = SEARCH_TABLES[:3]  # the FTS5 ones


class BankRepair:
    """`MemoryBank`'s checks and repairs (see the module)."""

    def check(self) -> list[str]:
        """Problems found in the file and its indexes, each naming the part it is in; empty when all is sound.

        SQLite's integrity check runs table by table, so a damaged page is
        named by what it holds: the memories or their history (restore from
        an export: `edge memory export` saves what is still readable), or a
        search table (`reindex` rebuilds those from the memories). Then the
        search tables are compared with the memories, and every memory must
        have a history row.
        """
        with self._lock:
            tables = [r[0] for r in self._conn.raw.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            problems = []
            # An FTS5 table keeps its index structure cached per connection and refreshes it when read, but its
            # integrity check uses the cached one: after another connection wrote, a connection that has not read
            # since would report a sound index as malformed. One read brings it up to date.
            for table in FTS_TABLES:
                try:
                    self._conn.raw.execute(f"SELECT rowid FROM {table} LIMIT 1").fetchall()
                except sqlite.DatabaseError:
                    pass  # damaged: the integrity check below names it
            for table in tables:
                try:
                    found = [r[0] for r in self._conn.raw.execute(f"PRAGMA integrity_check('{table}')")]
                except sqlite.DatabaseError as exc:
                    found = [str(exc)]
                if found != ["ok"]:
                    part = next((t for t in SEARCH_TABLES if table == t or table.startswith(t + "_")), table)
                    remedy = (REINDEX_REMEDY if part in SEARCH_TABLES else
                              "`edge memory export` saves what is still readable")
                    said = [line for text in found for line in text.splitlines() if not line.startswith("***")]
                    more = f" (and {len(said) - 2} more)" if len(said) > 2 else ""
                    problems.append(f"{part} is damaged (table {table}; {remedy}): {'; '.join(said[:2])}{more}")
            # FTS5 checks its own index (its pages hold blobs) through a write to the table: not on a read-only bank,
            # whose FTS5 pages the integrity check above has still read.
            for table in () if self.read_only else FTS_TABLES:
                try:
                    self._conn.raw.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
                except sqlite.DatabaseError as exc:
                    problems.append(f"{table} is damaged ({REINDEX_REMEDY}): {exc}")
            if problems:
                return problems
            live = self._conn.execute("SELECT COUNT(*) FROM memories WHERE deleted_at IS NULL").fetchone()[0]
            problems += self.index.check(live)
            orphans = self._conn.execute(
                "SELECT COUNT(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.memory_id = m.id)"
            ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} memories have no history")
        return problems

    def reindex(self, *, progress: bool = False) -> int:
        """Rebuild every search table (keywords, vectors, binary codes) from the memories; returns the memories
        indexed. The memories and their history are not touched; one transaction, all or nothing.

        Raises `CorruptBankError` when the memories themselves cannot be read
        (then export what is readable and import it into a new bank).
        """
        from tqdm import tqdm

        with self._lock:
            schema = dict(self._conn.execute(
                f"SELECT name, sql FROM sqlite_schema WHERE name IN ({','.join('?' * len(SEARCH_TABLES))})",
                SEARCH_TABLES).fetchall())
            live = [(r[0], memory_from_row(r[1:])) for r in self._conn.execute(
                f"SELECT rowid, {MEMORY_COLUMNS} FROM memories WHERE deleted_at IS NULL ORDER BY rowid")]
        vectors = []
        with tqdm(total=len(live), desc="embedding", unit="memory", disable=not progress) as bar:
            for start in range(0, len(live), 64):
                chunk = live[start:start + 64]
                vectors += list(self.embed([m.search_text() for _, m in chunk]))
                bar.update(len(chunk))
        with self._transaction() as conn:
            for table in SEARCH_TABLES:
                if table in schema:
                    try:
                        conn.execute(f"DROP TABLE {table}")
                    except BankError as exc:  # its pages are too damaged to free: the file must be rebuilt
                        raise CorruptBankError(
                            f"The search table {table} of {self.path} is too damaged to rebuild in place ({exc.message}).",
                            hint="Export what is readable (`edge memory export FILE`) and import it into a new bank "
                            "(`edge memory import FILE --db NEW.db`).") from exc
                    conn.execute(schema[table])
            for (rowid, memory), vec in zip(live, vectors):
                self.index.add(rowid, memory.search_text(), memory.owner, memory.kind, vec)
        return len(live)

    def readable_rows(self, *, owner: str | None = None) -> tuple[list[Memory], list[HistoryEntry], int]:
        """Every memory and history row of `owner` (all owners when None) that a damaged file still yields.

        Read one row at a time by rowid, so a damaged page costs only the rows
        on it; returns (memories, history rows, rows that could not be read).
        Rowids never exceed the history's sequence (every memory was added
        by a history row), which `sqlite_sequence` keeps apart from both tables.
        A memory no read returned is rebuilt from the newest readable history
        row that records it (each row's `after` is the whole memory as that
        change left it), so a damaged memories table loses only what its
        history lost too. Lost: the reads that failed, and the memories the
        readable history names that neither a read nor a history row gives.
        """
        top = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'history'").fetchone()
        top = top[0] if top else 0
        memories: list[Memory] = []
        history: list[HistoryEntry] = []
        failed = {"memories": 0, "history": 0}
        for table, columns, build, into in (("memories", MEMORY_COLUMNS, memory_from_row, memories),
                                            ("history", HISTORY_COLUMNS, history_from_row, history)):
            for rowid in range(1, top + 1):
                try:
                    row = self._conn.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
                except CorruptBankError:
                    failed[table] += 1
                    continue
                if row is not None:
                    item = build(row)
                    if owner is None or item.owner == owner:
                        into.append(item)
        # A damaged page may read as holding no row at all: a memory its history names but no read returned is
        # rebuilt from its newest history row, or lost when that row holds no memory (a removal).
        newest: dict[str, HistoryEntry] = {}
        for entry in history:
            if entry.seq > getattr(newest.get(entry.memory_id), "seq", -1):
                newest[entry.memory_id] = entry
        found = {memory.id for memory in memories}
        rebuilt = unknown = 0
        for memory_id, entry in newest.items():
            if memory_id in found:
                continue
            if isinstance(entry.after, dict) and entry.after.get("id") == memory_id:
                memories.append(Memory.from_dict(entry.after))
                rebuilt += 1
            else:
                unknown += 1
        return memories, history, failed["history"] + max(0, failed["memories"] - rebuilt) + unknown
