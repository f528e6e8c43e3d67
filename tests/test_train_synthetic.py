"""The synthetic episode generator: deterministic, disjoint splits, gold operations that track the latest state."""
from __future__ import annotations

from collections import Counter

import pytest

from edge.train.synthetic import SLOT_BY_NAME, SPLITS, UNKNOWN, generate, generate_conversation, split_seeds


def test_same_seed_gives_the_same_conversation():
    a, b = generate_conversation(1234), generate_conversation(1234)
    assert a == b
    assert generate_conversation(1235) != a


def test_splits_never_share_a_seed():
    ranges = list(SPLITS.values())
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:
            assert not set(first) & set(second) if len(first) < 10 else (
                first.stop <= second.start or second.stop <= first.start
            )
    train, dev, test = split_seeds("train", 50), split_seeds("dev", 50), split_seeds("test", 50)
    assert not (set(train) & set(dev) or set(train) & set(test) or set(dev) & set(test))
    with pytest.raises(ValueError):
        split_seeds("dev", len(SPLITS["dev"]) + 1)
    with pytest.raises(ValueError):
        split_seeds("holdout", 1)


def test_offsets_continue_a_split_without_overlap():
    first = [c.seed for c in generate("test", 3)]
    second = [c.seed for c in generate("test", 3, offset=3)]
    assert not set(first) & set(second)


def test_gold_operations_replay_to_the_answers_of_every_question():
    """Applying the gold ops in order gives exactly the state each question asks about."""
    kinds: Counter = Counter()
    for conv in generate("train", 40):
        state: dict[str, str] = {}
        for turn in conv.turns:
            kinds[turn.kind] += 1
            for op in turn.ops:
                if op.op == "ADD":
                    assert op.slot not in state, "ADD of a fact the person already has"
                    state[op.slot] = op.value
                    assert op.value in op.text
                elif op.op == "UPDATE":
                    assert op.slot in state and state[op.slot] != op.value
                    state[op.slot] = op.value
                elif op.op == "DELETE":
                    assert SLOT_BY_NAME[op.slot].retract
                    del state[op.slot]
            for q in turn.questions:
                assert q.answer == state.get(q.slot, UNKNOWN)
                assert q.answer == UNKNOWN or q.answer in q.candidates
        for q in conv.final_questions:
            assert q.answer == state.get(q.slot, UNKNOWN)
    assert set(kinds) == {"intro", "change", "retract", "repeat", "chat"}
    assert min(kinds.values()) > 20  # every kind is common enough to learn and to measure


def test_turns_say_the_new_value_and_never_leak_it_elsewhere():
    for conv in generate("dev", 20):
        for turn in conv.turns:
            for op in turn.ops:
                if op.op in ("ADD", "UPDATE"):
                    assert op.value in turn.text
            if turn.kind == "chat":
                assert turn.ops[0].op == "NOOP"


def test_activity_conversations_add_once_then_extend_and_ask_for_the_whole_list():
    from edge.grounding import clauses
    from edge.train.synthetic import ACTIVITY_QUESTION, activity_conversation, activity_conversations

    assert activity_conversation(7) == activity_conversation(7) != activity_conversation(8)
    assert generate_conversation(7) == generate_conversation(7), "its own random stream: the others are unchanged"
    for conv in activity_conversations("test", 12):
        told = [t for t in conv.turns if t.kind != "chat"]
        ops = [t.ops[0].op for t in told]
        assert ops[0] == "ADD" and set(ops[1:]) == {"EXTEND"} and len(told) >= 3
        assert all(t.ops == (t.ops[0],) and t.ops[0].op == "NOOP" for t in conv.turns if t.kind == "chat")
        assert len({t.time for t in told}) == len(told), "one activity per session"
        (question,) = conv.final_questions
        assert question.question == ACTIVITY_QUESTION.format(name=conv.person)
        assert question.answer.split(", ") == [t.ops[0].value for t in told], "every activity, in the order told"
        for turn in told:  # the value is a clause's: an extractive Manager can keep it
            assert any(turn.ops[0].value in c for c in clauses(turn.text, conv.person)), turn.text
