"""Training episodes, as Memory-R1 builds them, from LoCoMo or synthetic conversations.

A conversation is replayed in time order into a real memory bank. Before
each turn, the memories the runtime Manager would be shown (the same
`MemoryManager.related` search) make a **Manager episode**: the turn, those
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
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from edge.bank import Memory, MemoryBank
from edge.embedder import Embedder
from edge.manager import RELATED_K, MemoryManager, shown_memories
from edge.prompts import ANSWER_TOP_K, Turn, answer_messages, answer_schema, manager_messages, manager_schema

from edge.train.synthetic import SynthConversation

DEFAULT_WINDOW = 50


@dataclass(frozen=True)
class StoredMemory:
    """A live memory of the bank before a turn; `key` names it within the episode."""

    key: str
    tier: str
    text: str
    event_time: str | None = None


@dataclass
class ManagerEpisode:
    episode_id: str
    turn: Turn
    shown: list[str]  # keys of the memories shown, in order: local id i = shown[i]
    bank: list[StoredMemory]  # every live memory before the turn
    questions: list[dict[str, Any]]  # {"question", "answer", ["candidates"]}
    gold_ops: list[dict[str, Any]] | None = None  # {"op", ["id"], ["value"]}, ids local
    kind: str | None = None

    @property
    def shown_ids(self) -> list[str]:
        return [str(i) for i in range(len(self.shown))]

    def messages(self) -> list[dict[str, str]]:
        from edge.prompts import ShownMemory

        by_key = {m.key: m for m in self.bank}
        shown = [ShownMemory(str(i), by_key[k].tier, by_key[k].text, by_key[k].event_time)
                 for i, k in enumerate(self.shown)]
        return manager_messages(self.turn, shown)

    def schema(self) -> dict[str, Any]:
        return manager_schema(self.shown_ids)

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
        }


@dataclass
class AnswerEpisode:
    episode_id: str
    question: str
    answer: str
    memories: list[StoredMemory]  # shown in this order: local id i = memories[i]
    relevant: list[str] = field(default_factory=list)  # local ids of memories that hold the answer
    category: int | None = None

    @property
    def shown_ids(self) -> list[str]:
        return [str(i) for i in range(len(self.memories))]

    def messages(self) -> list[dict[str, str]]:
        from edge.prompts import ShownMemory

        shown = [ShownMemory(str(i), m.tier, m.text, m.event_time) for i, m in enumerate(self.memories)]
        return answer_messages(self.question, shown)

    def schema(self) -> dict[str, Any]:
        return answer_schema(self.shown_ids)

    def row(self) -> dict[str, Any]:
        return {
            "prompt": self.messages(),
            "schema": json.dumps(self.schema()),
            "episode_id": self.episode_id,
            "shown_ids": json.dumps(self.shown_ids),
            "answer": self.answer,
            "relevant": json.dumps(self.relevant),
            "category": -1 if self.category is None else self.category,
        }


# --------------------------------------------------------------------------- banks


def scratch_bank(embedder: Embedder) -> MemoryBank:
    """An empty bank in memory (SQLite ":memory:"), for replays and reward copies."""
    return MemoryBank.open(":memory:", embedder)


def _stored(memory: Memory) -> StoredMemory:
    return StoredMemory(memory.id, memory.tier, memory.text, memory.event_time)


def related_memories(bank: MemoryBank, turn: Turn, k: int) -> list[Memory]:
    # The runtime Manager's own retrieval; it needs no model for this.
    return MemoryManager(None, bank, related_k=k).related(turn)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- synthetic


def synthetic_manager_episodes(conversations: Iterable[SynthConversation], embedder: Embedder, *,
                               related_k: int = RELATED_K) -> list[ManagerEpisode]:
    """One Manager episode per turn, the bank holding the gold memories of the turns before it."""
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        with scratch_bank(embedder) as bank:
            slot_ids: dict[str, str] = {}
            for synth in conv.turns:
                turn = Turn(synth.speaker, synth.text, synth.time, synth.turn_id)
                related = related_memories(bank, turn, related_k) if bank.count() else []
                id_map, _ = shown_memories(related)
                gold: list[dict[str, Any]] = []
                for op in synth.ops:
                    target = id_map.to_local.get(slot_ids.get(op.slot or "", ""))
                    if op.op == "ADD" or (op.op == "UPDATE" and target is None):
                        gold.append({"op": "ADD", "value": op.value})
                    elif op.op == "UPDATE":
                        gold.append({"op": "UPDATE", "id": target, "value": op.value})
                    elif op.op == "DELETE" and target is not None:
                        gold.append({"op": "DELETE", "id": target})
                episodes.append(ManagerEpisode(
                    episode_id=synth.turn_id,
                    turn=turn,
                    shown=[m.id for m in related],
                    bank=[_stored(m) for m in bank.list()],
                    questions=[{"question": q.question, "answer": q.answer, "candidates": list(q.candidates)}
                               for q in synth.questions],
                    gold_ops=gold,
                    kind=synth.kind,
                ))
                for op in synth.ops:  # the gold bank moves on
                    if op.op == "ADD":
                        slot_ids[op.slot] = bank.add(op.text, turn=synth.turn_id).id  # type: ignore[index]
                    elif op.op == "UPDATE":
                        bank.update(slot_ids[op.slot], op.text)  # type: ignore[index,arg-type]
                    elif op.op == "DELETE":
                        bank.delete(slot_ids.pop(op.slot))  # type: ignore[arg-type]
    return episodes


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
                              k: int = ANSWER_TOP_K) -> list[AnswerEpisode]:
    """One Answer episode per final question, over the conversation's final gold bank."""
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        with scratch_bank(embedder) as bank:
            slot_ids: dict[str, str] = {}
            for synth in conv.turns:
                for op in synth.ops:
                    if op.op == "ADD":
                        slot_ids[op.slot] = bank.add(op.text).id  # type: ignore[index]
                    elif op.op == "UPDATE":
                        bank.update(slot_ids[op.slot], op.text)  # type: ignore[index,arg-type]
                    elif op.op == "DELETE":
                        bank.delete(slot_ids.pop(op.slot))  # type: ignore[arg-type]
            for i, q in enumerate(conv.final_questions):
                hits = bank.search(q.question, k=k) if bank.count() else []
                memories = [_stored(h.memory) for h in hits]
                holder = slot_ids.get(q.slot)
                relevant = [str(j) for j, m in enumerate(memories) if m.key == holder]
                episodes.append(AnswerEpisode(f"{conv.sample_id}:q{i}", q.question, q.answer, memories, relevant))
    return episodes


# --------------------------------------------------------------------------- LoCoMo


def _turn_memory(speaker: str, text: str, when: str, dia_id: str) -> tuple[str, str, str]:
    return (dia_id, f"{speaker}: {text}", when)


def locomo_manager_episodes(conversations: Sequence[Any], embedder: Embedder, *, related_k: int = RELATED_K,
                            window: int = DEFAULT_WINDOW, only_with_questions: bool = True) -> list[ManagerEpisode]:
    """One Manager episode per LoCoMo turn (`edge.locomo.Conversation`s), over the previous `window` turns."""
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        by_evidence: dict[str, list[dict[str, Any]]] = {}
        for qa in conv.questions():
            for dia_id in qa.evidence:
                by_evidence.setdefault(dia_id, []).append({"question": qa.question, "answer": qa.answer,
                                                           "category": qa.category})
        with scratch_bank(embedder) as bank:
            live: list[str] = []  # memory ids, oldest first
            for session, loco in conv.turns():
                turn = Turn(loco.speaker, loco.full_text, session.date_time, loco.dia_id)
                questions = by_evidence.get(loco.dia_id, [])
                if questions or not only_with_questions:
                    related = related_memories(bank, turn, related_k) if live else []
                    episodes.append(ManagerEpisode(
                        episode_id=f"{conv.sample_id}:{loco.dia_id}",
                        turn=turn,
                        shown=[m.id for m in related],
                        bank=[_stored(m) for m in bank.list()],
                        questions=questions,
                    ))
                # The previous turns stand in for the facts a Manager would have kept from them: the Manager
                # is shown facts only (the episodic log is edge's own and never offered to it).
                memory = bank.add(f"{loco.speaker}: {loco.full_text}", tier="semantic", event_time=session.date_time,
                                  source_turns=[loco.dia_id])
                live.append(memory.id)
                if len(live) > window:
                    bank.delete(live.pop(0))
    return episodes


def locomo_answer_episodes(conversations: Sequence[Any], embedder: Embedder, *, k: int = ANSWER_TOP_K,
                           include_adversarial: bool = False) -> list[AnswerEpisode]:
    """One Answer episode per LoCoMo question, over a bank of every turn of its conversation."""
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        with scratch_bank(embedder) as bank:
            texts, times, sources = [], [], []
            for session, loco in conv.turns():
                texts.append(f"{loco.speaker}: {loco.full_text}")
                times.append(session.date_time)
                sources.append(loco.dia_id)
            from edge.operations import AddOp

            bank.apply([AddOp(t, "episodic", w, (s,)) for t, w, s in zip(texts, times, sources)])
            for qa in conv.questions(include_adversarial=include_adversarial):
                hits = bank.search(qa.question, k=k)
                memories = [_stored(h.memory) for h in hits]
                evidence = set(qa.evidence)
                relevant = [str(j) for j, h in enumerate(hits) if evidence & set(h.memory.source_turns)]
                episodes.append(AnswerEpisode(f"{conv.sample_id}:qa{qa.index}", qa.question, qa.answer, memories,
                                              relevant, qa.category))
    return episodes


def load_locomo_file(path: Path | str) -> list[Any]:
    from edge.locomo import load_locomo

    return load_locomo(path)
