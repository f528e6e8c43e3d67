"""Consolidated facts: the Manager's EXTEND grows a fact of the turn's speaker by one clause of the turn.

Offered only with `generation.consolidation = "extend"`. The bank, the
op-application checks, undo and the grammar are the real ones; the Manager's
replies are scripted where a test needs a specific choice (an EXTEND of a
given fact), and the bundled SmolLM2 decodes under the grammar that offers it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.backends.scripted import ScriptedBackend
from edge.bank import MemoryBank
from edge.generation import GenerationConfig
from edge.grounding import clauses, grounding
from edge.manager import MemoryManager, consolidated_text, related_facts
from edge.prompts import CONSOLIDATED_MAX_CHARS, MANAGER_OPS, Turn, answer_spans, manager_messages, manager_schema
from edge.prompts.common import ShownMemory

EXTENDING = GenerationConfig(consolidation="extend")

MAYA = [
    Turn("Maya", "I took up pottery.", "2025-04-02 10:00", "S:1"),
    Turn("Maya", "Work is busy as always.", "2025-04-09 18:00", "S:2"),
    Turn("Maya", "I also started swimming on Sundays.", "2025-04-16 18:00", "S:3"),
    Turn("Maya", "Oh, and I joined a choir at church.", "2025-05-01 19:30", "S:4"),
]


@pytest.fixture
def bank(tmp_path: Path, minilm) -> MemoryBank:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="maya") as opened:
        yield opened


def reply(*ops: dict) -> str:
    return json.dumps({"ops": list(ops)})


def manager(bank: MemoryBank, *replies: str, generation: GenerationConfig = EXTENDING,
            check_schema: bool = True) -> MemoryManager:
    return MemoryManager(ScriptedBackend(list(replies), check_schema=check_schema), bank, adapter=None,
                         generation=generation)


def clause_of(turn: Turn, word: str) -> str:
    return next(c for c in clauses(turn.text, turn.speaker) if word in c)


def extend(bank: MemoryBank, turn: Turn, fact_id: str, word: str):
    """The Manager's EXTEND of `fact_id` with the clause of `turn` holding `word`, as the model would reply it."""
    shown = [m.id for m in related_facts(bank, turn)]
    return manager(bank, reply({"op": "EXTEND", "id": str(shown.index(fact_id)), "text": clause_of(turn, word)})
                   ).process(turn)


def test_a_consolidated_fact_cites_every_turn_it_draws_on_and_undo_takes_back_the_last_clause(bank) -> None:
    pottery, chat, swimming, choir = MAYA
    first = manager(bank, reply({"op": "ADD", "text": clause_of(pottery, "pottery")})).process(pottery)
    fact_id = first.applied[0].memory_id
    manager(bank, reply({"op": "NOOP"})).process(chat)
    extend(bank, swimming, fact_id, "swimming")
    result = extend(bank, choir, fact_id, "choir")

    assert [a.action for a in result.applied] == ["UPDATE"] and result.applied[0].memory_id == fact_id
    (fact,) = bank.list(tier="semantic", include_superseded=True)
    assert fact.id == fact_id and not fact.superseded, "one fact, grown in place: nothing retired"
    assert fact.text == "Maya took up pottery; also started swimming on Sundays; and Maya joined a choir at church"
    assert fact.source_turns == ("S:1", "S:3", "S:4"), "every turn it draws on, and only those"
    said = [m.text for m in bank.list(tier="episodic") if m.metadata.get("turn_id") in fact.source_turns]
    assert grounding(fact.text, said, speaker="Maya").grounded, "every word was said in the turns it cites"
    assert fact.event_time == "2025-04-02T10:00", "a consolidated fact keeps the date of its first clause"
    assert [h.action for h in bank.history(fact_id)] == ["ADD", "UPDATE", "UPDATE"]

    bank.undo()
    before = bank.get(fact_id)
    assert before.text == "Maya took up pottery; also started swimming on Sundays"
    assert before.source_turns == ("S:1", "S:3"), "undo restores the fact as it was before the last clause"
    assert [m.metadata.get("turn_id") for m in bank.list(tier="episodic")] == ["S:1", "S:2", "S:3"], \
        "the turn and its clause were one change"
    bank.redo()
    assert bank.get(fact_id).source_turns == ("S:1", "S:3", "S:4")
    assert bank.check() == []


def test_extend_is_offered_only_to_a_manager_whose_bundle_names_it(bank) -> None:
    pottery, _, swimming, _ = MAYA
    kept = bank.add(clause_of(pottery, "pottery"), metadata={"speaker": "Maya"})
    assert "EXTEND" not in json.dumps(manager_schema(["0"], candidates=["x"]))
    assert "EXTEND" not in manager_messages(swimming, [])[0]["content"], "the shipped Manager's prompt is unchanged"
    assert GenerationConfig().manager_ops == MANAGER_OPS
    offered = json.dumps(manager_schema(["0"], candidates=["x"], ops=EXTENDING.manager_ops))
    assert '"const": "EXTEND"' in offered and "EXTEND" in manager_messages(swimming, [], ops=EXTENDING.manager_ops)[0][
        "content"]
    # A server that ignores the grammar may still say EXTEND: it is refused, the turn kept.
    attempt = reply({"op": "EXTEND", "id": "0", "text": clause_of(swimming, "swimming")})
    result = manager(bank, attempt, attempt, generation=GenerationConfig(), check_schema=False).process(swimming)
    assert result.applied == [] and result.logged is not None
    assert any("not among the operations" in reason for _, reason in result.rejected), result.rejected
    assert bank.get(kept.id).text == kept.text


def test_an_extend_that_cannot_join_is_weighed_as_a_fact_of_its_own_or_refused(bank) -> None:
    ana = bank.add("Ana took up pottery", metadata={"speaker": "Ana"})
    mine = bank.add("Maya took up pottery", metadata={"speaker": "Maya"})
    swim = Turn("Maya", "I also started swimming on Sundays.", "2025-04-16 18:00", "S:3")
    result = extend(bank, swim, ana.id, "swimming")
    assert [a.action for a in result.applied] == ["ADD"], "another speaker's fact is never grown"
    assert bank.get(ana.id).text == "Ana took up pottery"

    dated = Turn("Maya", "Yesterday I joined a running club.", "2025-04-20 18:00", "S:5")
    result = extend(bank, dated, mine.id, "running")
    assert [a.action for a in result.applied] == ["ADD"] and any("date of its own" in r for _, r in result.rejected)
    assert bank.get(result.applied[0].memory_id).event_time == "2025-04-19", "kept apart, with its own date"

    again = Turn("Maya", "Pottery, I took up pottery!", "2025-04-21 18:00", "S:6")
    result = extend(bank, again, mine.id, "pottery")
    assert result.applied == [] and any("already says" in r for _, r in result.rejected)

    long = Turn("Maya", "I also go to a Sunday ceramics studio where we glaze bowls and mugs.", "2025-04-22 18:00", "S:7")
    bank.update(mine.id, "Maya took up pottery; " + "; ".join(["started painting seascapes at the harbour"] * 6))
    assert len(consolidated_text(bank.get(mine.id).text, clause_of(long, "ceramics"), "Maya")) > CONSOLIDATED_MAX_CHARS
    result = extend(bank, long, mine.id, "ceramics")
    assert [a.action for a in result.applied] == ["ADD"] and any("would pass" in r for _, r in result.rejected)
    assert bank.check() == []


def test_a_list_answer_is_one_span_of_a_consolidated_fact() -> None:
    """What consolidation is for with extractive answers: two activities said weeks apart become one span."""
    fact = ShownMemory("0", "semantic", "Maya took up pottery; also started swimming on Sundays", turns=2)
    one_turn = ShownMemory("0", "semantic", "Maya is lucky to have her family; they bring joy")
    apart = [ShownMemory("0", "semantic", "Maya took up pottery"),
             ShownMemory("1", "semantic", "Maya also started swimming on Sundays")]
    question = "What activities does Maya do?"
    assert "pottery also started swimming" in answer_spans([fact], question)
    assert not any("pottery" in s and "swimming" in s for s in answer_spans(apart, question))
    assert not any("," in s for s in answer_spans([one_turn], "Who does Maya have?")), "one turn's fact: spans only"


def test_the_bundled_manager_decodes_under_the_grammar_that_offers_extend(tmp_path: Path, minilm,
                                                                          llama_backend) -> None:
    """The real model under the EXTEND grammar: every reply parses, every fact is grounded, the log is whole."""
    with MemoryBank.open(tmp_path / "real.db", minilm, user="maya") as bank:
        real = MemoryManager(llama_backend, bank, adapter="manager", generation=EXTENDING)
        results = [real.process(turn) for turn in MAYA]
        assert all(r.error is None for r in results), [r.error for r in results]
        assert bank.count(tier="episodic") == len(MAYA)
        said = [t.text for t in MAYA]
        for fact in bank.list(tier="semantic"):
            assert grounding(fact.text, said, speaker="Maya").grounded, fact.text
            assert set(fact.source_turns) <= {t.turn_id for t in MAYA}
        assert bank.check() == []


def test_two_pieces_of_a_long_turn_never_write_over_each_others_clause(bank) -> None:
    """A turn past MANAGER_TURN_CHARS reaches the Manager in pieces, each shown the fact as it was before the turn:
    a second EXTEND of it is kept as a fact of its own, so neither clause is lost."""
    from edge.manager import manager_pieces

    kept = bank.add("Maya took up pottery", metadata={"speaker": "Maya"})
    swim = "I also started swimming on Sundays at the big pool near the old harbour in town."
    choir = "And I joined a choir that sings at the church by the market square every week."
    turn = Turn("Maya", " ".join([swim] * 8 + [choir] * 8), "2025-04-16 18:00", "S:9")
    pieces = manager_pieces(turn.text)
    assert len(pieces) == 2 and "swimming" in pieces[0] and "choir" in pieces[1]
    replies = [reply({"op": "EXTEND", "id": "0", "text": clause_of(Turn("Maya", piece, turn.time), word)})
               for piece, word in zip(pieces, ("swimming", "choir"))]
    result = manager(bank, *replies).process(turn)
    assert [a.action for a in result.applied] == ["UPDATE", "ADD"]
    assert any("earlier piece" in reason for _, reason in result.rejected)
    grown = bank.get(kept.id)
    assert "swimming" in grown.text and grown.source_turns == ("S:9",)
    assert any("choir" in m.text for m in bank.list(tier="semantic") if m.id != kept.id)
    assert bank.check() == []


def test_a_clause_joins_the_fact_as_it_is_when_applied_and_never_a_retired_one(bank) -> None:
    """The bank joins an EXTEND's clause to the fact's current text: a change made while the model was
    answering (another connection, the user) is kept, and a fact retired meanwhile is not grown."""
    from edge.errors import MemoryNotFoundError
    from edge.operations import ExtendOp, SupersedeOp

    fact = bank.add("Maya took up pottery", metadata={"speaker": "Maya"}, source_turns=["S:1"])
    extend_op = ExtendOp(fact.id, "Maya also started swimming", "Maya", ("S:3",))
    bank.update(fact.id, "Maya took up pottery and ceramics painting", actor="user")
    (applied,) = bank.apply([extend_op], actor="manager", turn="S:3")
    grown = bank.get(fact.id)
    assert grown.text == "Maya took up pottery and ceramics painting; also started swimming"
    assert grown.source_turns == ("S:1", "S:3") and applied.before["text"].endswith("ceramics painting")
    assert bank.search("swimming", k=3, scope="facts")[0].memory.id == fact.id, "indexed as it now reads"

    (newer,) = bank.apply([SupersedeOp(fact.id, "Maya quit pottery", "2025-05-01T10:00", "S:4")], actor="manager")
    history = len(bank.history(fact.id))
    with pytest.raises(MemoryNotFoundError, match="only current facts"):
        bank.apply([ExtendOp(fact.id, "Maya joined a choir", "Maya", ("S:5",))], actor="manager")
    assert len(bank.history(fact.id)) == history and "choir" not in bank.get(fact.id).text, "the bank as it was"
    assert bank.check() == []


def test_a_fact_with_no_speaker_is_never_grown_by_a_turn(bank) -> None:
    """A user's own fact ("I like green tea") names no speaker; Maya's clause joined to it would read as the user's."""
    tea = bank.add("I like green tea")
    swim = Turn("Maya", "I also started swimming on Sundays.", "2025-04-16 18:00", "S:3")
    result = extend(bank, swim, tea.id, "swimming")
    assert [a.action for a in result.applied] == ["ADD"] and any("no speaker" in r for _, r in result.rejected)
    assert bank.get(tea.id).text == "I like green tea"
