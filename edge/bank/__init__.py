"""The memory bank: a user's memories in one SQLite file, searchable by meaning and by keywords.

    records     Memory, SearchHit, HistoryEntry and the rules for their text (no database)
    store       MemoryBank: memories, transactions, history, search; with the parts below
    undo        BankUndo: undo and redo, each a change with its own history rows
    repair      BankRepair: the integrity check, rebuilding the search tables, salvaging readable rows
    transfer    BankTransfer: a consistent snapshot, every row in order, loading rows back
    search      SearchIndex: the vector, binary-code and keyword tables, rank fusion, their consistency
    opening     opening a file: WAL, embedder and schema checks, SQLite errors users can act on
    migrations  the schema as append-only named steps, and the runner that applies them
    db          the SQLite connection (sqlite-vec loaded; `sqlean` where the stdlib cannot load extensions)
    retrieval   the pure parts of search: query words, binary codes, rank fusion (no database)
    jsonl       export to and import from JSONL, history included

Everything other modules use is imported from here: `from edge.bank import MemoryBank, Memory`.
"""
from __future__ import annotations

from edge.bank.records import (
    EPISODIC,
    HISTORY_ACTIONS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_TURN_CHARS,
    SCOPES,
    SEARCH_MODES,
    HistoryEntry,
    Memory,
    SearchHit,
    SearchMode,
    SearchScope,
    clean_name,
    clean_text,
    now,
    searchable,
    text_limit,
)
from edge.bank.search import MIN_SIMILARITY, SearchIndex
from edge.bank.store import MemoryBank

__all__ = [
    "EPISODIC", "HISTORY_ACTIONS", "MAX_NAME_CHARS", "MAX_TEXT_CHARS", "MAX_TURN_CHARS", "MIN_SIMILARITY", "SCOPES", "SEARCH_MODES", "HistoryEntry",
    "Memory", "MemoryBank", "SearchHit", "SearchIndex", "SearchMode", "SearchScope", "clean_name", "clean_text", "now",
    "searchable", "text_limit",
]
