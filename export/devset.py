"""A small fixed dev set that scores a model on the two jobs it is exported for.

It is not a benchmark (LoCoMo is, in `edge eval`): it is a handful of
Manager turns and Answer Agent questions, sent with the runtime's own
prompts and schemas (`edge.prompts`), so that a quantised export can be
compared with its float original on the same items. Scores are in [0, 1]:

    manager  half for the reply's format (`edge.train.rewards.manager_format_score`), half
             for proposing the expected operations (Jaccard over "ADD",
             "UPDATE:<id>", "DELETE:<id>", "NOOP")
    answer   token F1 of the answer against the gold answer
"""
from __future__ import annotations

from dataclasses import dataclass

from edge.evaluation.scoring import f1_score
from edge.prompts import (
    ShownMemory,
    Turn,
    answer_messages,
    answer_schema,
    manager_messages,
    manager_schema,
    parse_answer_output,
    parse_manager_output,
)
from edge.train.rewards import manager_format_score


@dataclass(frozen=True)
class DevItem:
    role: str  # "manager" | "answer"
    messages: list[dict[str, str]]
    schema: dict
    shown_ids: tuple[str, ...]
    expected: tuple[str, ...]  # manager: op keys; answer: (gold answer,)
    max_tokens: int


def _m(i: int, text: str, tier: str = "semantic", when: str | None = None) -> ShownMemory:
    return ShownMemory(str(i), tier, text, when)


_MANAGER_CASES = [
    (Turn("Alice", "I just adopted a puppy named Biscuit!", "2024-05-02"), [], ("ADD",)),
    (Turn("Alice", "I moved from Porto to Lisbon last month.", "2024-06-10"),
     [_m(0, "Alice lives in Porto."), _m(1, "Alice works as a nurse.")], ("UPDATE:0",)),
    (Turn("Alice", "Haha, that's funny.", "2024-06-11"), [_m(0, "Alice has a cat called Tom.")], ("NOOP",)),
    (Turn("Bob", "I don't play the guitar anymore, I sold it.", "2024-03-01"),
     [_m(0, "Bob plays the guitar."), _m(1, "Bob likes jazz.")], ("DELETE:0",)),
    (Turn("Bob", "My sister Maya is getting married in June.", "2024-01-15"),
     [_m(0, "Bob likes jazz.")], ("ADD",)),
    (Turn("Alice", "I'm allergic to peanuts, by the way.", None), [], ("ADD",)),
    (Turn("Bob", "I started a new job at the bakery on Main Street.", "2024-04-03"),
     [_m(0, "Bob works at a bookshop."), _m(1, "Bob has two brothers.")], ("UPDATE:0",)),
    (Turn("Alice", "Okay, see you tomorrow!", "2024-06-12"), [_m(0, "Alice lives in Lisbon.")], ("NOOP",)),
]

_ANSWER_CASES = [
    ([_m(0, "Alice's dog is called Biscuit."), _m(1, "Alice lives in Lisbon.")],
     "What is the name of Alice's dog?", "Biscuit"),
    ([_m(0, "Alice lives in Lisbon."), _m(1, "Alice works as a nurse.")], "Where does Alice live?", "Lisbon"),
    ([_m(0, "Bob's sister is called Maya."), _m(1, "Bob likes jazz.")], "What is Bob's sister's name?", "Maya"),
    ([_m(0, "Alice works as a nurse."), _m(1, "Alice is allergic to peanuts.")],
     "What is Alice's job?", "nurse"),
    ([_m(0, "Bob went hiking in the Alps.", "episodic", "2023-08-12"), _m(1, "Bob likes jazz.")],
     "Where did Bob go hiking?", "the Alps"),
    ([_m(0, "Alice is allergic to peanuts."), _m(1, "Alice has a cat called Tom.")],
     "What is Alice allergic to?", "peanuts"),
    ([_m(0, "Alice has a cat called Tom."), _m(1, "Alice's dog is called Biscuit.")],
     "What is the name of Alice's cat?", "Tom"),
    ([_m(0, "Bob plays the guitar."), _m(1, "Bob's sister Maya got married in June 2024.", "episodic", "2024-06-20")],
     "When did Maya get married?", "June 2024"),
]


def dev_items(roles: tuple[str, ...] = ("manager", "answer"), *, per_role: int | None = None) -> list[DevItem]:
    """The dev items for `roles`, in a fixed order (the first `per_role` of each role when given)."""
    manager = []
    for turn, related, expected in _MANAGER_CASES:
        ids = tuple(m.id for m in related)
        manager.append(DevItem("manager", manager_messages(turn, related), manager_schema(ids), ids, expected, 64))
    answer = []
    for memories, question, gold in _ANSWER_CASES:
        ids = tuple(m.id for m in memories)
        answer.append(DevItem("answer", answer_messages(question, memories), answer_schema(ids), ids, (gold,), 40))
    by_role = {"manager": manager, "answer": answer}
    return [item for role in roles for item in by_role[role][:per_role]]


def score(item: DevItem, text: str) -> float:
    """How well `text` (a model's reply) does `item`, in [0, 1]."""
    if item.role == "manager":
        parsed = parse_manager_output(text, item.shown_ids)
        proposed = {op.op if op.op == "ADD" else f"{op.op}:{op.id}" for op in parsed.ops}
        if parsed.ok and not proposed and not parsed.rejected:
            proposed = {"NOOP"}
        expected = set(item.expected)
        overlap = len(proposed & expected) / len(proposed | expected) if proposed or expected else 1.0
        return 0.5 * manager_format_score(text, parsed) + 0.5 * overlap
    parsed = parse_answer_output(text, item.shown_ids)
    return f1_score(parsed.answer, item.expected[0])  # the token F1 `edge eval` reports


