"""Episode builders on the shipped LoCoMo conversation and on synthetic data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.embedder import HashEmbedder
from edge.train.episodes import (
    locomo_answer_episodes,
    locomo_manager_episodes,
    synthetic_answer_episodes,
    synthetic_manager_episodes,
)
from edge.train.synthetic import generate

CONV_26 = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "conv-26.json"


@pytest.fixture(scope="module")
def conv26():
    if not CONV_26.is_file():
        pytest.skip(f"LoCoMo data not found at {CONV_26}")
    from edge.locomo import load_locomo

    return load_locomo(CONV_26)


def _turn_order(conv) -> dict[str, int]:
    return {turn.dia_id: i for i, (_, turn) in enumerate(conv.turns())}


def test_locomo_manager_episodes_see_only_earlier_turns(conv26):
    conv = conv26[0]
    episodes = locomo_manager_episodes(conv26, HashEmbedder(), window=50)
    order = _turn_order(conv)
    evidence = {d for qa in conv.questions() for d in qa.evidence}
    assert {e.turn.turn_id for e in episodes} == evidence & set(order)
    for e in episodes:
        here = order[e.turn.turn_id]
        earlier = [order[_source(conv, m.text)] for m in e.bank]
        assert all(i < here for i in earlier), "the bank holds a turn from the future"
        assert len(e.bank) <= 50
        assert set(e.shown) <= {m.key for m in e.bank} and len(e.shown) <= 8
        assert e.questions and all(q["question"] for q in e.questions)
        assert e.gold_ops is None
        assert e.turn.time  # every turn is dated with its session
    first = min(episodes, key=lambda e: order[e.turn.turn_id])
    assert len(first.bank) == order[first.turn.turn_id]  # every earlier turn, until the window fills


def _source(conv, text: str) -> str:
    for _, turn in conv.turns():
        if text == f"{turn.speaker}: {turn.full_text}".strip():
            return turn.dia_id
    raise AssertionError(f"memory {text[:40]!r} is no turn of the conversation")


def test_locomo_answer_episodes_cover_the_152_questions(conv26):
    episodes = locomo_answer_episodes(conv26, HashEmbedder(), k=60)
    assert len(episodes) == 152
    with_evidence = 0
    for e in episodes:
        assert len(e.memories) == 60
        assert e.category in (1, 2, 3, 4)
        assert all(0 <= int(i) < 60 for i in e.relevant)
        with_evidence += bool(e.relevant)
        assert "Question:" in e.messages()[-1]["content"]
    assert with_evidence > 50  # top-60 retrieval finds evidence turns for many questions


def test_rows_carry_the_runtime_prompt_and_schema(conv26):
    episode = locomo_manager_episodes(conv26, HashEmbedder())[5]
    row = episode.row()
    assert row["prompt"] == episode.messages()
    schema = json.loads(row["schema"])
    ids = json.loads(row["shown_ids"])
    assert ids == [str(i) for i in range(len(episode.shown))]
    update = [v for v in schema["properties"]["ops"]["items"]["anyOf"] if v["properties"]["op"].get("const") == "UPDATE"]
    assert update[0]["properties"]["id"]["enum"] == ids


def test_synthetic_manager_episodes_express_gold_ops_in_shown_ids():
    episodes = synthetic_manager_episodes(generate("dev", 6), HashEmbedder())
    assert episodes
    kinds = set()
    for e in episodes:
        kinds.add(e.kind)
        for op in e.gold_ops:
            if op["op"] in ("UPDATE", "DELETE"):
                assert op["id"] in e.shown_ids
            else:
                assert op["op"] == "ADD" and op["value"]
        if e.kind in ("chat", "repeat"):
            assert e.gold_ops == []
        by_key = {m.key: m.text for m in e.bank}
        for op in e.gold_ops:
            if op["op"] == "UPDATE":
                assert op["value"] not in by_key[e.shown[int(op["id"])]]  # the memory to change holds the old value
    assert {"intro", "change", "retract", "chat", "repeat"} <= kinds


def test_synthetic_answer_episodes_point_at_the_memory_that_answers():
    episodes = synthetic_answer_episodes(generate("dev", 4), HashEmbedder(), k=10)
    assert episodes
    for e in episodes:
        if e.answer == "unknown":
            assert not e.relevant
        else:
            assert len(e.relevant) == 1
            assert e.answer in e.memories[int(e.relevant[0])].text


def test_balanced_operations_come_in_rounds_and_keep_every_episode():
    from collections import Counter

    from edge.train.episodes import balance_ops, gold_operation, synthetic_manager_episodes
    from edge.train.synthetic import generate

    episodes = synthetic_manager_episodes(generate("train", 12), HashEmbedder(), related_k=8)
    natural = Counter(gold_operation(e) for e in episodes)
    assert set(natural) == {"ADD", "UPDATE", "DELETE", "NOOP"} and natural["DELETE"] < natural["ADD"]
    balanced = balance_ops(episodes, seed=3)
    counts = Counter(gold_operation(e) for e in balanced)
    assert set(counts.values()) == {max(natural.values())}
    assert {e.episode_id for e in balanced} == {e.episode_id for e in episodes}
    assert [e.episode_id for e in balance_ops(episodes, seed=3)] == [e.episode_id for e in balanced]
    assert [e.episode_id for e in balance_ops(episodes, seed=4)] != [e.episode_id for e in balanced]
    assert all(len({gold_operation(e) for e in balanced[i:i + 4]}) == 4 for i in range(0, len(balanced), 4))
    assert balance_ops([], seed=0) == []
