"""LoCoMo conversations in the published `locomo10.json` layout.

LoCoMo ("Evaluating Very Long-Term Conversational Memory of LLM Agents",
Maharana et al., ACL 2024; snap-research/locomo, CC BY-NC 4.0) is a list
of samples, each one long two-person conversation split into dated
sessions, with question/answer pairs whose `evidence` names the turns
(`dia_id`, "D3:5" = session 3, turn 5) that hold the answer.

    from edge.locomo import load_locomo
    for conv in load_locomo("locomo10.json"):
        for session in conv.sessions:          # in time order
            for turn in session.turns: ...
        for qa in conv.questions():            # categories 1-4
            ...

Categories follow LoCoMo's own evaluation code: 1 multi-hop, 2 temporal,
3 open-domain, 4 single-hop, 5 adversarial. Other papers number them
differently, so reports should state this mapping (`CATEGORY_NAMES`).

Adversarial (category 5) questions ask about something the conversation
never says; they carry `adversarial_answer` (the tempting wrong answer)
instead of `answer`. Their `answer` here is LoCoMo's expected reply,
`ADVERSARIAL_ANSWER`, unless the file gives one.

This module is plain Python (no model, no torch): the runtime evaluation
and training both read conversations through it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edge.errors import EdgeError

CATEGORY_NAMES: dict[int, str] = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}
ADVERSARIAL = 5
ADVERSARIAL_ANSWER = "Not mentioned in the conversation"

_SESSION_KEY = re.compile(r"^session_(\d+)$")
_DIA_ID = re.compile(r"D\d+:\d+")


class LocomoFormatError(EdgeError):
    """A file that is not in LoCoMo's `locomo10.json` layout."""


@dataclass(frozen=True)
class LocoTurn:
    speaker: str
    dia_id: str
    text: str
    blip_caption: str | None = None

    @property
    def full_text(self) -> str:
        """The turn's text, with the caption of a shared image when there is one."""
        if self.blip_caption:
            return f"{self.text} [shares an image: {self.blip_caption}]"
        return self.text


@dataclass(frozen=True)
class Session:
    index: int
    date_time: str
    turns: list[LocoTurn]


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    evidence: list[str]
    category: int
    adversarial_answer: str | None = None
    index: int = 0  # position in the sample's `qa` list: a stable id for results

    @property
    def category_name(self) -> str:
        return CATEGORY_NAMES.get(self.category, f"category {self.category}")

    @property
    def is_adversarial(self) -> bool:
        return self.category == ADVERSARIAL


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[Session]
    qa: list[QA] = field(default_factory=list)

    def turns(self) -> Iterator[tuple[Session, LocoTurn]]:
        """Every turn with its session, in time order."""
        for session in self.sessions:
            for turn in session.turns:
                yield session, turn

    @property
    def turn_count(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def first_sessions(self, n: int) -> "Conversation":
        """The conversation cut after its first `n` sessions, keeping only the QA answerable from them.

        A question is kept when it names evidence and every evidence turn lies
        in the kept sessions. QA keep their `index` in the full sample.
        """
        sessions = self.sessions[:n]
        kept = {t.dia_id for s in sessions for t in s.turns}
        qa = [q for q in self.qa if q.evidence and all(e in kept for e in q.evidence)]
        return Conversation(self.sample_id, self.speaker_a, self.speaker_b, sessions, qa)

    def questions(self, *, include_adversarial: bool = False) -> list[QA]:
        """The QA items to ask; adversarial ones (category 5) only on request."""
        return [q for q in self.qa if include_adversarial or not q.is_adversarial]


# --------------------------------------------------------------------------- loading


def load_locomo(path: Path | str) -> list[Conversation]:
    """Read a LoCoMo file (a list of samples, or one sample object)."""
    path = Path(path)
    if not path.is_file():
        raise LocomoFormatError(
            f"No LoCoMo file at {path}.",
            hint="Pass the path of locomo10.json (or one conversation in its layout, e.g. conv-26.json).",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LocomoFormatError(f"{path} is not valid JSON ({exc}).", hint="Check the file is locomo10.json.") from exc
    return parse_locomo(data, source=str(path))


def parse_locomo(data: Any, *, source: str = "the data") -> list[Conversation]:
    """Build conversations from already-parsed JSON in the locomo10.json layout."""
    samples = [data] if isinstance(data, dict) else data
    if not isinstance(samples, list) or not samples:
        raise LocomoFormatError(
            f"{source} is not in the LoCoMo layout: expected a JSON list of samples, got {type(data).__name__}.",
            hint="Use locomo10.json from snap-research/locomo, or a list of samples in its layout.",
        )
    conversations = []
    seen: set[str] = set()
    for i, sample in enumerate(samples):
        conv = _parse_sample(sample, f"{source}, sample {i}")
        if conv.sample_id in seen:
            raise LocomoFormatError(f"{source} holds sample_id {conv.sample_id!r} twice.")
        seen.add(conv.sample_id)
        conversations.append(conv)
    return conversations


def _fail(where: str, problem: str) -> LocomoFormatError:
    return LocomoFormatError(
        f"{where} is not in the LoCoMo layout: {problem}.",
        hint="Each sample needs sample_id, conversation (speaker_a, speaker_b, session_N, "
        "session_N_date_time) and qa (question, answer, evidence, category).",
    )


def _parse_sample(sample: Any, where: str) -> Conversation:
    if not isinstance(sample, dict):
        raise _fail(where, f"a sample is a {type(sample).__name__}, not an object")
    for key in ("sample_id", "conversation", "qa"):
        if key not in sample:
            raise _fail(where, f"no {key!r} key (keys: {', '.join(sorted(map(str, sample))[:8])})")
    sample_id = str(sample["sample_id"])
    where = f"{where} ({sample_id})"
    conv = sample["conversation"]
    if not isinstance(conv, dict):
        raise _fail(where, "'conversation' is not an object")
    for key in ("speaker_a", "speaker_b"):
        if not isinstance(conv.get(key), str):
            raise _fail(where, f"'conversation' has no {key!r}")
    sessions = []
    for key, value in conv.items():
        match = _SESSION_KEY.match(key)
        if not match:
            continue  # speakers, session_N_date_time (read below); N_date_time without session_N is skipped
        index = int(match.group(1))
        date_time = conv.get(f"{key}_date_time")
        if not isinstance(date_time, str):
            raise _fail(where, f"{key} has no {key}_date_time")
        if not isinstance(value, list):
            raise _fail(where, f"{key} is not a list of turns")
        turns = [_parse_turn(t, f"{where}, {key}[{j}]") for j, t in enumerate(value)]
        sessions.append(Session(index=index, date_time=date_time, turns=turns))
    if not sessions:
        raise _fail(where, "'conversation' has no session_N lists")
    sessions.sort(key=lambda s: s.index)
    if not isinstance(sample["qa"], list):
        raise _fail(where, "'qa' is not a list")
    qa = [_parse_qa(q, f"{where}, qa[{j}]", j) for j, q in enumerate(sample["qa"])]
    return Conversation(sample_id, conv["speaker_a"], conv["speaker_b"], sessions, qa)


def _parse_turn(turn: Any, where: str) -> LocoTurn:
    if not isinstance(turn, dict):
        raise _fail(where, "a turn is not an object")
    for key in ("speaker", "dia_id", "text"):
        if not isinstance(turn.get(key), str):
            raise _fail(where, f"the turn has no string {key!r}")
    caption = turn.get("blip_caption")
    return LocoTurn(turn["speaker"], turn["dia_id"], turn["text"], caption if isinstance(caption, str) else None)


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _evidence_ids(evidence: list[Any]) -> list[str]:
    """Evidence dia_ids; an entry naming several ("D8:6; D9:17", as one in LoCoMo does) is split."""
    ids: list[str] = []
    for entry in evidence:
        text = str(entry).strip()
        found = _DIA_ID.findall(text)
        ids.extend(found if found else [text] if text else [])
    return list(dict.fromkeys(ids))


def _parse_qa(item: Any, where: str, index: int) -> QA:
    if not isinstance(item, dict):
        raise _fail(where, "a QA item is not an object")
    if not isinstance(item.get("question"), str):
        raise _fail(where, "no 'question'")
    category = item.get("category")
    if isinstance(category, bool) or not isinstance(category, int) or category not in CATEGORY_NAMES:
        raise _fail(where, f"category {category!r} is not one of 1-5")
    adversarial = item.get("adversarial_answer")
    if "answer" in item and item["answer"] is not None:
        answer = _as_text(item["answer"])
    elif category == ADVERSARIAL:
        answer = ADVERSARIAL_ANSWER
    else:
        raise _fail(where, "no 'answer'")
    evidence = item.get("evidence", [])
    if not isinstance(evidence, list):
        raise _fail(where, "'evidence' is not a list")
    return QA(
        question=item["question"],
        answer=answer,
        evidence=_evidence_ids(evidence),
        category=category,
        adversarial_answer=None if adversarial is None else _as_text(adversarial),
        index=index,
    )


def dev_question(index: int) -> bool:
    """Whether LoCoMo question `index` (its position in the sample's `qa` list) is held out from training.

    Every fifth question (index a multiple of 5) is a dev question: on
    conv-26 that is 40 of 199 (31 of the 152 non-adversarial), spread over
    every session and category. `edge train` never trains on them and
    `edge eval locomo` reports them apart (`split` "dev" and "trained").
    """
    return index % 5 == 0
