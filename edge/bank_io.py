"""JSONL export and import of a memory bank, history included.

Layout: a header line, then one line per memory, then one per history row,
each tagged with "kind". Vectors are not written: they are recomputed on
import with the bank's own embedder, which the header names.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.bank import HistoryEntry, Memory, MemoryBank, clean_text, migrations, text_limit
from edge.errors import BankError, InvalidInputError

FORMAT = "edge-memory-bank"
FORMAT_VERSION = 1
EMBED_BATCH = 64


def export_jsonl(bank: MemoryBank, path: Path, *, owner: str | None = None) -> int:
    """Write the memories and history of `owner` (all owners when None) to `path`; returns the lines written.

    Written to a temporary file from one snapshot of the bank, then renamed
    into place, so a reader never sees half an export.
    """
    tmp = path.with_name(path.name + ".tmp")
    lines = 0
    with bank.snapshot(), open(tmp, "w", encoding="utf-8") as out:
        header = {
            "kind": "header", "format": FORMAT, "version": FORMAT_VERSION,
            "embedder": {"name": bank.embedder_name, "dim": bank.dim}, "schema": migrations.names(),
            "owner": owner,
        }
        out.write(json.dumps(header) + "\n")
        lines += 1
        for memory in bank.iter_memories(owner=owner):
            out.write(json.dumps({"kind": "memory", **memory.to_dict()}, ensure_ascii=False) + "\n")
            lines += 1
        for entry in bank.iter_history(owner=owner):
            out.write(json.dumps({"kind": "history", **entry.to_dict()}, ensure_ascii=False) + "\n")
            lines += 1
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


def import_jsonl(bank: MemoryBank, path: Path, *, progress: bool = False) -> int:
    """Restore an export as it was written (owners, ids, history), all or nothing; returns the memories imported.

    Raises `InvalidInputError` for a file that is not an edge export or holds
    a malformed record, `BankError` when one of its ids is already in the bank.
    """
    _, records, entries = _read(path)
    memories = _memories(records, path)
    try:
        history = [HistoryEntry.from_dict(e) for e in entries]
    except TypeError as exc:
        raise InvalidInputError(f"{path} holds a malformed history row ({exc}).") from exc
    vectors = _embed_all(bank, [m for m in memories if m.deleted_at is None], progress)
    try:
        return bank.load(memories, history, vectors)
    except BankError as exc:
        raise BankError(f"{exc.message} (importing {path})", hint=exc.hint) from exc


def _memories(records: list[dict[str, Any]], path: Path, *, deleted_too: bool = True) -> list[Memory]:
    """The memory records of an export as `Memory`s, their texts checked as the bank checks them
    (a deleted memory's too, unless `deleted_too` is False: it will be left out)."""
    try:
        memories = [Memory.from_dict(r) for r in records]
    except TypeError as exc:
        raise InvalidInputError(f"{path} holds a malformed memory ({exc}).") from exc
    for memory in memories:
        if deleted_too or memory.deleted_at is None:
            clean_text(memory.text, max_chars=text_limit(memory.tier))
    return memories


@dataclass(frozen=True)
class UserImport:
    """What `import_for_user` did: how many memories it gave the user, from whom, and what it left out."""

    owner: str
    imported: int
    file_owner: str | None  # the one owner written in the file (None: the file holds no memories)
    left_out_deleted: int  # memories deleted in the file: not imported, they were no longer memories
    new_ids: int  # memories whose id was already in the bank and got a new one


def import_for_user(bank: MemoryBank, path: Path, owner: str, *, progress: bool = False) -> UserImport:
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
    _, records, _ = _read(path)
    memories = _memories(records, path, deleted_too=False)
    file_owners = sorted({m.owner for m in memories})
    if len(file_owners) > 1:
        raise InvalidInputError(
            f"{path} holds the memories of {len(file_owners)} users ({', '.join(file_owners[:5])}); "
            f"importing them all for {owner!r} would merge them.",
            hint="Import it without --user to restore every user as written, or export one user "
            "(`edge memory export FILE --user NAME`) and import that.",
        )
    live = [m for m in memories if m.deleted_at is None]
    ids = bank.adopt(live, _embed_all(bank, live, progress), owner=owner, actor="import")
    return UserImport(
        owner=owner, imported=len(live), file_owner=file_owners[0] if file_owners else None,
        left_out_deleted=len(memories) - len(live), new_ids=sum(old != new for old, new in ids.items()),
    )


def _embed_all(bank: MemoryBank, memories: list[Memory], progress: bool) -> dict[str, np.ndarray]:
    """Vectors of `memories` by id, embedded in batches (before the write transaction: it takes seconds)."""
    vectors: dict[str, np.ndarray] = {}
    with tqdm(total=len(memories), desc="embedding", unit="memory", disable=not progress) as bar:
        for start in range(0, len(memories), EMBED_BATCH):
            chunk = memories[start : start + EMBED_BATCH]
            for memory, vec in zip(chunk, bank.embed([m.search_text() for m in chunk])):
                vectors[memory.id] = vec
            bar.update(len(chunk))
    return vectors


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
