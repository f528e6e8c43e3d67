"""The default bundle serves the LoRA adapters edge ships, and banks made without them keep working."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.bundle import ADAPTER_ROLES, Bundle, default_differences, default_is_current, shipped_adapters, write_manifest
from edge.manager import extractive_candidates
from edge.model_calls import to_messages
from edge.prompts import ShownMemory, Turn, manager_messages, manager_schema

CHANGE = Turn("Maya", "I don't live in Lisbon anymore, I moved to Oslo.", "10:00 am on 3 May, 2023", "t2")
SHOWN = [ShownMemory("0", "semantic", "Maya lives in Lisbon.")]


def test_edge_ships_an_adapter_for_the_manager_and_the_answer_agent() -> None:
    shipped = shipped_adapters()
    assert set(shipped) == set(ADAPTER_ROLES)
    for path in shipped.values():
        assert path.read_bytes()[:4] == b"GGUF"
        record = json.loads(path.with_suffix(".json").read_text())  # how it was trained, and its figures
        assert record["agent"] == path.stem and record["command"].startswith("python bench/bench_learned.py")


def test_the_default_bundle_serves_each_shipped_adapter_on_its_role(default_bundle) -> None:
    for role, path in shipped_adapters().items():
        assert default_bundle.role_adapter(role) == role
        assert default_bundle.role(role)[1].read_bytes() == path.read_bytes()
        assert not default_bundle.role(role)[1].samefile(path)  # a copy: nothing writes through to the package
    assert default_bundle.role_adapter("chat") is None
    assert default_is_current(default_bundle)


def test_a_default_bundle_with_other_adapters_is_out_of_date(default_bundle, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(default_bundle.root, stale)
    manifest = json.loads((stale / "bundle.json").read_text())
    manifest["files"]["adapters/manager.gguf"]["sha256"] = "0" * 64
    (stale / "bundle.json").write_text(json.dumps(manifest))
    assert not default_is_current(Bundle.load(stale))
    assert default_differences(Bundle.load(stale)) == ["adapters"], "the rebuild message names what changed"


def test_the_trained_manager_supersedes_a_changed_fact_where_the_base_model_adds(default_bundle) -> None:
    """On a turn that changes a fact, the shipped Manager adapter and the base model reply differently."""
    candidates = extractive_candidates(CHANGE)
    messages = to_messages(manager_messages(CHANGE, SHOWN))
    schema = manager_schema(["0"], candidates=candidates)
    with default_bundle.load_backend("manager") as backend:
        assert set(ADAPTER_ROLES) <= set(backend.adapters)
        base = backend.complete(messages, schema=schema, max_tokens=96, adapter=None).text
        trained = backend.complete(messages, schema=schema, max_tokens=96, adapter="manager").text
    assert json.loads(base)["ops"][0]["op"] == "ADD"
    assert json.loads(trained)["ops"][0] == {"op": "UPDATE", "id": "0", "text": json.loads(trained)["ops"][0]["text"]}
    assert json.loads(trained)["ops"][0]["text"] in candidates


def test_a_bank_built_with_the_untrained_bundle_keeps_working_with_the_trained_one(default_bundle,
                                                                                  tmp_path: Path) -> None:
    from edge.agent import Agent

    untrained = tmp_path / "untrained"
    shutil.copytree(default_bundle.root, untrained, ignore=shutil.ignore_patterns("adapters", "bundle.json"))
    manifest = {k: v for k, v in default_bundle.manifest.items() if k not in ("files", "created_at")}
    manifest["adapters"] = {}
    manifest["roles"] = {role: {**spec, "adapter": None} for role, spec in manifest["roles"].items()}
    write_manifest(untrained, manifest)
    db = tmp_path / "bank.db"
    with Agent(Bundle.load(untrained), db=db, user="maya") as agent:
        agent.remember(["I just moved to Oslo for a job at the city library."], wait=True)
        facts_before = [m.text for m in agent.bank.list()]
    with Agent(default_bundle, db=db, user="maya") as agent:
        assert [m.text for m in agent.bank.list()] == facts_before  # opened as it was: nothing migrated or lost
        assert any("Oslo" in m.text for m in agent.bank.list(tier="episodic"))
        result = agent.ask("Where did Maya move?")
        assert result.error is None
        agent.remember(["My sister Ines is visiting in May."], wait=True)
        assert len(agent.bank.list(tier="episodic")) == 2


def test_bundle_show_lists_the_adapter_of_each_role(default_bundle) -> None:
    import os
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "edge.cli", "bundle", "show", str(default_bundle.root)],
                           capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines()[1:] if line.startswith("  ")}
    assert "LoRA adapters/manager.gguf" in lines["manager"] and "LoRA adapters/answer.gguf" in lines["answer"]
    assert "no adapter" in lines["chat"]


LOG = [  # (time, speaker, text): relative dates the runtime resolves against each turn's own time
    ("4:00 pm on 8 May, 2023", "Maya", "I went to a pottery class yesterday. It was so relaxing."),
    ("11:00 am on 20 July, 2023", "Maya", "We had a picnic at the beach today, the kids loved it."),
    ("9:00 am on 25 August, 2023", "Omar", "Last Friday I ran a charity 5k with my coworkers."),
    ("6:00 pm on 3 October, 2023", "Maya", "I bought two little figurines at the market two days ago."),
]


def _when_answers(default_bundle, tmp_path: Path, question: str, **settings):
    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.manager import log_entry_for

    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder()) as bank:
        bank.apply([log_entry_for(Turn(speaker, text, when, f"t{i}")) for i, (when, speaker, text) in enumerate(LOG)])
        with default_bundle.load_backend("answer") as backend:
            agent = AnswerAgent(backend, generation=default_bundle.generation.override(**settings), adapter="answer")
            return agent.answer(bank, question)


def test_the_trained_answer_agent_answers_when_with_the_date_resolved_beside_the_turn(default_bundle, tmp_path) -> None:
    """"When did ...?" is answered with the resolved "two days ago" of the turn that told it, not a line's own date;
    in hybrid order (the top turns only, no replies) the resolved "yesterday" of the pottery class too."""
    figurines = _when_answers(default_bundle, tmp_path, "When did Maya buy the figurines?")
    assert figurines.answer == "1 October 2023"
    pottery = _when_answers(default_bundle, tmp_path, "When did Maya go to a pottery class?", answer_retrieval="hybrid")
    assert pottery.answer == "7 May 2023"
    assert [m.id for m in pottery.memories] and all("pottery" in m.text for m in pottery.memories)


@pytest.mark.xfail(strict=True, reason="with the replies of the top turns shown (the default bundle's \"replies-3\"), the "
                   "pottery turn's reply and Omar's 5k turn come before the figurines turn, and the 135M adapter "
                   "picks \"5k with my coworkers\" over the date beside the pottery turn: it was trained on the "
                   "top-k order (on conv-26 the replies raise temporal F1 from 57.4 to 61.2 all the same)")
def test_the_shipped_answer_agent_dates_the_pottery_class_with_the_replies_shown(default_bundle, tmp_path) -> None:
    pottery = _when_answers(default_bundle, tmp_path, "When did Maya go to a pottery class?")
    assert pottery.answer == "7 May 2023"


CHAT = [  # (speaker, text): a small log in words no training template wrote
    ("Jon", "Long week at the studio, but the dancers finally have the routine down."),
    ("Gina", "Nice! What are you doing to unwind these days?"),
    ("Jon", "I'm reading The Lean Startup, it's full of ideas for running my dance studio."),
    ("Gina", "I opened my online clothing store last month, I'm swamped with orders."),
    ("Jon", "I also bought a pair of new shoes for practice and some posters for the walls."),
    ("Gina", "Did you ever find someone to redo the floors?"),
]


def _chat_answers(default_bundle, tmp_path: Path, adapter: str | None, questions: list[str]) -> list[str]:
    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.manager import log_entry_for

    with MemoryBank.open(tmp_path / f"{adapter}.db", HashEmbedder()) as bank:
        bank.apply([log_entry_for(Turn(speaker, text, "2:00 pm on 4 June, 2023", f"t{i}"))
                    for i, (speaker, text) in enumerate(CHAT)])
        with default_bundle.load_backend("answer") as backend:
            agent = AnswerAgent(backend, generation=default_bundle.generation, adapter=adapter)
            return [agent.answer(bank, question).answer for question in questions]


NEVER_SAID = [  # nothing in CHAT says any of them
    "Who is Jon married to?", "What instrument does Gina play?", "What is the name of Gina's dog?",
    "Where did Jon go skiing?", "What car does Gina drive?", "Which city was Jon born in?",
    "What is Jon's favourite food?", "How old is Gina's brother?", "What language is Jon learning?",
    "What did Gina cook for dinner?", "Who is Gina's boss?"]


def test_the_trained_answer_agent_picks_the_span_that_answers_and_abstains_on_what_was_never_said(
        default_bundle, tmp_path: Path) -> None:
    """The shipped Answer adapter names the book where the base model picks another span, and says "unknown"
    to questions about things never said (a quarter of them at least: 3 of 11 when shipped, the adapter before
    it 4), where the base model answers every one with some span."""
    from edge.evaluation.scoring import exact_match

    questions = ["What book is Jon reading?", *NEVER_SAID]
    base = _chat_answers(default_bundle, tmp_path, None, questions)
    trained = _chat_answers(default_bundle, tmp_path, "answer", questions)
    assert exact_match(trained[0], "The Lean Startup"), trained
    assert not exact_match(base[0], "The Lean Startup"), base
    # The shipped bundle holds "unknown" back by its margin (GenerationConfig.unknown_margin, 1.5 logits), chosen so
    # that answerable questions lose nothing: it abstains on some never-said questions, the base model on none.
    abstained = [q for q, a in zip(NEVER_SAID, trained[1:]) if a == "unknown"]
    assert len(abstained) >= len(NEVER_SAID) // 4, (base, trained)
    assert "unknown" not in base[1:], base


@pytest.mark.xfail(strict=True, reason="a \"When did ...?\" question about an event never told still gets a date "
                   "(the turns' own): the training's untold events are synthetic, and LoCoMo's and FriendsQA's "
                   "unanswerable questions are rarely \"when\" questions")
def test_the_trained_answer_agent_abstains_on_when_an_untold_event_happened(default_bundle, tmp_path: Path) -> None:
    assert _chat_answers(default_bundle, tmp_path, "answer", ["When did Jon go skydiving?"]) == ["unknown"]
