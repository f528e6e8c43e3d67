"""JSONL export and import of a memory bank, history included.

Layout: a header line, then one line per memory, then one per history row,
each tagged with "kind". Vectors are not written: they are recomputed on
import with the bank's own embedder, which the header names.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from edge import migrations
from edge.errors import BankError, InvalidInputError

if TYPE_CHECKING:
    from edge.bank import MemoryBank

FORMAT = "edge-memory-bank"
FORMAT_VERSION = 1
EMBED_BATCH = 64


def export_jsonl(bank: "MemoryBank", path: Path, *, owner: str | None = None) -> int:
    from edge.bank import _HISTORY_COLUMNS, _MEMORY_COLUMNS, _row_to_history, _row_to_memory

    where, args = ("WHERE owner = ?", [owner]) if owner else ("", [])
    conn = bank._conn
    tmp = path.with_name(path.name + ".tmp")
    lines = 0
    with bank._lock, open(tmp, "w", encoding="utf-8") as out:
        conn.execute("BEGIN")  # one consistent snapshot for the whole export
        try:
            header = {
                "kind": "header", "format": FORMAT, "version": FORMAT_VERSION,
                "embedder": {"name": bank.embedder_name, "dim": bank.dim}, "schema": migrations.names(),
                "owner": owner,
            }
            out.write(json.dumps(header) + "\n")
            lines += 1
            for row in conn.execute(f"SELECT {_MEMORY_COLUMNS} FROM memories {where} ORDER BY rowid", args):
                out.write(json.dumps({"kind": "memory", **_row_to_memory(row).to_dict()}, ensure_ascii=False) + "\n")
                lines += 1
            for row in conn.execute(f"SELECT {_HISTORY_COLUMNS} FROM history {where} ORDER BY seq", args):
                out.write(json.dumps({"kind": "history", **_row_to_history(row).to_dict()}, ensure_ascii=False) + "\n")
                lines += 1
        finally:
            conn.execute("COMMIT")
    os.replace(tmp, path)
    return lines


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    if not path.is_file():
        raise InvalidInputError(f"No export file at {path}.")
    header: dict[str, Any] | None = None
    memories, history = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind = record.pop("kind")
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
                raise InvalidInputError(f"{path}:{number} is not an edge export line ({exc}).") from exc
            if kind == "header":
                header = record
            elif kind == "memory":
                memories.append(record)
            elif kind == "history":
                history.append(record)
            else:
                raise InvalidInputError(f"{path}:{number} has an unknown kind {kind!r}.")
    if header is None or header.get("format") != FORMAT:
        raise InvalidInputError(f"{path} has no edge export header.", hint="Was it written by `edge memory export`?")
    if header.get("version", 0) > FORMAT_VERSION:
        raise InvalidInputError(f"{path} was written by a newer edge (format {header['version']}).")
    return header, memories, history


def import_jsonl(bank: "MemoryBank", path: Path, *, progress: bool = False) -> int:
    from edge.bank import MAX_TEXT_CHARS, MAX_TURN_CHARS, Memory, clean_text

    header, memories, history = _read(path)
    try:
        parsed = [Memory.from_dict(m) for m in memories]
        for memory in parsed:
            clean_text(memory.text, max_chars=MAX_TURN_CHARS if memory.tier == "episodic" else MAX_TEXT_CHARS)
    except TypeError as exc:
        raise InvalidInputError(f"{path} holds a malformed memory ({exc}).") from exc
    vectors = _embed_all(bank, [m for m in parsed if m.deleted_at is None], progress)
    with bank._transaction() as conn:
        ids = [m.id for m in parsed]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            clash = conn.execute(
                f"SELECT id FROM memories WHERE id IN ({','.join('?' * len(chunk))}) LIMIT 1", chunk
            ).fetchone()
            if clash:
                raise BankError(f"Memory {clash[0]!r} from {path} is already in the bank; nothing was imported.")
        for memory in parsed:
            bank._insert_row(conn, memory, vectors.get(memory.id))
        seq_map: dict[int, int] = {}
        for entry in history:
            cur = conn.execute(
                "INSERT INTO history (op_group, owner, memory_id, action, before, after, actor, turn, at, reverts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry["op_group"], entry["owner"], entry["memory_id"], entry["action"],
                    json.dumps(entry["before"]) if entry["before"] else None,
                    json.dumps(entry["after"]) if entry["after"] else None,
                    entry["actor"], entry["turn"], entry["at"], seq_map.get(entry["reverts"]),
                ),
            )
            seq_map[entry["seq"]] = cur.lastrowid
        for entry in history:
            if entry.get("undone_by") is not None:
                conn.execute(
                    "UPDATE history SET undone_by = ? WHERE seq = ?",
                    (seq_map.get(entry["undone_by"]), seq_map[entry["seq"]]),
                )
    return len(parsed)


@dataclass(frozen=True)
class UserImport:
    """What `import_for_user` did: how many memories it gave the user, from whom, and what it left out."""

    owner: str
    imported: int
    file_owner: str | None  # the one owner written in the file (None: the file holds no memories)
    left_out_deleted: int  # memories deleted in the file: not imported, they were no longer memories
    new_ids: int  # memories whose id was already in the bank and got a new one


def import_for_user(bank: "MemoryBank", path: Path, owner: str, *, progress: bool = False) -> UserImport:
    """Give `owner` the memories of a one-user export (all or nothing), recorded as one undoable change.

    A plain `import_jsonl` restores a file as it was: every memory with the
    owner and the history written in it. Importing *for* a user is a
    different act: the memories become the user's, so they must not carry
    the other owner's history (whose turns would then look like the user's).
    Each imported memory gets one ADD history row by actor "import", all in
    one group, so `undo` takes the whole import back. Ids already in the
    bank (the file came from this bank) get new ones; deleted memories are
    left out. A file holding several users' memories is refused: merging
    several people into one is never what "--user" asked for.
    """
    from edge.bank import MAX_TEXT_CHARS, MAX_TURN_CHARS, Memory, _new_id, clean_text, now

    _, records, _ = _read(path)
    try:
        memories = [Memory.from_dict(r) for r in records]
    except TypeError as exc:
        raise InvalidInputError(f"{path} holds a malformed memory ({exc}).") from exc
    file_owners = sorted({m.owner for m in memories})
    if len(file_owners) > 1:
        raise InvalidInputError(
            f"{path} holds the memories of {len(file_owners)} users ({', '.join(file_owners[:5])}); "
            f"importing them all for {owner!r} would merge them.",
            hint="Import it without --user to restore every user as written, or export one user "
            "(`edge memory export FILE --user NAME`) and import that.",
        )
    live = [m for m in memories if m.deleted_at is None]
    for memory in live:
        clean_text(memory.text, max_chars=MAX_TURN_CHARS if memory.tier == "episodic" else MAX_TEXT_CHARS)
    vectors = _embed_all(bank, live, progress)
    group = secrets.token_hex(6)
    with bank._transaction() as conn:
        ids = _fresh_ids(conn, [m.id for m in live], _new_id)
        stamp = now()
        for memory in live:
            mine = _reowned(memory, owner, ids)
            bank._insert_row(conn, mine, vectors[memory.id])
            bank._log(conn, group, "ADD", mine.id, owner, None, mine, "import", None, stamp)
    return UserImport(
        owner=owner, imported=len(live), file_owner=file_owners[0] if file_owners else None,
        left_out_deleted=len(memories) - len(live), new_ids=sum(old != new for old, new in ids.items()),
    )


def _embed_all(bank: "MemoryBank", memories: list, progress: bool) -> dict[str, Any]:
    """Vectors of `memories` by id, embedded in batches (before the write transaction: it takes seconds)."""
    vectors: dict[str, Any] = {}
    with tqdm(total=len(memories), desc="embedding", unit="memory", disable=not progress) as bar:
        for start in range(0, len(memories), EMBED_BATCH):
            chunk = memories[start : start + EMBED_BATCH]
            for memory, vec in zip(chunk, bank._embed([m.search_text() for m in chunk])):
                vectors[memory.id] = vec
            bar.update(len(chunk))
    return vectors


def _fresh_ids(conn, ids: list[str], new_id) -> dict[str, str]:
    """Each id mapped to itself, or to a new id when the bank already holds it."""
    taken: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        taken |= {r[0] for r in conn.execute(f"SELECT id FROM memories WHERE id IN ({marks})", chunk)}
    mapping = {}
    for old in ids:
        new = old
        while new in taken:
            new = new_id()
        taken.add(new)
        mapping[old] = new
    return mapping


def _reowned(memory, owner: str, ids: dict[str, str]):
    """`memory` as `owner`'s, with ids that point into the file renamed as the import renamed them."""
    changes: dict[str, Any] = {"owner": owner, "id": ids[memory.id]}
    linked = getattr(memory, "superseded_by", None)
    if linked in ids:
        changes["superseded_by"] = ids[linked]
    if memory.metadata.get("supersedes") in ids:
        changes["metadata"] = {**memory.metadata, "supersedes": ids[memory.metadata["supersedes"]]}
    return replace(memory, **changes)


@dataclass(frozen=True)
class ExportSummary:
    """What an export file holds, to tell a user what was written or is about to be imported."""

    memories: int
    history: int
    owners: tuple[str, ...]


def summarize(path: Path) -> ExportSummary:
    """Count the memories and history rows of an export and name their owners."""
    _, memories, history = _read(path)
    owners = sorted({str(m.get("owner")) for m in memories} | {str(h.get("owner")) for h in history})
    return ExportSummary(memories=len(memories), history=len(history), owners=tuple(owners))
