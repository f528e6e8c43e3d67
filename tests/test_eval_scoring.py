"""Answer scores against values computed by hand (BLEU-1 values also match nltk's sentence_bleu),
and the report's figures on small hand-made results (no model)."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import pytest

from edge.backends.scripted import ScriptedBackend
from edge.errors import EdgeError
from edge.evaluation.scoring import (
    JUDGE_SCHEMA,
    LLMJudge,
    bleu1_score,
    exact_match,
    f1_score,
    lexical_scores,
    locomo_f1,
    locomo_normalize,
    normalize_answer,
)


def test_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalize_answer("The Cat!") == "cat"
    assert normalize_answer("  An apple, a  PEAR; the end. ") == "apple pear end"
    assert normalize_answer("theatre another") == "theatre another"  # only whole-word articles
    assert normalize_answer("7 May, 2023") == "7 may 2023"
    assert normalize_answer(2022) == "2022"


def test_identical_answers_score_one() -> None:
    assert lexical_scores("7 May 2023", "7 may, 2023.") == {"f1": 1.0, "bleu1": 1.0, "em": 1.0}


def test_articles_and_punctuation_do_not_count() -> None:
    assert f1_score("the beach", "Beach!") == 1.0
    assert exact_match("A sunrise.", "sunrise") == 1.0


def test_partial_overlap() -> None:
    # pred [may, 2023], gold [7, may, 2023]: P = 1, R = 2/3, F1 = 0.8
    assert f1_score("May 2023", "7 May 2023") == pytest.approx(0.8)
    # BLEU-1: precision 1, brevity exp(1 - 3/2)
    assert bleu1_score("May 2023", "7 May 2023") == pytest.approx(math.exp(-0.5))
    assert exact_match("May 2023", "7 May 2023") == 0.0


def test_longer_prediction_has_no_brevity_penalty_but_lower_precision() -> None:
    # pred [she, painted, sunrise, in, 2022, last, year] (7), gold [2022]
    assert bleu1_score("She painted a sunrise in 2022 last year", "2022") == pytest.approx(1 / 7)
    assert f1_score("She painted a sunrise in 2022 last year", "2022") == pytest.approx(2 * (1 / 7) / (1 / 7 + 1))


def test_repeated_tokens_are_clipped() -> None:
    # multisets: pred {cat: 3}, gold {cat: 1} -> 1 common token
    assert bleu1_score("cat cat cat", "cat") == pytest.approx(1 / 3)
    assert f1_score("cat cat cat", "cat") == pytest.approx(0.5)
    # pred [cat, sat, on, mat, cat] vs gold [cat, on, mat]: common 3; P 3/5, R 1
    assert f1_score("the cat sat on the mat cat", "cat on mat") == pytest.approx(0.75)
    assert bleu1_score("the cat sat on the mat cat", "cat on mat") == pytest.approx(0.6)


def test_shorter_prediction_pays_the_brevity_penalty() -> None:
    # pred [psychology] vs gold [psychology, counseling, certification]: exp(1 - 3)
    assert bleu1_score("Psychology", "Psychology, counseling certification") == pytest.approx(math.exp(-2))
    assert f1_score("Psychology", "Psychology, counseling certification") == pytest.approx(0.5)


def test_numbers_compare_as_text() -> None:
    assert f1_score("2", 2) == 1.0
    assert f1_score("two", "2") == 0.0
    assert f1_score("in 2022", "2022") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_no_overlap_and_empty_answers() -> None:
    assert lexical_scores("xyz", "abc def") == {"f1": 0.0, "bleu1": 0.0, "em": 0.0}
    assert lexical_scores("", "Paris") == {"f1": 0.0, "bleu1": 0.0, "em": 0.0}
    assert lexical_scores("Paris", "") == {"f1": 0.0, "bleu1": 0.0, "em": 0.0}
    assert lexical_scores("the", "...") == {"f1": 1.0, "bleu1": 1.0, "em": 1.0}  # both empty after normalising


def test_judge_counts_correct_verdicts() -> None:
    backend = ScriptedBackend(['{"verdict": "CORRECT"}', '{"verdict": "WRONG"}', '{"verdict": "CORRECT"}'])
    judge = LLMJudge(backend)
    items = [("When?", "7 May 2023", "May 7th, 2023"), ("Who?", "Maya", "Luna"), ("Where?", "Lisbon", "in Lisbon")]
    assert judge.score(items) == pytest.approx(2 / 3)
    call = backend.calls[0]
    assert call["schema"] == JUDGE_SCHEMA and call["temperature"] == 0.0
    assert "May 7th, 2023" in call["messages"][-1].content and "7 May 2023" in call["messages"][-1].content


def test_judge_without_a_verdict_is_an_error() -> None:
    judge = LLMJudge(ScriptedBackend([json.dumps({"verdict": "CORRECT"})[:5]]))
    with pytest.raises(EdgeError, match="no verdict"):
        judge.judge("Q", "A", "B")


# --------------------------------------------------------------------------- LoCoMo's own F1


def test_locomo_normalisation_also_drops_and_and_commas() -> None:
    assert locomo_normalize("The cat, and the dog!") == "cat dog"
    assert locomo_normalize("Andy and Sandra") == "andy sandra"  # only the whole word "and"
    assert locomo_normalize("7 May, 2023") == "7 may 2023"


def test_locomo_f1_stems_with_porter() -> None:
    assert locomo_f1("running", "runs", 4) == 1.0
    assert f1_score("running", "runs") == 0.0  # the SQuAD-style F1 does not stem
    # pred [she, like, paint] vs gold [paint]: P 1/3, R 1
    assert locomo_f1("She likes painting", "painting", 2) == pytest.approx(0.5)


def test_locomo_f1_drops_and() -> None:
    assert locomo_f1("salt pepper", "salt and pepper", 4) == 1.0
    assert f1_score("salt pepper", "salt and pepper") == pytest.approx(0.8)


def test_locomo_f1_category_1_splits_gold_and_prediction_on_commas() -> None:
    # gold parts [hiking], [painting]; one predicted part: best F1s 0 and 1, mean 0.5
    assert locomo_f1("painting", "hiking, painting", 1) == pytest.approx(0.5)
    # predicted parts [she like paint], [hike]: "hiking" matches the second (1.0), "painting" the first (0.5)
    assert locomo_f1("She likes painting, and hiking", "hiking, painting", 1) == pytest.approx(0.75)
    # other categories do not split: [she, like, paint, hike] vs [hike, paint]: P 1/2, R 1
    assert locomo_f1("She likes painting, and hiking", "hiking, painting", 4) == pytest.approx(2 / 3)


def test_locomo_f1_category_3_keeps_gold_before_semicolon() -> None:
    gold = "Yes; she said she would like to move abroad"
    assert locomo_f1("yes", gold, 3) == 1.0
    assert locomo_f1("yes", gold, 4) < 0.5


def test_locomo_f1_adversarial_and_edge_cases() -> None:
    assert locomo_f1("That is not mentioned in the conversation.", "Not mentioned in the conversation", 5) == 1.0
    assert locomo_f1("No information available", "x", 5) == 1.0
    assert locomo_f1("Luna", "Not mentioned in the conversation", 5) == 0.0
    assert locomo_f1("the", "...", 4) == 0.0  # LoCoMo scores nothing in common as 0, even two empty answers
    assert locomo_f1("", "Paris", 2) == 0.0
    assert locomo_f1(2022, 2022, 2) == 1.0
    with pytest.raises(ValueError):
        locomo_f1("a", "b", 6)


# --------------------------------------------------------------------------- the answer's memory kinds


def _memory(mid: str, tier: str, turns: tuple[str, ...], text: str = "", **extra):
    from edge.bank import Memory

    return Memory(id=mid, owner="locomo", tier=tier, text=text or mid, created_at="", updated_at="",
                  source_turns=turns, **extra)


def test_agent_answers_split_context_turns_by_memory_kind() -> None:
    from edge.evaluation.systems import System

    retrieved = [_memory("a", "episodic", ("D1:1",)), _memory("b", "semantic", ("D1:2", "D1:1")),
                 _memory("c", "core", ("D2:1",)), _memory("d", "episodic", ("D2:2",))]
    result = SimpleNamespace(answer="x", retrieved=retrieved, memories=retrieved[:1], prompt_tokens=10,
                             error=None, timings={})
    reply = System.from_agent_answer(result, 0.5)
    assert reply.context_turns == ["D1:1", "D1:2", "D2:1", "D2:2"]
    assert reply.context_turns_by_tier == {"episodic": ["D1:1", "D2:2"], "fact": ["D1:2", "D1:1", "D2:1"]}


# --------------------------------------------------------------------------- stored facts


@dataclass(frozen=True)
class _Grounding:
    grounded: bool
    missing: tuple[str, ...]


def _word_grounding(text: str, sources: Sequence[str], *, speaker: str | None = None,
                    dates: Sequence[str] = ()) -> _Grounding:
    """A stand-in for `edge.grounding.grounding`: every word of the text is in a source, the speaker or a date."""
    said = " ".join([*sources, speaker or "", *dates]).lower().replace(",", " ").replace(".", " ").split()
    missing = tuple(w for w in text.lower().replace(".", " ").split() if w not in said)
    return _Grounding(not missing, missing)


def _conversation():
    from edge.locomo import parse_locomo

    return parse_locomo([{
        "sample_id": "tiny-1",
        "conversation": {
            "speaker_a": "Ana", "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [{"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a cat, her name is Luna."},
                          {"speaker": "Ben", "dia_id": "D1:2", "text": "I ran the Lisbon marathon yesterday."}],
        },
        "qa": [],
    }])[0]


def test_session_and_turn_dates_in_human_and_iso_form() -> None:
    from edge.evaluation.facts import metadata_dates, session_dates, turn_dates

    assert session_dates("1:56 pm on 8 May, 2023") == ("8 May 2023", "2023-05-08")
    assert session_dates("sometime") == ("sometime",)
    session, turn = list(_conversation().turns())[1]
    assert turn_dates(session, turn) == ("8 May 2023", "2023-05-08", "2023-05-07", "7 May 2023")
    assert metadata_dates({"dates": {"yesterday": "2023-05-07"}}) == ["2023-05-07"]
    assert metadata_dates({"dates": ["7 May 2023", None]}) == ["7 May 2023"]
    assert metadata_dates({}) == []
    # A date counts when the expression it was resolved from was said, not when the memory merely asserts it.
    assert metadata_dates({"dates": {"yesterday": "2023-05-07", "3 June": "2023-06-03"}},
                          ["I ran yesterday."]) == ["2023-05-07"]


def test_audit_counts_ungrounded_facts_and_passes_speaker_and_dates() -> None:
    from edge.evaluation.facts import audit_facts

    calls = []

    def grounder(text, sources, *, speaker=None, dates=()):
        calls.append((text, list(sources), speaker, tuple(dates)))
        return _word_grounding(text, sources, speaker=speaker, dates=dates)

    facts = [
        _memory("m1", "semantic", ("D1:1",), "Ana adopted a cat named Luna"),  # "named" was never said
        _memory("m2", "core", ("D1:1",), "Ana adopted a cat"),
        _memory("m3", "semantic", ("D1:2",), "Ben ran the Lisbon marathon 2023-05-07",
                metadata={"dates": {"yesterday": "2023-05-07"}}),
        _memory("m4", "semantic", ("D9:9",), "Ben owns a boat", deleted_at="2024-01-01"),
        _memory("m5", "semantic", ("D1:2",), "Ben ran the Lisbon marathon named Luna", metadata={"supersedes": "m1"}),
    ]
    audit = audit_facts(facts, _conversation(), grounder)
    assert audit["stored"] == 5 and audit["grounded"] == 3
    assert [u["id"] for u in audit["ungrounded"]] == ["m1", "m4"]
    assert audit["ungrounded"][0]["missing"] == ["named"] and audit["ungrounded"][1]["deleted"]
    text, sources, speaker, dates = calls[2]
    assert sources == ["I ran the Lisbon marathon yesterday."] and speaker == "Ben"
    assert dates == ("8 May 2023", "2023-05-08", "2023-05-07", "7 May 2023")
    assert calls[3][1] == ["I ran the Lisbon marathon yesterday.", "Ana adopted a cat named Luna"]  # m5 replaced m1
    assert len(calls) == 4  # m4 names no turn of the conversation: ungrounded without asking


def test_audit_with_the_grounding_rule_of_the_manager() -> None:
    from edge.evaluation.facts import audit_facts

    grounding = pytest.importorskip("edge.grounding").grounding
    facts = [
        _memory("m1", "semantic", ("D1:1",), "Ana adopted a cat named Luna"),
        _memory("m2", "semantic", ("D1:1",), "Ana adopted a dog"),
        _memory("m3", "semantic", ("D1:2",), "Ben ran the Lisbon marathon on 7 May 2023"),  # "yesterday"
        _memory("m4", "semantic", ("D1:2",), "Ben ran the Lisbon marathon on 3 June 2023",
                metadata={"dates": {"3 June 2023": "2023-06-03"}}),  # a date nobody said
    ]
    audit = audit_facts(facts, _conversation(), grounding)
    assert audit["stored"] == 4 and audit["grounded"] == 2
    assert [(u["id"], u["missing"]) for u in audit["ungrounded"]] == [("m2", ["dog"]), ("m4", ["3", "june"])]


def test_bank_facts_include_deleted_and_superseded_versions(tmp_path: Path) -> None:
    from edge import operations
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.evaluation.facts import bank_facts
    from edge.evaluation.systems import BANK_USER

    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder(), user=BANK_USER) as bank:
        bank.add("Ana: I adopted a cat", tier="episodic", source_turns=["D1:1"])
        kept = bank.add("Ana adopted a cat", source_turns=["D1:1"])
        gone = bank.add("Ana has a dog", source_turns=["D1:1"])
        bank.add("Ana is a nurse", tier="core", source_turns=["D1:3"])
        bank.add("Someone else's fact", user="other")
        bank.delete(gone.id)
        expected = {kept.id, gone.id, "core"}
        if hasattr(operations, "SupersedeOp"):  # a bank that keeps older versions of a fact
            bank.apply([operations.SupersedeOp(kept.id, "Ana adopted a cat named Luna")])
            expected.add("newer")
        facts = bank_facts(bank)
    kinds = {m.id if m.id in (kept.id, gone.id) else "core" if m.tier == "core" else "newer" for m in facts}
    assert kinds == expected and all(m.tier != "episodic" for m in facts)


def test_summary_of_facts_over_conversations() -> None:
    from edge.evaluation.facts import summarise_facts

    assert summarise_facts([]) is None
    audits = [{"sample_id": "c1", "stored": 4, "grounded": 1,
               "ungrounded": [{"id": f"m{i}", "text": "t"} for i in range(3)]},
              {"sample_id": "c2", "stored": 6, "grounded": 5, "ungrounded": [{"id": "m9", "text": "t"}] * 1},
              {"sample_id": "c3", "stored": 0, "grounded": 0, "ungrounded": []}]
    facts = summarise_facts(audits)
    assert facts["stored"] == 10 and facts["grounded"] == 6 and facts["ungrounded"] == 4
    assert facts["hallucination_rate"] == pytest.approx(0.4)
    assert [e["sample_id"] for e in facts["examples"]] == ["c1", "c1", "c1", "c2"]
    assert summarise_facts([audits[2]])["hallucination_rate"] is None


# --------------------------------------------------------------------------- summaries and the report


def _row(category: int, prediction: str, gold: str, by_tier: dict[str, list[str]] | None, evidence: list[str]):
    from edge.evaluation.runner import evidence_recall

    row = {"category": category, "prediction": prediction, "gold": gold, "question": "?", "evidence": evidence,
           **lexical_scores(prediction, gold), "locomo_f1": locomo_f1(prediction, gold, category),
           "evidence_recall": evidence_recall(evidence, [t for turns in (by_tier or {}).values() for t in turns]),
           "seconds": 1.0, "prompt_tokens": 100, "shown": 2}
    if by_tier is not None:
        row["context_turns_by_tier"] = by_tier
        row.update({f"evidence_recall_{k}": evidence_recall(evidence, by_tier.get(k, [])) for k in ("episodic", "fact")})
    return row


def _results() -> dict:
    from edge.evaluation.runner import summarise_system

    stats = [{"bank": {"memories": 3, "bytes": 1000}, "peak_rss_mb": 50.0}]
    rag_rows = [_row(1, "hiking", "hiking, painting", {"episodic": ["D1:1"], "fact": []}, ["D1:1", "D1:2"]),
                _row(4, "Luna", "Luna", {"episodic": ["D1:1"], "fact": []}, ["D1:1"])]
    manager_rows = [_row(1, "painting", "hiking, painting", {"episodic": [], "fact": ["D1:2"]}, ["D1:1", "D1:2"]),
                    _row(4, "a cat", "Luna", {"episodic": [], "fact": ["D1:1"]}, ["D1:1"])]
    audit = {"stored": 4, "grounded": 3, "ungrounded": [
        {"id": "m1", "tier": "semantic", "text": "Ana has a dog", "source_turns": ["D1:1"], "missing": ["dog"],
         "deleted": False}]}
    ingest = [{"turn": "D1:1", "seconds": 0.1}]
    systems = {
        "rag-turns": summarise_system("rag-turns", rag_rows, ingest, stats,
                                      [{"sample_id": "tiny-1", "stored": 0, "grounded": 0, "ungrounded": []}]),
        "manager-prompted": summarise_system("manager-prompted", manager_rows, ingest, stats,
                                             [{"sample_id": "tiny-1", **audit}]),
    }
    return {
        "benchmark": "LoCoMo", "data": "tiny.json", "conversations": ["tiny-1"],
        "settings": {"bundle": "default", "model": "m.gguf", "adapters": [], "prompt_version": "v1", "n_ctx": 4096,
                     "answer_k": 12, "limit": None, "include_adversarial": False},
        "judge": None,
        "category_names": {"1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop",
                           "5": "adversarial"},
        "category_names_mem0": {"1": "single-hop", "2": "temporal", "3": "multi-hop", "4": "open-domain",
                                "5": "adversarial"},
        "categories": ["1", "4"],
        "systems": systems,
    }


def test_summary_splits_evidence_recall_by_memory_kind() -> None:
    results = _results()
    rag = results["systems"]["rag-turns"]["categories"]
    manager = results["systems"]["manager-prompted"]["categories"]
    assert rag["overall"]["evidence_recall_episodic"] == pytest.approx(0.75)
    assert rag["overall"]["evidence_recall_fact"] is None  # rag-turns never shows a fact
    assert manager["overall"]["evidence_recall_episodic"] is None
    assert manager["1"]["evidence_recall_fact"] == 0.5 and manager["4"]["evidence_recall_fact"] == 1.0
    assert manager["1"]["locomo_f1"] == 0.5 and manager["1"]["f1"] == pytest.approx(2 / 3)
    facts = results["systems"]["manager-prompted"]["facts"]
    assert facts["hallucination_rate"] == pytest.approx(0.25) and facts["examples"][0]["sample_id"] == "tiny-1"
    assert results["systems"]["rag-turns"]["facts"]["hallucination_rate"] is None


def test_report_names_categories_both_ways_and_shows_the_new_figures() -> None:
    from edge.evaluation.report import render_report

    report = render_report(_results())
    assert "- categories (LoCoMo's own evaluation code): 1 multi-hop, 2 temporal, 3 open-domain, " \
           "4 single-hop, 5 adversarial" in report
    assert "1 single-hop, 2 temporal, 3 multi-hop, 4 open-domain, 5 adversarial" in report
    header = next(line for line in report.splitlines() if line.startswith("| system | category |"))
    for column in ("F1", "LoCoMo F1", "evidence recall", "evidence recall (episodic)", "evidence recall (facts)"):
        assert f"| {column} |" in header
    assert "LLM judge" not in header  # no judge configured
    assert "| manager-prompted | 1 multi-hop (Mem0: single-hop) | 1 |" in report
    assert "| rag-turns | 4 single-hop (Mem0: open-domain) | 1 |" in report
    assert "| rag-turns | **overall** | 2 |" in report
    # manager-prompted, category 1: F1 66.7, LoCoMo F1 50.0, ..., recall 50.0, episodic —, facts 50.0
    row = next(line for line in report.splitlines() if line.startswith("| manager-prompted | 1 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == ["66.7", "50.0"] and cells[-3:] == ["50.0", "—", "50.0"]
    assert "| manager-prompted | 4 | 3 | 25.0 |" in report
    assert "| rag-turns | 0 | — | — |" in report
    assert "'Ana has a dog'" in report and "not in the source: dog" in report


def test_report_of_an_older_run_shows_dashes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge.commands.evaluate import evaluate
    from edge.evaluation.report import render_report

    old = copy.deepcopy(_results())
    del old["category_names_mem0"]
    for system in old["systems"].values():
        del system["facts"]
        for scores in system["categories"].values():
            for metric in ("locomo_f1", "evidence_recall_episodic", "evidence_recall_fact"):
                del scores[metric]
    report = render_report(old)
    assert "| rag-turns | 1 multi-hop (Mem0: single-hop) | 1 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| rag-turns | **overall**"))
    assert [c.strip() for c in row.strip("|").split("|")][4] == "—"  # LoCoMo F1
    assert "| manager-prompted | — | — | — |" in report

    (tmp_path / "results.json").write_text(json.dumps(old))
    outcome = CliRunner().invoke(evaluate, ["report", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "report.md").read_text() == report


def test_resumed_answers_get_the_official_f1() -> None:
    from edge.evaluation.runner import backfill

    rows = [{"category": 1, "prediction": "painting", "gold": "hiking, painting", "question": "?"},
            {"category": 4, "prediction": "x", "gold": "x", "question": "?", "locomo_f1": 1.0}]
    assert backfill(rows, None)
    assert rows[0]["locomo_f1"] == 0.5 and "judge" not in rows[0]
    assert not backfill(rows, None)


# --------------------------------------------------------------------------- the ceiling: the best offered span


def test_best_offered_is_the_closest_span_and_unknown_abstains() -> None:
    from edge.evaluation.scoring import best_offered, is_unknown

    assert best_offered(["unknown", "a cat named Luna", "Luna"], "Luna") == ("Luna", 1.0)
    assert best_offered(["unknown", "hiking"], "Lisbon") == (None, 0.0)
    assert best_offered([], "Lisbon") == (None, 0.0)
    span, f1 = best_offered(["the Lisbon marathon in May", "Lisbon marathon"], "Lisbon marathon")
    assert (span, f1) == ("Lisbon marathon", 1.0)
    assert is_unknown("Unknown.") and is_unknown(" the unknown ") and not is_unknown("unknown cat")


def test_offered_scores_of_one_answer() -> None:
    from edge.evaluation.runner import offered_scores

    scores = offered_scores(["unknown", "hiking and painting", "painting"], "hiking, painting", 1)
    assert scores["offered"] == 3 and scores["best_offered"] == "hiking and painting"
    assert scores["best_offered_f1"] == pytest.approx(f1_score("hiking and painting", "hiking, painting"))
    assert scores["best_offered_locomo_f1"] == locomo_f1("hiking and painting", "hiking, painting", 1)
    assert scores["gold_offered"] == 0.0  # "hiking and painting" is not "hiking painting"
    assert offered_scores(["unknown", "Luna!"], "luna", 4)["gold_offered"] == 1.0
    # Nothing retrieved: nothing offered, a ceiling of 0. Free text: no ceiling at all.
    assert offered_scores([], "Luna", 4) == {"offered": 0, "best_offered": None, "best_offered_f1": 0.0,
                                             "best_offered_locomo_f1": 0.0, "gold_offered": 0.0}
    assert set(offered_scores(None, "Luna", 4).values()) == {None}


def _offered_row(qa_index: int, category: int, f1: float, best: float | None, *, gold_offered: float | None = None,
                 prediction: str = "x") -> dict:
    row = {"qa_index": qa_index, "category": category, "prediction": prediction, "f1": f1, "em": float(f1 == 1.0),
           "seconds": 1.0, "prompt_tokens": 10, "shown": 2, "unknown": float(prediction == "unknown")}
    if best is not None:
        row.update(best_offered_f1=best, best_offered_locomo_f1=best,
                   gold_offered=float(best == 1.0) if gold_offered is None else gold_offered)
    return row


def test_taken_is_the_ratio_of_the_means_over_rows_with_a_ceiling() -> None:
    from edge.evaluation.runner import taken

    assert taken([_offered_row(0, 4, 0.5, 1.0), _offered_row(1, 4, 0.0, 0.5)]) == pytest.approx(0.25 / 0.75)
    assert taken([_offered_row(0, 4, 1.0, 1.0), _offered_row(1, 4, 0.0, 0.0)]) == 1.0  # a 0 ceiling weighs nothing
    assert taken([_offered_row(0, 4, 0.0, 0.0)]) is None  # nothing was reachable
    assert taken([_offered_row(0, 4, 1.0, None)]) is None  # free text or an older run: no ceiling
    assert taken([]) is None
    # A row without a ceiling neither counts in the F1 nor in the ceiling.
    assert taken([_offered_row(0, 4, 1.0, None), _offered_row(1, 4, 0.25, 0.5)]) == 0.5


def test_summary_of_the_ceiling_and_of_abstention() -> None:
    from edge.evaluation.runner import summarise_system

    rows = [_offered_row(0, 4, 0.5, 1.0), _offered_row(1, 4, 1.0, 1.0), _offered_row(2, 1, 0.0, 0.5),
            _offered_row(3, 2, 0.0, 0.0, prediction="unknown"), _offered_row(5, 5, 0.0, 0.0, prediction="unknown"),
            _offered_row(6, 5, 0.0, 0.0, prediction="Luna")]
    summary = summarise_system("bundle", rows, [], [])
    cats = summary["categories"]
    assert cats["4"]["best_offered_f1"] == 1.0 and cats["4"]["taken"] == 0.75 and cats["4"]["gold_offered"] == 1.0
    assert cats["1"]["taken"] == 0.0 and cats["2"]["taken"] is None and cats["2"]["best_offered_locomo_f1"] == 0.0
    # Overall and the dev/trained split are over the answerable questions (1-4); 5 is scored by abstention.
    overall = cats["overall"]
    assert overall["n"] == 4 and cats["5"]["n"] == 2
    assert overall["best_offered_f1"] == pytest.approx(2.5 / 4) and overall["f1"] == pytest.approx(1.5 / 4)
    assert overall["taken"] == pytest.approx(0.6) and overall["gold_offered"] == pytest.approx(2 / 4)
    # Question 0 is dev (every fifth), the others may be trained on; 5 is adversarial and in neither.
    assert summary["split"]["dev"]["n"] == 1 and summary["split"]["trained"]["n"] == 3
    assert summary["split"]["dev"]["taken"] == 0.5 and summary["split"]["trained"]["taken"] == pytest.approx(1 / 1.5)
    assert summary["abstention"] == {"unanswerable": 2, "abstained_unanswerable": 0.5, "answerable": 4,
                                     "false_unknown": 0.25}
    # Without adversarial questions the false unknowns are still measured; rows of an older run have no
    # "unknown" field, and their prediction says it.
    old = [{k: v for k, v in r.items() if k != "unknown"} for r in rows if r["category"] != 5]
    assert summarise_system("bundle", old, [], [])["abstention"] == {
        "unanswerable": 0, "abstained_unanswerable": None, "answerable": 4, "false_unknown": 0.25}


def _bundle_results() -> dict:
    """`_results()` with `bundle` and `bundle-log-only` on hand-made rows that record what was offered."""
    from edge.evaluation.runner import summarise_system

    results = _results()
    rows = [_offered_row(0, 4, 0.5, 1.0), _offered_row(1, 1, 0.0, 0.5),
            _offered_row(2, 5, 0.0, 0.0, prediction="unknown")]
    log_rows = [{**r, "f1": r["f1"] / 2, "em": 0.0} for r in rows]
    results["systems"] = {"bundle": summarise_system("bundle", rows, [], []),
                          "bundle-log-only": summarise_system("bundle-log-only", log_rows, [], [])}
    results["categories"] = ["1", "4", "5"]
    return results


def test_report_shows_what_is_taken_of_what_is_offered_the_manager_and_abstention() -> None:
    from edge.evaluation.report import render_report

    results = _bundle_results()
    report = render_report(results)
    assert "## What the Answer Agent takes of what it is offered" in report
    # n, F1, best offered F1, taken, LoCoMo F1, best offered LoCoMo F1, gold offered
    assert "| bundle | 4 single-hop (Mem0: open-domain) | 1 | 50.0 | 100.0 | 50.0 | — | 100.0 | 100.0 |" in report
    assert "| bundle-log-only | dev | 1 | 25.0 | 100.0 | 25.0 | — | 100.0 | 100.0 |" in report
    assert "## The Manager's contribution" in report
    # bundle minus bundle-log-only: F1, LoCoMo F1 (not recorded), EM, evidence recall (not recorded)
    assert "| 4 single-hop (Mem0: open-domain) | 1/1 | +25.0 | — | +0.0 | — |" in report
    assert "| dev | 1/1 | +25.0 | — | +0.0 | — |" in report
    assert "## Abstention" in report and "| bundle | 1 | 100.0 | 2 | 0.0 |" in report
    assert "`bundle-log-only`: the bundle's Answer Agent (with its adapter) over the episodic log alone, no Manager" \
        in report
    # One of the two missing: no contribution to show.
    del results["systems"]["bundle"]
    assert "## The Manager's contribution" not in render_report(results)


def test_report_of_a_run_before_the_ceiling_leaves_its_sections_out(tmp_path: Path) -> None:
    from edge.evaluation.report import render_report, write_charts

    old = copy.deepcopy(_results())
    for system in old["systems"].values():
        del system["abstention"]
        for scores in [*system["categories"].values(), *system["split"].values()]:
            for metric in ("best_offered_f1", "best_offered_locomo_f1", "gold_offered", "taken"):
                del scores[metric]
    report = render_report(old)
    assert "| rag-turns | **overall** | 2 |" in report
    for section in ("What the Answer Agent takes", "The Manager's contribution", "## Abstention"):
        assert section not in report
    pytest.importorskip("matplotlib")
    assert "offered.png" not in write_charts(old, tmp_path)
    assert "offered.png" in write_charts(_bundle_results(), tmp_path) and (tmp_path / "offered.png").stat().st_size > 0
