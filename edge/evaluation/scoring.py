"""How answers are scored: token F1, BLEU-1 and exact match, plus an optional LLM judge.

The lexical scores follow the LoCoMo / Mem0 / Memory-R1 literature:

- Normalisation (SQuAD's, which LoCoMo's evaluation code starts from):
  lowercase, drop ASCII punctuation, drop the articles "a", "an", "the",
  split on whitespace. So "The Cat!" and "cat" are the same answer.
- F1: harmonic mean of precision and recall over the two token
  *multisets* (a token counts as often as it appears in both).
- BLEU-1: clipped unigram precision times the brevity penalty
  exp(1 - r/c) when the prediction (c tokens) is shorter than the
  reference (r tokens). This is what nltk's
  `sentence_bleu([ref], hyp, weights=(1, 0, 0, 0))` returns on the same
  tokens, including 0 when no token matches (nltk returns 0 before any
  smoothing applies) and 0 for an empty prediction; it is implemented here
  so the runtime needs no nltk.
- Exact match: the normalised strings are equal.

Two scores are 1.0 when both answers normalise to nothing (an empty
answer to an empty question is right); one empty side gives 0.0.

Departures worth knowing when comparing with published numbers: LoCoMo's
own script also removes "and" and commas, stems with Porter, splits
multi-hop gold answers on commas and averages; Mem0's script scores F1
over token *sets*. Papers differ here, which is one reason the judge
score exists. `locomo_f1` is LoCoMo's own F1, reported beside `f1_score`.

The judge asks any `Backend` (usually a bigger model behind
`OpenAIHTTPBackend`) whether the prediction means the same as the gold
answer, constrained to {"verdict": "CORRECT" | "WRONG"}; the score is the
fraction judged CORRECT. Its prompt lives here rather than in
`edge.prompts` because no edge model is ever trained on or served it.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from edge.backends.base import Backend, Message
from edge.errors import EdgeError, ModelOutputError

# What an answer scored (the "Scores" table, one chart each).
ANSWER_METRICS = ("f1", "locomo_f1", "bleu1", "em", "judge", "evidence_recall", "evidence_recall_episodic",
                  "evidence_recall_fact")
# What it could have scored: the best of the extractive answers it was offered (`scoring.best_offered`), and the share
# of that F1 it took ("taken", a ratio of means, not a mean). None for free-text systems and rows of older runs.
OFFERED_METRICS = ("best_offered_f1", "best_offered_locomo_f1", "gold_offered", "taken")
METRICS = ANSWER_METRICS + OFFERED_METRICS
ANSWERABLE = (1, 2, 3, 4)  # LoCoMo categories with an answer in the conversation; 5 (adversarial) has none
UNANSWERABLE = 5
METRIC_LABELS = {
    "f1": "F1",
    "locomo_f1": "LoCoMo F1",
    "bleu1": "BLEU-1",
    "em": "exact match",
    "judge": "LLM judge",
    "evidence_recall": "evidence recall",
    "evidence_recall_episodic": "evidence recall (episodic)",
    "evidence_recall_fact": "evidence recall (facts)",
    "best_offered_f1": "best offered F1",
    "best_offered_locomo_f1": "best offered LoCoMo F1",
    "gold_offered": "gold offered",
    "taken": "taken",
}
# The same five categories as Mem0's paper names them ("Mem0: Building Production-Ready AI Agents with
# Scalable Long-Term Memory", Chhikara et al., 2025, arXiv:2504.19413), and Memory-R1 and MemLoRA after it.
# `CATEGORY_NAMES` are LoCoMo's own (its task_eval code); the numbers are the data's.
MEM0_CATEGORY_NAMES: dict[int, str] = {
    1: "single-hop",
    2: "temporal",
    3: "multi-hop",
    4: "open-domain",
    5: "adversarial",
}

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: object) -> str:
    """Lowercase, strip punctuation and articles, collapse whitespace."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: object) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: object, gold: object) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def multiset_f1(predicted: Counter, gold: Counter) -> float:
    """F1 of two multisets; two empty ones agree (1.0), one empty one does not (0.0)."""
    common = sum((predicted & gold).values())
    if common == 0:
        return float(not predicted and not gold)
    precision, recall = common / sum(predicted.values()), common / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: object, gold: object) -> float:
    """Token F1 over multisets of normalised tokens."""
    return multiset_f1(Counter(answer_tokens(prediction)), Counter(answer_tokens(gold)))


def bleu1_score(prediction: object, gold: object) -> float:
    """BLEU-1 with brevity penalty, as nltk's sentence_bleu with weights (1, 0, 0, 0)."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    clipped = sum((Counter(pred) & Counter(ref)).values())
    if clipped == 0:
        return 0.0
    precision = clipped / len(pred)
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return precision * brevity


def lexical_scores(prediction: object, gold: object) -> dict[str, float]:
    """F1, BLEU-1 and exact match of one prediction against one gold answer."""
    return {
        "f1": f1_score(prediction, gold),
        "bleu1": bleu1_score(prediction, gold),
        "em": exact_match(prediction, gold),
    }


def best_offered(offered: Sequence[str], gold: object) -> tuple[str | None, float]:
    """The offered answer closest to `gold` by token F1 (`f1_score`), the shortest of equals, and its F1.

    The ceiling of an extractive answerer: what it would score had it
    picked the best of the answers it was offered (the spans of
    `edge.prompts.answer_spans`). (None, 0.0) when nothing was offered or
    nothing shares a token with the gold answer.
    """
    best: tuple[float, int, str | None] = (0.0, 0, None)
    for text in offered:
        score = (f1_score(text, gold), -len(text), text)
        if score > best:
            best = score
    return (best[2], best[0]) if best[0] > 0 else (None, 0.0)


def is_unknown(answer: object) -> bool:
    """Whether an answer abstains: it normalises to "unknown" (`edge.prompts.UNKNOWN`, the Answer Agent's abstention)."""
    return normalize_answer(answer) == "unknown"


# --------------------------------------------------------------------------- LoCoMo's own F1
#
# The F1 of LoCoMo's `task_eval/evaluation.py` (snap-research/locomo, Maharana
# et al., ACL 2024): `normalize_answer`, `f1_score`, `f1` and the per-category
# rules of `eval_question_answering`, re-implemented to give the same numbers.

_LOCOMO_DROPPED = re.compile(r"\b(a|an|the|and)\b")
_LOCOMO_ABSTAINS = ("no information available", "not mentioned")


def locomo_normalize(text: object) -> str:
    """LoCoMo's `normalize_answer`: drop commas, lowercase, drop punctuation, then a/an/the/and."""
    text = str(text).replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_LOCOMO_DROPPED.sub(" ", text).split())


@lru_cache(maxsize=None)
def _porter() -> object:
    from nltk.stem import PorterStemmer  # imported on first use: only evaluation needs nltk

    return PorterStemmer()


@lru_cache(maxsize=65536)
def porter_stem(word: str) -> str:
    """nltk's `PorterStemmer().stem`, as LoCoMo's evaluation applies it to every token."""
    return _porter().stem(word)  # type: ignore[attr-defined]


def locomo_tokens(text: object) -> list[str]:
    return [porter_stem(w) for w in locomo_normalize(text).split()]


def locomo_token_f1(prediction: object, gold: object) -> float:
    """LoCoMo's `f1_score`: multiset F1 of Porter-stemmed tokens; 0.0 when nothing is shared.

    Unlike `f1_score`, two answers that normalise to nothing score 0.0, as in LoCoMo.
    """
    predicted, expected = Counter(locomo_tokens(prediction)), Counter(locomo_tokens(gold))
    if sum((predicted & expected).values()) == 0:
        return 0.0
    return multiset_f1(predicted, expected)


def locomo_multi_answer_f1(prediction: object, gold: object) -> float:
    """LoCoMo's `f1`: split both on ","; mean over gold parts of the best F1 against any predicted part."""
    predicted = [p.strip() for p in str(prediction).split(",")]
    expected = [g.strip() for g in str(gold).split(",")]
    return sum(max(locomo_token_f1(p, g) for p in predicted) for g in expected) / len(expected)


def locomo_f1(prediction: object, gold: object, category: int) -> float:
    """LoCoMo's official per-question F1 (snap-research/locomo, `task_eval/evaluation.py`,
    `eval_question_answering`), with categories numbered as LoCoMo's code numbers them:

    - 1 (multi-hop): `locomo_multi_answer_f1`, gold and prediction split on commas;
    - 2 (temporal), 4 (single-hop): `locomo_token_f1`;
    - 3 (open-domain): `locomo_token_f1` against the gold's text before the first ";";
    - 5 (adversarial): 1.0 when the prediction says "no information available" or
      "not mentioned" (any case), else 0.0.
    """
    gold = str(gold)
    if category == 1:
        return locomo_multi_answer_f1(prediction, gold)
    if category in (2, 4):
        return locomo_token_f1(prediction, gold)
    if category == 3:
        return locomo_token_f1(prediction, gold.split(";")[0].strip())
    if category == 5:
        return float(any(phrase in str(prediction).lower() for phrase in _LOCOMO_ABSTAINS))
    raise ValueError(f"LoCoMo has no question category {category!r}")


# --------------------------------------------------------------------------- LLM judge

JUDGE_SYSTEM = """You grade answers to questions about a long conversation.
You get the question, the gold answer and a generated answer. Reply CORRECT
when the generated answer means the same as the gold answer or contains it
(wording, length and format may differ; a date in another format or a
relative date that resolves to the same time is fine). Reply WRONG when it
contradicts the gold answer, misses its point, or says it does not know.
Answer only with JSON like {"verdict": "CORRECT"}."""

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["CORRECT", "WRONG"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


@dataclass
class Verdict:
    correct: bool
    raw: str


class LLMJudge:
    """Asks a backend whether a prediction matches the gold answer (CORRECT / WRONG)."""

    def __init__(self, backend: Backend, *, max_tokens: int = 16) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        return getattr(self.backend, "name", type(self.backend).__name__)

    def messages(self, question: str, gold: str, prediction: str) -> list[Message]:
        user = f"Question: {question}\nGold answer: {gold}\nGenerated answer: {prediction}\n\nVerdict:"
        return [Message("system", JUDGE_SYSTEM), Message("user", user)]

    def judge(self, question: str, gold: str, prediction: str) -> Verdict:
        try:
            completion = self.backend.complete(
                self.messages(question, gold, prediction), schema=JUDGE_SCHEMA, max_tokens=self.max_tokens,
                temperature=0.0,
            )
            text = completion.text.strip()
        except ModelOutputError as exc:
            text = f"({exc.message})"
        upper = text.upper()
        if "CORRECT" not in upper and "WRONG" not in upper:
            raise EdgeError(f"The judge {self.name} gave no verdict: {text[:120]!r}",
                            hint="use a judge model that follows JSON instructions, or one behind a server "
                            "that constrains output to a schema")
        # "WRONG" wins a reply that somehow names both.
        return Verdict(correct="WRONG" not in upper, raw=text)

    def score(self, items: list[tuple[str, str, str]]) -> float:
        """Fraction of (question, gold, prediction) triples judged CORRECT; 0.0 for none."""
        if not items:
            return 0.0
        return sum(self.judge(q, g, p).correct for q, g, p in items) / len(items)
