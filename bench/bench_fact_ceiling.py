"""What facts could add on LoCoMo conv-26 with the shipped reader: LoCoMo's own observations as the Manager's facts.

    python bench/bench_fact_ceiling.py --log-bank OUT/bundle-log-only/conv-26/bank.db \\
        --bank OUT/bundle/conv-26/bank.db          # banks `edge eval locomo` built
    python bench/bench_fact_ceiling.py ... --bundle DIR --orders facts-first+withheld   # another Answer adapter

LoCoMo (Maharana et al., 2024) annotates each session with "observations":
one sentence per thing a speaker said, written by the dataset's authors,
with the turn it came from ("Caroline attended an LGBTQ support group
recently and found the transgender stories inspiring." [D1:3]). They are
what a very good Manager would write from one turn (pronouns resolved, the
speaker named, small talk left out), so a bank holding the log plus them
bounds what per-turn facts can add to the shipped Answer Agent, read as it
reads them. They are abstractive (not grounded word for word in the turn:
edge's Manager may not write them), so this is a ceiling, not a system.

Systems, each answered by the default bundle's Answer Agent on a copy of a
bank built by `edge eval locomo` (the same turns, the same log):
  log-only        the `bundle-log-only` bank: the episodic log alone
  bundle          the `bundle` bank: the log and the shipped Manager's facts
  observations    the log-only bank plus LoCoMo's observations as facts
                  (each citing its turn, dated by it)
Each under the given orders (`generation.answer_order`, optionally
"+withheld"; the default bundle reads "stale-updates-first+withheld"), and
"facts-in-place", which no bundle serves: facts-first with every turn a
shown fact cites left out, the fact read in its place.

Prints and writes bench/results/fact_ceiling.json: per system and order
F1 (SQuAD and LoCoMo's), EM, dev LoCoMo F1, per-category F1, evidence
recall split into the log and the facts (a turn counts for the facts when
only a fact citing it was shown), facts shown per question.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_knowledge_update import CONV, read_as
from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "fact_ceiling.json"
USER = "locomo"  # the user `edge eval locomo` writes its banks as
IN_PLACE = "facts-in-place"  # read as facts-first, each fact read in place of the turns it cites (`facts_in_place`)


def add_observations(agent, path: Path) -> int:
    """Add conv-26's observations to `agent`'s bank as semantic facts, one transaction; returns how many."""
    import json

    from edge.operations import AddOp

    data = json.loads(path.read_text())
    sample = data[0] if isinstance(data, list) else data
    turn_time = {m.source_turns[0]: m.event_time for m in agent.bank.list(tier="episodic") if m.source_turns}
    ops = []
    for session in sample["observation"].values():
        for speaker, items in session.items():
            for text, turn in items:  # ["Caroline attended an LGBTQ support group ...", "D1:3"]
                if turn in turn_time:
                    ops.append(AddOp(text, "semantic", turn_time[turn], (turn,),
                                     {"speaker": speaker, "said_at": turn_time[turn]}))
    agent.bank.apply(ops, actor="import")
    return len(ops)


def answer_all(agent, questions, label: str) -> dict:
    """Every scored question answered as `label` reads (an order, optionally "+withheld"); scores per question."""
    from edge.evaluation.scoring import exact_match, f1_score, locomo_f1
    from edge.locomo import dev_question

    in_place = label.partition("+")[0] == IN_PLACE
    read_as(agent.answerer, label.replace(IN_PLACE, "facts-first", 1) if in_place else label)
    rows = []
    for qa in questions:
        result = facts_in_place(agent, qa.question) if in_place else agent.ask(qa.question)
        log = {t for m in result.retrieved if m.tier == "episodic" for t in m.source_turns}
        facts = {t for m in result.retrieved if m.tier != "episodic" for t in m.source_turns} - log
        evidence = set(qa.evidence)
        rows.append({
            "index": qa.index, "category": qa.category, "dev": dev_question(qa.index), "answer": result.answer,
            "f1": f1_score(result.answer, qa.answer), "locomo_f1": locomo_f1(result.answer, qa.answer, qa.category),
            "em": exact_match(result.answer, qa.answer),
            "recall_log": len(evidence & log) / len(evidence) if evidence else None,
            "recall_facts": len(evidence & facts) / len(evidence) if evidence else None,
            "facts_shown": sum(m.tier != "episodic" for m in result.retrieved),
        })
    return summarise(rows)


def facts_in_place(agent, question: str):
    """Read as "facts-first", less every turn a fact read first cites: the fact stands in for its turn.

    Not an order edge serves (every served order shows the log's turns);
    measured here to see whether facts carry more evidence per token than
    the turns they come from, read in their place.
    """
    from edge.answer import core_block

    answerer = agent.answerer
    memories = answerer.retrieve(agent.bank, question, user=USER)
    covered = {t for m in memories if m.tier != "episodic" for t in m.source_turns}
    memories = [m for m in memories if m.tier != "episodic" or not set(m.source_turns) <= covered]
    retired = answerer.retirements(agent.bank, question, memories, user=USER)
    return answerer.answer_from(question, memories, core=core_block(agent.bank, USER), retired=retired)


def summarise(rows: list[dict]) -> dict:
    def mean(key: str, subset=None) -> float | None:
        values = [r[key] for r in (subset if subset is not None else rows) if r[key] is not None]
        return round(100 * statistics.fmean(values), 1) if values else None

    out = {key: mean(key) for key in ("f1", "locomo_f1", "em", "recall_log", "recall_facts")}
    out["dev_locomo_f1"] = mean("locomo_f1", [r for r in rows if r["dev"]])
    out["facts_shown_mean"] = round(statistics.fmean(r["facts_shown"] for r in rows), 2)
    out["category_f1"] = {str(c): mean("f1", [r for r in rows if r["category"] == c])
                          for c in sorted({r["category"] for r in rows})}
    out["answers"] = [r["answer"] for r in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-bank", type=Path, required=True, help="conv-26's bank of `edge eval`'s bundle-log-only")
    parser.add_argument("--bank", type=Path, default=None, help="conv-26's bank of `edge eval`'s bundle (optional)")
    parser.add_argument("--orders", default="stale-updates-first+withheld,facts-first",
                        help="orders to answer with, comma-separated (optionally ORDER+withheld)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle folder whose Answer Agent reads instead of the default bundle's (e.g. one "
                             "with an Answer adapter trained on facts-first layouts)")
    parser.add_argument("--data", type=Path, default=CONV, help="the LoCoMo conversation the banks hold")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the figures are written (JSON)")
    args = parser.parse_args()
    for path in (args.log_bank, args.bank, args.data):
        if path is not None and not path.is_file():
            raise SystemExit(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'} (build the "
                             "banks with `edge eval locomo --system bundle --system bundle-log-only`)")
    if args.bundle is not None and not (args.bundle / "bundle.json").is_file():
        raise SystemExit(f"{args.bundle}: no bundle there (a folder with bundle.json, e.g. from `edge export`)")
    from edge.generation import ANSWER_ORDERS, RETIRED_VALUES

    for label in args.orders.split(","):
        order, _, retired = label.partition("+")
        if order not in (*ANSWER_ORDERS, IN_PLACE) or (retired and retired not in RETIRED_VALUES):
            raise SystemExit(f"--orders: {label!r} is no order (one of {', '.join(ANSWER_ORDERS)} or {IN_PLACE}, "
                             f"optionally +{' or +'.join(RETIRED_VALUES)})")

    from edge.agent import Agent
    from edge.bundle import Bundle, build_default
    from edge.locomo import load_locomo

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bundle = (Bundle.load(args.bundle) if args.bundle
              else build_default(log=lambda message: print(message, file=sys.stderr)))
    backend = bundle.load_backend("answer")
    questions = load_locomo(args.data)[0].questions()
    orders = [o for o in args.orders.split(",") if o]
    sources = {"log-only": args.log_bank, "observations": args.log_bank}
    if args.bank is not None:
        sources["bundle"] = args.bank
    systems: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edge-fact-ceiling-") as folder:
        for system, source in sources.items():
            db = Path(folder) / f"{system}.db"
            shutil.copyfile(source, db)
            # As `edge eval`'s bundle system opens it: its context window and answer_k.
            with Agent(bundle=bundle, db=db, user=USER, backend=backend, n_ctx=8192,
                       answer_k=bundle.generation.answer_k) as agent:
                added = add_observations(agent, args.data) if system == "observations" else 0
                facts = len(agent.bank.list(tier=("semantic", "core")))
                systems[system] = {"facts": facts, "observations_added": added, "orders": {}}
                for label in orders:
                    scores = answer_all(agent, questions, label)
                    systems[system]["orders"][label] = scores
                    print(f"{system:<13} {label:<30} F1 {scores['f1']:5.1f}  LoCoMo F1 {scores['locomo_f1']:5.1f}  "
                          f"dev {scores['dev_locomo_f1']:5.1f}  EM {scores['em']:5.1f}  recall log/facts "
                          f"{scores['recall_log']:5.1f}/{scores['recall_facts']:4.1f}  per category "
                          f"{scores['category_f1']}  facts shown {scores['facts_shown_mean']}", flush=True)
    write_results(args.out, {
        "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_average_at_start": load_at_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "bundle": str(args.bundle) if args.bundle else "default", "answer_order_served": bundle.generation.answer_order,
        "conversation": "conv-26", "questions": len(questions), "log_bank": str(args.log_bank),
        "bank": str(args.bank) if args.bank else None, "orders": orders, "systems": systems,
        "seconds": round(time.perf_counter() - started, 1),
    })
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
