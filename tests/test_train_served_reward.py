"""The Manager's outcome reward as served: the frozen, shipped Answer Agent reads the log and the facts.

Real stack: the bundled SmolLM2 with the default bundle's Answer adapter,
greedy, the real embedder and SQLite. On Ingrid's car the log alone answers
with the older value; the served reward pays the reply that supersedes the
Subaru fact (its newer version is read first, `stale-updates-first`), and
nothing for an ADD of the same clause, whose turn the reader is shown
anyway. Read without the log ("facts") that ADD looked as good as the
UPDATE: the reward paid for what the log already gave.
"""
from __future__ import annotations

import json

import pytest

from edge.answer import AnswerAgent
from edge.bank import MemoryBank
from edge.bundle import default_generation
from edge.prompts import Turn
from edge.train import rewards
from edge.train.config import ConfigError, RewardSettings
from edge.train.episodes import ManagerEpisode, StoredMemory, turn_candidates

INGRID = [  # (turn id, time, text)
    ("S:1", "2023-05-01T21:45", "I drive a Subaru."),
    ("S:2", "2023-05-01T21:46", "I have a pet rabbit."),
    ("S:3", "2023-06-01T09:15", "Just a reminder: I drive a Subaru."),
    ("S:4", "2023-06-24T15:00", "I traded my Subaru for a Jeep."),
]
CAR = {"question": "What car does Ingrid drive?", "answer": "Jeep"}


@pytest.fixture(scope="module")
def row() -> dict:
    """The Manager's episode at the trade: the Subaru fact shown as id 0, the four turns in the log."""
    log = [Turn("Ingrid", text, at, turn_id) for turn_id, at, text in INGRID]
    subaru = StoredMemory("car", "semantic", "Ingrid drive a Subaru.", INGRID[0][1], ("S:1",), {"speaker": "Ingrid"})
    return ManagerEpisode("ingrid:S:4", log[-1], ["car"], [subaru], [CAR], candidates=turn_candidates(log[-1]),
                          log=log).row()


@pytest.fixture(scope="module")
def reader(llama_backend) -> rewards.AgentReader:
    return rewards.AgentReader(AnswerAgent(llama_backend, generation=default_generation(), adapter="answer"))


def reply(op: str, **fields) -> str:
    return json.dumps({"ops": [{"op": op, **fields}]})


def test_the_served_reward_pays_the_update_and_not_an_add_the_log_already_holds(row, reader, minilm) -> None:
    (clause,) = turn_candidates(Turn("Ingrid", INGRID[3][2], INGRID[3][1], "S:4"))  # "Ingrid traded ... a Jeep."
    update, add, noop = reply("UPDATE", id="0", text=clause), reply("ADD", text=clause), reply("NOOP")
    served = {name: rewards.score_reply(text, row, reader, minilm, context="served")
              for name, text in (("update", update), ("add", add), ("noop", noop))}
    assert served["update"] == (1.0, ["Jeep"])
    assert served["noop"][0] == 0.0 and served["add"] == served["noop"], "the log alone gives the old value"
    facts = {name: rewards.score_reply(text, row, reader, minilm, context="facts")[0]
             for name, text in (("update", update), ("add", add), ("noop", noop))}
    assert facts == {"update": 1.0, "add": 1.0, "noop": 0.0}, "read without the log, the ADD looks as good"


def test_replies_that_leave_the_readers_lines_unchanged_share_one_model_call(row, minilm, llama_backend) -> None:
    reader = rewards.AgentReader(AnswerAgent(llama_backend, generation=default_generation(), adapter="answer"))
    first = rewards.score_reply(reply("NOOP"), row, reader, minilm, context="served")
    assert reader.calls == 1
    again = rewards.score_reply(reply("NOOP"), row, reader, minilm, context="served")
    add = rewards.score_reply(reply("ADD", text="Ingrid traded Ingrid's Subaru for a Jeep."), row, reader, minilm,
                              context="served")
    assert reader.calls == 1 and again == add == first, "same lines shown (the ADD's own turn is): the cached answer"
    update = rewards.score_reply(reply("UPDATE", id="0", text="Ingrid traded Ingrid's Subaru for a Jeep."), row,
                                 reader, minilm, context="served")
    assert reader.calls == 2 and update != first, "the newer fact read first: new lines, a model call"


def test_the_served_bank_holds_the_log_as_the_runtime_writes_it_and_the_facts_with_their_speaker(row, minilm) -> None:
    seen: list[MemoryBank] = []

    def look(bank: MemoryBank, question: dict) -> str:
        seen.append(bank)
        log = bank.list(tier="episodic")
        assert [m.source_turns for m in log] == [(t,) for t, _, _ in INGRID]
        assert all(m.metadata["speaker"] == "Ingrid" for m in log)
        (fact,) = bank.list(tier="semantic")
        assert fact.source_turns == ("S:1",) and fact.metadata["speaker"] == "Ingrid"
        return "Subaru"

    assert rewards.score_reply(reply("NOOP"), row, look, minilm, context="served") == (0.0, ["Subaru"])
    assert len(seen) == 1
    with pytest.raises(ValueError, match="context"):
        rewards.score_reply(reply("NOOP"), row, look, minilm, context="log")
    with pytest.raises(ValueError, match="needs the episode's log"):
        rewards.score_reply(reply("NOOP"), {**row, "log": "[]"}, look, minilm, context="served")


def test_a_served_reward_needs_the_answer_agent_as_its_reader() -> None:
    assert RewardSettings(context="served").reader == "agent"
    with pytest.raises(ConfigError, match="needs reader = 'agent'"):
        RewardSettings(context="served", reader="candidates")
    with pytest.raises(ConfigError, match="context must be"):
        RewardSettings(context="everything")


def test_the_bundled_reader_is_the_default_bundles_answer_agent(default_bundle, edge_home) -> None:
    """`reader_adapter = "bundled"`: the bundle's own model file (not the bundled base) with its Answer adapter,
    decoding as the default bundle does."""
    from edge import paths
    from edge.train.config import load_config
    from edge.train.recipe import build_reader

    target = paths.default_bundle_dir()
    target.symlink_to(default_bundle.root, target_is_directory=True)  # the cached build, not a second one
    reader = build_reader(load_config("smollm2-135m-manager-outcome"))
    try:
        model, _ = default_bundle.role("answer")
        assert reader.agent.backend.model_path.resolve() == model.resolve()
        assert reader.agent.adapter == "answer" and "answer" in reader.agent.backend.adapters
        assert reader.agent.generation.answer_order == default_generation().answer_order
    finally:
        reader.agent.backend.close()
