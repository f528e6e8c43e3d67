"""JSONL export and import of a memory bank, history included.

Layout: a header line, then one line per memory, then one per history row,
each tagged with "kind". Vectors are not written: they are recomputed on
import with the bank's own embedder, which the header names.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from edge.bank import migrations
from edge.bank.records import HISTORY_ACTIONS, HistoryEntry, Memory, clean_text, text_limit
from edge.errors import BankError, CorruptBankError, InvalidInputError
from edge.operations import ACTORS, TIERS

if TYPE_CHECKING:
    from edge.bank.store import MemoryBank

FORMAT = "edge-memory-bank"
FORMAT_VERSION = 1
EMBED_BATCH = 64


def export_jsonl(bank: MemoryBank, path: Path, *, owner: str | None = None) -> int:
    """Write the memories and history of `owner` (all owners when None) to `path`; returns the lines written.

    Written to a temporary file from one snapshot of the bank, then renamed
    into place, so a reader never sees half an export. From a damaged bank
    (`CorruptBankError`) it saves every row still readable
    (`MemoryBank.readable_rows`); the header's `unreadable_rows` says how
    many were lost. A history row whose memory was lost is then refused on
    import (`--skip-bad-lines` leaves it out).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with bank.snapshot():
            memories, history, lost = list(bank.iter_memories(owner=owner)), list(bank.iter_history(owner=owner)), 0
    except CorruptBankError:  # a damaged page: save every row still readable, one by one
        with bank.snapshot():
            memories, history, lost = bank.readable_rows(owner=owner)
    header = {
        "kind": "header", "format": FORMAT, "version": FORMAT_VERSION,
        "embedder": {"name": bank.embedder_name, "dim": bank.dim}, "schema": migrations.names(),
        "owner": owner,
    }
    if lost:
        header["unreadable_rows"] = lost  # salvaged from a damaged bank: this many rows could not be read
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            for memory in memories:
                out.write(json.dumps({"kind": "memory", **memory.to_dict()}, ensure_ascii=False) + "\n")
            for entry in history:
                out.write(json.dumps({"kind": "history", **entry.to_dict()}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a folder that is missing or not writable, a full disk: the bank is untouched
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"Cannot write the export to {path}: {exc.strerror or exc}.",
                                hint="choose a file in a folder that exists and that you can write to") from exc
    return 1 + len(memories) + len(history)


MAX_REPORTED = 10  # bad lines named in an error; the count says how many more


@dataclass
class ExportFile:
    """An export read and checked line by line: its header, records, and each line refused with its reason."""

    header: dict[str, Any]
    memories: list[dict[str, Any]]  # records, in file order, each checked
    history: list[dict[str, Any]]
    bad: list[tuple[int, str]]  # (line number, reason)

    def refuse_bad(self, path: Path, skip_bad: bool) -> None:
        """Raise `InvalidInputError` naming the bad lines, unless `skip_bad` (they are then left out)."""
        if not self.bad or skip_bad:
            return
        named = "; ".join(f"line {number}: {reason}" for number, reason in self.bad[:MAX_REPORTED])
        more = f"; and {len(self.bad) - MAX_REPORTED} more" if len(self.bad) > MAX_REPORTED else ""
        raise InvalidInputError(
            f"{path} has {len(self.bad)} line(s) edge cannot import, so nothing was imported: {named}{more}.",
            hint="fix them, or import the rest with --skip-bad-lines",
        )


def read_export(path: Path) -> ExportFile:
    """Read an export, checking every line before anything is written (`ExportFile.bad` lists the refused).

    A file without an edge header, or from a newer edge, raises
    `InvalidInputError` at once; a bad line (not JSON, nested too deep, an
    unknown kind, tier, action or actor, a duplicate id, a text the bank
    refuses, metadata that is not an object, a history row of a memory the
    file does not hold) is recorded with its reason and left out.
    """
    if not path.is_file():
        raise InvalidInputError(f"No export file at {path}.")
    header: dict[str, Any] | None = None
    memories: list[dict[str, Any]] = []
    history: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    first_line_of: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((number, f"not JSON ({exc.msg} at column {exc.colno})"))
                continue
            except RecursionError:
                bad.append((number, "JSON nested too deeply"))
                continue
            kind = record.pop("kind", None) if isinstance(record, dict) else None
            if kind == "header":
                header = record
            elif kind == "memory":
                reason = _memory_problem(record, first_line_of, number)
                if reason:
                    bad.append((number, reason))
                else:
                    memories.append(record)
            elif kind == "history":
                history.append((number, record))
            else:
                bad.append((number, f"unknown kind {kind!r}" if isinstance(record, dict) else "not a JSON object"))
    if header is None or header.get("format") != FORMAT:
        raise InvalidInputError(f"{path} has no edge export header.", hint="Was it written by `edge memory export`?")
    if not isinstance(header.get("version", 0), int) or header.get("version", 0) > FORMAT_VERSION:
        raise InvalidInputError(f"{path} was written by a newer edge (format {header.get('version')!r}).")
    held = {m["id"] for m in memories}
    kept_history = []
    for number, record in history:
        reason = _history_problem(record, held)
        if reason:
            bad.append((number, reason))
        else:
            kept_history.append(record)
    bad.sort()
    return ExportFile(header=header, memories=memories, history=kept_history, bad=bad)


def _memory_problem(record: dict[str, Any], first_line_of: dict[str, int], number: int) -> str | None:
    """Why a memory record cannot be imported (None: it can); records its id's first line."""
    from edge.bank.records import clean_name

    try:
        memory = Memory.from_dict(record)
    except (TypeError, ValueError) as exc:
        return f"not a memory record ({exc})"
    if not isinstance(memory.id, str) or not memory.id.strip():
        return "a memory without an id"
    if memory.id in first_line_of:
        return f"duplicate id {memory.id!r} (first on line {first_line_of[memory.id]})"
    if memory.tier not in TIERS:
        return f"unknown tier {memory.tier!r} (expected one of {', '.join(TIERS)})"
    if not isinstance(memory.metadata, dict):
        return f"metadata must be a JSON object, not {type(memory.metadata).__name__}"
    if not all(isinstance(t, str) for t in memory.source_turns):
        return "source_turns must be a list of strings"
    try:
        clean_name(memory.owner, what="owner")
        if memory.deleted_at is None:
            clean_text(memory.text, max_chars=text_limit(memory.tier))
    except InvalidInputError as exc:
        return exc.message
    first_line_of[memory.id] = number
    return None


def _history_problem(record: dict[str, Any], held: set[str]) -> str | None:
    """Why a history record cannot be imported (None: it can)."""
    try:
        entry = HistoryEntry.from_dict(record)
    except (TypeError, ValueError) as exc:
        return f"not a history record ({exc})"
    if entry.action not in HISTORY_ACTIONS:
        return f"unknown action {entry.action!r} (expected one of {', '.join(HISTORY_ACTIONS)})"
    if entry.actor not in ACTORS:
        return f"unknown actor {entry.actor!r} (expected one of {', '.join(ACTORS)})"
    if entry.memory_id not in held:
        return f"a history row of memory {entry.memory_id!r}, which the file does not hold (it would block undo)"
    if not isinstance(entry.seq, int) or not all(v is None or isinstance(v, dict) for v in (entry.before, entry.after)):
        return "seq must be a number, before and after objects"
    return None


def import_jsonl(bank: MemoryBank, path: Path, *, progress: bool = False, skip_bad: bool = False) -> int:
    """Restore an export as it was written (owners, ids, history), all or nothing; returns the memories imported.

    Every line is checked first (`read_export`): a file with a bad line raises
    `InvalidInputError` naming each with its line number and reason, and
    nothing is imported, unless `skip_bad` (the good lines are imported).
    A file whose memories are all in the bank already (imported before), or
    some of them, raises `BankError`.
    """
    read = read_export(path)
    read.refuse_bad(path, skip_bad)
    memories = [Memory.from_dict(r) for r in read.memories]
    history = [HistoryEntry.from_dict(e) for e in read.history]
    clash = bank.taken_ids([m.id for m in memories])
    if memories and len(clash) == len(memories):
        raise BankError(f"Every memory of {path} is already in the bank: it was imported before.",
                                hint="nothing was imported; `edge memory import FILE --user NAME` gives a user copies "
                                "with new ids")
    vectors = _embed_all(bank, [m for m in memories if m.deleted_at is None], progress)
    try:
        return bank.load(memories, history, vectors)
    except BankError as exc:
        raise BankError(f"{exc.message} (importing {path})", hint=exc.hint) from exc


@dataclass(frozen=True)
class UserImport:
    """What `import_for_user` did: how many memories it gave the user, from whom, and what it left out."""

    owner: str
    imported: int
    file_owner: str | None  # the one owner written in the file (None: the file holds no memories)
    left_out_deleted: int  # memories deleted in the file: not imported, they were no longer memories
    new_ids: int  # memories whose id was already in the bank and got a new one


def import_for_user(bank: MemoryBank, path: Path, owner: str, *, progress: bool = False,
                    skip_bad: bool = False) -> UserImport:
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
    read = read_export(path)
    read.refuse_bad(path, skip_bad)
    memories = [Memory.from_dict(r) for r in read.memories]
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
    read = read_export(path)
    owners = sorted({str(m.get("owner")) for m in read.memories} | {str(h.get("owner")) for h in read.history})
    return ExportSummary(memories=len(read.memories), history=len(read.history), owners=tuple(owners))
