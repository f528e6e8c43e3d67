"""Stored facts checked against the turns they cite: the hallucination rate of `edge eval locomo`.

A stored fact is checked as the Memory Manager checks a write (`edge.manager`):
`edge.grounding.grounding` over the turn(s) it names as its source and, for a
newer version, the text of the fact it replaced; the speaker; and the dates the
turn allows (its session date, and its own date expressions resolved against it).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from edge.errors import EdgeError
from edge.evaluation.systems import BANK_USER
from edge.locomo import Conversation, LocoTurn, Session

EXAMPLES_SHOWN = 5  # ungrounded facts listed per system in the summary
NO_FACTS: dict[str, Any] = {"stored": 0, "grounded": 0, "ungrounded": []}  # facts.json of a bank without facts

# `edge.grounding.grounding(text, sources, *, speaker=None, dates=()) -> Grounding(grounded, missing)`
Grounder = Callable[..., Any]


@dataclass(frozen=True)
class SourceTurn:
    """A turn as a fact's source: who said what, and the dates it makes sayable."""

    speaker: str
    text: str
    dates: tuple[str, ...]


def session_dates(date_time: str) -> tuple[str, ...]:
    """A LoCoMo session stamp ("1:56 pm on 8 May, 2023") as ("8 May 2023", "2023-05-08") (`edge.dates`).

    A stamp in another shape is passed on as it is.
    """
    from edge.dates import human_date, parse_time

    try:
        when = parse_time(date_time)
    except EdgeError:
        return (date_time,) if date_time.strip() else ()
    if when is None:
        return ()
    iso = when.date().isoformat()
    return (human_date(iso), iso)


def turn_dates(session: Session, turn: LocoTurn) -> tuple[str, ...]:
    """The session date, and the turn's date expressions ("yesterday") resolved against it, ISO and human."""
    from edge.dates import human_date, parse_time, resolve_dates

    dates = list(session_dates(session.date_time))
    try:
        at = parse_time(session.date_time)
    except EdgeError:
        at = None
    if at is not None:
        for mention in resolve_dates(turn.full_text, at):
            dates += [mention.value, human_date(mention.value)]
    return tuple(dict.fromkeys(dates))


def metadata_dates(metadata: dict[str, Any], said: Sequence[str] = ()) -> list[str]:
    """The dates a memory's `metadata["dates"]` holds: a list's items, one string, or a mapping's values.

    A mapping is {expression: date}, the Manager resolving the memory's own
    text; with `said`, a date counts only when its expression occurs in one of
    those texts, so that a date the memory's text merely asserts cannot ground
    itself.
    """
    dates = metadata.get("dates") if isinstance(metadata, dict) else None
    if isinstance(dates, dict):
        heard = " ".join(said).casefold()
        values: list[Any] = [v for k, v in dates.items() if not said or str(k).casefold() in heard]
    elif isinstance(dates, (list, tuple)):
        values = list(dates)
    else:
        values = [dates]
    return [str(v) for v in values if isinstance(v, (str, int)) and str(v).strip()]


def check_fact(memory: Any, sources: list[SourceTurn], grounder: Grounder, replaced: str | None = None
               ) -> dict[str, Any]:
    """Whether one fact memory's text is grounded in its source turns (and the fact it replaced, if any).

    The speaker is the first source turn's. A memory none of whose source
    turns is in the conversation is ungrounded.
    """
    row = {"id": memory.id, "tier": memory.tier, "text": memory.text, "source_turns": list(memory.source_turns),
           "deleted": bool(getattr(memory, "deleted_at", None)),
           "superseded": bool(getattr(memory, "superseded", False))}
    if not sources:
        return {**row, "grounded": False, "missing": ["(no source turn in the conversation)"]}
    texts = [s.text for s in sources] + ([replaced] if replaced else [])
    dates = [d for s in sources for d in s.dates] + metadata_dates(memory.metadata, texts)
    result = grounder(memory.text, texts, speaker=sources[0].speaker, dates=tuple(dict.fromkeys(dates)))
    return {**row, "grounded": bool(result.grounded), "missing": list(result.missing)}


def audit_facts(memories: Sequence[Any], conversation: Conversation, grounder: Grounder) -> dict[str, Any]:
    """Grounding of every fact memory of one bank: counts and the ungrounded ones (facts.json).

    `memories` are all of the bank's facts, older versions included: a newer
    version (metadata "supersedes") may also draw on the text it replaced.
    """
    turns = {turn.dia_id: (session, turn) for session, turn in conversation.turns()}
    known: dict[str, SourceTurn] = {}

    def source(dia_id: str) -> SourceTurn:
        if dia_id not in known:
            session, turn = turns[dia_id]
            known[dia_id] = SourceTurn(turn.speaker, turn.full_text, turn_dates(session, turn))
        return known[dia_id]

    texts = {m.id: m.text for m in memories}
    checked = [
        check_fact(m, [source(t) for t in m.source_turns if t in turns], grounder,
                   texts.get(m.metadata.get("supersedes") or ""))
        for m in memories
    ]
    return {
        "stored": len(checked),
        "grounded": sum(c["grounded"] for c in checked),
        "ungrounded": [c for c in checked if not c["grounded"]],
    }


def bank_facts(bank: Any) -> list[Any]:
    """Every fact memory (tiers other than episodic) of the evaluation's user, deleted and superseded too."""
    older = {"include_superseded": True} if "include_superseded" in inspect.signature(bank.list).parameters else {}
    return [m for m in bank.list(user=BANK_USER, include_deleted=True, **older) if m.tier != "episodic"]


def summarise_facts(audits: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One system's stored-fact figures over its conversations; None when none was audited (no bank).

    `hallucination_rate` is the share of stored facts that are not grounded
    (None when no fact was stored); `examples` are the first ungrounded ones.
    """
    if not audits:
        return None
    stored = sum(a["stored"] for a in audits)
    grounded = sum(a["grounded"] for a in audits)
    examples = [{"sample_id": a.get("sample_id"), **u} for a in audits for u in a["ungrounded"]]
    return {
        "stored": stored,
        "grounded": grounded,
        "ungrounded": stored - grounded,
        "hallucination_rate": (stored - grounded) / stored if stored else None,
        "examples": examples[:EXAMPLES_SHOWN],
    }
