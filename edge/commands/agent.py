"""`edge remember`, `edge ask`, `edge run`: the agents without the chat app."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from edge.bundle import DEFAULT_GENERATION
from edge.commands import (
    db_option,
    for_terminal,
    interrupt_signals,
    json_option,
    json_text,
    model_options,
    note_new_bank,
    user_option,
)
from edge.errors import EdgeError


def open_agent(bundle, db: Path | None, user: str):
    """The agent on `bundle`: an `edge.model_source.ModelChoice` (the model options), a folder, or None."""
    from edge.agent import Agent
    from edge.model_source import ModelChoice

    if isinstance(bundle, ModelChoice):
        bundle = bundle.open()
    note_new_bank(db)
    return Agent(bundle=bundle, db=db, user=user)


def describe_op(raw) -> str:
    """A Manager operation as a person reads it: `UPDATE m12 "text"` (not the parsed JSON object)."""
    if not isinstance(raw, dict):
        return str(raw)
    head = " ".join(str(raw[key]) for key in ("op", "id") if raw.get(key))
    text = raw.get("text")
    return f'{head} "{text}"' if text else head or str(raw)


def describe_turn(result) -> list[str]:
    """A Manager turn's operations as printed: one line each, refused ones and errors in yellow."""
    lines = []
    for op in result.applied:
        text = (op.after or {}).get("text") or (op.before or {}).get("text", "")
        lines.append(f"  {op.action:<7} {op.memory_id}  {for_terminal(text)}")
    # The pieces of a long turn may each propose the same refused operation: one line for it, with the count.
    refused = Counter(f"rejected {describe_op(raw)}: {reason}" for raw, reason in result.rejected)
    for line, count in refused.items():
        lines.append(click.style(f"  {line}" + (f" (x{count})" if count > 1 else ""), fg="yellow"))
    if result.error:
        lines.append(click.style(f"  NOOP ({result.error})", fg="yellow"))
    if not lines:
        lines.append("  NOOP")
    return lines


@click.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--speaker", default=None, help="Who said it. [default: the --user]")
@click.option("--time", "when", default=None, help="When it was said (e.g. '1:56 pm on 8 May, 2023').")
@model_options()
@db_option
@user_option
@json_option
def remember(texts, speaker, when, source, db, user, as_json) -> None:
    """Let the Memory Manager turn each of TEXTS (a conversation turn) into memory operations.

    Each turn is its own change: one that is refused or fails is reported and
    the others still run; the exit status is then 1.
    """
    from edge.dates import parse_time
    from edge.script import ScriptLine, play

    if when is not None:
        parse_time(when)  # an unreadable time is said before a bank is made or a model loaded
    lines = [ScriptLine(number, "turn", text, time=when) for number, text in enumerate(texts, start=1)]
    outcomes: list = []
    interrupted = started = False
    with interrupt_signals() as signals:
        try:
            with open_agent(source, db, user) as agent:
                if signals["hit"]:  # swallowed while the models loaded
                    raise KeyboardInterrupt
                started = True
                for outcome in play(agent, lines, speaker=speaker or user):
                    outcomes.append(outcome)
        except KeyboardInterrupt:  # what was done is said; the turn under way is kept (`Agent.remember`)
            interrupted = True
    if as_json:
        click.echo(json_text([remembered_json(o) for o in outcomes]))
    else:
        for outcome in outcomes:
            click.echo("\n".join(describe_line(outcome, "turn")))
    if interrupted:
        said = (f"interrupted after {len(outcomes)} of {len(lines)} turn(s): {INTERRUPTED_KEPT}" if started else
                INTERRUPTED_LOADING)
        click.secho(said, fg="yellow", err=True)
        raise click.exceptions.Exit(130)
    if any(o.status != "done" for o in outcomes):
        raise click.exceptions.Exit(1)


INTERRUPTED_LOADING = "interrupted while the models loaded: no turn was read yet, nothing was saved (run it again)"
INTERRUPTED_KEPT = ("the turns before it are saved; the turn under way is kept in the conversation log, pending for "
                    "the Memory Manager (the next `edge remember` or `edge chat` goes over it)")


def remembered_json(outcome) -> dict:
    """One turn of `edge remember --json`: the turn's result, or what it said and why it was not done."""
    if outcome.result is not None:
        return {"status": outcome.status, "reason": None, **outcome.result.to_dict()}
    line = outcome.line
    turn = {"speaker": line.speaker, "text": line.text, "time": line.time, "turn_id": line.turn_id}
    return {"status": outcome.status, "reason": outcome.reason, "turn": turn}


@click.command()
@click.argument("question")
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=None,
              help=f"Memories to retrieve. [default: config.toml's generation.answer_k, else the bundle's; "
              f"{DEFAULT_GENERATION['answer_k']} for the default bundle]")
@click.option("--show-memories", is_flag=True, help="Also print the memories the answer used.")
@model_options(answer_k=False)
@db_option
@user_option
@json_option
def ask(question, k, show_memories, source, db, user, as_json) -> None:
    """Answer QUESTION from memory (a bank named with --db must exist: asking never creates one)."""
    from edge.bank import clean_text

    clean_text(question, what="question")  # before any model or bank is opened
    if db is not None and not Path(db).exists():
        from edge.errors import BankError

        raise BankError(f"No memory bank at {db}.",
                        hint="Check --db; `edge remember`, `edge run` or `edge chat` creates a bank there.")
    with open_agent(source, db, user) as agent:
        result = agent.ask(question, k=k)
    if as_json:
        click.echo(json_text(result.to_dict()))
        return
    click.echo(for_terminal(result.answer))
    if show_memories:
        for memory in result.memories:
            click.echo(click.style(f"  - {memory.id} {for_terminal(memory.text)}", dim=True))


def line_json(outcome) -> dict:
    """One script line in `edge run --json`: where it was, what it was, what became of it."""
    line = outcome.line
    result = None
    if outcome.result is not None:
        result = outcome.result.to_dict()
    return {
        "line": line.number, "kind": line.kind, "status": outcome.status, "reason": outcome.reason,
        "speaker": line.speaker, "text": line.text, "result": result,
    }


def describe_line(outcome, label: str = "line") -> list[str]:
    """One script line (or, with label "turn", one of `edge remember`'s turns) as it is printed."""
    line = outcome.line
    if outcome.status == "skipped":
        return [click.style(f"{label} {line.number} skipped: {outcome.reason}", dim=True)]
    if outcome.status != "done":
        colour = "yellow" if outcome.status == "refused" else "red"
        return [click.style(f"{label} {line.number} {outcome.status}: {outcome.reason}", fg=colour)]
    if line.kind == "question":
        return [f"? {outcome.result.question}", f"= {outcome.result.answer}"]
    return [f"{outcome.result.turn.speaker}: {outcome.result.turn.text}", *describe_turn(outcome.result)]


def summary_json(outcomes) -> dict:
    return {status: sum(o.status == status for o in outcomes) for status in ("done", "refused", "failed", "skipped")}


@click.command(name="run")
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options()
@db_option
@user_option
@click.option("--resume", is_flag=True,
              help="Skip the turns already in the conversation log (a run stopped part-way, played again).")
@json_option
def run_script(script, source, db, user, resume, as_json) -> None:
    """Feed SCRIPT's turns to the Manager and ask its questions, in order; print ops and answers.

    \b
    Plain-text script:
      Alice: I moved to Porto last week.
      ? Where does Alice live?
    or JSONL lines: {"speaker": "Alice", "text": "...", "time": "..."} / {"ask": "..."}

    Every line is run and reported, whatever happened to the ones before it:
    done, refused (a line that cannot be read, or text that is not accepted,
    with its line number and the reason) or failed (the model or the bank
    failed on it), or skipped (with --resume, a turn an earlier run of the
    script already logged: a turn without an id gets one from its speaker
    and text, the same on every run). With --json the output is always one
    JSON document:
    {"script", "lines": [{"line", "kind", "status", "reason", ...}],
    "summary", "error"}.

    \b
    Exit status: 0 when every line was done; 1 when some line was refused
    or failed (or the script or the agent could not be opened).
    """
    from edge.script import play, read_script

    outcomes = []
    started = False
    try:
        lines = read_script(script)
        with interrupt_signals() as signals, open_agent(source, db, user) as agent:
            if signals["hit"]:  # swallowed while the models loaded
                raise KeyboardInterrupt
            started = True
            for outcome in play(agent, lines, speaker=user, resume=resume):
                outcomes.append(outcome)
                if not as_json:
                    click.echo("\n".join(describe_line(outcome)))
    except KeyboardInterrupt:  # say what was done: the turns before are saved, the one under way is kept
        message = (f"interrupted after {len(outcomes)} line(s): {INTERRUPTED_KEPT}; `--resume` goes on from there"
                   if started else INTERRUPTED_LOADING)
        if as_json:
            click.echo(json_text({"script": str(script), "lines": [line_json(o) for o in outcomes],
                                  "summary": summary_json(outcomes),
                                  "error": {"message": message, "hint": None}}))
        else:
            click.secho(message, fg="yellow", err=True)
        raise click.exceptions.Exit(130) from None
    except EdgeError as exc:
        if not as_json:
            raise
        document = {"script": str(script), "lines": [line_json(o) for o in outcomes],
                    "summary": summary_json(outcomes), "error": {"message": exc.message, "hint": exc.hint}}
        click.echo(json_text(document))
        raise click.exceptions.Exit(1) from exc
    summary = summary_json(outcomes)
    if as_json:
        document = {"script": str(script), "lines": [line_json(o) for o in outcomes], "summary": summary,
                    "error": None}
        click.echo(json_text(document))
    else:
        click.echo(f"{len(outcomes)} lines: " + ", ".join(f"{n} {status}" for status, n in summary.items()))
    if summary["refused"] or summary["failed"]:
        raise click.exceptions.Exit(1)
