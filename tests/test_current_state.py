"""Current state: a fact the conversation changed is superseded, not lost, and the Answer Agent can read the newest first.

The Manager is the real bundled SmolLM2 with its shipped adapter; the orders
of the Answer Agent (`generation.answer_order`) are checked on a real bank
(real SQLite, the real embedder, the real model's tokenizer) whose
supersession is written directly, so that what each order does is tested
whatever the Manager decides. bench/bench_knowledge_update.py measures the
orders on held-out synthetic conversations.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.agent import Agent
from edge.answer import AnswerAgent
from edge.bank import MemoryBank
from edge.bundle import DEFAULT_GENERATION, default_generation
from edge.errors import InvalidInputError
from edge.generation import ANSWER_ORDERS, GenerationConfig
from edge.operations import AddOp, DeleteOp, SupersedeOp

TOMAS_JOB = [
    {"speaker": "Tomas", "time": "2025-03-02 10:00", "text": "I started at the bakery on Main Street."},
    {"speaker": "Tomas", "time": "2025-03-02 10:05", "text": "My sister Ines is visiting in May."},
    {"speaker": "Tomas", "time": "2025-03-09 18:30", "text": "I left the bakery, I work at the city library now."},
]
WHERE_NOW = "Where does Tomas work now?"


# ----------------------------------------------------------------------------- the turns, real model


@pytest.fixture(scope="module")
def tomas(tmp_path_factory, default_bundle) -> Agent:
    db = tmp_path_factory.mktemp("current-state") / "agent.db"
    with Agent(bundle=default_bundle, db=db, user="tomas") as agent:
        agent.remember(TOMAS_JOB, wait=True)
        yield agent


def test_the_job_change_supersedes_the_bakery_fact_until_the_library_turn(tomas: Agent) -> None:
    log = tomas.bank.list(tier="episodic")
    assert [m.text for m in log] == [t["text"] for t in TOMAS_JOB], "both versions stay in the log, verbatim"
    library_turn = log[2].source_turns[0]
    facts = tomas.bank.list(tier=("semantic", "core"), include_superseded=True)
    old = [m for m in facts if m.superseded and "bakery on Main Street" in m.text]
    assert len(old) == 1, [(m.text, m.valid_until) for m in facts]
    assert old[0].valid_until == "2025-03-09T18:30", "valid until the turn that changed it was said"
    assert old[0].superseded_turn == library_turn
    current = [m for m in tomas.bank.list(tier=("semantic", "core")) if "library" in m.text]
    assert len(current) == 1 and old[0].superseded_by == current[0].id, "the newer version is the current fact"
    assert current[0].metadata.get("supersedes") == old[0].id
    assert current[0].source_turns == (library_turn,)


@pytest.mark.parametrize("order", ["stale-updates-first", "rank", "current-first"])
def test_where_tomas_works_now_is_the_library(tomas: Agent, order: str) -> None:
    """The shipped bundle answers from the newest job: "city library", not the bakery's "Main Street"."""
    served = tomas.answerer.order
    assert served == "stale-updates-first", "the default bundle's order"
    tomas.answerer.order = order
    try:
        result = tomas.ask(WHERE_NOW)
    finally:
        tomas.answerer.order = served
    assert "library" in result.answer.lower(), (result.answer, [(m.tier, m.text) for m in result.memories])


def test_every_order_shows_both_turns_and_answers_from_what_it_showed(tomas: Agent) -> None:
    served = tomas.answerer.order
    for order in ANSWER_ORDERS:
        tomas.answerer.order = order
        try:
            result = tomas.ask(WHERE_NOW)
        finally:
            tomas.answerer.order = served
        shown = [m.text for m in result.retrieved]
        assert all(t["text"] in shown for t in TOMAS_JOB), (order, shown)
        assert not any(m.superseded for m in result.retrieved), "a superseded fact is never read"
        assert result.supported, (order, result.answer)


# ----------------------------------------------------------------------------- the orders, on a written bank

INGRID = [  # (turn id, time, text)
    ("S:1", "2023-05-01T21:45", "I drive a Subaru."),
    ("S:2", "2023-05-01T21:46", "I have a pet rabbit."),
    ("S:3", "2023-06-01T09:15", "Just a reminder: I drive a Subaru."),
    ("S:4", "2023-06-24T15:00", "I traded my Subaru for a Jeep."),
]
CAR = "What car does Ingrid drive?"


@pytest.fixture
def ingrid(tmp_path: Path, minilm) -> MemoryBank:
    """Four turns of the log and the fact of the first, superseded by the fourth (as the Manager's UPDATE writes it)."""
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="ingrid") as bank:
        for turn_id, at, text in INGRID:
            bank.apply([AddOp(text, "episodic", at, (turn_id,), {"speaker": "Ingrid", "turn_id": turn_id})],
                       actor="import")
        (added,) = bank.apply([AddOp("Ingrid drive a Subaru.", "semantic", INGRID[0][1], ("S:1",),
                                     {"speaker": "Ingrid", "said_at": INGRID[0][1]})], actor="manager")
        bank.apply([SupersedeOp(added.memory_id, "Ingrid traded Ingrid's Subaru for a Jeep.", INGRID[3][1], "S:4",
                                INGRID[3][1], ("S:4",), {"speaker": "Ingrid", "said_at": INGRID[3][1]})],
                   actor="manager", turn="S:4")
        yield bank


def shown_turns(agent: AnswerAgent, bank: MemoryBank) -> list[str]:
    memories, _ = agent.context(bank, CAR)
    return [m.source_turns[0] for m in memories if m.tier == "episodic"]


def test_rank_unless_a_bundle_names_an_order_and_the_default_bundle_reads_updates_over_stale_values() -> None:
    assert GenerationConfig().answer_order == "rank", "a bundle that names no order reads as it always did"
    assert default_generation().answer_order == DEFAULT_GENERATION["answer_order"] == "stale-updates-first"
    with pytest.raises(InvalidInputError, match="answer_order"):
        GenerationConfig(answer_order="newest")


def test_every_order_shows_the_turns_rank_shows_and_no_superseded_fact(ingrid: MemoryBank, llama_backend) -> None:
    rank = AnswerAgent(llama_backend, adapter=None)
    shown = set(shown_turns(rank, ingrid))
    assert shown == {"S:1", "S:2", "S:3", "S:4"}
    for order in ANSWER_ORDERS:
        agent = AnswerAgent(llama_backend, adapter=None, order=order)
        memories, lines = agent.context(ingrid, CAR)
        assert shown <= {m.source_turns[0] for m in memories if m.tier == "episodic"}, order
        assert not any(m.superseded for m in memories), order
        assert all(line.until is None for line in lines), order


def test_rank_leaves_out_the_fact_whose_turn_is_shown(ingrid: MemoryBank, llama_backend) -> None:
    memories, _ = AnswerAgent(llama_backend, adapter=None).context(ingrid, CAR)
    assert all(m.tier == "episodic" for m in memories)


def test_newest_first_shows_the_latest_turn_first(ingrid: MemoryBank, llama_backend) -> None:
    order = shown_turns(AnswerAgent(llama_backend, adapter=None, order="newest-first"), ingrid)
    assert order == ["S:4", "S:3", "S:2", "S:1"]


def test_topic_newest_puts_the_trade_before_the_turns_about_the_subaru(ingrid: MemoryBank, llama_backend) -> None:
    order = shown_turns(AnswerAgent(llama_backend, adapter=None, order="topic-newest"), ingrid)
    assert order.index("S:4") < order.index("S:1") and order.index("S:4") < order.index("S:3")
    assert order.index("S:3") < order.index("S:1"), "newest first among the turns of one topic"


def test_superseding_turns_moves_the_trade_before_the_turn_it_retired(ingrid: MemoryBank, llama_backend) -> None:
    rank = shown_turns(AnswerAgent(llama_backend, adapter=None), ingrid)
    order = shown_turns(AnswerAgent(llama_backend, adapter=None, order="superseding-turns"), ingrid)
    assert sorted(order) == sorted(rank)
    assert order.index("S:4") < order.index("S:1")


@pytest.mark.parametrize("order", ["updates-first", "facts-first", "current-first", "stale-updates-first"])
def test_the_newer_fact_comes_before_every_turn(ingrid: MemoryBank, llama_backend, order: str) -> None:
    memories, lines = AnswerAgent(llama_backend, adapter=None, order=order).context(ingrid, CAR)
    assert memories[0].text == "Ingrid traded Ingrid's Subaru for a Jeep."
    assert memories[0].metadata.get("supersedes")
    assert [m.tier for m in memories[1:]] == ["episodic"] * 4


def test_stale_updates_first_reads_the_newer_fact_first_only_when_the_older_value_is_offered(
        ingrid: MemoryBank, llama_backend) -> None:
    """The Subaru turn (S:1, the older version's) is offered for the car question, so the Jeep fact leads; once
    that turn is gone nothing stale is offered, and the fact is read as "rank" reads it (its own turn is shown)."""
    from edge.answer import stale_turns

    newer = ingrid.list(tier="semantic")[0]
    assert stale_turns(ingrid, newer) == {"S:1"}
    agent = AnswerAgent(llama_backend, adapter=None, order="stale-updates-first")
    retrieved = agent.retrieve(ingrid, CAR)
    assert retrieved[0].id == newer.id and [m.tier for m in retrieved[1:]] == ["episodic"] * 4
    # A fresh log where the Subaru turn is gone (deleted, recoverably): nothing stale is offered.
    (subaru,) = [m for m in ingrid.list(tier="episodic") if m.source_turns == ("S:1",)]
    ingrid.apply([DeleteOp(subaru.id)], actor="user")
    retrieved = agent.retrieve(ingrid, CAR)
    assert [m.tier for m in retrieved] == ["episodic"] * 3, "its own turn is shown: read as rank reads it (not at all)"
    assert stale_turns(ingrid, ingrid.list(tier="episodic")[0]) == set(), "a turn replaced nothing"


# ----------------------------------------------------------------------------- retired values, withheld

def test_a_retired_value_is_no_reply_but_the_current_state_and_the_past_are() -> None:
    """`answer_spans` with the Subaru retired: "Subaru" alone is withheld, every span naming the Jeep is offered,
    and a question about the earlier car is offered the Subaru again."""
    from edge.prompts import Retirement, ShownMemory, answer_spans
    from edge.prompts.common import show_date

    lines = [ShownMemory("0", "episodic", "I drive a Subaru.", "2023-05-01T21:45"),
             ShownMemory("1", "episodic", "I traded my Subaru for a Jeep.", "2023-06-24T15:00")]
    subaru = Retirement(frozenset({"subaru"}), frozenset({"trade", "jeep"}))
    offered = answer_spans(lines, CAR)
    withheld = answer_spans(lines, CAR, retired=[subaru])
    assert {"Subaru", "drive a Subaru"} <= set(offered) and not {"Subaru", "drive a Subaru"} & set(withheld)
    assert {"Jeep", "Subaru for a Jeep", "traded my Subaru", "unknown"} <= set(withheld), "a newer word says the change"
    assert set(withheld) < set(offered)
    assert "Subaru" in answer_spans(lines, "What car did Ingrid drive before the Jeep?", retired=[subaru])
    dated = answer_spans(lines, "When did Ingrid get a car?", retired=[subaru])
    assert show_date("2023-05-01T21:45") in dated, "dates are never withheld"


def test_the_managers_record_retires_the_subaru_and_the_log_alone_retires_nothing(
        ingrid: MemoryBank, tmp_path: Path, minilm, llama_backend) -> None:
    from edge.answer import retirements

    agent = AnswerAgent(llama_backend, adapter=None, order="stale-updates-first")
    (found,) = retirements(ingrid, CAR, agent.retrieve(ingrid, CAR))
    assert "subaru" in found.words and "ingrid" not in found.words, "the value, not the question's or speaker's words"
    assert {"trade", "jeep"} <= found.newer and not found.retracted
    with MemoryBank.open(tmp_path / "log-only.db", minilm, user="ingrid") as log_only:
        for turn_id, at, text in INGRID:
            log_only.apply([AddOp(text, "episodic", at, (turn_id,), {"speaker": "Ingrid", "turn_id": turn_id})],
                           actor="import")
        assert retirements(log_only, CAR, agent.retrieve(log_only, CAR)) == []
    # Its turn no longer offered (deleted, recoverably): the reader would not see the value, nothing to withhold.
    (turn,) = [m for m in ingrid.list(tier="episodic") if m.source_turns == ("S:1",)]
    ingrid.apply([DeleteOp(turn.id)], actor="user")
    (left,) = [m for m in ingrid.list(tier="episodic") if m.source_turns == ("S:3",)]
    ingrid.apply([DeleteOp(left.id)], actor="user")
    assert retirements(ingrid, CAR, agent.retrieve(ingrid, CAR)) == []


def test_a_retraction_retires_the_value_with_no_newer_one(tmp_path: Path, minilm, llama_backend) -> None:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="ana") as bank:
        for turn_id, at, text in [("S:1", "2024-01-05T10:00", "I have a parrot called Kiwi."),
                                  ("S:2", "2024-03-01T10:00", "I don't have a parrot anymore.")]:
            bank.apply([AddOp(text, "episodic", at, (turn_id,), {"speaker": "Ana", "turn_id": turn_id})],
                       actor="import")
        (added,) = bank.apply([AddOp("Ana has a parrot called Kiwi.", "semantic", "2024-01-05T10:00", ("S:1",),
                                     {"speaker": "Ana"})], actor="manager")
        bank.apply([SupersedeOp(added.memory_id, None, "2024-03-01T10:00", "S:2")], actor="manager", turn="S:2")
        question = "What pet does Ana have?"
        agent = AnswerAgent(llama_backend, adapter=None)
        (found,) = retirements_of(bank, agent, question)
        assert found.retracted and not found.newer, "the question's best fact, taken back"
        assert found.words == {"parrot"}, "what the retracting turn names"


def test_a_newer_version_that_only_repeats_the_fact_retires_nothing(tmp_path: Path, minilm, llama_backend) -> None:
    """The Manager may rewrite a fact a reminder repeats ("Just a reminder: I drive a Subaru"): the Subaru is
    still the answer, so nothing is withheld."""
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="ingrid") as bank:
        for turn_id, at, text in INGRID[:3]:
            bank.apply([AddOp(text, "episodic", at, (turn_id,), {"speaker": "Ingrid", "turn_id": turn_id})],
                       actor="import")
        (added,) = bank.apply([AddOp("Ingrid drive a Subaru.", "semantic", INGRID[0][1], ("S:1",),
                                     {"speaker": "Ingrid"})], actor="manager")
        bank.apply([SupersedeOp(added.memory_id, "Just a reminder: Ingrid drive a Subaru.", INGRID[2][1], "S:3",
                                INGRID[2][1], ("S:3",), {"speaker": "Ingrid"})], actor="manager", turn="S:3")
        assert bank.get(added.memory_id).superseded
        assert retirements_of(bank, AnswerAgent(llama_backend, adapter=None), CAR) == []


TOMAS_MOVE = [
    ("S:1", "2025-01-10T09:00", "I moved from Porto to Ghent for a job at a bakery."),
    ("S:2", "2025-02-01T17:00", "I love painting watercolours on Sundays."),
    ("S:3", "2025-03-09T18:30", "I quit the bakery, I work at the city library now."),
]


@pytest.mark.parametrize("ended_by", ["change", "retraction"])
def test_a_turn_retires_only_what_it_names(tmp_path: Path, minilm, llama_backend, ended_by: str) -> None:
    """The fact "moved from Porto to Ghent for a job at a bakery", changed or retracted by "I quit the bakery" (the
    shipped Manager does either): the bakery is withheld, where Tomas moved from is still an answer, and a
    question on another topic keeps the unknown margin."""
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="tomas") as bank:
        for turn_id, at, text in TOMAS_MOVE:
            bank.apply([AddOp(text, "episodic", at, (turn_id,), {"speaker": "Tomas", "turn_id": turn_id})],
                       actor="import")
        (added,) = bank.apply([AddOp("Tomas moved from Porto to Ghent for a job at a bakery.", "semantic",
                                     TOMAS_MOVE[0][1], ("S:1",), {"speaker": "Tomas"})], actor="manager")
        bank.apply([AddOp("Tomas love painting watercolours on Sundays.", "semantic", TOMAS_MOVE[1][1], ("S:2",),
                          {"speaker": "Tomas"})], actor="manager")
        newer = "Tomas quit the bakery, Tomas work at the city library now." if ended_by == "change" else None
        bank.apply([SupersedeOp(added.memory_id, newer, TOMAS_MOVE[2][1], "S:3", TOMAS_MOVE[2][1],
                                ("S:3",) if newer else (), {"speaker": "Tomas"} if newer else {})],
                   actor="manager", turn="S:3")
        agent = AnswerAgent(llama_backend, adapter=None, order="stale-updates-first",
                            generation=GenerationConfig(retired_values="withheld"))
        moved = "Where did Tomas move from?"
        (found,) = retirements_of(bank, agent, moved)
        assert found.words == {"bakeri"}, "the stem of the one word the retiring turn names"
        assert "Porto" in agent.answer(bank, moved).offered, "the move is still true: not withheld"
        works = agent.answer(bank, "Where does Tomas work?").offered
        assert not {"bakery", "a bakery"} & set(works)
        assert not any(r.retracted for r in retirements_of(bank, agent, "What does Tomas paint on Sundays?")), \
            "a retraction of another topic's fact does not let unknown past the margin"


def retirements_of(bank: MemoryBank, agent: AnswerAgent, question: str):
    from edge.answer import retirements

    return retirements(bank, question, agent.retrieve(bank, question))


@pytest.mark.parametrize("setting", ["offered", "withheld"])
def test_withheld_is_what_the_agent_offers_the_model(ingrid: MemoryBank, llama_backend, setting: str) -> None:
    """The real model answers with "withheld" from spans without the Subaru alone; with "offered" it may say it."""
    agent = AnswerAgent(llama_backend, adapter=None, order="stale-updates-first",
                        generation=GenerationConfig(retired_values=setting))
    result = agent.answer(ingrid, CAR)
    assert result.offered and result.answer in result.offered and result.supported
    assert ("Subaru" in result.offered) == (setting == "offered")
    assert any("Jeep" in span for span in result.offered)


def test_retired_values_is_a_checked_setting() -> None:
    assert GenerationConfig().retired_values == "offered", "a bundle that names nothing reads as it always did"
    with pytest.raises(InvalidInputError, match="retired_values"):
        GenerationConfig(retired_values="hidden")
