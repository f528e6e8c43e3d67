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


def test_synthetic_manager_episodes_carry_the_log_and_facts_written_as_the_runtime_writes_them():
    """What the served reward rebuilds: every turn so far, in order, this one last; facts dated by their turn,
    naming it and its speaker (a changed fact is the newer version, taken from the turn that changed it)."""
    conv = generate("dev", 6)
    episodes = synthetic_manager_episodes(conv, HashEmbedder())
    turns = {t.turn_id: t for c in conv for t in c.turns}
    order = {t.turn_id: (c.sample_id, i) for c in conv for i, t in enumerate(c.turns)}
    changed = 0
    for e in episodes:
        sample, here = order[e.turn.turn_id]
        assert [order[t.turn_id] for t in e.log] == [(sample, i) for i in range(here + 1)]
        assert e.log[-1] == e.turn
        for m in e.bank:
            (source,) = m.source_turns
            assert order[source][0] == sample and order[source][1] < here, "a fact comes from an earlier turn"
            assert m.metadata["speaker"] == turns[source].speaker and m.event_time
            assert "supersedes" not in m.metadata, "the retired version is not in the episode to point at"
            changed += any(op.op == "UPDATE" for op in turns[source].ops)
    assert changed, "some fact is the newer version a change turn wrote"


def test_locomo_manager_episodes_carry_every_turn_so_far(conv26):
    locomo = locomo_manager_episodes(conv26, HashEmbedder(), window=50)
    order = _turn_order(conv26[0])
    for e in locomo[:20]:
        assert [order[t.turn_id] for t in e.log] == list(range(order[e.turn.turn_id] + 1)), "every turn so far"
    assert json.loads(locomo[0].row()["log"])[-1]["turn_id"] == locomo[0].turn.turn_id


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


def test_extractive_manager_episodes_offer_the_runtime_clauses_and_a_gold_reply_that_fits_them():
    """What is trained is what is served: the runtime Manager's candidates, schema and one operation per turn."""
    from edge.backends.base import schema_violation
    from edge.manager import extractive_candidates
    from edge.prompts import EXTRACTIVE_MAX_OPS

    episodes = synthetic_manager_episodes(generate("dev", 6), HashEmbedder())
    seen = set()
    for e in episodes:
        assert e.candidates == extractive_candidates(e.turn)
        reply = json.loads(e.gold_reply())
        assert schema_violation(reply, e.schema()) is None, (e.turn.text, reply)
        assert len(e.gold_ops) <= EXTRACTIVE_MAX_OPS
        for op in reply["ops"]:
            seen.add(op["op"])
            if "text" in op:
                assert op["text"] in e.candidates
                assert next(g["value"] for g in e.gold_ops).lower() in op["text"].lower()
        if e.kind in ("chat", "repeat"):
            assert reply == {"ops": [{"op": "NOOP"}]}
    assert seen == {"ADD", "UPDATE", "DELETE", "NOOP"}


def test_extractive_answer_episodes_reply_with_the_best_span():
    episodes = synthetic_answer_episodes(generate("dev", 4), HashEmbedder(), k=10)
    for e in episodes:
        spans = e.spans()
        answer = json.loads(e.gold_reply())["answer"]
        assert e.schema()["properties"]["answer"]["enum"] == spans and answer in spans
        assert answer.lower() == e.answer.lower()  # synthetic answers are single values: an exact span


def test_locomo_answer_episodes_show_what_the_runtime_answer_agent_shows(conv26, llama_backend):
    """With the runtime AnswerAgent as reader, an episode's prompt is the one `edge ask` builds on the same log."""
    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.manager import MemoryManager
    from edge.prompts import Turn

    agent = AnswerAgent(llama_backend, k=20)
    episodes = locomo_answer_episodes(conv26, HashEmbedder(), reader=agent, questions=[0, 5, 40, 77])
    assert [e.episode_id for e in episodes] == ["conv-26:qa0", "conv-26:qa5", "conv-26:qa40", "conv-26:qa77"]
    with MemoryBank.open(":memory:", HashEmbedder()) as bank:
        manager = MemoryManager(llama_backend, bank)
        for session, turn in conv26[0].turns():  # the runtime's own log, turn by turn
            manager.keep(Turn(turn.speaker, turn.full_text, session.date_time, turn.dia_id))
        for e in episodes:
            _, messages, _, _ = agent.fit(e.question, agent.retrieve(bank, e.question), "")
            assert e.messages() == [{"role": m.role, "content": m.content} for m in messages]


def test_locomo_dev_questions_are_never_trained_on(conv26):
    from edge.train.config import load_config
    from edge.train.recipe import build_data, dev_question

    config = load_config("smollm2-135m-answer", **{"data.source": "locomo", "data.locomo_path": str(CONV_26),
                                                   "data.time_questions": 0,
                                                   "data.embedder": "hash"})
    data = build_data(config, HashEmbedder())
    train_ids = {int(e.episode_id.rsplit("qa", 1)[1]) for e in data.train}
    dev_ids = {int(e.episode_id.rsplit("qa", 1)[1]) for e in data.dev}
    # The shipped config asks for unanswerable questions: LoCoMo's 47 adversarial ones join its 152, split alike.
    assert config.data.unanswerable > 0
    # Training leaves out the answerable questions no offered span words (`learnable`); dev keeps every one.
    assert len(dev_ids) == 40 and not train_ids & dev_ids
    answerable = sum(e.answerable for e in data.train)
    unanswerable = len(data.train) - answerable
    assert 80 < answerable <= 121
    # The adversarial ones are sampled down to the config's share (all of them were about 38 of the train four fifths).
    assert 0 < unanswerable <= round(config.data.unanswerable * answerable) < 38
    assert sum(not e.answerable for e in data.dev) == 9  # dev keeps its adversarial questions
    assert {e.category for e in data.dev if not e.answerable} == {5} and any(not e.answerable for e in data.train)
    assert all(dev_question(i) for i in dev_ids) and not any(dev_question(i) for i in train_ids)
    manager = build_data(load_config("smollm2-135m-manager", **{"data.source": "locomo", "data.locomo_path": str(CONV_26),
                                                               "data.embedder": "hash", "data.balance_ops": False,
                                                               "reward.reader": "agent", "reward.op_match_weight": 0}),
                         HashEmbedder())
    assert not any(dev_question(q["index"]) for e in manager.train for q in e.questions)


def test_the_operation_report_shows_a_collapse_onto_one_operation():
    """Per-operation accuracy and the confusion matrix make an all-ADD policy visible."""
    from edge.train.episodes import gold_operation
    from edge.train.dev_scores import operation_report

    episodes = synthetic_manager_episodes(generate("dev", 6), HashEmbedder())
    all_add = [json.dumps({"ops": [{"op": "ADD", "text": e.candidates[0]}]}) if e.candidates else '{"ops": [{"op": "NOOP"}]}'
               for e in episodes]
    report = operation_report(episodes, all_add)
    assert report["per_op_accuracy"]["UPDATE"] == 0.0 and report["per_op_accuracy"]["DELETE"] == 0.0
    assert set(report["confusion"]["UPDATE"]) <= {"ADD", "NOOP"}
    gold = operation_report(episodes, [e.gold_reply() for e in episodes])
    assert all(v == 1.0 for v in gold["per_op_accuracy"].values())
    assert gold["clause_precision"] == 1.0
    assert all(set(row) == {op} for op, row in gold["confusion"].items())
    assert sum(sum(row.values()) for row in gold["confusion"].values()) == len(episodes)
    assert {gold_operation(e) for e in episodes} == set(gold["confusion"])


def test_time_questions_ask_for_the_date_the_runtime_resolved_on_the_line_that_tells_the_event():
    """The generator's calendar arithmetic and the runtime's date resolution agree, and the gold is a span offered."""
    from edge.prompts import show_date
    from edge.train.episodes import synthetic_time_episodes
    from edge.train.synthetic import dated_events

    conversations = generate("dev", 6)
    episodes = synthetic_time_episodes(conversations, HashEmbedder(), per_conversation=3, k=20)
    assert len(episodes) == 18 and all(e.episode_id.split(":")[-1].startswith("e") for e in episodes)
    assert {e.kind for e in episodes} == {"time"}
    relative = 0
    for e in episodes:
        assert e.question.startswith("When did ") and e.relevant  # the turn that tells the event is shown
        teller = e.shown()[int(e.relevant[0])]
        assert json.loads(e.gold_reply())["answer"] == e.answer  # an exact span: the gold is one of the choices
        shown_dates = dict(teller.dates)
        if shown_dates:  # "(yesterday = 7 May 2023)": the gold is the resolved date, not the line's own
            relative += 1
            assert e.answer in {show_date(value) for value in shown_dates.values()}
        else:  # "I just went ..." / "today": the line's own date
            assert e.answer == show_date(teller.event_time)
    assert relative >= 9
    assert [t.text for t in generate("dev", 6)[0].turns] == [t.text for t in conversations[0].turns]
    assert dated_events(conversations[0], 3) == dated_events(generate("dev", 1)[0], 3)  # a pure function of the seed


def test_time_questions_join_the_answer_agents_synthetic_data_when_the_config_asks():
    from edge.train.config import load_config
    from edge.train.recipe import build_data

    overrides = {"data.source": "synthetic", "data.embedder": "hash", "data.train_conversations": 3,
                 "data.dev_conversations": 2, "data.unanswerable": 0}
    without = build_data(load_config("smollm2-135m-answer", **overrides, **{"data.time_questions": 0}), HashEmbedder())
    with_ = build_data(load_config("smollm2-135m-answer", **overrides, **{"data.time_questions": 2}), HashEmbedder())
    timed = [e for e in with_.train if e.question.startswith("When did ")]
    assert len(timed) == 6 and len([e for e in with_.dev if e.question.startswith("When did ")]) == 4
    assert {e.episode_id for e in with_.train} - {e.episode_id for e in timed} == {e.episode_id for e in without.train}


def test_a_manager_trained_to_consolidate_is_offered_extend_and_its_gold_bank_grows_one_fact():
    """Activity conversations: with EXTEND offered, each later activity's gold reply is an EXTEND of the shown
    fact (valid under the episode's own schema, the runtime's), and the gold bank holds one fact citing every
    told turn; without, the gold is an ADD and the bank one fact per activity."""
    from edge.backends.base import schema_violation
    from edge.prompts import MANAGER_OPS, OP_NAMES, parse_manager_output
    from edge.train.synthetic import activity_conversations

    conversations = activity_conversations("dev", 4)
    offered = synthetic_manager_episodes(conversations, HashEmbedder(), ops=OP_NAMES)
    plain = synthetic_manager_episodes(conversations, HashEmbedder())
    extends = [e for e in offered if e.gold_ops and e.gold_ops[0]["op"] == "EXTEND"]
    assert len(extends) == sum(t.kind == "extend" for c in conversations for t in c.turns), "every fact was shown"
    for e in extends:
        reply = json.loads(e.gold_reply())
        assert schema_violation(reply, e.schema()) is None and reply["ops"][0]["op"] == "EXTEND"
        assert parse_manager_output(e.gold_reply(), e.shown_ids).ops[0].op == "EXTEND"
        assert "EXTEND" in e.messages()[0]["content"]
        (fact,) = [m for m in e.bank if m.tier == "semantic"]
        assert e.shown[int(reply["ops"][0]["id"])] == fact.key
    last = [e for e in offered if e.episode_id == conversations[0].turns[-1].turn_id][0]
    told = [t.turn_id for t in conversations[0].turns if t.kind != "chat"]
    grown = [m for m in last.bank if m.tier == "semantic"]
    assert len(grown) == 1 and set(grown[0].source_turns) | {last.turn.turn_id} >= set(told[:-1])
    assert all(e.ops == MANAGER_OPS and "EXTEND" not in e.messages()[0]["content"] for e in plain)
    assert {e.gold_ops[0]["op"] for e in plain if e.kind == "extend"} == {"ADD"}
    final = [e for e in plain if e.episode_id == conversations[0].turns[-1].turn_id][0]
    assert len([m for m in final.bank if m.tier == "semantic"]) >= len(told) - 1


def test_the_config_adds_activity_conversations_and_offers_extend_to_the_manager():
    from edge.train.config import ConfigError, load_config
    from edge.train.recipe import build_data

    overrides = {"data.source": "synthetic", "data.embedder": "hash", "data.train_conversations": 2,
                 "data.dev_conversations": 1}
    shipped = build_data(load_config("smollm2-135m-manager", **overrides), HashEmbedder())
    both = {"data.activity_conversations": 3, "data.consolidation": "extend"}
    consolidating = build_data(load_config("smollm2-135m-manager", **overrides, **both), HashEmbedder())
    assert all("EXTEND" not in e.ops for e in shipped.train + shipped.dev)
    assert all("EXTEND" in e.ops for e in consolidating.train + consolidating.dev)
    assert any(e.gold_ops and e.gold_ops[0]["op"] == "EXTEND" for e in consolidating.train)
    assert {e.episode_id for e in consolidating.train} > {e.episode_id for e in shipped.train}
    with pytest.raises(ConfigError, match="consolidation"):
        load_config("smollm2-135m-manager", **{"data.consolidation": "merge"})


def test_synthetic_answer_episodes_with_the_log_read_the_gold_facts_first(llama_backend):
    """A facts-first reader over the log plus a good Manager's facts: the current fact leads, the turns follow."""
    from edge.answer import AnswerAgent

    reader = AnswerAgent(llama_backend, k=20, order="facts-first")
    alone = synthetic_answer_episodes(generate("dev", 3), HashEmbedder(), k=20)
    logged = synthetic_answer_episodes(generate("dev", 3), HashEmbedder(), k=20, reader=reader, with_log=True)
    assert [e.episode_id for e in logged] == [e.episode_id for e in alone]
    for e in logged:
        tiers = [m.tier for m in e.memories]
        assert "episodic" in tiers, "the log is shown beside the facts"
        facts = [t for t in tiers if t != "episodic"]
        assert tiers[:len(facts)] == facts, "facts-first: every fact before the first turn"
        assert e.shown_memories is not None and len(e.shown_memories) == len(e.memories)
        if e.answer != "unknown":
            assert e.gold_offered()
            assert all(e.memories[int(j)].tier != "episodic" for j in e.relevant)
    assert any(e.relevant for e in logged), "a question's current fact is among what is shown"
    with pytest.raises(ValueError, match="need the reader"):
        synthetic_answer_episodes(generate("dev", 1), HashEmbedder(), with_log=True)


def test_locomo_answer_episodes_read_a_served_bank_as_served_and_leave_it_unwritten(conv26, llama_backend, tmp_path):
    """`bank`: the log and a Manager's fact of conv-26, read facts-first from a copy; a bank of other turns is refused."""
    import hashlib

    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.manager import log_entry_for
    from edge.operations import AddOp
    from edge.prompts import Turn

    turns = [Turn(t.speaker, t.full_text, s.date_time, t.dia_id) for s, t in conv26[0].turns()]
    path = tmp_path / "bank.db"
    with MemoryBank.open(path, HashEmbedder(), user="locomo") as bank:
        bank.apply([log_entry_for(t) for t in turns])
        bank.apply([AddOp("Caroline went to a LGBTQ support group on 7 May 2023", "semantic", turns[2].time,
                          (turns[2].turn_id,), {"speaker": "Caroline"})], actor="manager")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    reader = AnswerAgent(llama_backend, k=20, order="facts-first")
    (episode,) = locomo_answer_episodes(conv26, HashEmbedder(), reader=reader, questions=[0], bank=path)
    assert episode.question == "When did Caroline go to the LGBTQ support group?"
    assert episode.episode_id == "conv-26:served:qa0"
    assert episode.memories[0].tier == "semantic" and "support group" in episode.memories[0].text
    assert any(m.tier == "episodic" for m in episode.memories)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before

    other = tmp_path / "other.db"
    with MemoryBank.open(other, HashEmbedder(), user="locomo") as bank:
        bank.apply([log_entry_for(t) for t in turns[:10]])
    with pytest.raises(ValueError, match="lacks .* turns"):
        locomo_answer_episodes(conv26, HashEmbedder(), reader=reader, questions=[0], bank=other)


def test_the_config_refuses_an_unknown_answer_order_and_a_missing_served_bank(tmp_path):
    from edge.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="answer_order must be one of"):
        load_config("smollm2-135m-answer", **{"data.answer_order": "facts-last"})
    with pytest.raises(ConfigError, match="no such file") as caught:
        load_config("smollm2-135m-answer", **{"data.locomo_bank": str(tmp_path / "missing.db")})
    assert "edge eval locomo" in caught.value.hint
    with pytest.raises(ConfigError, match="is a folder"):
        load_config("smollm2-135m-answer", **{"data.locomo_bank": str(tmp_path)})
    for name, content in (("empty.db", b""), ("notes.db", b"not a bank\n" * 50)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match="is not an edge memory bank"):
            load_config("smollm2-135m-answer", **{"data.locomo_bank": str(tmp_path / name)})
    with pytest.raises(ConfigError, match="is the path of a bank file"):
        load_config("smollm2-135m-answer", **{"data.locomo_bank": 5})
    with pytest.raises(ConfigError, match="synthetic_log is true or false, not 'no'"):
        load_config("smollm2-135m-answer", **{"data.synthetic_log": "no"})
    with pytest.raises(ConfigError, match="no locomo_bank is set"):
        load_config("smollm2-135m-answer", **{"data.locomo_log_too": True})
    config = load_config("smollm2-135m-answer", **{"data.answer_order": "facts-first", "data.synthetic_log": True})
    assert config.data.answer_order == "facts-first" and config.data.synthetic_log


def test_a_served_bank_is_checked_before_any_model_loads(tmp_path):
    from edge.bank import MemoryBank
    from edge.train.config import ConfigError, load_config

    path = tmp_path / "bank.db"
    with MemoryBank.open(path, HashEmbedder(), user="locomo") as bank:
        bank.add("Caroline: hi", tier="episodic", source_turns=["D1:1"])
    config = load_config("smollm2-135m-answer", **{"data.locomo_bank": str(path), "data.locomo_log_too": True})
    assert config.data.locomo_bank == str(path) and config.data.locomo_log_too
    with pytest.raises(ConfigError, match="has no served bank"):
        load_config("smollm2-135m-answer", **{"data.locomo_bank": str(path), "data.dev_locomo_path": str(CONV_26)})


def test_locomo_questions_over_the_served_bank_and_the_log_alone_keep_dev_apart(conv26, tmp_path):
    """`locomo_log_too`: each question over both banks; a dev question is in neither layout's training rows."""
    from edge.bank import MemoryBank
    from edge.manager import log_entry_for
    from edge.prompts import Turn
    from edge.train.config import load_config
    from edge.train.recipe import build_data

    path = tmp_path / "bank.db"
    with MemoryBank.open(path, HashEmbedder(), user="locomo") as bank:
        bank.apply([log_entry_for(Turn(t.speaker, t.full_text, s.date_time, t.dia_id)) for s, t in conv26[0].turns()])
    settings = {"data.source": "locomo", "data.locomo_path": str(CONV_26), "data.time_questions": 0,
                "data.embedder": "hash", "data.locomo_bank": str(path)}
    served = build_data(load_config("smollm2-135m-answer", **settings), HashEmbedder())
    both = build_data(load_config("smollm2-135m-answer", **settings, **{"data.locomo_log_too": True}), HashEmbedder())
    assert {e.episode_id.split(":")[1] for e in served.dev} == {"served"}
    assert {e.episode_id.rsplit(":", 1)[0] for e in both.dev} == {"conv-26:served", "conv-26"}
    assert len(both.dev) == 2 * len(served.dev) == 80
    dev = {int(e.episode_id.rsplit("qa", 1)[1]) for e in both.dev}
    assert not dev & {int(e.episode_id.rsplit("qa", 1)[1]) for e in both.train}

    from edge.train.config import ConfigError

    short = tmp_path / "short.db"  # another conversation's bank, as far as conv-26 can tell
    with MemoryBank.open(short, HashEmbedder(), user="locomo") as bank:
        bank.apply([log_entry_for(Turn(t.speaker, t.full_text, s.date_time, t.dia_id))
                    for s, t in list(conv26[0].turns())[:10]])
    with pytest.raises(ConfigError, match="lacks .* turns") as caught:
        build_data(load_config("smollm2-135m-answer", **{**settings, "data.locomo_bank": str(short)}), HashEmbedder())
    assert "edge eval locomo" in caught.value.hint
