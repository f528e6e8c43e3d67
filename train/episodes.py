"""Training episodes, as Memory-R1 builds them, from LoCoMo or synthetic conversations.

A conversation is replayed in time order into a real memory bank. Before
each turn, the memories the runtime Manager would be shown (the same
`edge.manager.related_facts` search) make a **Manager episode**: the turn, those
memories, every live memory of the bank (to rebuild it for the reward), the
questions the turn bears on, and, for synthetic data, the gold operations
in the local ids the model sees. A question with the memories the runtime
Answer Agent would retrieve makes an **Answer episode**.

What is in the bank before a turn:
- synthetic: the gold memories (each gold operation applied as it comes);
- LoCoMo: the previous `window` turns, one episodic memory each
  ("Speaker: text", dated with the session). LoCoMo has no gold operations;
  the Manager's reward comes only from the questions whose evidence is this
  turn.

Episodes become dataset rows (`*.row()`): `prompt` (chat messages, from
`edge.prompts`), `schema` (the JSON schema decoding is constrained to), and
JSON-encoded columns the reward functions read.
"""
from __future__ import annotations

import json
import logging
import random
import re
import sqlite3
import tempfile
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Iterator, Sequence

from edge.answer import offered_turns
from edge.bank import Memory, MemoryBank
from edge.embedder import Embedder
from edge.evaluation.scoring import best_offered, exact_match, f1_score, is_unknown, normalize_answer
from edge.manager import RELATED_K, extractive_candidates, gold_bank_op, related_facts
from edge.model_calls import shown_memories
from edge.prompts import (
    ANSWER_TOP_K,
    EXTEND,
    EXTRACTIVE_MAX_OPS,
    MANAGER_OPS,
    UNKNOWN,
    ShownMemory,
    Turn,
    answer_messages,
    answer_schema,
    answer_spans,
    cited_turns,
    manager_messages,
    manager_schema,
)

from edge.train.synthetic import SynthConversation

DEFAULT_WINDOW = 50

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredMemory:
    """A live memory of the bank before a turn; `key` names it within the episode.

    `source_turns` and `metadata` (the speaker the fact was taken from) are
    kept so that a bank rebuilt for the reward is read as the runtime reads
    it: `edge.manager.speaks_for` checks whose fact a reply changes, and
    `edge.answer.stale_turns` can follow the fact a reply supersedes to its
    turns. The versions an earlier change retired are not kept (an episode
    holds the live memories), so their chains end at the live fact.
    """

    key: str
    tier: str
    text: str
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ManagerEpisode:
    episode_id: str
    turn: Turn
    shown: list[str]  # keys of the memories shown, in order: local id i = shown[i]
    bank: list[StoredMemory]  # every live memory before the turn
    questions: list[dict[str, Any]]  # {"question", "answer", ["candidates"]}
    gold_ops: list[dict[str, Any]] | None = None  # {"op", ["id"], ["value"], ["text"]}, ids local
    kind: str | None = None
    # Extractive memory (what the default bundle serves): the texts a fact may have, the runtime Manager's
    # own `candidates(turn)`; None: free text.
    candidates: list[str] | None = None
    evidence_clause: str | None = None  # LoCoMo: the clause that answers the turn's questions best
    # The episodic log once the turn is kept: every earlier turn of the conversation and this one, oldest first
    # (what the served Answer Agent reads besides the facts; the reward's context = "served").
    log: list[Turn] = field(default_factory=list)
    # The operations offered (`GenerationConfig.manager_ops`): EXTEND too when the Manager is trained for a bundle
    # whose `generation.consolidation` is "extend" (its prompt and grammar then say so).
    ops: tuple[str, ...] = MANAGER_OPS

    @property
    def shown_ids(self) -> list[str]:
        return [str(i) for i in range(len(self.shown))]

    @property
    def text_mode(self) -> str:
        return "free" if self.candidates is None else "extractive"

    def messages(self) -> list[dict[str, str]]:
        by_key = {m.key: m for m in self.bank}
        shown = [ShownMemory(str(i), by_key[k].tier, by_key[k].text, by_key[k].event_time)
                 for i, k in enumerate(self.shown)]
        return manager_messages(self.turn, shown, text_mode=self.text_mode, ops=self.ops)

    def schema(self) -> dict[str, Any]:
        return manager_schema(self.shown_ids, candidates=self.candidates, ops=self.ops)

    def gold_reply(self) -> str | None:
        """The reply that does the gold operations, as `json.dumps` writes it (None: no gold, LoCoMo's Manager).

        Extractive texts are the gold clauses (`gold_ops[i]["text"]`); an
        operation whose value no clause holds cannot be written and is left
        out, as are those past the schema's `maxItems`.
        """
        if self.gold_ops is None:
            if self.evidence_clause is None:
                return None
            return json.dumps({"ops": [{"op": "ADD", "text": self.evidence_clause}]}, ensure_ascii=False)
        ops: list[dict[str, Any]] = []
        for op in self.gold_ops:
            if op["op"] == "DELETE":
                ops.append({"op": "DELETE", "id": op["id"]})
                continue
            text = op.get("text")
            if text is None:
                continue
            head = {"op": "ADD"} if op["op"] == "ADD" else {"op": op["op"], "id": op["id"]}
            ops.append({**head, "text": text} if self.candidates is not None else {**head, "tier": "semantic",
                                                                                  "text": text})
        limit = EXTRACTIVE_MAX_OPS if self.candidates is not None else len(ops)
        return json.dumps({"ops": ops[:limit] or [{"op": "NOOP"}]}, ensure_ascii=False)

    def row(self) -> dict[str, Any]:
        return {
            "prompt": self.messages(),
            "schema": json.dumps(self.schema()),
            "episode_id": self.episode_id,
            "shown_ids": json.dumps(self.shown_ids),
            "turn": json.dumps(asdict(self.turn)),
            "bank": json.dumps([asdict(m) for m in self.bank]),
            "shown": json.dumps(self.shown),
            "questions": json.dumps(self.questions),
            "gold_ops": json.dumps(self.gold_ops),
            "kind": self.kind or "",
            "gold_reply": self.gold_reply() or "",
            "log": json.dumps([asdict(t) for t in self.log]),
        }


@dataclass
class AnswerEpisode:
    episode_id: str
    question: str
    answer: str
    memories: list[StoredMemory]  # shown in this order: local id i = memories[i]
    relevant: list[str] = field(default_factory=list)  # local ids of memories that hold the answer
    category: int | None = None
    text_mode: str = "extractive"
    # The memories as the runtime shows them (`edge.manager.shown_memory`: speaker and resolved dates of a
    # logged turn); None: built from `memories`.
    shown_memories: list[ShownMemory] | None = None
    # Where the question comes from and what it asks for: "fact" (synthetic: a fact's latest state), "time"
    # (synthetic: when an event was), "locomo" (a LoCoMo question; `category` says which kind), "friendsqa" (a
    # FriendsQA question over its scene). Any of them may be unanswerable (gold "unknown": `answerable`).
    kind: str = "fact"

    @property
    def shown_ids(self) -> list[str]:
        return [str(i) for i in range(len(self.memories))]

    def shown(self) -> list[ShownMemory]:
        if self.shown_memories is not None:
            return self.shown_memories
        return [ShownMemory(str(i), m.tier, m.text, m.event_time, turns=cited_turns(m.tier, m.source_turns))
                for i, m in enumerate(self.memories)]

    def spans(self) -> list[str] | None:
        """What an extractive answer may be (`edge.prompts.answer_spans`); None for free text."""
        return answer_spans(self.shown(), self.question) if self.text_mode == "extractive" else None

    def messages(self) -> list[dict[str, str]]:
        return answer_messages(self.question, self.shown(), text_mode=self.text_mode)

    def schema(self) -> dict[str, Any]:
        return answer_schema(self.shown_ids, spans=self.spans())

    @property
    def answerable(self) -> bool:
        """False for a question whose gold answer is "unknown" (nothing shown answers it)."""
        return not is_unknown(self.answer)

    def best_offered(self) -> tuple[str | None, float]:
        """The offered span closest to the gold answer and its token F1: the ceiling of an extractive answer.

        (None, 0.0) for free text and when no span shares a word with the gold (`scoring.best_offered`).
        """
        spans = self.spans()
        return best_offered(spans, self.answer) if spans is not None else (None, 0.0)

    def gold_offered(self) -> bool:
        """Whether the gold answer itself is among the offered spans (exact match is reachable)."""
        spans = self.spans()
        return spans is not None and any(exact_match(span, self.answer) for span in spans)

    def gold_reply(self) -> str:
        """The best reply there is, as `json.dumps` writes it.

        Extractive: the span with the highest token F1 against the gold
        answer (the shortest of equals; "unknown" when none shares a word).
        Free text: the relevant ids, then the gold answer.
        """
        spans = self.spans()
        if spans is None:
            return json.dumps({"relevant": self.relevant, "answer": self.answer}, ensure_ascii=False)
        return json.dumps({"answer": best_span(spans, self.answer)}, ensure_ascii=False)

    def row(self) -> dict[str, Any]:
        return {
            "prompt": self.messages(),
            "schema": json.dumps(self.schema()),
            "episode_id": self.episode_id,
            "shown_ids": json.dumps(self.shown_ids),
            "answer": self.answer,
            "relevant": json.dumps(self.relevant),
            "category": -1 if self.category is None else self.category,
            "gold_reply": self.gold_reply(),
        }


def learnable(episode: AnswerEpisode) -> bool:
    """Whether an Answer episode can teach its gold reply: it is unanswerable (gold "unknown"), or some offered
    span shares a word with its gold answer.

    An answerable question none of whose offered spans shares a word with
    the gold (a LoCoMo answer no shown turn words) has "unknown" as its
    best span (`best_span`), so a warm start on it teaches the model to
    abstain on a question that has an answer; GRPO gets no signal from it
    either (every reply scores 0). Such questions stay in dev and test,
    where they measure retrieval.
    """
    return not episode.answerable or episode.text_mode != "extractive" or episode.best_offered()[1] > 0


def closest_by_f1(texts: Sequence[str], answers: Sequence[str]) -> str | None:
    """The text with the highest token F1 against any of `answers`, the shortest of equals (None: none overlaps)."""
    scored = [(max(f1_score(t, a) for a in answers), -len(t), t) for t in texts] if answers else []
    best = max(scored, default=(0.0, 0, None))
    return best[2] if best[0] > 0 else None


def best_span(spans: Sequence[str], answer: str) -> str:
    """The span closest to `answer` by token F1, the shortest of equals; "unknown" when none overlaps."""
    if answer.strip().lower() == UNKNOWN:
        return UNKNOWN
    return closest_by_f1([s for s in spans if s != UNKNOWN], [answer]) or UNKNOWN


def evidence_clause(candidates: Sequence[str], questions: Sequence[dict[str, Any]]) -> str | None:
    """The clause with the highest token F1 against any of the questions' answers (None: none shares a word)."""
    return closest_by_f1(candidates, [str(q["answer"]) for q in questions])


def gold_clause(candidates: Sequence[str], value: str) -> str | None:
    """The shortest clause of a turn that holds `value` (a gold fact's value), or None."""
    pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)
    holding = [c for c in candidates if pattern.search(c)]
    return min(holding, key=len) if holding else None


def turn_candidates(turn: Turn) -> list[str]:
    """The runtime Manager's extractive candidates for `turn` (no model needed)."""
    return extractive_candidates(turn)


# --------------------------------------------------------------------------- banks


def scratch_bank(embedder: Embedder) -> MemoryBank:
    """An empty bank in memory (SQLite ":memory:"), for replays and reward copies."""
    return MemoryBank.open(":memory:", embedder)


@contextmanager
def served_bank(path: Path, embedder: Embedder, turns: Sequence[Turn]) -> Iterator[MemoryBank]:
    """A copy of the bank file at `path`, opened as its one user (SQLite's backup API; the file is only read).

    Raises ValueError when the file holds several users' memories, or its
    episodic log lacks one of `turns` (a bank of another conversation, or
    one `edge eval` left unfinished).
    """
    with tempfile.TemporaryDirectory(prefix="edge-served-bank-") as folder:
        copy = Path(folder) / "bank.db"
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            with closing(sqlite3.connect(copy)) as target:
                source.backup(target)
            owners = [row[0] for row in source.execute("SELECT DISTINCT owner FROM memories")]
        finally:
            source.close()
        if len(owners) != 1:
            raise ValueError(f"{path}: a served bank holds one user's memories, not {len(owners)}")
        with MemoryBank.open(copy, embedder, user=owners[0], create=False) as bank:
            logged = {t for m in bank.list(tier="episodic") for t in m.source_turns}
            missing = [t.turn_id for t in turns if t.turn_id not in logged]
            if missing:
                raise ValueError(f"{path}: its episodic log lacks {len(missing)} turns of the conversation "
                                 f"(first {missing[0]}); is it this conversation's bank, and finished?")
            yield bank


def _stored(memory: Memory) -> StoredMemory:
    # The episode holds live memories only, so the version a fact superseded is not there to point at.
    metadata = {k: v for k, v in memory.metadata.items() if k != "supersedes"}
    return StoredMemory(memory.id, memory.tier, memory.text, memory.event_time, tuple(memory.source_turns), metadata)


def related_memories(bank: MemoryBank, turn: Turn, k: int) -> list[Memory]:
    return related_facts(bank, turn, k=k)  # the runtime Manager's own retrieval


# --------------------------------------------------------------------------- synthetic


def _gold_text(op: Any, candidates: Sequence[str] | None) -> str | None:
    """What a gold ADD/UPDATE stores: its clause of the turn (extractive), else the canonical memory text."""
    if candidates is None:
        return op.text
    return gold_clause(candidates, op.value) if op.value else None


def synthetic_manager_episodes(conversations: Iterable[SynthConversation], embedder: Embedder, *,
                               related_k: int = RELATED_K, text_mode: str = "extractive",
                               ops: Sequence[str] = MANAGER_OPS) -> list[ManagerEpisode]:
    """One Manager episode per turn, the bank holding the gold memories of the turns before it.

    Extractive (the default bundle's mode): each episode offers the turn's
    clauses as the runtime Manager does, the gold texts are the clauses that
    hold the gold values, and the gold bank stores those clauses, as a
    served Manager that chose right would have.

    `ops`: the operations the Manager is offered (`GenerationConfig.manager_ops`).
    A gold EXTEND (`synthetic.activity_conversation`) of a fact that is shown
    stays one when EXTEND is offered; otherwise, or when the fact is not
    among those shown, the right reply is an ADD of the clause, and the gold
    bank keeps it as its own fact.
    """
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        with scratch_bank(embedder) as bank:
            slot_ids: dict[str, str] = {}
            history: list[Turn] = []
            for synth in conv.turns:
                turn = Turn(synth.speaker, synth.text, synth.time, synth.turn_id)
                history.append(turn)
                candidates = turn_candidates(turn) if text_mode == "extractive" else None
                related = related_memories(bank, turn, related_k) if bank.count() else []
                id_map, _ = shown_memories(related)
                gold: list[dict[str, Any]] = []
                for op in synth.ops:
                    target = id_map.to_local.get(slot_ids.get(op.slot or "", ""))
                    text = _gold_text(op, candidates)
                    if op.op == "ADD" or (op.op == "UPDATE" and target is None):
                        gold.append({"op": "ADD", "value": op.value, "text": text})
                    elif op.op == "UPDATE":
                        gold.append({"op": "UPDATE", "id": target, "value": op.value, "text": text})
                    elif op.op == EXTEND:
                        extends = EXTEND in ops and target is not None
                        gold.append({"op": EXTEND, "id": target, "value": op.value, "text": text} if extends
                                    else {"op": "ADD", "value": op.value, "text": text})
                    elif op.op == "DELETE" and target is not None:
                        gold.append({"op": "DELETE", "id": target})
                if candidates is not None:  # one operation per turn (the rest of it stays in the log)
                    gold = gold[:EXTRACTIVE_MAX_OPS]
                episodes.append(ManagerEpisode(
                    episode_id=synth.turn_id,
                    turn=turn,
                    shown=[m.id for m in related],
                    bank=[_stored(m) for m in bank.list()],
                    questions=[{"question": q.question, "answer": q.answer, "candidates": list(q.candidates)}
                               for q in synth.questions],
                    gold_ops=gold,
                    kind=synth.kind,
                    candidates=candidates,
                    log=list(history),
                    ops=tuple(ops),
                ))
                extended = {g["value"] for g in gold if g["op"] == EXTEND}
                _apply_gold(bank, slot_ids, synth, candidates, speaker=synth.speaker, extended=extended)
    return episodes


def _apply_gold(bank: MemoryBank, slot_ids: dict[str, str], synth: Any, candidates: Sequence[str] | None, *,
                speaker: str | None = None, extended: AbstractSet[str] = frozenset()) -> None:
    """The gold bank moves on by the turn's gold operations, written as the runtime Manager writes them
    (`edge.manager.gold_bank_op`: dated by the turn, naming it and its speaker; a change or retraction
    supersedes the fact; an EXTEND grows it). A gold EXTEND whose value is not in `extended` (EXTEND not offered,
    or its fact not shown) is kept as an ADD, the fact the right reply writes then."""
    turn = Turn(speaker or "", synth.text, synth.time, synth.turn_id)
    for op in synth.ops:
        if op.op not in ("ADD", "UPDATE", "DELETE", EXTEND):  # NOOP: the bank stays as it is
            continue
        name = "ADD" if op.op == EXTEND and op.value not in extended else op.op
        text = _gold_text(op, candidates) or op.text
        target = bank.get(slot_ids[op.slot]) if name in ("UPDATE", "DELETE", EXTEND) else None
        (applied,) = bank.apply([gold_bank_op(name, text, target, turn)], actor="manager", turn=synth.turn_id)
        if op.op == "DELETE":
            slot_ids.pop(op.slot)
        else:
            slot_ids[op.slot] = applied.memory_id


def gold_operation(episode: ManagerEpisode) -> str:
    """The operation a synthetic turn calls for (its first gold one; NOOP when none)."""
    return str(episode.gold_ops[0]["op"]) if episode.gold_ops else "NOOP"


def balance_ops(episodes: Sequence[ManagerEpisode], seed: int = 0) -> list[ManagerEpisode]:
    """Rounds of one episode per gold operation (ADD, UPDATE, DELETE, NOOP), rarer ones repeated, seeded order.

    Changes and retractions are the turns a Manager most needs to learn and
    the rarest in a conversation. In their natural share, or with NOOP
    turns (small talk and repeats) outnumbering the others, one constant
    operation earns most of the reward and the policy collapses onto it
    (all-ADD, then all-NOOP, measured). With every operation equally often
    right, no constant wins, and served one round per step
    (`prompts_per_step` = 4) every step contrasts the four, so the gradient
    learns which turn calls for which operation.
    """
    by_op: dict[str, list[ManagerEpisode]] = {}
    for episode in episodes:
        by_op.setdefault(gold_operation(episode), []).append(episode)
    if not by_op:
        return []
    target = max(len(group) for group in by_op.values())
    rng = random.Random(seed)
    columns = []
    for op in sorted(by_op):
        group = by_op[op]
        column = group * (target // len(group)) + rng.sample(group, target % len(group))
        rng.shuffle(column)
        columns.append(column)
    out: list[ManagerEpisode] = []
    for row in zip(*columns):
        round_ = list(row)
        rng.shuffle(round_)
        out += round_
    return out


def synthetic_answer_episodes(conversations: Iterable[SynthConversation], embedder: Embedder, *,
                              k: int = ANSWER_TOP_K, text_mode: str = "extractive", with_log: bool = False,
                              reader: Any = None) -> list[AnswerEpisode]:
    """One Answer episode per final question, over the conversation's final gold bank.

    `with_log`: the bank also holds every turn in its episodic log, written
    as the runtime writes it, as a served bank with a good Manager's facts
    does, and the question is answered from what `reader` (an
    `edge.answer.AnswerAgent`) shows: its order, retrieval and budget.
    Without, the top-k gold facts alone. Raises ValueError for `with_log`
    without a reader.
    """
    if with_log and reader is None:
        raise ValueError("episodes over the log and the facts need the reader that chooses what is shown")
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        with scratch_bank(embedder) as bank:
            slot_ids: dict[str, str] = {}
            for synth in conv.turns:
                turn = Turn(synth.speaker, synth.text, synth.time, synth.turn_id)
                if with_log:
                    _log(bank, [turn])
                _apply_gold(bank, slot_ids, synth, turn_candidates(turn) if text_mode == "extractive" else None,
                            speaker=synth.speaker)
            for i, q in enumerate(conv.final_questions):
                shown: list[ShownMemory] | None = None
                if with_log:
                    kept, context = _answer_context(bank, q.question, k, reader)
                    memories, shown = [_stored(m) for m in kept], list(context)
                else:
                    memories = [_stored(h.memory) for h in (bank.search(q.question, k=k) if bank.count() else [])]
                holder = slot_ids.get(q.slot)
                relevant = [str(j) for j, m in enumerate(memories) if m.key == holder]
                episodes.append(AnswerEpisode(f"{conv.sample_id}:q{i}", q.question, q.answer, memories, relevant,
                                              text_mode=text_mode, shown_memories=shown))
    return episodes


def synthetic_time_episodes(conversations: Iterable[SynthConversation], embedder: Embedder, *, per_conversation: int,
                            k: int = ANSWER_TOP_K, text_mode: str = "extractive", reader: Any = None,
                            unanswerable: float = 0.0) -> list[AnswerEpisode]:
    """"When did Maya go to a pottery class?": one Answer episode per dated event (`synthetic.dated_events`).

    The bank's episodic log holds every turn of the conversation and its
    events, written as the runtime writes them (speaker, time, relative
    dates resolved), and the question is answered from what the runtime
    Answer Agent would show (`reader`, as for LoCoMo; None: the top-k
    turns). The gold answer is the event's date: for most events the one
    shown as "(yesterday = 7 May 2023)" beside the turn, for "today" and "I
    just ..." the turn's own date at the head of its line; the skill is
    taking the date of the line that tells the event.

    `unanswerable`: questions about events the conversation never tells
    (`synthetic.untold_events`, gold "unknown"), per told one; 0.2 asks
    one for every five told, on average.
    """
    from edge.dates import parse_time
    from edge.train.synthetic import dated_events, untold_events

    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        events = dated_events(conv, per_conversation)
        turns = sorted([*conv.turns, *(e.turn for e in events)], key=lambda t: parse_time(t.time))
        with scratch_bank(embedder) as bank:
            _log(bank, [Turn(t.speaker, t.text, t.time, t.turn_id) for t in turns])
            for event in events:
                q = event.question
                kept, shown = _answer_context(bank, q.question, k, reader)
                relevant = [str(j) for j, m in enumerate(kept) if event.turn.turn_id in m.source_turns]
                episodes.append(AnswerEpisode(f"{conv.sample_id}:{event.turn.turn_id.rsplit(':', 1)[1]}", q.question,
                                              q.answer, [_stored(m) for m in kept], relevant, text_mode=text_mode,
                                              shown_memories=list(shown), kind="time"))
            rng = random.Random(f"unanswerable:{conv.seed}")
            for j, q in enumerate(untold_events(conv, events, _draw_count(rng, unanswerable * len(events)))):
                kept, shown = _answer_context(bank, q.question, k, reader)
                episodes.append(AnswerEpisode(f"{conv.sample_id}:untold{j}", q.question, q.answer,
                                              [_stored(m) for m in kept], [], text_mode=text_mode,
                                              shown_memories=list(shown), kind="time"))
    return episodes


def _draw_count(rng: random.Random, expected: float) -> int:
    """A whole number whose mean is `expected`: its integer part, plus one with the fraction's probability."""
    whole = int(expected)
    return whole + (rng.random() < expected - whole)


def _log(bank: MemoryBank, turns: Sequence[Turn]) -> None:
    """Write `turns` to the bank's episodic log as the runtime does (`edge.manager.log_entry_for`), in one transaction."""
    from edge.manager import log_entry_for

    bank.apply([log_entry_for(turn) for turn in turns])


def _answer_context(bank: MemoryBank, question: str, k: int, reader: Any) -> tuple[list[Memory], list[ShownMemory]]:
    """The memories the runtime Answer Agent shows for `question` and how (`reader`; None: the top-k turns it
    retrieves, `edge.answer.offered_turns`, with no budget)."""
    if reader is not None:
        return reader.context(bank, question)
    kept = offered_turns(bank, question, k=k)
    return kept, shown_memories(kept)[1]


# --------------------------------------------------------------------------- LoCoMo


def locomo_manager_episodes(conversations: Sequence[Any], embedder: Embedder, *, related_k: int = RELATED_K,
                            window: int = DEFAULT_WINDOW, only_with_questions: bool = True,
                            text_mode: str = "extractive") -> list[ManagerEpisode]:
    """One Manager episode per LoCoMo turn (`edge.locomo.Conversation`s), over the previous `window` turns.

    LoCoMo has no gold operations; extractive episodes of a turn that is a
    question's evidence name its gold clause (`evidence_clause`), the one
    to keep.
    """
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        by_evidence: dict[str, list[dict[str, Any]]] = {}
        for qa in conv.questions():
            for dia_id in qa.evidence:
                by_evidence.setdefault(dia_id, []).append({"question": qa.question, "answer": qa.answer,
                                                           "category": qa.category, "index": qa.index})
        with scratch_bank(embedder) as bank:
            live: list[str] = []  # memory ids, oldest first
            history: list[Turn] = []
            for session, loco in conv.turns():
                turn = Turn(loco.speaker, loco.full_text, session.date_time, loco.dia_id)
                history.append(turn)
                questions = by_evidence.get(loco.dia_id, [])
                if questions or not only_with_questions:
                    related = related_memories(bank, turn, related_k) if live else []
                    candidates = turn_candidates(turn) if text_mode == "extractive" else None
                    episodes.append(ManagerEpisode(
                        episode_id=f"{conv.sample_id}:{loco.dia_id}",
                        turn=turn,
                        shown=[m.id for m in related],
                        bank=[_stored(m) for m in bank.list()],
                        questions=questions,
                        candidates=candidates,
                        evidence_clause=evidence_clause(candidates, questions) if candidates else None,
                        log=list(history),
                    ))
                # The previous turns stand in for the facts a Manager would have kept from them: the Manager
                # is shown facts only (the episodic log is edge's own and never offered to it).
                memory = bank.add(f"{loco.speaker}: {loco.full_text}", tier="semantic", event_time=session.date_time,
                                  source_turns=[loco.dia_id], metadata={"speaker": loco.speaker})
                live.append(memory.id)
                if len(live) > window:
                    bank.delete(live.pop(0))
    return episodes


def locomo_answer_episodes(conversations: Sequence[Any], embedder: Embedder, *, k: int = ANSWER_TOP_K,
                           include_adversarial: bool = False, text_mode: str = "extractive",
                           reader: Any = None, questions: Sequence[int] | None = None,
                           bank: Path | None = None) -> list[AnswerEpisode]:
    """One Answer episode per LoCoMo question, over a bank whose episodic log holds every turn of its conversation.

    The log is written as the runtime writes it (`edge.manager.log_entry`:
    speaker, time, resolved dates). With `reader` (an `edge.answer.AnswerAgent`
    whose backend counts tokens) each episode shows exactly what that agent
    would: its retrieval, focused lines and token budget; without, the top-k
    turns. `questions`: LoCoMo question indexes to keep (None: all).
    `include_adversarial` adds category 5, whose questions ask about what
    the conversation never says, with the gold answer "unknown".

    `bank`: a bank `edge eval locomo` built for the (single) conversation,
    its log and the Manager's facts, read as served (a copy; the file is
    not written). Raises ValueError when it is not that conversation's
    (its log lacks a turn of it) or `conversations` are several.
    """
    if bank is not None and len(conversations) != 1:
        raise ValueError(f"a served bank holds one conversation; {len(conversations)} given")
    layout = ":served" if bank is not None else ""  # one question may be asked over both banks
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        turns = [Turn(loco.speaker, loco.full_text, session.date_time, loco.dia_id) for session, loco in conv.turns()]
        with (served_bank(bank, embedder, turns) if bank is not None else scratch_bank(embedder)) as memory_bank:
            if bank is None:
                _log(memory_bank, turns)
            for qa in conv.questions(include_adversarial=include_adversarial):
                if questions is not None and qa.index not in questions:
                    continue
                kept, shown = _answer_context(memory_bank, qa.question, k, reader)
                evidence = set(qa.evidence)
                relevant = [str(j) for j, m in enumerate(kept) if evidence & set(m.source_turns)]
                # An adversarial question asks about what was never said: the Answer Agent's answer is "unknown".
                gold = UNKNOWN if qa.is_adversarial else qa.answer
                episodes.append(AnswerEpisode(f"{conv.sample_id}{layout}:qa{qa.index}", qa.question, gold,
                                              [_stored(m) for m in kept], relevant, qa.category,
                                              text_mode=text_mode, shown_memories=list(shown), kind="locomo"))
    return episodes


# --------------------------------------------------------------------------- FriendsQA


def friendsqa_answer_episodes(scenes: Sequence[Any], embedder: Embedder, *, k: int = ANSWER_TOP_K,
                              text_mode: str = "extractive", reader: Any = None, only_offered: bool = True,
                              unanswerable: float = 0.0, seed: int = 0) -> list[AnswerEpisode]:
    """One Answer episode per FriendsQA question (`edge.train.friendsqa.Scene`s), over its scene's episodic log.

    The scene's utterances are written into the log as the runtime writes
    turns (speaker, time: `edge.manager.log_entry_for`), and each question
    is answered from what the runtime Answer Agent shows (`reader`: its
    hybrid retrieval, focus windows and token budget; None: the top-k
    turns). Of a question's annotated answers the gold is the one the
    offered spans come closest to. `only_offered` keeps the episodes whose
    gold is itself an offered span (what training learns from: the best
    span is then the answer, not a part of it); without, every question.

    `unanswerable`: questions of other scenes asked over this one's log, per
    kept question (0.2: one for every five), gold "unknown"; one whose
    answers occur in this scene's text is never chosen. Seeded by `seed`
    and the scene.
    """
    episodes: list[AnswerEpisode] = []
    pool = [(scene.scene_id, q) for scene in scenes for q in scene.questions]
    answerable = 0
    for scene in scenes:
        with scratch_bank(embedder) as bank:
            _log(bank, [Turn(u.speaker, u.text, u.time, u.turn_id) for u in scene.utterances])
            kept_here = 0
            for q in scene.questions:
                kept, shown = _answer_context(bank, q.question, k, reader)
                episode = AnswerEpisode(f"friendsqa:{q.qid}", q.question, q.answers[0], [_stored(m) for m in kept],
                                        text_mode=text_mode, shown_memories=list(shown), kind="friendsqa")
                spans = episode.spans()
                if spans is not None and len(q.answers) > 1:  # the annotators' answer the offered spans come closest to
                    episode.answer = max(q.answers, key=lambda a: (best_offered(spans, a)[1], -q.answers.index(a)))
                holders = {f"{scene.scene_id}:u{uid}" for uid in q.utterance_ids}
                episode.relevant = [str(j) for j, m in enumerate(kept) if holders & set(m.source_turns)]
                if only_offered and not episode.gold_offered():
                    continue
                episodes.append(episode)
                kept_here += 1
            answerable += kept_here
            rng = random.Random(f"friendsqa:{seed}:{scene.scene_id}")
            heard = normalize_answer(scene.text())
            others = [(sid, q) for sid, q in pool if sid != scene.scene_id
                      and not any(normalize_answer(a) and f" {normalize_answer(a)} " in f" {heard} " for a in q.answers)]
            for sid, q in rng.sample(others, min(len(others), _draw_count(rng, unanswerable * kept_here))):
                kept, shown = _answer_context(bank, q.question, k, reader)
                episodes.append(AnswerEpisode(f"friendsqa:{scene.scene_id}:asks:{q.qid}", q.question, UNKNOWN,
                                              [_stored(m) for m in kept], text_mode=text_mode,
                                              shown_memories=list(shown), kind="friendsqa"))
    log.info("FriendsQA: %d scenes, %d questions, %d kept (%s), %d unanswerable added", len(scenes), len(pool),
             answerable, "gold among the offered spans" if only_offered else "all", len(episodes) - answerable)
    return episodes
