"""`edge memory ...`: read and change the memory bank by hand."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edge import paths
from edge.bank import HistoryEntry, Memory, MemoryBank, SearchHit
from edge.commands import db_option, json_option, user_option
from edge.operations import TIERS


def open_bank(db: Path | None, user: str, *, create: bool = True) -> MemoryBank:
    return MemoryBank.open(db or paths.default_db(), user=user, create=create)


def _emit(data, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        human()


def _line(memory: Memory) -> str:
    when = f" [{memory.event_time}]" if memory.event_time else ""
    gone = click.style(" (deleted)", fg="red") if memory.deleted_at else ""
    return f"{click.style(memory.id, fg='cyan')}  {memory.tier:<9}{when} {memory.text}{gone}"


def _history_line(entry: HistoryEntry) -> str:
    undone = click.style(f"  (undone by #{entry.undone_by})", fg="yellow") if entry.undone_by else ""
    text = (entry.after or entry.before or {}).get("text", "")
    turn = f" turn={entry.turn}" if entry.turn else ""
    return f"#{entry.seq:<5} {entry.at[:19]}  {entry.action:<7} {entry.memory_id}  by {entry.actor}{turn}: {text}{undone}"


@click.group()
def memory() -> None:
    """Read and change the memory bank directly (every change is recorded and undoable)."""


@memory.command()
@click.argument("text")
@click.option("--tier", type=click.Choice(TIERS), default="semantic", show_default=True,
              help="core: always in context; semantic: facts; episodic: dated events.")
@click.option("--event-time", default=None, help="When the remembered event happened (free text or ISO date).")
@db_option
@user_option
@json_option
def add(text: str, tier: str, event_time: str | None, db: Path | None, user: str, as_json: bool) -> None:
    """Store TEXT as a new memory."""
    with open_bank(db, user) as bank:
        memory_ = bank.add(text, tier=tier, event_time=event_time, actor="user")
    _emit(memory_.to_dict(), as_json, lambda: click.echo(f"added {_line(memory_)}"))


@memory.command()
@click.argument("memory_id")
@click.argument("text")
@db_option
@user_option
@json_option
def update(memory_id: str, text: str, db: Path | None, user: str, as_json: bool) -> None:
    """Replace the text of memory MEMORY_ID."""
    with open_bank(db, user, create=False) as bank:
        memory_ = bank.update(memory_id, text, actor="user")
    _emit(memory_.to_dict(), as_json, lambda: click.echo(f"updated {_line(memory_)}"))


@memory.command()
@click.argument("memory_id")
@db_option
@user_option
@json_option
def delete(memory_id: str, db: Path | None, user: str, as_json: bool) -> None:
    """Delete memory MEMORY_ID (recoverable with `undo` or `restore`)."""
    with open_bank(db, user, create=False) as bank:
        memory_ = bank.delete(memory_id, actor="user")
    _emit(memory_.to_dict(), as_json, lambda: click.echo(f"deleted {_line(memory_)}"))


@memory.command()
@click.argument("memory_id")
@db_option
@user_option
@json_option
def restore(memory_id: str, db: Path | None, user: str, as_json: bool) -> None:
    """Bring back deleted memory MEMORY_ID."""
    with open_bank(db, user, create=False) as bank:
        memory_ = bank.restore(memory_id, actor="user")
    _emit(memory_.to_dict(), as_json, lambda: click.echo(f"restored {_line(memory_)}"))


@memory.command()
@click.argument("query")
@click.option("-k", "--top-k", "k", default=10, show_default=True, help="How many memories to return.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default="hybrid", show_default=True)
@db_option
@user_option
@json_option
def search(query: str, k: int, mode: str, db: Path | None, user: str, as_json: bool) -> None:
    """Find memories about QUERY (by meaning, keywords, or both)."""
    with open_bank(db, user, create=False) as bank:
        hits: list[SearchHit] = bank.search(query, k=k, mode=mode)  # type: ignore[arg-type]

    def human() -> None:
        if not hits:
            click.echo("no memories found")
        for hit in hits:
            click.echo(f"{hit.rank:>3}. {hit.score:6.3f}  {_line(hit.memory)}")

    _emit([{"rank": h.rank, "score": h.score, **h.memory.to_dict()} for h in hits], as_json, human)


@memory.command(name="list")
@click.option("--tier", type=click.Choice(TIERS), default=None, help="Only this tier.")
@click.option("--deleted", is_flag=True, help="Include deleted memories.")
@click.option("--limit", type=int, default=None, help="At most this many.")
@db_option
@user_option
@json_option
def list_(tier: str | None, deleted: bool, limit: int | None, db: Path | None, user: str, as_json: bool) -> None:
    """List memories, oldest first."""
    with open_bank(db, user, create=False) as bank:
        memories = bank.list(tier=tier, include_deleted=deleted, limit=limit)

    def human() -> None:
        if not memories:
            click.echo(f"no memories for user {user!r}")
        for m in memories:
            click.echo(_line(m))

    _emit([m.to_dict() for m in memories], as_json, human)


@memory.command()
@click.argument("memory_id")
@db_option
@user_option
@json_option
def show(memory_id: str, db: Path | None, user: str, as_json: bool) -> None:
    """Show one memory with all its fields."""
    with open_bank(db, user, create=False) as bank:
        memory_ = bank.get(memory_id)

    def human() -> None:
        for key, value in memory_.to_dict().items():
            click.echo(f"{key:>13}: {value}")

    _emit(memory_.to_dict(), as_json, human)


@memory.command()
@click.argument("memory_id", required=False)
@click.option("--limit", type=int, default=50, show_default=True, help="Newest rows when no id is given.")
@db_option
@user_option
@json_option
def history(memory_id: str | None, limit: int, db: Path | None, user: str, as_json: bool) -> None:
    """Show the changes to MEMORY_ID (or the user's latest changes)."""
    with open_bank(db, user, create=False) as bank:
        entries = bank.history(memory_id, limit=None if memory_id else limit)

    def human() -> None:
        if not entries:
            click.echo("no history")
        for entry in entries:
            click.echo(_history_line(entry))

    _emit([e.to_dict() for e in entries], as_json, human)


@memory.command()
@click.option("--steps", "-n", default=1, show_default=True, help="How many changes to revert.")
@db_option
@user_option
@json_option
def undo(steps: int, db: Path | None, user: str, as_json: bool) -> None:
    """Revert the latest change(s); the revert itself is recorded in history."""
    with open_bank(db, user, create=False) as bank:
        applied = bank.undo(steps)

    def human() -> None:
        for op in applied:
            click.echo(f"undid #{op.seq}: {op.memory_id} -> {(op.after or {}).get('text', '')}"
                       + (" (now deleted)" if (op.after or {}).get("deleted_at") else ""))

    _emit([vars(a) for a in applied], as_json, human)


@memory.command(name="export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--all-users", is_flag=True, help="Export every user's memories, not only --user's.")
@db_option
@user_option
def export_(path: Path, all_users: bool, db: Path | None, user: str) -> None:
    """Write memories and their history to a JSONL file at PATH."""
    with open_bank(db, user, create=False) as bank:
        lines = bank.export_jsonl(path, user=None if all_users else user)
    click.echo(f"wrote {lines} lines to {path}")


@memory.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@user_option
def import_(path: Path, db: Path | None, user: str) -> None:
    """Load a JSONL export into the bank (all or nothing)."""
    with open_bank(db, user) as bank:
        count = bank.import_jsonl(path, progress=True)
    click.echo(f"imported {count} memories from {path}")
