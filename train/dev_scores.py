"""Greedy evaluation of a model being trained, decoded under the runtime's schemas.

- `evaluate_manager`: one reply per Manager episode. Operation accuracy
  (the reply's operation kinds and target ids equal the gold ones; texts
  not compared; synthetic episodes only), value accuracy (the gold values
  appear in what it adds or updates), format score, and the frozen
  reader's answer score on the episode's questions after the reply is
  applied to a copy of the bank; each also per turn kind.
- `evaluate_answer`: EM and F1 of the Answer Agent's answers, the best offered span's F1 (the
  ceiling) and the share of it taken, and abstention (`score_answer_replies`).

Greedy decoding, as at run time; transformers here, where the runtime uses
llama.cpp on the exported GGUF.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from edge.embedder import Embedder
from edge.evaluation.scoring import exact_match, f1_score, is_unknown
from edge.prompts import OP_NAMES, TEXT_OPS, parse_answer_output, parse_manager_output

from edge.train.base_model import render_chat
from edge.train.constrained import SchemaConstraint, constrained_generate
from edge.train.episodes import AnswerEpisode, ManagerEpisode
from edge.train.rewards import CachedEmbedder, Reader, manager_format_score, ops_match, score_reply, values_stated


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def manager_replies(model, tokenizer, constraint: SchemaConstraint, episodes: Sequence[ManagerEpisode], *,
                    max_new_tokens: int = 256, batch_size: int = 8) -> list[str]:
    prompts = [render_chat(tokenizer, e.messages()) for e in episodes]
    return constrained_generate(model, tokenizer, constraint, prompts, [e.schema() for e in episodes],
                                max_new_tokens=max_new_tokens, batch_size=batch_size)


def score_manager_replies(episodes: Sequence[ManagerEpisode], replies: Sequence[str], reader: Reader | None,
                          embedder: Embedder, metric: Callable[[object, object], float] = exact_match,
                          context: str = "facts") -> dict[str, Any]:
    """Metrics of given replies (no model but `reader`'s), overall and per turn kind; `answer` is the reader's
    score with the reward's `context` (`edge.train.rewards.score_reply`)."""
    cached = CachedEmbedder(embedder)
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ops_used: dict[str, int] = defaultdict(int)
    for episode, reply in zip(episodes, replies):
        parse = parse_manager_output(reply, episode.shown_ids)
        for key in ("all", episode.kind or "turn"):
            g = groups[key]
            g["format"].append(manager_format_score(reply, parse))
            if episode.gold_ops is not None:
                g["op_accuracy"].append(float(ops_match(parse, episode.gold_ops)))
                g["value_accuracy"].append(float(parse.ok and values_stated(parse, episode.gold_ops)))
        for op in parse.ops or []:
            ops_used[op.op] += 1
        if not parse.ops and parse.ok:
            ops_used["NOOP"] += 1
        if reader is not None and episode.questions:
            score, _ = score_reply(reply, episode.row(), reader, cached, metric, context)
            groups["all"]["answer"].append(score)  # type: ignore[arg-type]
            groups[episode.kind or "turn"]["answer"].append(score)  # type: ignore[arg-type]
    result: dict[str, Any] = {"n": len(episodes), "ops_used": dict(ops_used),
                              **operation_report(episodes, replies)}
    for key, g in groups.items():
        target = result if key == "all" else result.setdefault("by_kind", {}).setdefault(key, {})
        for name, values in g.items():
            target[name] = _mean(values)
        if key != "all":
            target["n"] = len(g["format"])
    return result


OPERATIONS = OP_NAMES  # ADD, UPDATE, DELETE, NOOP, EXTEND


def operation_report(episodes: Sequence[ManagerEpisode], replies: Sequence[str]) -> dict[str, Any]:
    """Per-operation accuracy, the confusion matrix and clause selection of Manager replies.

    - `per_op_accuracy[op]`: share of the episodes whose gold operation is
      `op` whose reply does the gold operations (`ops_match`);
    - `confusion[gold][predicted]`: counts, by the first operation of each
      (NOOP for none; "INVALID" for a reply that does not parse), so a
      collapse onto one operation shows as one full column;
    - `clause_precision` / `clause_recall` (extractive episodes): of the
      texts the replies add or update, the share that are a gold clause; of
      the gold clauses, the share a reply wrote. LoCoMo's gold clause is the
      one closest to its questions' answers (`evidence_clause`).
    """
    from edge.train.episodes import gold_operation

    confusion: dict[str, dict[str, int]] = {}
    right: dict[str, list[float]] = defaultdict(list)
    chosen = hits = gold_total = 0
    for episode, reply in zip(episodes, replies):
        parse = parse_manager_output(reply, episode.shown_ids)
        predicted = "INVALID" if not parse.ok else (parse.ops[0].op if parse.ops else "NOOP")
        if episode.gold_ops is not None:
            gold = gold_operation(episode)
            row = confusion.setdefault(gold, {})
            row[predicted] = row.get(predicted, 0) + 1
            right[gold].append(float(ops_match(parse, episode.gold_ops)))
        if episode.candidates is None:
            continue
        gold_texts = {op["text"] for op in episode.gold_ops or [] if op.get("text")}
        if episode.evidence_clause:
            gold_texts.add(episode.evidence_clause)
        written = {op.text for op in parse.ops if op.op in TEXT_OPS and op.text}
        chosen += len(written)
        hits += len(written & gold_texts)
        gold_total += len(gold_texts)
    return {
        "per_op_accuracy": {op: _mean(right[op]) for op in OPERATIONS if right.get(op)},
        "confusion": confusion,
        "clause_precision": hits / chosen if chosen else None,
        "clause_recall": hits / gold_total if gold_total else None,
    }


def evaluate_manager(model, tokenizer, constraint: SchemaConstraint, episodes: Sequence[ManagerEpisode],
                     reader: Reader | None, embedder: Embedder, *, max_new_tokens: int = 256, batch_size: int = 8,
                     metric: Callable[[object, object], float] = exact_match, context: str = "facts",
                     ) -> tuple[dict[str, Any], list[str]]:
    replies = manager_replies(model, tokenizer, constraint, episodes, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    return score_manager_replies(episodes, replies, reader, embedder, metric, context), replies


def evaluate_answer(model, tokenizer, constraint: SchemaConstraint, episodes: Sequence[AnswerEpisode], *,
                    max_new_tokens: int = 64, batch_size: int = 8) -> tuple[dict[str, Any], list[str]]:
    prompts = [render_chat(tokenizer, e.messages()) for e in episodes]
    replies = constrained_generate(model, tokenizer, constraint, prompts, [e.schema() for e in episodes],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
    return score_answer_replies(episodes, replies), replies


def score_answer_replies(episodes: Sequence[AnswerEpisode], replies: Sequence[str]) -> dict[str, Any]:
    """Metrics of given Answer Agent replies (pure: no model), overall and per episode kind (`by_kind`).

    - `em`, `f1`: of the parsed answer against the gold (SQuAD-style, `edge.evaluation.scoring`);
    - `best_offered_f1`: the mean F1 of the best offered span (`AnswerEpisode.best_offered`), the ceiling of
      an extractive answer; `taken`: `f1` / `best_offered_f1`, the share of that ceiling the answers reach;
      `gold_offered`: the share of questions whose gold is itself an offered span;
    - `abstained`: of the unanswerable questions (gold "unknown"), the share answered "unknown";
      `false_unknown`: of the answerable ones, the share answered "unknown" (None where there are none);
    - `format`: the share of replies that parse; `relevant_recall`: free text, a listed id holds the answer.
    """
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for episode, reply in zip(episodes, replies):
        parsed = parse_answer_output(reply, episode.shown_ids)
        said_unknown = float(is_unknown(parsed.answer))
        for key in ("all", episode.kind):
            g = groups[key]
            g["em"].append(exact_match(parsed.answer, episode.answer))
            g["f1"].append(f1_score(parsed.answer, episode.answer))
            g["format"].append(float(parsed.error is None))
            if episode.answerable:
                g["best_offered_f1"].append(episode.best_offered()[1])
                g["gold_offered"].append(float(episode.gold_offered()))
                g["false_unknown"].append(said_unknown)
                g["f1_answerable"].append(f1_score(parsed.answer, episode.answer))
            else:
                g["abstained"].append(said_unknown)
            if episode.relevant:
                g["relevant_recall"].append(float(bool(set(parsed.relevant) & set(episode.relevant))))
    result: dict[str, Any] = {}
    for key, g in groups.items():
        target = result if key == "all" else result.setdefault("by_kind", {}).setdefault(key, {})
        target["n"] = len(g["em"])
        target["n_unanswerable"] = len(g["abstained"])
        for name in ("em", "f1", "format", "relevant_recall", "best_offered_f1", "gold_offered", "abstained",
                     "false_unknown"):
            target[name] = _mean(g[name])
        answerable_f1, ceiling = _mean(g["f1_answerable"]), target["best_offered_f1"]
        target["taken"] = answerable_f1 / ceiling if answerable_f1 is not None and ceiling else None
    return result
