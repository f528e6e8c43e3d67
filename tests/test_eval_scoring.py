"""Answer scores against values computed by hand (BLEU-1 values also match nltk's sentence_bleu)."""
from __future__ import annotations

import json
import math

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
