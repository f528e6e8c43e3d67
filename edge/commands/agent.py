"""`edge remember`, `edge ask`, `edge run`: the agents without the chat app."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edge.commands import db_option, json_option, user_option
from edge.errors import InvalidInputError


def bundle_option(fn):
    return click.option(
        "--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Bundle folder. [default: the embedded default bundle, built on first use]",
    )(fn)


def open_agent(bundle: Path | None, db: Path | None, user: str):
    from edge.agent import Agent

    return Agent(bundle=bundle, db=db, user=user)


def describe_turn(result) -> list[str]:
    lines = []
    for op in result.applied:
        text = (op.after or {}).get("text") or (op.before or {}).get("text", "")
        lines.append(f"  {op.action:<7} {op.memory_id}  {text}")
    for raw, reason in result.rejected:
        lines.append(click.style(f"  rejected {raw}: {reason}", fg="yellow"))
    if result.error:
        lines.append(click.style(f"  NOOP ({result.error})", fg="yellow"))
    if not lines:
        lines.append("  NOOP")
    return lines


def turn_json(result) -> dict:
    return {
        "turn": vars(result.turn), "applied": [vars(op) for op in result.applied],
        "rejected": [{"op": raw, "reason": reason} for raw, reason in result.rejected],
        "error": result.error, "seconds": result.seconds, "prompt_tokens": result.prompt_tokens,
    }


def answer_json(result) -> dict:
    return {
        "question": result.question, "answer": result.answer, "memory_ids": result.memory_ids,
        "memories": [m.text for m in result.memories], "timings": result.timings,
        "prompt_tokens": result.prompt_tokens, "error": result.error,
    }


@click.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--speaker", default=None, help="Who said it. [default: the --user]")
@click.option("--time", "when", default=None, help="When it was said (e.g. '1:56 pm on 8 May, 2023').")
@bundle_option
@db_option
@user_option
@json_option
def remember(texts, speaker, when, bundle, db, user, as_json) -> None:
    """Let the Memory Manager turn each of TEXTS (a conversation turn) into memory operations."""
    from edge.prompts import Turn

    with open_agent(bundle, db, user) as agent:
        result = agent.remember([Turn(speaker or user, text, when) for text in texts])
    if as_json:
        click.echo(json.dumps([turn_json(t) for t in result.turns], indent=2, ensure_ascii=False))
        return
    for turn in result.turns:
        click.echo(f"{turn.turn.speaker}: {turn.turn.text}")
        click.echo("\n".join(describe_turn(turn)))


@click.command()
@click.argument("question")
@click.option("-k", "--top-k", "k", type=int, default=None, help="Memories to retrieve. [default: 60]")
@click.option("--show-memories", is_flag=True, help="Also print the memories the answer used.")
@bundle_option
@db_option
@user_option
@json_option
def ask(question, k, show_memories, bundle, db, user, as_json) -> None:
    """Answer QUESTION from memory."""
    with open_agent(bundle, db, user) as agent:
        result = agent.ask(question, k=k)
    if as_json:
        click.echo(json.dumps(answer_json(result), indent=2, ensure_ascii=False))
        return
    click.echo(result.answer)
    if show_memories:
        for memory in result.memories:
            click.echo(click.style(f"  - {memory.id} {memory.text}", dim=True))


def read_script(path: Path) -> list[dict]:
    """A script is JSONL ({"speaker", "text"[, "time"]} or {"ask": ...}) or plain text:
    `Speaker: text` lines are turns, `? question` lines are questions, `#` starts a comment."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc}).") from exc
            if not isinstance(item, dict) or not ({"ask"} & item.keys() or {"text"} & item.keys()):
                raise InvalidInputError(f"{path}:{number}: expected an object with 'text' or 'ask'.")
            items.append(item)
        elif line.startswith("?"):
            items.append({"ask": line[1:].strip()})
        elif ":" in line:
            speaker, text = line.split(":", 1)
            items.append({"speaker": speaker.strip(), "text": text.strip()})
        else:
            raise InvalidInputError(f"{path}:{number}: expected 'Speaker: text' or '? question'.")
    return items


@click.command(name="run")
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@bundle_option
@db_option
@user_option
@json_option
def run_script(script, bundle, db, user, as_json) -> None:
    """Feed SCRIPT's turns to the Manager and ask its questions, in order; print ops and answers.

    \b
    Plain-text script:
      Alice: I moved to Porto last week.
      ? Where does Alice live?
    or JSONL lines: {"speaker": "Alice", "text": "...", "time": "..."} / {"ask": "..."}
    """
    from edge.prompts import Turn

    items = read_script(script)
    records = []
    with open_agent(bundle, db, user) as agent:
        for item in items:
            if "ask" in item:
                result = agent.ask(str(item["ask"]))
                records.append({"kind": "answer", **answer_json(result)})
                if not as_json:
                    click.echo(f"? {result.question}\n= {result.answer}")
            else:
                turn = Turn(str(item.get("speaker") or user), str(item["text"]), item.get("time"), item.get("id"))
                result = agent.remember([turn]).turns[0]
                records.append({"kind": "turn", **turn_json(result)})
                if not as_json:
                    click.echo(f"{turn.speaker}: {turn.text}")
                    click.echo("\n".join(describe_turn(result)))
    if as_json:
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
