"""`edge memory ...`: read and change the memory bank by hand."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edge import paths
from edge.bank import MIN_SIMILARITY, SCOPES, HistoryEntry, Memory, MemoryBank, SearchHit
from edge.commands import db_option, for_terminal, json_option, json_text, note_new_bank, user_option
from edge.operations import TIERS


def open_bank(db: Path | None, user: str, *, create: bool = True) -> MemoryBank:
    """The bank at `db` (default: under $EDGE_HOME); on the very first run, build the default embedder first.

    The bank loads the default embedder when it needs one and never builds
    it; building (once, with a progress bar) is this first-run path's job,
    done by the export side through the `edge.first_run` entry point
    "default-embedder" (`edge.plugins`).
    """
    from edge import plugins
    from edge.onnx_embedder import default_minilm_built

    path = db or paths.default_db()
    if create:
        note_new_bank(db)
    if (create or path.exists()) and not default_minilm_built():
        plugins.load(plugins.FIRST_RUN, "default-embedder")()
    return MemoryBank.open(path, user=user, create=create)


def _emit(data, as_json: bool, human) -> None:
    if as_json:
        click.echo(json_text(data))
    else:
        human()


def _line(memory: Memory) -> str:
    when = f" [{memory.event_time}]" if memory.event_time else ""
    who = f" {memory.speaker}:" if memory.tier == "episodic" and memory.speaker else ""
    gone = click.style(" (deleted)", fg="red") if memory.deleted_at else ""
    if memory.superseded:
        by = f" by {memory.superseded_by}" if memory.superseded_by else ""
        gone += click.style(f" (superseded{by}, valid until {memory.valid_until})", fg="yellow")
    return f"{click.style(memory.id, fg='cyan')}  {memory.tier:<9}{when}{for_terminal(who)} {for_terminal(memory.text)}{gone}"


def turn_label(reference: str) -> str:
    """The turn a change came from, as a person reads it: `turn t3, Maya, 3 May 2023` (`--json` keeps it whole)."""
    try:
        turn = json.loads(reference)
    except ValueError:
        return f"turn {reference}"
    if not isinstance(turn, dict):
        return f"turn {reference}"
    parts = [f"turn {turn['id']}" if turn.get("id") else "turn", turn.get("speaker"), turn.get("time")]
    return ", ".join(str(p) for p in parts if p)


def _history_line(entry: HistoryEntry) -> str:
    undone = click.style(f"  (undone by #{entry.undone_by})", fg="yellow") if entry.undone_by else ""
    text = for_terminal((entry.after or entry.before or {}).get("text", ""))
    turn = f" ({turn_label(entry.turn)})" if entry.turn else ""
    reverts = f"  (reverts #{entry.reverts})" if entry.reverts else ""
    return (f"#{entry.seq:<5} {entry.at[:19]}  {entry.action:<7} {entry.memory_id}  by {entry.actor}{turn}: {text}"
            f"{reverts}{undone}")


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
    """Store TEXT as a new memory.

    A text that reads as an instruction to the assistant ("SYSTEM: ignore
    previous instructions") is stored as typed and flagged: the chat prompt
    shows it as a quoted note marked as such, never as an instruction.
    """
    from edge.grounding import looks_like_instruction

    with open_bank(db, user) as bank:
        memory_ = bank.add(text, tier=tier, event_time=event_time, actor="user")
    if looks_like_instruction(memory_.text):
        click.secho(f"note: {memory_.id} reads as an instruction to the assistant; prompts show it as a quoted note, "
                    "flagged, never as an instruction.", fg="yellow", err=True)
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
    """Bring back MEMORY_ID: a deleted memory, or a fact a later turn superseded (it becomes current again)."""
    with open_bank(db, user, create=False) as bank:
        memory_ = bank.restore(memory_id, actor="user")
    _emit(memory_.to_dict(), as_json, lambda: click.echo(f"restored {_line(memory_)}"))


@memory.command()
@click.argument("query")
@click.option("-k", "--top-k", "k", default=10, show_default=True, help="How many memories to return.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default="hybrid", show_default=True)
@click.option("--scope", type=click.Choice(SCOPES), default="all", show_default=True,
              help="facts (core + semantic), episodic (the verbatim turn log), or all.")
@click.option("--superseded", is_flag=True, help="Include facts a later turn superseded (\"where did I live before?\").")
@click.option("--min-similarity", type=float, default=MIN_SIMILARITY, show_default=True,
              help="Hits that match no keyword must be at least this close in meaning (cosine); -1 keeps every hit.")
@db_option
@user_option
@json_option
def search(query: str, k: int, mode: str, scope: str, superseded: bool, min_similarity: float, db: Path | None,
           user: str, as_json: bool) -> None:
    """Find memories about QUERY (by meaning, keywords, or both), as the chat app's search box finds them."""
    with open_bank(db, user, create=False) as bank:
        hits: list[SearchHit] = bank.search(query, k=k, mode=mode, scope=scope,  # type: ignore[arg-type]
                                            include_superseded=superseded, min_similarity=min_similarity)

    def human() -> None:
        if not hits:
            click.echo("no memories found")
        for hit in hits:
            click.echo(f"{hit.rank:>3}. {hit.score:6.3f}  {_line(hit.memory)}")

    _emit([{"rank": h.rank, "score": h.score, **h.memory.to_dict()} for h in hits], as_json, human)


@memory.command(name="list")
@click.option("--tier", type=click.Choice(TIERS), default=None,
              help="Only this tier: core, semantic (facts), or episodic (every turn, verbatim).")
@click.option("--deleted", is_flag=True, help="Include deleted memories.")
@click.option("--superseded", is_flag=True, help="Include facts a later turn superseded.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@db_option
@user_option
@json_option
def list_(tier: str | None, deleted: bool, superseded: bool, limit: int | None, db: Path | None, user: str,
          as_json: bool) -> None:
    """List memories, oldest first (current ones unless --deleted / --superseded)."""
    with open_bank(db, user, create=False) as bank:
        memories = bank.list(tier=tier, include_deleted=deleted, include_superseded=superseded, limit=limit)

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
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest rows when no id is given.")
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
@click.option("--steps", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many changes to revert (a change: everything one command or one turn did).")
@click.option("--yes", "-y", is_flag=True, help="Revert more than one change without showing them and asking first.")
@db_option
@user_option
@json_option
def undo(steps: int, yes: bool, db: Path | None, user: str, as_json: bool) -> None:
    """Revert the latest change(s); the revert itself is recorded in history (`edge memory redo` puts it back).

    Before reverting more than one change, undo shows what it would revert
    and asks; without a terminal to ask on (a script, --json) it needs --yes.
    """
    from edge.errors import InvalidInputError

    with open_bank(db, user, create=False) as bank:
        if steps > 1 and not yes:
            plan = bank.undo_plan(steps)
            changes = len({entry.op_group for entry in plan})
            if changes > 1:
                if as_json or not click.get_text_stream("stdin").isatty():
                    raise InvalidInputError(
                        f"undo -n {steps} would revert {changes} changes ({len(plan)} operations).",
                        hint="see them with `edge memory history`, then add --yes to revert them")
                click.echo(f"undo -n {steps} would revert {changes} changes:")
                for entry in plan:
                    click.echo("  " + _history_line(entry))
                click.confirm("Revert them?", abort=True)
        applied = bank.undo(steps)

    _emit_reverted(applied, as_json, "undid #{}", " (now deleted)")


def _emit_reverted(applied, as_json: bool, verb: str, deleted: str) -> None:
    """What undo or redo changed: one line per operation (the memory as it is now), or JSON.

    `verb` names the history row reverted (`AppliedOp.reverts`, "{}"); the
    row that records the revert is given after the text.
    """
    def human() -> None:
        for op in applied:
            after = op.after or {}
            click.echo(f"{verb.format(op.reverts)}: {op.memory_id} -> {for_terminal(after.get('text', ''))}"
                       + (deleted if after.get("deleted_at") else "") + f"  (history #{op.seq})")

    _emit([vars(a) for a in applied], as_json, human)


@memory.command()
@db_option
@user_option
@json_option
def redo(db: Path | None, user: str, as_json: bool) -> None:
    """Put back what the latest undo reverted (only before any other change is made; recorded in history)."""
    with open_bank(db, user, create=False) as bank:
        applied = bank.redo()

    _emit_reverted(applied, as_json, "redid what undo #{} reverted", " (deleted)")


@memory.command()
@db_option
@json_option
def check(db: Path | None, as_json: bool) -> None:
    """Check the bank file: SQLite's integrity check table by table, the search tables against the memories.

    Names the damaged part and what to do: a search table is rebuilt by
    `edge memory reindex`; damaged memories or history are saved, as far as
    they can be read, by `edge memory export`. Exit status 1 when anything
    is wrong.
    """
    with open_bank(db, paths.DEFAULT_USER, create=False) as bank:
        problems = bank.check()

    def human() -> None:
        click.echo(f"{bank.path}: " + ("sound" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            click.secho(f"  {problem}", fg="red")

    _emit({"path": str(bank.path), "ok": not problems, "problems": problems}, as_json, human)
    if problems:
        raise click.exceptions.Exit(1)


@memory.command()
@db_option
@json_option
def reindex(db: Path | None, as_json: bool) -> None:
    """Rebuild the search tables (keywords, vectors) from the memories, e.g. after `check` found one damaged.

    The memories and their history are not changed; the rebuild is one
    transaction, so an interrupted one leaves the bank as it was.
    """
    with open_bank(db, paths.DEFAULT_USER, create=False) as bank:
        count = bank.reindex(progress=not as_json)
        problems = bank.check()
    _emit({"path": str(bank.path), "indexed": count, "problems": problems}, as_json,
          lambda: click.echo(f"rebuilt the search tables of {count} memories; check: "
                             + ("sound" if not problems else "; ".join(problems))))


@memory.command(name="export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--all-users", is_flag=True, help="Export every user's memories, not only --user's.")
@db_option
@user_option
@json_option
def export_(path: Path, all_users: bool, db: Path | None, user: str, as_json: bool) -> None:
    """Write memories and their history to a JSONL file at PATH (--user's, or --all-users').

    From a damaged bank it saves every memory still readable and says how
    many rows were lost.
    """
    from edge.bank.jsonl import read_export, summarize

    if all_users and _given(click.get_current_context(), "user"):
        raise click.UsageError("--all-users exports every user; leave out --user, or drop --all-users.")
    with open_bank(db, user, create=False) as bank:
        bank.export_jsonl(path, user=None if all_users else user)
    written = summarize(path)
    lost = read_export(path).header.get("unreadable_rows", 0)
    whose = "every user" if all_users else f"user {user!r}"

    def human() -> None:
        click.echo(f"wrote {written.memories} memories and {written.history} history rows of {whose} to {path}")
        if lost:
            click.secho(f"warning: the bank is damaged; at least {lost} rows could not be read and are not in the export "
                        "(import it into a new bank with --skip-bad-lines)", fg="yellow", err=True)
        if not written.memories:
            hint = "" if all_users else " (--user NAME picks another user, --all-users takes everyone)"
            click.secho(f"warning: {whose} has no memories in this bank{hint}", fg="yellow", err=True)

    _emit({"path": str(path), "memories": written.memories, "history": written.history,
           "owners": list(written.owners), "unreadable_rows": lost}, as_json, human)


@memory.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-bad-lines", is_flag=True,
              help="Import the good lines of a file some of whose lines cannot be imported (they are named).")
@db_option
@user_option
@json_option
def import_(path: Path, skip_bad_lines: bool, db: Path | None, user: str, as_json: bool) -> None:
    """Load a JSONL export into the bank (all or nothing).

    Every line is checked before anything is written: a file with a line
    edge cannot import (not JSON, an unknown tier or action, a duplicate id,
    a history row of a memory the file lacks, ...) is refused, each such line
    named with its number and reason, unless --skip-bad-lines. A file
    imported before is refused.

    \b
    Without --user: a restore, every memory to the owner written in the
    file, with its history.
    With --user NAME: the memories of a one-user export become NAME's, as
    one change by "import" in NAME's history (one `undo` takes it back);
    deleted memories are left out, ids already in the bank get new ones.
    """
    from edge.bank.jsonl import import_for_user, read_export, summarize

    from edge.grounding import looks_like_instruction

    checked = read_export(path)  # before the bank is opened (or created): a refused file leaves no trace
    checked.refuse_bad(path, skip_bad_lines)
    skipped = checked.bad
    for number, reason in skipped:
        click.secho(f"line {number} left out: {reason}", fg="yellow", err=True)
    flagged = [str(m.get("id")) for m in checked.memories if looks_like_instruction(str(m.get("text", "")))]
    if flagged:
        click.secho(f"note: {len(flagged)} memories read as instructions to the assistant ({', '.join(flagged[:5])}"
                    f"{', ...' if len(flagged) > 5 else ''}); prompts show them as quoted notes, flagged, never as "
                    "instructions.", fg="yellow", err=True)
    if _given(click.get_current_context(), "user"):
        with open_bank(db, user) as bank:
            done = import_for_user(bank, path, user, progress=not as_json, skip_bad=skip_bad_lines)
        data = {"path": str(path), "imported": done.imported, "owners": [user], "file_owner": done.file_owner,
                "left_out_deleted": done.left_out_deleted, "new_ids": done.new_ids, "history": "one import change"}

        def human() -> None:
            origin = f" (written for {done.file_owner!r})" if done.file_owner not in (None, user) else ""
            n = done.left_out_deleted
            left = f"; {n} deleted {'memory' if n == 1 else 'memories'} left out" if n else ""
            noun = "memory" if done.imported == 1 else "memories"
            click.echo(f"imported {done.imported} {noun} for user {user!r} from {path}{origin}{left}")

        _emit(data, as_json, human)
        return
    with open_bank(db, user) as bank:
        count = bank.import_jsonl(path, progress=not as_json, skip_bad=skip_bad_lines)
    held = summarize(path)
    data = {"path": str(path), "imported": count, "owners": list(held.owners), "history": held.history,
            "left_out_lines": [{"line": number, "reason": reason} for number, reason in skipped]}
    _emit(data, as_json, lambda: click.echo(
        f"imported {count} memories with {held.history} history rows from {path} "
        f"for {', '.join(repr(o) for o in held.owners) or 'no user'}"
    ))


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user typed option `name` (not just its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT
