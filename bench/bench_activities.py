"""Consolidated facts on list questions: does one line per person and topic earn its place for the Answer Agent?

    python bench/bench_activities.py                       # 24 held-out activity conversations
    python bench/bench_activities.py --conversations 8 --orders rank

Conversations come from `edge.train.synthetic.activity_conversations("test", N)`
(seeds no training saw): a person takes up one activity per session
("I took up pottery.", weeks later "Oh, and I joined a choir too."), with small
talk between, and is then asked "What activities has Maya taken up?" (gold:
every activity, in the order told). LoCoMo's multi-hop questions ("What
activities does Melanie partake in?") are of this kind. Systems, each on its
own bank of the same turns, all answered by the default bundle's Answer Agent
(its adapter and served settings):

- `log-only`: the episodic log alone (`edge.manager.log_entry_for`);
- `clauses`: the log and the gold facts a Manager without EXTEND writes, one
  fact per activity (the told turn's clause that names it);
- `consolidated`: the log and the gold facts with EXTEND: the first clause
  ADDed, each later one joined to it (`edge.manager.gold_bank_op`, what a
  Manager that chose right would write), one fact citing every told turn;
- `manager`: the bundle's Manager as served (`Agent.remember`; the shipped one
  unless `--bundle` names another);
- `manager-extend`: the same Manager offered EXTEND
  (`generation.consolidation = "extend"`; the shipped one was not trained on it).

Per system and order (`--orders`): F1 (SQuAD) and LoCoMo's multi-hop F1
(`locomo_f1`, category 1: split on commas) of the answer; the best offered
span's F1 and LoCoMo F1 (the Answer Agent's ceiling: `edge.prompts.answer_spans`
caps a span at `MAX_ANSWER_SPAN_WORDS` words, and offers a consolidated fact's
clauses as one list answer, `clause_list`); evidence recall of what is shown (told turns
among the shown memories' turns) and the share held by facts alone; facts
stored per conversation and how many cite more than one turn.

Writes bench/results/activities.json (`--out`). A model call per question and
per order, and one per turn for the Manager systems: about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "activities.json"
SYSTEMS = ("log-only", "clauses", "consolidated", "manager", "manager-extend")
USER = "bench"


def build_bank(agent, conv, system: str) -> None:
    """Write `conv`'s turns into `agent`'s bank as `system` keeps them (see the module)."""
    from edge.manager import extractive_candidates, gold_bank_op, log_entry_for, turn_reference
    from edge.prompts import Turn
    from edge.train.episodes import gold_clause

    fact = None
    for synth in conv.turns:
        turn = Turn(synth.speaker, synth.text, synth.time, synth.turn_id)
        if system.startswith("manager"):
            agent.remember([turn], wait=True)
            continue
        ops = [log_entry_for(turn)]
        gold = next((op for op in synth.ops if op.op in ("ADD", "EXTEND")), None)
        if gold is not None and system != "log-only":
            clause = gold_clause(extractive_candidates(turn), gold.value or "")
            if clause is None:
                raise SystemExit(f"{synth.turn_id}: no clause of {synth.text!r} names {gold.value!r}")
            name = "EXTEND" if system == "consolidated" and fact is not None else "ADD"
            ops.append(gold_bank_op(name, clause, agent.bank.get(fact) if name == "EXTEND" else None, turn))
        applied = agent.bank.apply(ops, user=USER, actor="manager", turn=turn_reference(turn))
        if len(applied) > 1 and fact is None:
            fact = applied[1].memory_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=24, help="held-out activity conversations (test split)")
    parser.add_argument("--orders", default="stale-updates-first,facts-first",
                        help="Answer Agent orders, comma-separated (the default bundle's is stale-updates-first)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the banks here (reused when present)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle folder instead of the default bundle (its Manager is `manager`; "
                             "`manager-extend` is it offered EXTEND); use its own --workdir")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.agent import Agent
    from edge.bundle import Bundle, build_default
    from edge.evaluation.scoring import best_offered, f1_score, locomo_f1
    from edge.train.synthetic import activity_conversations

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bundle = (Bundle.load(args.bundle) if args.bundle
              else build_default(log=lambda message: print(message, file=sys.stderr)))
    conversations = activity_conversations("test", args.conversations)
    orders = [o for o in args.orders.split(",") if o]
    temp = tempfile.TemporaryDirectory(prefix="edge-activities-") if args.workdir is None else None
    workdir = Path(temp.name) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    shared = bundle.load_backend("answer")

    rows: list[dict] = []
    banks: dict[str, dict[str, list[int]]] = {s: {"facts": [], "multi_turn_facts": []} for s in SYSTEMS}
    for index, conv in enumerate(conversations, start=1):
        told = {t.turn_id for t in conv.turns if t.kind != "chat"}
        (question,) = conv.final_questions
        for system in SYSTEMS:
            db = workdir / f"{conv.sample_id}-{system}.db"
            done = db.with_suffix(".done")
            if db.exists() and not done.exists():
                db.unlink()
            with Agent(bundle=bundle, db=db, user=USER, backend=shared) as agent:
                if system == "manager-extend":  # the bundle's settings, the Manager offered EXTEND
                    agent.manager.generation = agent.manager.generation.override(consolidation="extend")
                if not done.exists():
                    build_bank(agent, conv, system)
                    done.write_text("built\n")
                facts = agent.bank.list(tier=("semantic", "core"))
                banks[system]["facts"].append(len(facts))
                banks[system]["multi_turn_facts"].append(sum(len(f.source_turns) > 1 for f in facts))
                for order in orders:
                    agent.answerer.order = order
                    kept, _ = agent.answerer.context(agent.bank, question.question, user=USER)
                    result = agent.ask(question.question)
                    shown_log = {t for m in kept if m.tier == "episodic" for t in m.source_turns}
                    shown_facts = {t for m in kept if m.tier != "episodic" for t in m.source_turns}
                    _, ceiling = best_offered(result.offered or [], question.answer)
                    rows.append({
                        "conversation": conv.sample_id, "system": system, "order": order,
                        "gold": question.answer, "answer": result.answer,
                        "f1": f1_score(result.answer, question.answer),
                        "locomo_f1": locomo_f1(result.answer, question.answer, 1),
                        "best_offered_f1": ceiling,
                        "best_offered_locomo_f1": max((locomo_f1(span, question.answer, 1)
                                                       for span in result.offered or []), default=0.0),
                        "evidence_recall": len(told & (shown_log | shown_facts)) / len(told),
                        "evidence_recall_facts_only": len(told & (shown_facts - shown_log)) / len(told),
                        "facts_shown": sum(m.tier != "episodic" for m in kept),
                    })
        print(f"{index}/{len(conversations)} {conv.sample_id}: " + "  ".join(
            f"{r['system']}/{r['order']} {r['answer']!r}" for r in rows[-len(SYSTEMS) * len(orders):]
            if r["order"] == orders[0]), file=sys.stderr)

    def mean(system: str, order: str, key: str) -> float:
        return round(100 * statistics.fmean(r[key] for r in rows if r["system"] == system and r["order"] == order), 1)

    figures = {system: {
        "facts_per_conversation": round(statistics.fmean(banks[system]["facts"]), 2),
        "multi_turn_facts_per_conversation": round(statistics.fmean(banks[system]["multi_turn_facts"]), 2),
        "orders": {order: {key: mean(system, order, key) for key in (
            "f1", "locomo_f1", "best_offered_f1", "best_offered_locomo_f1", "evidence_recall",
            "evidence_recall_facts_only")}
            | {"facts_shown_mean": round(statistics.fmean(
                r["facts_shown"] for r in rows if r["system"] == system and r["order"] == order), 2)}
            for order in orders},
    } for system in SYSTEMS}
    for system, f in figures.items():
        for order, o in f["orders"].items():
            print(f"{system:15s} {order:20s} F1 {o['f1']:5.1f}  LoCoMo F1 {o['locomo_f1']:5.1f}  "
                  f"best offered {o['best_offered_f1']:5.1f} / {o['best_offered_locomo_f1']:5.1f}  evidence {o['evidence_recall']:5.1f} "
                  f"(facts only {o['evidence_recall_facts_only']:5.1f}, facts shown {o['facts_shown_mean']:.2f})  "
                  f"facts {f['facts_per_conversation']:.2f} ({f['multi_turn_facts_per_conversation']:.2f} multi-turn)")
    report = {
        "bench": "activities", "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "load_average_at_start": load_at_start,
        "conversations": [c.sample_id for c in conversations], "split": "test", "orders": orders,
        "bundle": str(bundle.root), "generation": bundle.generation.to_manifest(), "systems": figures,
        "answers": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.out, report)
    if temp is not None:
        temp.cleanup()


if __name__ == "__main__":
    main()
