"""JSONL export and import of a memory bank, history included.

Layout: a header line, then one line per memory, then one per history row,
each tagged with "kind". Vectors are not written: they are recomputed on
import with the bank's own embedder, which the header names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from edge import migrations
from edge.errors import BankError, InvalidInputError

if TYPE_CHECKING:
    from edge.bank import MemoryBank

FORMAT = "edge-memory-bank"
FORMAT_VERSION = 1


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
    from edge.bank import Memory, clean_text

    header, memories, history = _read(path)
    try:
        parsed = [Memory.from_dict(m) for m in memories]
        for memory in parsed:
            clean_text(memory.text)
    except TypeError as exc:
        raise InvalidInputError(f"{path} holds a malformed memory ({exc}).") from exc
    live = [m for m in parsed if m.deleted_at is None]
    vectors: dict[str, Any] = {}
    batch = 64
    with tqdm(total=len(live), desc="embedding", unit="memory", disable=not progress) as bar:
        for start in range(0, len(live), batch):
            chunk = live[start : start + batch]
            for memory, vec in zip(chunk, bank._embed([m.text for m in chunk])):
                vectors[memory.id] = vec
            bar.update(len(chunk))
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
