"""Consolidated facts before a Manager learns them: does one line per person and topic carry more evidence?

    python bench/bench_consolidation.py --db BANK.db               # a bank `edge eval locomo` built for `bundle`
    python bench/bench_consolidation.py --db BANK.db --answer      # and answer with the shipped Answer Agent

Issue 26 asks for facts different in kind from turns, decided on figures.
This measures one such form, *consolidated facts*, without training a
Manager for it: the facts the shipped Manager wrote for LoCoMo conv-26 are
joined, in the order they were written, into one line per speaker and
topic. A fact joins the current line of the same speaker whose embedding
is closest (cosine, the bank's own embedder) when that similarity is at
least the threshold and the joined line stays within `--max-words`;
otherwise it starts a line. A joined line is its facts' texts separated
by "; " and cites every turn they came from (what an EXTEND operation of
the Manager would write: `UpdateOp` keeps the union of `source_turns`).
Each threshold is a policy a Manager could learn (which fact to extend,
or none); `none` is the facts as the Manager wrote them.

For each policy, a copy of the bank holds the log unchanged and the
policy's lines as its current facts (the Manager's own are deleted, and
recoverable, in the copy; the file given is never written). What the
default bundle's Answer Agent is shown (`AnswerAgent.context`, the shipped
retrieval and budget; the orders in `--orders`) is scored against
LoCoMo's evidence: recall, split into the log's turns and the facts;
facts shown per question; best offered span F1 (`edge.prompts.answer_spans`,
`edge.evaluation.scoring.best_offered`). With `--answer`, the shipped
Answer Agent (its adapter, as served) answers the scored questions that
name evidence (150 of conv-26's 152) from each copy: F1, LoCoMo F1, and F1
on the dev questions among them. The
baseline of every row is the log alone (`log-only`: no facts at all).

Writes bench/results/consolidation.json (`--out`). Model-free part: about
a minute per policy and order; `--answer`: about 3 minutes more each.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "consolidation.json"
CONV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "conv-26.json"


def consolidate(facts: list, vectors, threshold: float | None, max_words: int) -> list[tuple[str, tuple[str, ...], str | None]]:
    """The policy's lines: (text, source turns, event time of the first clause), in the order they were started.

    `facts` are current facts oldest first, `vectors` their unit embeddings;
    `threshold` None keeps every fact its own line.
    """
    import numpy as np

    lines: list[dict] = []
    for fact, vector in zip(facts, vectors):
        speaker = fact.metadata.get("speaker")
        best, best_sim = None, -1.0
        if threshold is not None:
            for line in lines:
                if line["speaker"] != speaker:
                    continue
                sim = float(np.dot(line["vector"], vector))
                words = len(line["text"].split()) + len(fact.text.split())
                if sim > best_sim and words <= max_words:
                    best, best_sim = line, sim
        if best is not None and best_sim >= threshold:
            best["text"] = f"{best['text'].rstrip('.')}; {fact.text}"
            best["turns"] = tuple(dict.fromkeys(best["turns"] + fact.source_turns))
            mean = best["vector"] * best["n"] + vector
            best["n"] += 1
            best["vector"] = mean / np.linalg.norm(mean)
        else:
            lines.append({"speaker": speaker, "text": fact.text, "turns": tuple(fact.source_turns),
                          "time": fact.event_time, "vector": vector, "n": 1})
    return [(line["text"], line["turns"], line["time"]) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a conv-26 bank with the log and the Manager's facts")
    parser.add_argument("--user", default="locomo")
    parser.add_argument("--data", type=Path, default=CONV)
    parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6",
                        help="cosine thresholds to join a fact to a line (comma-separated)")
    parser.add_argument("--max-words", type=int, default=40, help="the most words a consolidated line may hold")
    parser.add_argument("--orders", default="rank,facts-first", help="Answer Agent orders (comma-separated)")
    parser.add_argument("--answer", action="store_true", help="answer with the shipped Answer Agent too")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import numpy as np

    from edge.answer import AnswerAgent, core_block
    from edge.bank import MemoryBank
    from edge.bank.db import driver
    from edge.bundle import build_default
    from edge.evaluation.scoring import best_offered, f1_score, locomo_f1
    from edge.locomo import dev_question, load_locomo
    from edge.operations import AddOp, DeleteOp
    from edge.prompts import answer_spans

    started = time.perf_counter()
    bundle = build_default(log=lambda message: print(message, file=sys.stderr))
    embedder = bundle.load_embedder()
    backend = bundle.load_backend("answer", n_ctx=8192)
    generation = bundle.generation
    conversation = load_locomo(args.data)[0]
    # The questions `edge eval locomo` scores (categories 1-4) that name evidence, with their index in the file.
    scored = [(i, qa) for i, qa in enumerate(conversation.qa) if not qa.is_adversarial and qa.evidence]
    temp = tempfile.TemporaryDirectory(prefix="edge-consolidation-")

    with MemoryBank.open(args.db, embedder, user=args.user) as source:
        facts = sorted(source.list(tier="semantic"), key=lambda m: m.created_at)
    vectors = embedder.embed([f.text for f in facts])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    policies: dict[str, float | None] = {"none": None}
    for value in (t.strip() for t in args.thresholds.split(",") if t.strip()):
        policies[f"join-{value}"] = float(value)
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]

    def copy_with(lines: list | None) -> Path:
        """A copy of the bank: the log, and `lines` as its facts (None: no facts, the log alone)."""
        path = Path(temp.name) / f"bank-{time.monotonic_ns()}.db"
        source, target = driver.connect(str(args.db)), driver.connect(str(path))
        source.backup(target)  # a consistent copy, the write-ahead log included
        source.close()
        target.close()
        with MemoryBank.open(path, embedder, user=args.user) as bank:
            ops = [DeleteOp(m.id) for m in bank.list(tier=("semantic", "core"))]
            ops += [AddOp(text, "semantic", at, turns, {"consolidated": len(turns)}) for text, turns, at in lines or []]
            bank.apply(ops, actor="user")
        return path

    def score(path: Path, order: str) -> dict:
        agent = AnswerAgent(backend, generation=generation, order=order, adapter=bundle.role_adapter("answer"))
        recall, recall_log, recall_facts, facts_shown, ceiling = [], [], [], [], []
        f1, lf1, dev_f1, by_category = [], [], [], {}
        with MemoryBank.open(path, embedder, user=args.user) as bank:
            for index, qa in scored:
                memories, shown = agent.context(bank, qa.question)
                evidence = set(qa.evidence)
                log = {t for m in memories if m.tier == "episodic" for t in m.source_turns}
                fact = {t for m in memories if m.tier != "episodic" for t in m.source_turns}
                recall.append(len(evidence & (log | fact)) / len(evidence))
                recall_log.append(len(evidence & log) / len(evidence))
                recall_facts.append(len(evidence & fact - log) / len(evidence))
                facts_shown.append(sum(m.tier != "episodic" for m in memories))
                ceiling.append(best_offered(answer_spans(shown, qa.question), qa.answer)[1])
                if args.answer:
                    answer = agent.answer_from(qa.question, memories, core=core_block(bank, args.user)).answer
                    f1.append(f1_score(answer, qa.answer))
                    lf1.append(locomo_f1(answer, qa.answer, qa.category))
                    by_category.setdefault(qa.category_name, []).append(f1[-1])
                    if dev_question(index):
                        dev_f1.append(f1[-1])

        def pct(values: list[float]) -> float | None:
            return round(100 * statistics.fmean(values), 1) if values else None

        row = {"evidence_recall": pct(recall), "evidence_recall_log": pct(recall_log),
               "evidence_recall_facts_only": pct(recall_facts), "facts_shown_mean": round(statistics.fmean(facts_shown), 2),
               "best_offered_f1": pct(ceiling)}
        if args.answer:
            row.update(f1=pct(f1), locomo_f1=pct(lf1), dev_f1=pct(dev_f1),
                       f1_by_category={k: pct(v) for k, v in sorted(by_category.items())})
        return row

    results: dict = {}
    log_only = copy_with(None)
    results["log-only"] = {"lines": 0, "rank": score(log_only, "rank")}
    print("log-only", results["log-only"], flush=True)
    for name, threshold in policies.items():
        lines = consolidate(facts, vectors, threshold, args.max_words)
        path = copy_with(lines)
        row: dict = {"lines": len(lines), "joined_lines": sum(len(t) > 1 for _, t, _ in lines),
                     "turns_per_line_max": max((len(t) for _, t, _ in lines), default=0),
                     "examples": [text for text, turns, _ in sorted(lines, key=lambda x: -len(x[1]))[:3]]}
        for order in orders:
            row[order] = score(path, order)
            print(name, order, row[order], flush=True)
        results[name] = row
    backend.close()
    temp.cleanup()
    report = {"conversation": conversation.sample_id, "questions": len(scored), "bank": str(args.db),
              "facts": len(facts), "max_words": args.max_words, "answered": args.answer,
              "answer_retrieval": generation.answer_retrieval, "budget_tokens": generation.answer_tokens,
              "policies": results, "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
