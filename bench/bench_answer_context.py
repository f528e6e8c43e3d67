"""What the Answer Agent's context holds, for the same questions and bank: prompt tokens against evidence recall.

    python bench/bench_answer_context.py --db BANK.db            # a bank `edge eval locomo` built for conv-26

No text is generated: each layout is built with the real tokenizer of the
default bundle's model and scored by LoCoMo's evidence annotations, so the
figures are exact and cheap. Layouts:

- `whole-12`: the top 12 turns of the episodic log shown whole and up to 4
  facts first (what edge showed before windows, `answer_k` 12);
- `windows-300`: the top turns, each as its 16-word window around the
  question's words (`edge.prompts.focus`), facts after them, all within
  300 tokens (what free-text answers show); `windows-200/400/500` the same
  within other budgets (up to 30 turns);
- `facts-share-S`: as `windows-300`, but the facts first get a share S of
  the budget (the turns take the rest): how much a fact is worth per token;
- `no-ids-B`: as `windows-B`, with lines that leave out the memory's id
  (what extractive answers show, `edge.prompts.answer_line`; the default
  bundle's budget is `ANSWER_CONTEXT_TOKENS`, 280);
- `order-O`: exactly what the default bundle's Answer Agent shows
  (`AnswerAgent.context`: k 20, 280 tokens, lines without ids) with its
  `answer_order` set to O (`edge.generation.ANSWER_ORDERS`; `order-rank` is
  what ships): whether reading the newest value first costs evidence.

Besides recall, `first_evidence_at_mean` is the mean 0-based position of the
first line holding evidence (questions with evidence shown) and
`evidence_first_line` the share of questions whose first line holds some: a
small reader favours its first lines, so an order can cost answers without
costing recall. `--layouts` picks layouts by name prefix (e.g. `order-`).

Prompt tokens are the uncached part of the prompt (the memory lines and the
question; the instructions' KV state is reused). Writes
bench/results/answer_context.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "answer_context.json"
CONV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "conv-26.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="bank with the conversation's turns (and facts)")
    parser.add_argument("--user", default="locomo")
    parser.add_argument("--data", type=Path, default=CONV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--layouts", default="", help="comma-separated name prefixes of the layouts to run (default: all)")
    args = parser.parse_args()

    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.bundle import build_default, default_generation
    from edge.generation import ANSWER_ORDERS
    from edge.locomo import load_locomo
    from edge.model_calls import shown_memories
    from edge.prompts import ANSWER_CONTEXT_TOKENS, focus_memory, memory_line

    bundle = build_default(log=lambda message: print(message, file=sys.stderr))
    backend = bundle.load_backend("answer", n_ctx=8192)
    conversation = load_locomo(args.data)[0]
    questions = conversation.questions()
    bank = MemoryBank.open(args.db, bundle.load_embedder(), user=args.user)

    def line_cost(memory, question: str, focused: bool, ids: bool = True) -> int:
        shown = shown_memories([memory])[1][0]
        return backend.count_tokens(memory_line(focus_memory(shown, question) if focused else shown, with_id=ids)) + 1

    def windows(question: str, share: float, budget: int = ANSWER_CONTEXT_TOKENS, ids: bool = True) -> list:
        agent = AnswerAgent(backend, k=30, adapter=None)
        retrieved = agent.retrieve(bank, question)
        turns = [m for m in retrieved if m.tier == "episodic"]
        facts = [m for m in retrieved if m.tier != "episodic"]
        used, kept = 0, []

        def take(memories: list, limit: float) -> None:
            nonlocal used
            for memory in memories:
                cost = line_cost(memory, question, True, ids)
                if memory not in kept and used + cost <= limit:
                    kept.append(memory)
                    used += cost

        if share:
            take(facts, budget * share)
        take(turns, budget)
        take(facts, budget)
        return kept

    def whole(question: str) -> list:
        turns = [h.memory for h in bank.search(question, k=12, mode="hybrid", user=args.user, scope="episodic")]
        shown = {t for m in turns for t in m.source_turns}
        facts = [h.memory for h in bank.search(question, k=16, mode="hybrid", user=args.user, scope="facts")
                 if not (h.memory.source_turns and set(h.memory.source_turns) <= shown) and h.memory.tier != "core"]
        return facts[:4] + turns

    layouts = {"whole-12": (whole, False), "windows-300": (lambda q: windows(q, 0.0, 300), True)}
    for budget in (200, 400, 500):
        layouts[f"windows-{budget}"] = (lambda q, b=budget: windows(q, 0.0, b), True)
    for share in (0.15, 0.25, 0.35):
        layouts[f"facts-share-{share}"] = (lambda q, s=share: windows(q, s, 300), True)
    # Extractive answers name no ids, so their lines leave the "[id]" out (`edge.prompts.answer_line`).
    for budget in sorted({220, 240, 260, ANSWER_CONTEXT_TOKENS, 300}):
        layouts[f"no-ids-{budget}"] = (lambda q, b=budget: windows(q, 0.0, b, ids=False), "no-ids")

    # The runtime's own context (retrieve, budget, order) for each order the Answer Agent offers.
    for order in ANSWER_ORDERS:
        agent = AnswerAgent(backend, generation=default_generation(), adapter=None, order=order)
        layouts[f"order-{order}"] = (lambda q, a=agent: a.context(bank, q, user=args.user)[0], "no-ids")
    prefixes = [p.strip() for p in args.layouts.split(",") if p.strip()]
    if prefixes:
        layouts = {name: spec for name, spec in layouts.items() if any(name.startswith(p) for p in prefixes)}

    started = time.perf_counter()
    results = {}
    for name, (build, focused) in layouts.items():
        recall, recall_turns, tokens, shown, facts, first_at = [], [], [], [], [], []
        for qa in questions:
            memories = build(qa.question)
            evidence = set(qa.evidence)
            seen = {t for m in memories for t in m.source_turns}
            seen_turns = {t for m in memories if m.tier == "episodic" for t in m.source_turns}
            if evidence:
                recall.append(len(evidence & seen) / len(evidence))
                recall_turns.append(len(evidence & seen_turns) / len(evidence))
                at = next((i for i, m in enumerate(memories) if evidence & set(m.source_turns)), None)
                first_at.append(at)
            tokens.append(sum(line_cost(m, qa.question, bool(focused), focused != "no-ids") for m in memories)
                          + backend.count_tokens(f"Memories:\n\nQuestion: {qa.question}"))
            shown.append(len(memories))
            facts.append(sum(m.tier != "episodic" for m in memories))
        ordered = sorted(tokens)
        results[name] = {
            "evidence_recall": round(100 * statistics.fmean(recall), 1),
            "evidence_recall_turns": round(100 * statistics.fmean(recall_turns), 1),
            "prompt_tokens_mean": round(statistics.fmean(tokens), 1),
            "prompt_tokens_p95": ordered[round(0.95 * (len(ordered) - 1))],
            "memories_shown_mean": round(statistics.fmean(shown), 1),
            "facts_shown_mean": round(statistics.fmean(facts), 1),
            "first_evidence_at_mean": round(statistics.fmean(a for a in first_at if a is not None), 2),
            "evidence_first_line": round(100 * sum(a == 0 for a in first_at) / len(first_at), 1),
        }
        print(f"{name:18s} recall {results[name]['evidence_recall']:5.1f} %  tokens {results[name]['prompt_tokens_mean']:6.1f}"
              f"  shown {results[name]['memories_shown_mean']:4.1f} (facts {results[name]['facts_shown_mean']:.1f})"
              f"  first evidence at {results[name]['first_evidence_at_mean']:.2f}"
              f" (line 1: {results[name]['evidence_first_line']:.1f} %)")
    bank.close()
    backend.close()
    report = {
        "conversation": conversation.sample_id, "questions": len(questions), "bank": str(args.db),
        "budget_tokens": ANSWER_CONTEXT_TOKENS, "layouts": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
