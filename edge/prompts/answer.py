"""The Answer Agent's prompt: memories focused on the question, the spans an extractive answer may be, and
how its reply is read."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import AbstractSet, Any, Sequence

from edge.prompts.common import (
    ANSWER_WINDOW_WORDS,
    MAX_ANSWER_SPAN_WORDS,
    ShownMemory,
    first_json_object,
    flagged,
    memory_line,
    show_date,
)


# --------------------------------------------------------------------------- Answer Agent

ANSWER_SYSTEM = """You answer a question from memories of a conversation.
First list the ids of the memories that answer it, then give a short answer
(a few words or a date) copied from them. If no memory answers it, answer "unknown".
Answer only with JSON like {"relevant": ["3", "7"], "answer": "..."}."""

# Extractive answers name no ids: the answer is a span of the memories, and the memories holding it are the ones
# it used (`supporting`). Each id the model listed cost a decoding step (about 20 ms each on 2 cores, with the
# JSON around it) and the untrained model listed none on most questions.
ANSWER_SYSTEM_EXTRACTIVE = """You answer a question from memories of a conversation.
Give a short answer (a few words or a date) copied from the memories.
If no memory answers it, answer "unknown".
Answer only with JSON like {"answer": "..."}."""

UNKNOWN = "unknown"


def answer_messages(question: str, memories: Sequence[ShownMemory], *, core: str = "",
                    text_mode: str = "free") -> list[dict[str, str]]:
    """The Answer Agent's messages: retrieved memories (with dates, each focused on the question) and the question.

    `text_mode` "extractive" asks for the answer alone (`answer_schema` with spans); "free" for the
    relevant ids, then the answer.
    """
    lines = "\n".join(answer_line(m, question, text_mode=text_mode) for m in memories) or "(no memories)"
    core = "\n".join(flagged(line) for line in core.splitlines())
    core_block = f"About the user:\n{core}\n\n" if core else ""
    user = f"{core_block}Memories:\n{lines}\n\nQuestion: {question}"
    system = ANSWER_SYSTEM_EXTRACTIVE if text_mode == "extractive" else ANSWER_SYSTEM
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_SPAN_WORD = re.compile(r"[^\s\"\\]+")
_EDGE_PUNCTUATION = ".,;:!?()[]{}'\u2018\u2019\u201c\u201d*_\u2026"
ELLIPSIS = "\u2026"


def focus(text: str, question: str, *, max_words: int = ANSWER_WINDOW_WORDS) -> str:
    """The `max_words`-word window of `text` that holds the most of the question's content words.

    Query-focused compression, as in extractive readers: a turn of the
    episodic log is shown to the Answer Agent as the part that matches
    the question (Porter-stemmed content words, `edge.grounding`), with
    "…" where words were left out; the bank keeps the whole turn. Ties go
    to the window best centred on its matches, then to the earliest; a
    text with no match keeps its start. Words
    are whitespace-separated and kept as written, so every span of the
    window is a span of the memory.
    """
    words = text.split()
    if len(words) <= max_words:
        return text
    from edge.grounding import content_words

    wanted = set(content_words(question))
    hits = [i for i, word in enumerate(words) if wanted.intersection(content_words(word))]
    best, best_key = 0, (0, 0.0)
    for start in range(len(words) - max_words + 1):
        inside = [i for i in hits if start <= i < start + max_words]
        if not inside:
            continue
        # Most matches first; then the window centred on them, so the words around a match are shown too.
        key = (len(inside), -abs(start + max_words / 2 - sum(inside) / len(inside)))
        if key > best_key:
            best, best_key = start, key
    end = best + max_words
    return (ELLIPSIS if best else "") + " ".join(words[best:end]) + (ELLIPSIS if end < len(words) else "")


def focus_memory(memory: ShownMemory, question: str, *, max_words: int = ANSWER_WINDOW_WORDS) -> ShownMemory:
    """`memory` as the Answer Agent reads it for `question`: its `focus` window, and dates if time is asked for.

    A question that asks for a time ("when", "what year", ...) sees the
    memory's date and the relative dates resolved inside the window; any
    other question sees no dates: a small model copies the date at the
    head of a line whatever was asked, and each date costs five tokens.

    The speaker's name, shown before a turn's text, counts among the
    window's `max_words`: a turn of the log reads as long as the same turn
    stored as "Speaker: text", so the log and plain retrieval over raw
    turns fit the same number of turns in a budget.

    Idempotent (a focused memory is its own focus), so every answer
    prompt, span list and support check built from it agrees. No
    question (an empty one) leaves the memory whole.
    """
    if not question.strip():
        return memory
    text = focus(memory.text, question, max_words=max(4, max_words - len((memory.speaker or "").split())))
    if not _ASKS_FOR_TIME.search(question):  # dates are shown (and offered as answers) only when asked for
        return replace(memory, text=text, event_time=None, dates=())
    if text == memory.text:
        return memory
    lowered = text.lower()
    dates = tuple((phrase, value) for phrase, value in memory.dates if phrase.lower() in lowered)
    return replace(memory, text=text, dates=dates)


def _words(text: str) -> list[str]:
    words = [w.strip(_EDGE_PUNCTUATION) for w in _SPAN_WORD.findall(text)]
    return [w for w in words if w]


_ASKS_FOR_TIME = re.compile(
    r"\b(when|what (year|month|day|date|time|week)|which (year|month|day|date|week)|how long ago|since when)\b", re.I)
_ASKS_FOR_PERSON = re.compile(r"\b(who|whom|whose)\b", re.I)
# A question about an earlier state ("What car did Ingrid drive before the Jeep?") may be answered with a retired
# value: `answer_spans` withholds none for it.
_ASKS_FOR_PAST = re.compile(
    r"\b(before|previous(ly)?|used to|former(ly)?|originally|earlier|prior|first|old|past|ago|no longer|anymore|"
    r"until|stopp?ed|quit|gave up|sold|changed?|switch(ed)?|replaced?)\b", re.I)


@dataclass(frozen=True)
class Retirement:
    """A value the Memory Manager retired, as `answer_spans` withholds it (`edge.answer.retirements` builds them).

    `words`: the stemmed content words (`edge.grounding.content_words`) of
    a superseded or retracted fact, less the question's and its speaker's
    name (only those the turn that ended it names, when it names any);
    `newer`: those its current version adds (empty after a
    retraction). A span holding a word of `words` and none of
    `newer` says only the retired value ("Subaru", "drive a Subaru" once "I
    traded my Subaru for a Jeep" replaced "I drive a Subaru"); one holding
    a newer word ("Jeep", "Subaru for a Jeep") says the current state.
    """

    words: frozenset[str]
    newer: frozenset[str] = frozenset()
    retracted: bool = False  # the question's best fact, taken back with no newer version: "unknown" may well be
    #                          the answer

    def withholds(self, said: set[str] | frozenset[str]) -> bool:
        """Whether a span of these stemmed content words says only the retired value."""
        return bool(said & self.words) and not said & self.newer


def answer_spans(
    memories: Sequence[ShownMemory], question: str = "", *, max_words: int = MAX_ANSWER_SPAN_WORDS,
    retired: Sequence[Retirement] = (),
) -> list[str]:
    """What an extractive answer may be: a span of a shown memory, a date shown with one, or "unknown".

    Spans are runs of up to `max_words` words of a memory's text that start
    and end on a content word (`edge.grounding.content_words`). A question
    that asks for a time ("when", "what year", ...) may also be answered
    with a shown date (the turn's date, its resolved relative dates), one
    that asks for a person ("who") with a speaker's name; offered to every
    question, a small model copies the date at the head of each memory line
    whatever was asked. A span whose content words are all the question's
    ("Melanie" for "What did Melanie paint?") is no answer and is left out:
    the default model copied the asked-about name in a third of its
    single-hop answers. Deterministic and in first-seen order, since it
    becomes a JSON-schema `enum` the decoder is held to.

    `retired` (the Manager's record of values a later turn changed or
    retracted, `edge.answer.retirements`) withholds the spans that say only
    a retired value (`Retirement.withholds`): the turn stays shown, its old
    value is no longer a reply. A question that asks about an earlier state
    ("before", "used to", "first", "sold", ...) is offered every span.
    Dates and speakers' names are never withheld.
    """
    from edge.grounding import content_words

    spans: dict[str, None] = {UNKNOWN: None}
    memories = [focus_memory(m, question) for m in memories]
    wants_time, wants_person = bool(_ASKS_FOR_TIME.search(question)), bool(_ASKS_FOR_PERSON.search(question))
    asked = set(content_words(question))
    if retired and _ASKS_FOR_PAST.search(question):
        retired = ()
    for memory in memories:
        for value in (memory.event_time, *(v for _, v in memory.dates)) if wants_time else ():
            if value:
                spans[show_date(value)] = None
        if memory.speaker and wants_person and not set(content_words(memory.speaker)) <= asked:
            spans[memory.speaker] = None
        words = _words(memory.text)
        stems = [set(content_words(w)) for w in words]
        for start in range(len(words)):
            if not stems[start]:
                continue
            said: set[str] = set()
            for end in range(start, min(start + max_words, len(words))):
                said |= stems[end]
                # an answer says something the question does not, and not only a value the Manager retired
                if stems[end] and not said <= asked and not any(r.withholds(said) for r in retired):
                    spans[" ".join(words[start : end + 1])] = None
        listed = clause_list(memory, asked)
        if listed:
            spans[listed] = None
    return list(spans)


def clause_list(memory: ShownMemory, asked: AbstractSet[str] = frozenset()) -> str | None:
    """A consolidated fact's clauses as one answer: "Maya took up pottery; started swimming" read for "What
    activities has Maya taken up?" offers "took up pottery, started swimming" (None for a turn of the log or a
    fact that cites one turn: "Mel is lucky to have her family; they bring joy" is one clause of one turn).

    The answer to a list question ("What activities does Melanie partake in?", LoCoMo's multi-hop) is the
    clauses of one consolidated fact (`edge.operations.consolidated_text`), longer than any span
    (`MAX_ANSWER_SPAN_WORDS`); LoCoMo's multi-hop F1 scores it item by item, split on commas. Words at its head
    that only name what the question asks (the person) are left out; every word is one the fact says.
    """
    from edge.grounding import content_words

    if memory.tier == "episodic" or memory.turns < 2 or "; " not in memory.text:
        return None
    clauses = [" ".join(_words(part)) for part in memory.text.split("; ")]
    clauses = [c for c in clauses if c]
    if len(clauses) < 2:
        return None
    head = clauses[0].split()
    while len(head) > 1 and set(content_words(head[0])) <= asked:
        head = head[1:]
    clauses[0] = " ".join(head)
    return ", ".join(clauses)


def answer_schema(
    shown_ids: Sequence[str], *, max_relevant: int = 8, spans: Sequence[str] | None = None
) -> dict[str, Any]:
    """JSON schema of the Answer Agent's reply: relevant ids among those shown, then the answer.

    With `spans` (extractive answers, see `answer_spans`) the reply is the
    answer alone and can only be one of them: a grounded answer by
    construction, whose memories are those that hold it (`supporting`).
    """
    if spans is not None:
        return {"type": "object", "properties": {"answer": {"enum": list(spans)}}, "required": ["answer"],
                "additionalProperties": False}
    relevant: dict[str, Any] = {"type": "array", "maxItems": max_relevant}
    if shown_ids:
        relevant["items"] = {"enum": [str(i) for i in shown_ids]}
    else:
        relevant["maxItems"] = 0
    return {
        "type": "object",
        "properties": {"relevant": relevant, "answer": {"type": "string", "minLength": 1}},
        "required": ["relevant", "answer"],
        "additionalProperties": False,
    }


def answer_supported(answer: str, memories: Sequence[ShownMemory]) -> bool:
    """Whether an answer is "unknown" or its words occur, in order, in one shown memory or its dates."""
    wanted = [w.lower() for w in _words(answer)]
    return not wanted or wanted == [UNKNOWN] or bool(supporting(answer, memories))


def supporting(answer: str, memories: Sequence[ShownMemory]) -> list[str]:
    """The ids of the shown memories whose text, speaker or dates hold the answer's words in order ("unknown": none)."""
    wanted = [w.lower() for w in _words(answer)]
    if not wanted or wanted == [UNKNOWN]:
        return []
    found = []
    n = len(wanted)
    for memory in memories:
        extra = [memory.speaker or "", *(show_date(v) for v in (memory.event_time, *(v for _, v in memory.dates)) if v)]
        for source in (memory.text, *extra):
            words = [w.lower() for w in _words(source)]
            if any(words[i : i + n] == wanted for i in range(len(words) - n + 1)):
                found.append(memory.id)
                break
    return found


@dataclass
class AnswerParse:
    answer: str
    relevant: list[str]
    error: str | None = None


def parse_answer_output(text: str, shown_ids: Sequence[str]) -> AnswerParse:
    """Parse an Answer Agent reply; an unparsable reply keeps its raw text as the answer."""
    try:
        data = first_json_object(text)
        answer = data["answer"]
        relevant = data.get("relevant", [])
        if not isinstance(answer, (str, int, float)) or not isinstance(relevant, list):
            raise ValueError("wrong field types")
    except (ValueError, KeyError, TypeError) as exc:
        return AnswerParse(answer=text.strip() or "unknown", relevant=[], error=f"unparsable answer: {exc}")
    shown = {str(i) for i in shown_ids}
    kept = [str(r) for r in relevant if str(r) in shown]
    return AnswerParse(answer=str(answer).strip() or "unknown", relevant=list(dict.fromkeys(kept)))



def answer_line(memory: ShownMemory, question: str, *, text_mode: str = "free") -> str:
    """A memory as the Answer Agent reads it: focused on the question; with its id unless answers are extractive.

    The token budget of the Answer Agent's memories (`ANSWER_CONTEXT_TOKENS`)
    is counted on these lines. An id costs about 3 tokens a line, a tenth of
    the budget over 13 lines, and an extractive reply names none.
    """
    return memory_line(focus_memory(memory, question), with_id=text_mode != "extractive")
