"""Reward functions on hand-made cases (no model)."""
from __future__ import annotations

import json

import pytest

from edge.bank import MemoryBank
from edge.embedder import HashEmbedder
from edge.errors import BankError, EdgeError
from edge.prompts import Turn
from edge.train import rewards
from edge.train.episodes import ManagerEpisode, StoredMemory

CITIES = ["Lisbon", "Oslo", "Porto"]
PETS = ["dog", "cat"]


def _episode(kind: str, text: str, questions: list[dict], gold: list[dict]) -> dict:
    bank = [
        StoredMemory("m-city", "semantic", "Maya lives in Lisbon."),
        StoredMemory("m-pet", "semantic", "Maya has a pet dog."),
    ]
    episode = ManagerEpisode("e1", Turn("Maya", text, "1:56 pm on 8 May, 2023", "S1:2"), ["m-city", "m-pet"], bank,
                             questions, gold, kind)
    return episode.row()


def _columns(rows: list[dict]) -> dict:
    return {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}


CITY_Q = {"question": "Which city does Maya live in?", "answer": "Oslo", "candidates": CITIES}
PET_Q = {"question": "What pet does Maya have?", "answer": "dog", "candidates": PETS}


def _reply(*ops: dict) -> str:
    return json.dumps({"ops": list(ops)})


def test_completion_text_accepts_strings_and_chat_messages():
    assert rewards.completion_text("x") == "x"
    assert rewards.completion_text([{"role": "assistant", "content": "y"}]) == "y"


def test_answer_em_normalises_case_articles_and_punctuation():
    completions = [
        json.dumps({"relevant": ["0"], "answer": "The Cat!"}),
        [{"role": "assistant", "content": json.dumps({"relevant": [], "answer": "a dog"})}],
        "not json at all",
    ]
    scores = rewards.answer_em_reward(None, completions, answer=["cat", "cat", "cat"], shown_ids=['["0"]'] * 3)
    assert scores == [1.0, 0.0, 0.0]


def test_answer_f1_gives_partial_credit():
    reply = json.dumps({"relevant": [], "answer": "in Lisbon, Portugal"})
    assert rewards.answer_f1_reward(None, [reply], answer=["Lisbon"], shown_ids=["[]"])[0] == pytest.approx(0.5)


def test_answer_format_reward():
    ok = json.dumps({"relevant": ["0"], "answer": "x"})
    assert rewards.answer_format_reward(None, [ok, "x"], shown_ids=['["0"]', '["0"]']) == [1.0, 0.0]


def test_manager_format_reward_gives_partial_credit():
    valid = _reply({"op": "NOOP"})
    half_bad = _reply({"op": "DELETE", "id": "0"}, {"op": "DELETE", "id": "7"})
    prose = 'Sure! {"ops": [{"op": "NOOP"}]} hope that helps'
    broken = '{"ops": [{"op": "ADD"'
    scores = rewards.manager_format_reward(None, [valid, half_bad, prose, broken, "nothing"],
                                           shown_ids=['["0", "1"]'] * 5)
    assert scores[0] == 1.0
    assert 0.5 <= scores[1] < 1.0
    assert scores[2] == 1.0  # the parser finds the JSON inside prose
    assert 0.0 < scores[3] < 0.5
    assert scores[4] == 0.0
    assert rewards.manager_format_reward(None, ['{"memory": []}'], shown_ids=['[]']) == [rewards.FORMAT_NO_OPS_LIST]
    assert len(set(scores)) >= 4  # different replies, different rewards: a gradient exists


def test_compression_counts_added_memories():
    replies = [_reply({"op": "NOOP"}), _reply({"op": "ADD", "tier": "semantic", "text": "a"},
                                              {"op": "ADD", "tier": "semantic", "text": "b"}),
               _reply({"op": "UPDATE", "id": "0", "text": "c"})]
    assert rewards.manager_compression_reward(None, replies, shown_ids=['["0"]'] * 3) == [0.0, -2.0, 0.0]


def test_in_memory_bank_opens_for_reward_copies():
    bank = MemoryBank.open(":memory:", HashEmbedder())
    bank.add("Maya lives in Lisbon.")
    assert bank.count() == 1
    bank.close()


def test_candidate_reader_needs_one_unambiguous_value():
    reader = rewards.CandidateReader()
    bank, _ = rewards.rebuild_bank([{"key": "a", "tier": "semantic", "text": "Maya lives in Lisbon."}], HashEmbedder())
    assert reader(bank, {**CITY_Q, "answer": "Lisbon"}) == "Lisbon"
    bank.add("Maya moved from Lisbon to Oslo.")  # the last-mentioned city is what a memory states
    assert reader(bank, CITY_Q) not in ("Lisbon", "Oslo")  # stale and new together: no answer
    assert reader(bank, PET_Q) == "unknown"
    bank.close()
    with pytest.raises(BankError, match="closed database"):  # the reader really reads the bank
        reader(bank, CITY_Q)
    with pytest.raises(EdgeError, match="needs questions with candidate answers"):
        reader(bank, {"question": "Where?", "answer": "x"})


def test_outcome_reward_prefers_the_right_operation():
    row = _episode("change", "I moved from Lisbon to Oslo!", [CITY_Q, PET_Q],
                   [{"op": "UPDATE", "id": "0", "value": "Oslo"}])
    replies = [
        _reply({"op": "UPDATE", "id": "0", "text": "Maya lives in Oslo."}),  # right
        _reply({"op": "ADD", "tier": "semantic", "text": "Maya moved to Oslo."}),  # stale fact kept
        _reply({"op": "NOOP"}),  # change missed
        # wrong memory: refused by the runtime's check (the turn says nothing of the pet), so the bank is as before
        _reply({"op": "UPDATE", "id": "1", "text": "Maya lives in Oslo."}),
        '{"ops": [',  # unparsable: the bank is left as it was
    ]
    reward = rewards.ManagerOutcomeReward(rewards.CandidateReader(), HashEmbedder())
    logged = {}
    cols = _columns([row] * len(replies))
    scores = reward(None, replies, **cols, log_metric=lambda k, v: logged.setdefault(k, v))
    assert scores == [1.0, 0.5, 0.5, 0.5, 0.5]
    assert logged["op_accuracy"] == pytest.approx(1 / 5)


def test_outcome_reward_for_a_retraction_wants_the_fact_gone():
    row = _episode("retract", "Sadly our dog passed away.", [{**PET_Q, "answer": "unknown"}],
                   [{"op": "DELETE", "id": "1"}])
    replies = [_reply({"op": "DELETE", "id": "1"}), _reply({"op": "ADD", "tier": "semantic", "text": "Maya's dog died."}),
               _reply({"op": "DELETE", "id": "0"})]
    reward = rewards.ManagerOutcomeReward(rewards.CandidateReader(), HashEmbedder())
    assert reward(None, replies, **_columns([row] * 3)) == [1.0, 0.0, 0.0]


def test_outcome_reward_is_none_without_questions():
    row = _episode("chat", "Haha.", [], [])
    reward = rewards.ManagerOutcomeReward(rewards.CandidateReader(), HashEmbedder())
    assert reward(None, [_reply({"op": "NOOP"})], **_columns([row])) == [None]


def test_operation_match_compares_kinds_and_targets_not_texts():
    from edge.prompts import parse_manager_output

    gold = [{"op": "UPDATE", "id": "0", "value": "Oslo"}]
    same = parse_manager_output(_reply({"op": "UPDATE", "id": "0", "text": "anything"}), ["0", "1"])
    other_id = parse_manager_output(_reply({"op": "UPDATE", "id": "1", "text": "Oslo"}), ["0", "1"])
    assert rewards.ops_match(same, gold) and not rewards.ops_match(other_id, gold)
    assert not rewards.values_stated(same, gold) and rewards.values_stated(other_id, gold)
    noop = parse_manager_output(_reply({"op": "NOOP"}), ["0"])
    assert rewards.ops_match(noop, []) and not rewards.ops_match(noop, gold)
    scores = rewards.manager_op_match_reward(None, [_reply({"op": "NOOP"})] * 2, shown_ids=['["0"]'] * 2,
                                             gold_ops=["[]", "null"])
    assert scores == [1.0, None]


def test_operation_match_score_grades_kinds_then_targets():
    from edge.prompts import parse_manager_output

    ids = ["0", "1"]
    update = [{"op": "UPDATE", "id": "0", "value": "Oslo"}]

    def score(gold: list[dict], *ops: dict) -> float:
        return rewards.op_match_score(parse_manager_output(_reply(*ops), ids), gold)

    assert score(update, {"op": "UPDATE", "id": "0", "text": "Maya lives in Oslo."}) == 1.0
    assert score(update, {"op": "UPDATE", "id": "1", "text": "Maya lives in Oslo."}) == 0.5  # right kind, wrong memory
    assert score(update, {"op": "ADD", "tier": "semantic", "text": "Maya lives in Oslo."}) == 0.0
    assert score(update, {"op": "NOOP"}) == 0.0
    both = score(update, {"op": "UPDATE", "id": "0", "text": "x"}, {"op": "ADD", "tier": "semantic", "text": "y"})
    assert both == pytest.approx(2 / 3)  # precision 1/2, recall 1 for kinds and for pairs
    assert score([], {"op": "NOOP"}) == 1.0 and score([], {"op": "ADD", "tier": "semantic", "text": "x"}) == 0.0
    assert score([{"op": "ADD", "value": "dog"}], {"op": "ADD", "tier": "core", "text": "anything"}) == 1.0
    assert score([{"op": "DELETE", "id": "1"}], {"op": "DELETE", "id": "0"}) == 0.5
    broken = parse_manager_output("not json", ids)
    assert rewards.op_match_score(broken, []) == 0.0
    reply = _reply({"op": "UPDATE", "id": "1", "text": "Maya lives in Oslo."})
    assert rewards.manager_op_match_reward(None, [reply], shown_ids=[json.dumps(ids)],
                                           gold_ops=[json.dumps(update)]) == [0.5]
