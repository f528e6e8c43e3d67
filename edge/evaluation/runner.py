"""Run systems over LoCoMo conversations and measure them (what `edge eval locomo` does).

For each system and conversation: feed the sessions' turns in time order,
then ask every selected question (categories 1-4; 5 on request) and score
the answers. Everything is written as it happens, so a run that stops can be
started again with the same `out` folder and skips what is done:

    out/run.json                          the settings; a rerun must match them
    out/<system>/<sample_id>/bank.db      the system's memory bank
    out/<system>/<sample_id>/ingest.jsonl one line per ingested turn (seconds, ops)
    out/<system>/<sample_id>/answers.jsonl one line per answered question, with scores
    out/<system>/<sample_id>/stats.json   bank size and peak RSS
    out/<system>/<sample_id>/facts.json   the grounding audit of its stored facts (systems with a bank)
    out/results.json, out/report.md, out/<metric>.png   the summary (rebuilt every run)

A turn is logged after its operations are committed; a run killed between
the two replays that turn once on resume.

Measured: F1 (SQuAD-style and LoCoMo's own, `scoring.locomo_f1`), BLEU-1,
exact match and (with a judge) LLM-judge accuracy, per category and
overall; evidence recall (the share of a question's LoCoMo evidence turns
among the source turns of what the answer model was shown), overall and
split by memory kind: episodic memories (the verbatim turn log, one per
turn) and facts (semantic and core memories the Manager wrote); per-turn
ingest and per-question latency (p50/p95); prompt tokens per question;
bank size; peak resident memory of the process; and the hallucination rate
of stored facts: the share of a bank's fact memories (deleted and
superseded versions too) whose text `edge.grounding.grounding` does not
find in the turns they name as their source.

With extractive answers the reply can only be one of the spans the answer
model was offered (`edge.prompts.answer_spans`), so each answer is also
scored against its ceiling: the best offered span's F1 and LoCoMo F1,
whether the gold answer itself was offered (exact match reachable), and
"taken", mean F1 over mean best-offered F1: the share of what it could have
scored that it did. Abstention: the share of adversarial questions (5)
answered "unknown" and of answerable ones (1-4) answered "unknown".
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge.errors import EdgeError
from edge.evaluation.facts import NO_FACTS, Grounder, audit_facts, bank_facts, summarise_facts
from edge.evaluation.scoring import (
    ANSWERABLE,
    MEM0_CATEGORY_NAMES,
    METRICS,
    UNANSWERABLE,
    LLMJudge,
    best_offered,
    exact_match,
    is_unknown,
    lexical_scores,
    locomo_f1,
)
from edge.evaluation.systems import SYSTEMS, EvalContext, System, make_system
from edge.generation import GenerationConfig
from edge.locomo import CATEGORY_NAMES, QA, Conversation, dev_question, load_locomo

DEFAULT_SYSTEMS = ("full-context", "rag-turns", "manager-prompted", "bundle")
MEMORY_KINDS = ("episodic", "fact")  # keys of `SystemAnswer.context_turns_by_tier`


@dataclass
class EvalSettings:
    data: Path
    out: Path
    systems: list[str] = field(default_factory=lambda: list(DEFAULT_SYSTEMS))
    bundle: Any = None  # a bundle folder, an `edge.bundle.Bundle` (e.g. a GGUF file or a server), or None: default
    limit: int | None = None
    include_adversarial: bool = False
    samples: list[str] | None = None
    sessions: int | None = None  # only the first N sessions, and the questions answerable from them
    n_ctx: int = 8192
    answer_k: int | None = None  # None: the bundle's (generation.answer_k)
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise EdgeError(f"Unknown system(s): {', '.join(unknown)}.", hint=f"choose from: {', '.join(SYSTEMS)}")
        if not self.systems:
            raise EdgeError("No system to evaluate.", hint=f"choose from: {', '.join(SYSTEMS)}")
        if self.limit is not None and self.limit < 1:
            raise EdgeError("--limit must be at least 1.")
        if self.sessions is not None and self.sessions < 1:
            raise EdgeError("--sessions must be at least 1.")
        self.systems = [s for s in SYSTEMS if s in self.systems]  # one order in every report


# --------------------------------------------------------------------------- files


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut off by a crash: everything after it is redone
    return rows


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()


def _repaired_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a progress file, dropping a last line cut off by a crash so appends stay valid."""
    rows = _read_jsonl(path)
    if path.exists() and len(rows) != len(path.read_text(encoding="utf-8").splitlines()):
        _rewrite_jsonl(path, rows)
    return rows


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _rewrite_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- the run


class LocomoRun:
    """One evaluation: settings, the loaded model, and the folder it writes to."""

    def __init__(self, settings: EvalSettings, *, judge: LLMJudge | None = None,
                 context: EvalContext | None = None, log: Callable[[str], None] | None = None,
                 grounder: Grounder | None = None) -> None:
        self.settings = settings
        self.judge = judge
        self._grounder = grounder
        self.conversations = self._select(load_locomo(settings.data))
        self._context = context
        self._owns_context = context is None
        self.log = log or (lambda message: print(message, file=sys.stderr))

    def _select(self, conversations: list[Conversation]) -> list[Conversation]:
        if self.settings.sessions:
            conversations = [c.first_sessions(self.settings.sessions) for c in conversations]
        wanted = self.settings.samples
        if not wanted:
            return conversations
        known = {c.sample_id for c in conversations}
        missing = [s for s in wanted if s not in known]
        if missing:
            raise EdgeError(f"No conversation {', '.join(missing)} in {self.settings.data}.",
                            hint=f"its sample_ids: {', '.join(sorted(known))}")
        return [c for c in conversations if c.sample_id in wanted]

    def questions(self, conversation: Conversation) -> list[QA]:
        chosen = conversation.questions(include_adversarial=self.settings.include_adversarial)
        return chosen[: self.settings.limit] if self.settings.limit else chosen

    @property
    def context(self) -> EvalContext:
        if self._context is None:
            from edge.bundle import Bundle

            bundle = Bundle.resolve(self.settings.bundle, log=self.log)
            self._context = EvalContext.load(bundle, n_ctx=self.settings.n_ctx, answer_k=self.settings.answer_k)
        return self._context

    # ------------------------------------------------------------------ settings file

    @property
    def generation(self) -> GenerationConfig:
        """The decoding settings this evaluation runs with: the bundle's, with the context's own window and k.

        `EvalContext` loads the answer model with the bundle's settings and
        an `n_ctx` / `answer_k` of the evaluation's choosing; this is that
        one object, recorded whole in the run's fingerprint.
        """
        return self.context.generation

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (the decoding settings among it)."""
        bundle = self.context.bundle
        generation = self.generation
        model, _ = bundle.role("answer")

        def recorded_sha256(path: Path) -> str | None:  # the checksum the bundle's manifest holds for a file
            key = path.relative_to(bundle.root).as_posix() if path.is_relative_to(bundle.root) else str(path)
            return bundle.manifest.get("files", {}).get(key, {}).get("sha256")

        return {
            "data_sha256": _sha256(self.settings.data),
            "bundle": bundle.name,
            "model": model.name,
            "model_sha256": recorded_sha256(model),
            # By content: answers given with one adapter must not be resumed with another of the same name.
            "adapters": {role: recorded_sha256(path) for role, path in sorted(bundle.adapter_paths().items())},
            "prompt_version": bundle.prompt_version,
            "repeat_penalty": generation.repeat_penalty,
            "n_ctx": generation.n_ctx,
            "answer_k": generation.answer_k,
            "answer_tokens": generation.answer_tokens,
            "generation": generation.to_manifest(),
            "sessions": self.settings.sessions,
        }

    def _check_out_dir(self) -> dict[str, Any]:
        out = self.settings.out
        out.mkdir(parents=True, exist_ok=True)
        current = self.fingerprint()
        path = out / "run.json"
        if path.exists():
            recorded = json.loads(path.read_text()).get("fingerprint", {})
            # A setting a run did not record (it predates the setting) is taken to be unchanged.
            changed = [k for k in current if k in recorded and recorded[k] != current[k]]
            if changed:
                raise EdgeError(
                    f"{out} holds a run with other settings ({', '.join(changed)} differ); it cannot be resumed.",
                    hint="pass a new --out folder, or delete this one to start over",
                )
        _write_json(path, {"fingerprint": current, "data": str(self.settings.data)})
        return current

    # ------------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        """Run every system on every conversation (resuming), then write the summary files."""
        started = time.perf_counter()
        fingerprint = self._check_out_dir()
        for name in self.settings.systems:
            for conversation in self.conversations:
                self.run_one(name, conversation)
        results = self.summarise(fingerprint)
        results["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
        _write_json(self.settings.out / "results.json", results)
        from edge.evaluation.report import write_charts, write_report

        write_report(results, self.settings.out / "report.md")
        results["charts"] = write_charts(results, self.settings.out)
        return results

    def workdir(self, system: str, conversation: Conversation) -> Path:
        return self.settings.out / system / conversation.sample_id

    @property
    def grounder(self) -> Grounder:
        if self._grounder is None:
            from edge.grounding import grounding

            self._grounder = grounding
        return self._grounder

    def run_one(self, name: str, conversation: Conversation) -> None:
        workdir = self.workdir(name, conversation)
        system = make_system(name, self.context)
        system.open(conversation, workdir)
        try:
            self._ingest(system, conversation, workdir)
            self._audit_facts(system, conversation, workdir)
            self._answer(system, conversation, workdir)
            stats_path = workdir / "stats.json"
            previous = json.loads(stats_path.read_text()) if stats_path.exists() else {}
            _write_json(stats_path, {
                "bank": system.size(),
                "peak_rss_mb": round(max(peak_rss_mb(), previous.get("peak_rss_mb", 0.0)), 1),
            })
        finally:
            system.close()

    def _bar(self, total: int, initial: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="it", disable=not self.settings.progress,
                    file=sys.stderr, dynamic_ncols=True, leave=False)

    def _ingest(self, system: System, conversation: Conversation, workdir: Path) -> None:
        log_path = workdir / "ingest.jsonl"
        done = {row["turn"] for row in _repaired_jsonl(log_path)}
        turns = list(conversation.turns())
        if system.keeps_bank:
            todo = [(s, t) for s, t in turns if t.dia_id not in done]
        else:
            todo = turns  # nothing was kept: replay every turn, log only new ones
        with self._bar(len(turns), len(turns) - len(todo), f"{system.name} {conversation.sample_id} ingest") as bar:
            for session, turn in todo:
                start = time.perf_counter()
                info = system.ingest_turn(session, turn)
                seconds = time.perf_counter() - start
                if turn.dia_id not in done:
                    _append_jsonl(log_path, {"turn": turn.dia_id, "session": session.index,
                                             "seconds": round(seconds, 4), **info})
                bar.update(1)

    def _audit_facts(self, system: System, conversation: Conversation, workdir: Path) -> None:
        """Check every fact the system's bank holds against its source turns (redone each run: it is cheap)."""
        bank = getattr(system, "bank", None)
        if bank is None:
            return  # no bank (full-context): no facts, no facts.json
        memories = bank_facts(bank)
        # The grounding module is loaded only when there is a fact to check.
        audit = audit_facts(memories, conversation, self.grounder) if memories else NO_FACTS
        _write_json(workdir / "facts.json", audit)

    def _answer(self, system: System, conversation: Conversation, workdir: Path) -> None:
        path = workdir / "answers.jsonl"
        rows = _repaired_jsonl(path)
        done = {row["qa_index"] for row in rows}
        if backfill(rows, self.judge):
            _rewrite_jsonl(path, rows)
        questions = self.questions(conversation)
        todo = [q for q in questions if q.index not in done]
        with self._bar(len(questions), len(questions) - len(todo),
                       f"{system.name} {conversation.sample_id} answer") as bar:
            for qa in todo:
                reply = system.answer(qa.question)
                by_tier = reply.context_turns_by_tier
                row = {
                    "qa_index": qa.index, "category": qa.category, "question": qa.question, "gold": qa.answer,
                    "prediction": reply.answer, **lexical_scores(reply.answer, qa.answer),
                    "locomo_f1": locomo_f1(reply.answer, qa.answer, qa.category),
                    **offered_scores(reply.offered, qa.answer, qa.category),
                    "unknown": float(is_unknown(reply.answer)),
                    "evidence": qa.evidence, "evidence_recall": evidence_recall(qa.evidence, reply.context_turns),
                    **{f"evidence_recall_{kind}": evidence_recall(qa.evidence, by_tier.get(kind, []))
                       for kind in MEMORY_KINDS},
                    "used_recall": evidence_recall(qa.evidence, reply.used_turns),
                    "context_turns": reply.context_turns, "context_turns_by_tier": by_tier,
                    "used_turns": reply.used_turns,
                    "shown": reply.shown, "prompt_tokens": reply.prompt_tokens,
                    "seconds": round(reply.seconds, 4), "error": reply.error,
                }
                if self.judge is not None:
                    row["judge"] = float(self.judge.judge(qa.question, qa.answer, reply.answer).correct)
                _append_jsonl(path, row)
                bar.update(1)

    # ------------------------------------------------------------------ summary

    def summarise(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        systems = {}
        for name in self.settings.systems:
            rows: list[dict[str, Any]] = []
            ingest: list[dict[str, Any]] = []
            stats: list[dict[str, Any]] = []
            facts: list[dict[str, Any]] = []
            for conversation in self.conversations:
                workdir = self.workdir(name, conversation)
                wanted = {q.index for q in self.questions(conversation)}
                rows += [r for r in _read_jsonl(workdir / "answers.jsonl") if r["qa_index"] in wanted]
                ingest += _read_jsonl(workdir / "ingest.jsonl")
                if (workdir / "stats.json").exists():
                    stats.append(json.loads((workdir / "stats.json").read_text()))
                if (workdir / "facts.json").exists():
                    facts.append({"sample_id": conversation.sample_id,
                                  **json.loads((workdir / "facts.json").read_text())})
            systems[name] = summarise_system(name, rows, ingest, stats, facts)
        categories = sorted({c for s in systems.values() for c in s["categories"] if c != "overall"}, key=int)
        return {
            "benchmark": "LoCoMo",
            "data": str(self.settings.data),
            "conversations": [c.sample_id for c in self.conversations],
            "settings": {**fingerprint, "limit": self.settings.limit,
                         "include_adversarial": self.settings.include_adversarial},
            "judge": self.judge.name if self.judge else None,
            "category_names": {str(k): v for k, v in CATEGORY_NAMES.items()},
            "category_names_mem0": {str(k): v for k, v in MEM0_CATEGORY_NAMES.items()},
            "categories": categories,
            "systems": systems,
        }

    def close(self) -> None:
        if self._owns_context and self._context is not None:
            self._context.close()
            self._context = None


def offered_scores(offered: list[str] | None, gold: str, category: int) -> dict[str, Any]:
    """How well the answer model could have done by choosing the best of what it was offered (answers.jsonl).

    `offered`: the extractive answers its schema allowed (`SystemAnswer.offered`); None for free text, whose
    figures are then None. `best_offered` is the offered span with the highest SQuAD-style F1 (`scoring.best_offered`,
    None when no span shares a token with the gold), `best_offered_f1` that F1, `best_offered_locomo_f1` LoCoMo's F1
    of that same span for the question's category (0.0 without one), and `gold_offered` 1.0 when some offered span
    normalises equal to the gold answer (exact match was reachable), else 0.0. `offered` in the row is their count.
    """
    if offered is None:
        return {"offered": None, "best_offered": None, "best_offered_f1": None, "best_offered_locomo_f1": None,
                "gold_offered": None}
    span, f1 = best_offered(offered, gold)
    return {
        "offered": len(offered),
        "best_offered": span,
        "best_offered_f1": f1,
        "best_offered_locomo_f1": 0.0 if span is None else locomo_f1(span, gold, category),
        "gold_offered": float(any(exact_match(text, gold) for text in offered)),
    }


def evidence_recall(evidence: list[str], turns: list[str]) -> float | None:
    """The share (0..1) of a question's evidence turn ids (LoCoMo's "D1:3") among `turns`; None without evidence."""
    if not evidence:
        return None
    shown = set(turns)
    return sum(e in shown for e in evidence) / len(evidence)


def backfill(rows: list[dict[str, Any]], judge: LLMJudge | None) -> bool:
    """Add the scores that answers written by an older run (or without a judge) lack; True if any was."""
    changed = False
    for row in rows:
        if "locomo_f1" not in row:
            row["locomo_f1"] = locomo_f1(row["prediction"], row["gold"], row["category"])
            changed = True
        if judge is not None and "judge" not in row:
            row["judge"] = float(judge.judge(row["question"], row["gold"], row["prediction"]).correct)
            changed = True
    return changed


def _kinds_shown(rows: list[dict[str, Any]]) -> set[str]:
    """The memory kinds that reached the answer model for at least one question."""
    return {kind for r in rows for kind, turns in (r.get("context_turns_by_tier") or {}).items() if turns}


def _scores(rows: list[dict[str, Any]], kinds: set[str]) -> dict[str, Any]:
    """Mean of each metric over the rows that have it (None for none).

    Evidence recall of a memory kind the system never showed (facts for
    rag-turns and full-context) is None rather than 0: there is nothing to
    measure, and answers from an older run that did not record kinds have none.
    """
    out: dict[str, Any] = {"n": len(rows)}
    for metric in METRICS:
        if metric == "taken":
            continue
        kind = metric.removeprefix("evidence_recall_") if metric.startswith("evidence_recall_") else None
        values = [r[metric] for r in rows if r.get(metric) is not None]
        out[metric] = None if kind is not None and kind not in kinds else _mean(values)
    out["taken"] = taken(rows)
    return out


def taken(rows: list[dict[str, Any]]) -> float | None:
    """The share of its reachable F1 the answer model took: mean F1 / mean best-offered F1.

    A ratio from 0 to 1 while every answer is an offered span (an unparsable reply kept as raw text could score
    above the ceiling).

    Over the rows that record a ceiling (`best_offered_f1`: extractive answers of this version of `edge eval`),
    so old rows and free-text answers neither raise nor dilute it. A ratio of means, not a mean of ratios: a
    question with nothing worth choosing (ceiling 0) weighs nothing instead of being undefined. None when no row
    records a ceiling or the ceiling is 0 (nothing could be scored).
    """
    measured = [r for r in rows if r.get("best_offered_f1") is not None and r.get("f1") is not None]
    ceiling = _mean([r["best_offered_f1"] for r in measured])
    if not ceiling:
        return None
    return _mean([r["f1"] for r in measured]) / ceiling


def abstention(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a system answered "unknown" (`scoring.is_unknown`), where it should and where it should not.

    `abstained_unanswerable`: the share of adversarial questions (category 5, gold "Not mentioned in the
    conversation") answered "unknown", None when none was asked (no --include-adversarial). `false_unknown`: the
    share of answerable questions (categories 1-4) answered "unknown", None when none was asked. Rows from older
    runs have no "unknown" field; their prediction says it.
    """
    def said_unknown(row: dict[str, Any]) -> float:
        return float(row["unknown"]) if row.get("unknown") is not None else float(is_unknown(row.get("prediction", "")))

    unanswerable = [said_unknown(r) for r in rows if r["category"] == UNANSWERABLE]
    answerable = [said_unknown(r) for r in rows if r["category"] in ANSWERABLE]
    return {"unanswerable": len(unanswerable), "abstained_unanswerable": _mean(unanswerable),
            "answerable": len(answerable), "false_unknown": _mean(answerable)}


def summarise_system(name: str, rows: list[dict[str, Any]], ingest: list[dict[str, Any]],
                     stats: list[dict[str, Any]], facts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per-category and overall scores, latencies, sizes and the stored-fact audit of one system.

    "overall" and the dev/trained split are over the answerable questions
    (categories 1-4), as LoCoMo's papers report them: an adversarial
    question (5) is scored by whether the answer abstains (`abstention`),
    and its own row shows its lexical scores against LoCoMo's wording.
    """
    kinds = _kinds_shown(rows)
    by_category: dict[str, Any] = {}
    for category in sorted({r["category"] for r in rows}):
        by_category[str(category)] = _scores([r for r in rows if r["category"] == category], kinds)
    answerable = [r for r in rows if r["category"] != UNANSWERABLE]
    by_category["overall"] = _scores(answerable, kinds)
    # Questions `edge train` holds out (every fifth) apart from those it may train on, so a model tuned to
    # this conversation shows its gap.
    indexed = [r for r in answerable if isinstance(r.get("qa_index"), int)]
    split = {"dev": _scores([r for r in indexed if dev_question(r["qa_index"])], kinds),
             "trained": _scores([r for r in indexed if not dev_question(r["qa_index"])], kinds)}
    turn_seconds = [r["seconds"] for r in ingest]
    answer_seconds = [r["seconds"] for r in rows]
    prompt_tokens = [r["prompt_tokens"] for r in rows]
    cls = SYSTEMS[name]
    return {
        "summary": cls.summary,
        "categories": by_category,
        "split": split,
        "turns": len(ingest),
        "questions": len(rows),
        "answer_errors": sum(1 for r in rows if r.get("error")),
        "ingest_errors": sum(1 for r in ingest if r.get("error")),
        "ingest_s": {"p50": percentile(turn_seconds, 50), "p95": percentile(turn_seconds, 95),
                     "total": sum(turn_seconds)},
        "answer_s": {"p50": percentile(answer_seconds, 50), "p95": percentile(answer_seconds, 95),
                     "total": sum(answer_seconds)},
        "prompt_tokens": {"mean": _mean(prompt_tokens), "p95": percentile(prompt_tokens, 95),
                          "max": max(prompt_tokens, default=None)},
        "shown_mean": _mean([r["shown"] for r in rows]),
        "abstention": abstention(rows),
        "bank": {"memories": sum(s["bank"]["memories"] for s in stats), "bytes": sum(s["bank"]["bytes"] for s in stats)},
        "peak_rss_mb": max((s["peak_rss_mb"] for s in stats), default=None),
        "facts": summarise_facts(facts or []),
    }


def run_locomo(settings: EvalSettings, *, judge: LLMJudge | None = None,
               context: EvalContext | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation and return its results (also written to `settings.out`)."""
    run = LocomoRun(settings, judge=judge, context=context)
    try:
        return run.run()
    finally:
        run.close()
