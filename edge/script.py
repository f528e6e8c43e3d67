"""Conversation scripts: a file of turns and questions that `edge run` plays in order.

A script is plain text or JSONL, one item per line (the two can be mixed):

    Alice: I moved to Porto last week.            a turn: "Speaker: text"
    ? Where does Alice live?                      a question
    {"speaker": "Alice", "text": "...", "time": "8 May 2023", "id": "D1:3"}
    {"ask": "Where does Alice live?"}
    # a comment; blank lines are skipped too

Reading never stops at a bad line: a line that cannot be understood comes
back as an `invalid` ScriptLine with its number and the reason, so a run can
report it and go on with the rest. Only a file that cannot be read at all
raises.

`play` runs the lines on an `edge.Agent` and reports each one: done,
refused (the line or its text was not accepted) or failed (the model, the
bank or edge itself failed on it), and goes on with the next.

A turn without an id gets one from its speaker and text (`script_turn_id`),
the same on every read of the script, so a run stopped part-way (Ctrl-C, a
crash, `kill -9`) can be played again with `resume=True` (`edge run
--resume`): the turns already in the conversation log are skipped.

Lines are split on "\\n" only (a "\\r" before it is dropped). `str.splitlines`
would also split on U+2028, U+0085 and other characters that JSON writers
leave unescaped inside strings, cutting a valid JSONL line in two.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edge.bank import MAX_TURN_CHARS
from edge.errors import BackendError, EdgeError, InvalidInputError

# A line longer than this cannot hold a turn the log takes (the turn's own limit, plus room for JSON and a name).
MAX_LINE_CHARS = MAX_TURN_CHARS + 10_000

log = logging.getLogger(__name__)

LineKind = Literal["turn", "question", "invalid"]
Status = Literal["done", "refused", "failed", "skipped"]
STATUSES: tuple[str, ...] = ("done", "refused", "failed")
BOM = "\ufeff"


@dataclass(frozen=True)
class ScriptLine:
    """One item of a script, with the 1-based number of the line it came from."""

    number: int
    kind: LineKind
    text: str = ""
    speaker: str | None = None
    time: str | None = None
    turn_id: str | None = None
    error: str | None = None  # why an invalid line cannot be run


def read_script(path: Path | str) -> list[ScriptLine]:
    """Every turn, question and invalid line of the script at `path`, in file order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"Cannot read the script {path}: {exc.strerror or exc}.",
                                hint="Check the path and that the file is readable.") from exc
    lines = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = parse_line(raw, number)
        if line is not None and line.kind == "turn" and not line.turn_id:
            key = f"{line.speaker or ''}\x1f{line.text}"
            seen[key] = seen.get(key, 0) + 1
            line = replace(line, turn_id=script_turn_id(line.speaker, line.text, seen[key]))
        if line is not None:
            lines.append(line)
    return lines


def script_turn_id(speaker: str | None, text: str, occurrence: int = 1) -> str:
    """The id of a script turn that names none: from its speaker and text (and which repeat of them it is), so
    the same turn has the same id however the lines around it change."""
    digest = hashlib.sha1(f"{speaker or ''}\x1f{text}".encode()).hexdigest()[:10]
    return f"s{digest}" + (f"-{occurrence}" if occurrence > 1 else "")


def parse_line(raw: bytes, number: int) -> ScriptLine | None:
    """One line of a script as bytes; None for blank lines and comments."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _invalid(number, f"not UTF-8 text (byte {exc.start + 1} is {raw[exc.start]:#04x})")
    if number == 1:
        text = text.removeprefix(BOM)  # editors that save "UTF-8 with BOM"
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    if len(text) > MAX_LINE_CHARS:  # said before any model call, and before JSON reads it
        return _invalid(number, f"the line is {len(text)} characters; a turn holds at most {MAX_TURN_CHARS} "
                        "(split it into several turns)")
    if text.startswith("{"):
        return _from_json(text, number)
    if text.startswith("?"):
        question = text[1:].strip()
        return ScriptLine(number, "question", question) if question else _invalid(number, "a '?' with no question")
    speaker, colon, said = text.partition(":")
    if not colon:
        return _invalid(number, "expected 'Speaker: text', '? question' or a JSON object")
    if not speaker.strip() or not said.strip():
        return _invalid(number, "a turn needs a speaker before ':' and text after it")
    return ScriptLine(number, "turn", said.strip(), speaker=speaker.strip())


def _from_json(text: str, number: int) -> ScriptLine:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        return _invalid(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return _invalid(number, "JSON nested too deeply (a script line is one flat object)")
    if not isinstance(item, dict):
        return _invalid(number, "expected a JSON object")
    if "ask" in item:
        question = item["ask"]
        if not isinstance(question, str) or not question.strip():
            return _invalid(number, "'ask' must be a non-empty string")
        return ScriptLine(number, "question", question.strip())
    said = item.get("text")
    if not isinstance(said, str) or not said.strip():
        return _invalid(number, "expected an object with a non-empty string 'text' (a turn) or 'ask' (a question)")
    if len(said.strip()) > MAX_TURN_CHARS:
        return _invalid(number, f"the turn is {len(said.strip())} characters; at most {MAX_TURN_CHARS} are allowed "
                        "(split it into several turns)")
    fields = {name: _optional_str(item, name) for name in ("speaker", "time", "id", "turn_id")}
    wrong = [name for name, value in fields.items() if value is _WRONG]
    if wrong:
        return _invalid(number, f"{', '.join(repr(w) for w in wrong)} must be a string")
    return ScriptLine(
        number, "turn", said.strip(), speaker=fields["speaker"] or None, time=fields["time"] or None,
        turn_id=fields["turn_id"] or fields["id"] or None,
    )


_WRONG: Any = object()


def _optional_str(item: dict[str, Any], name: str) -> Any:
    """item[name] as a str (numbers are accepted as ids), None when absent, `_WRONG` otherwise."""
    value = item.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _WRONG


def _invalid(number: int, reason: str) -> ScriptLine:
    return ScriptLine(number, "invalid", error=reason)


@dataclass(frozen=True)
class LineOutcome:
    """What became of one script line: its status, why when not done, and the agent's result when done."""

    line: ScriptLine
    status: Status
    reason: str | None = None
    result: Any = None  # a TurnResult (turn) or an AnswerResult (question)


def play(agent: Any, lines: Iterable[ScriptLine], *, speaker: str | None = None,
         resume: bool = False) -> Iterator[LineOutcome]:
    """Run each line on `agent` (an `edge.Agent`) in order, whatever happened to the lines before it.

    `speaker` names the turns that do not name one (default: the agent's
    own name for its user). `resume`: a turn whose id is already in the
    user's conversation log (an earlier run of the script got that far) is
    skipped, not logged twice.
    """
    logged: set[str] = set()
    if resume:
        logged = {turn for memory in agent.bank.list(tier=("episodic",), include_deleted=True)
                  for turn in memory.source_turns}
    for line in lines:
        if line.kind == "turn" and line.turn_id in logged:
            yield LineOutcome(line, "skipped", f"turn {line.turn_id} is already in the conversation log (--resume)")
            continue
        yield play_line(agent, line, speaker=speaker)


def play_line(agent: Any, line: ScriptLine, *, speaker: str | None = None) -> LineOutcome:
    """One line on `agent`; never raises for the line's own sake (only KeyboardInterrupt and the like)."""
    from edge.prompts import Turn

    if line.kind == "invalid":
        return LineOutcome(line, "refused", line.error)
    try:
        if line.kind == "question":
            result = agent.ask(line.text)
        else:
            turn = Turn(line.speaker or speaker or agent.speaker, line.text, line.time, line.turn_id)
            result = agent.remember([turn], wait=True).turns[0]
    except InvalidInputError as exc:  # what to do about it, too: the line is refused alone, with no error printed
        return LineOutcome(line, "refused", f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message)
    except BackendError as exc:
        if line.kind == "turn":  # `Agent.remember` kept it: in the conversation log, pending for the Manager
            from edge.agent import TURN_KEPT

            return LineOutcome(line, "failed", f"{exc.message.rstrip('.')}. {TURN_KEPT}")
        return LineOutcome(line, "failed", exc.message)
    except EdgeError as exc:
        return LineOutcome(line, "failed", exc.message)
    except Exception as exc:  # noqa: BLE001 - one line's failure must not cost the rest of the script
        log.exception("script line %d failed", line.number)
        return LineOutcome(line, "failed", f"{type(exc).__name__}: {exc}")
    return LineOutcome(line, "done", result=result)
