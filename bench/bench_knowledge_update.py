"""Knowledge update: does the agent answer with a fact's current value once the conversation changed it?

    python bench/bench_knowledge_update.py                      # 12 held-out synthetic conversations
    python bench/bench_knowledge_update.py --conversations 4 --orders rank,newest-first

Conversations come from `edge.train.synthetic.generate("test", N)` (seeds no
training saw): one person introduces facts (city, job, pet, ...), changes
them ("I traded my Subaru for a Jeep."), retracts some, repeats some and
makes small talk over a few dated sessions. After the last turn every slot
ever mentioned is asked about (`final_questions`); the gold answer is the
latest value, "unknown" once the slot was retracted. Two systems:

- `bundle`: a fresh bank; every turn through the default bundle's
  `edge.Agent.remember` (the Manager with its shipped adapter; turns carry
  their own times), then `Agent.ask` for each question;
- `bundle-log-only`: the same Agent (same model, adapters and settings),
  each turn only written to the episodic log as the runtime writes it
  (`edge.manager.log_entry_for`, as `edge eval`'s `bundle-log-only`), then
  the same questions.

Every question is answered once per Answer Agent order (`--orders`,
`edge.generation.ANSWER_ORDERS`; "rank" is what ships) on the same two
banks. Figures per system and order:

- `em`: exact match (`edge.evaluation.scoring.exact_match`) on every question;
  `em_changed` on the questions whose slot a "change" turn changed at least
  once (knowledge update), `em_unchanged` on the others;
- `old_share`: of the changed questions, the share answered with an earlier
  value of the slot (an answer holding an earlier value and not the gold one);
  `unknown_share`: the share answered "unknown";
- `new_line_first`: of the changed questions whose gold is a value, the share
  whose context shows a line holding that value before any line holding only
  an earlier one (model-free: what the order did);
- `answer_from`: which memories hold the answer (`AnswerResult.memories`):
  a fact, a log turn, both, or none ("unknown", or a date).

Per system (independent of the order): facts stored per turn (older versions
included) and their grounding (each checked as `edge eval` checks a stored
fact: `edge.evaluation.facts.check_fact` with `edge.grounding.grounding`
over its source turn, the fact it replaced, the speaker and the turn's
dates); the Manager's operations against the gold ones (how many change and
retract turns superseded a fact); `remember` seconds per turn, p50 / p95.

With `--locomo-bank BANK.db` (a conv-26 bank `edge eval locomo` built for
its `bundle` system) the same Agent also answers conv-26's 152 scored
questions (categories 1-4) once per order in `--locomo-orders`, on a copy of
the bank (the file given is never written): LoCoMo F1
(`edge.evaluation.scoring.locomo_f1`), SQuAD F1 and evidence recall of what
was shown, on all of them and on the dev questions (`edge.locomo.dev_question`).
An order can keep every evidence turn in the context and still cost answers,
since a small reader favours its first lines. `--locomo-log-bank` (the bank of
`edge eval`'s `bundle-log-only` system) is answered the same way: the same
reader without the Manager's facts and record.

An order may carry the retired values setting after a "+"
("stale-updates-first+withheld", `edge.generation.RETIRED_VALUES`); an order
alone is read with "offered".

Writes bench/results/knowledge_update.json (`--out`). A model call per turn
and per question: about 15 minutes for 12 conversations and 7 orders on 2
cores, and 3 to 4 minutes per order on conv-26.
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
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "knowledge_update.json"
CONV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "conv-26.json"
USER = "synth"
SYSTEMS = ("bundle", "bundle-log-only")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))] if ordered else 0.0


def slot_history(conv) -> dict[str, dict]:
    """Per slot: the values it took in order, and whether a change / retract turn touched it."""
    slots: dict[str, dict] = {}
    for turn in conv.turns:
        for op in turn.ops:
            if op.slot is None:
                continue
            entry = slots.setdefault(op.slot, {"values": [], "changed": False, "retracted": False})
            if op.value is not None:
                entry["values"].append(op.value)
            entry["changed"] |= op.op == "UPDATE"
            entry["retracted"] |= op.op == "DELETE"
    return slots


def holds(text: str, value: str) -> bool:
    from edge.evaluation.scoring import answer_tokens

    words, wanted = answer_tokens(text), answer_tokens(value)
    return any(words[i:i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))


def source_of(result) -> str:
    tiers = {"log" if m.tier == "episodic" else "fact" for m in result.memories}
    return "both" if len(tiers) == 2 else (tiers.pop() if tiers else "none")


def audit(bank, conv) -> dict:
    """Every fact the bank holds (older versions and retracted ones included), checked for grounding."""
    from edge.dates import human_date, parse_time, resolve_dates
    from edge.evaluation.facts import SourceTurn, check_fact, session_dates
    from edge.grounding import grounding

    sources = {}
    for turn in conv.turns:
        dates = list(session_dates(turn.time))
        at = parse_time(turn.time)
        for mention in resolve_dates(turn.text, at) if at else []:
            dates += [mention.value, human_date(mention.value)]
        sources[turn.turn_id] = SourceTurn(turn.speaker, turn.text, tuple(dict.fromkeys(dates)))
    facts = [m for m in bank.list(user=USER, include_deleted=True, include_superseded=True) if m.tier != "episodic"]
    texts = {m.id: m.text for m in facts}
    checked = [check_fact(m, [sources[t] for t in m.source_turns if t in sources], grounding,
                          texts.get(m.metadata.get("supersedes") or "")) for m in facts]
    return {"stored": len(checked), "grounded": sum(c["grounded"] for c in checked),
            "superseded": sum(c["superseded"] for c in checked),
            "ungrounded": [c for c in checked if not c["grounded"]]}


QUESTION_FIELDS = ("conversation", "question", "gold", "slot", "changed", "retracted")
ANSWER_FIELDS = ("answer", "em", "old", "unknown", "new_line_first", "answer_from", "shown", "facts_shown", "seconds")


def compact_answers(rows: list[dict]) -> dict:
    """Per-question rows as the report keeps them: each question once, then per system and order one row per answer.

    `answers[system][order][i]` is the answer to `questions[i]`, its fields named by `answer_fields`.
    """
    questions = list(dict.fromkeys(tuple(r[k] for k in QUESTION_FIELDS) for r in rows))
    answers: dict = {}
    for r in rows:
        answers.setdefault(r["system"], {}).setdefault(r["order"], []).append([r[k] for k in ANSWER_FIELDS])
    return {"question_fields": list(QUESTION_FIELDS), "questions": [list(q) for q in questions],
            "answer_fields": list(ANSWER_FIELDS), "answers": answers}


def pretty(value, indent: int = 0) -> str:
    """JSON with objects spread over lines and lists of rows one row a line (a readable file of modest size)."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k)}: {pretty(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and all(isinstance(v, (list, dict)) for v in value):
        return "[\n" + ",\n".join(f"{pad} {json.dumps(v, ensure_ascii=False)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def read_as(answerer, label: str) -> None:
    """Set an Answer Agent to read as `label` says: an order, optionally "+offered" or "+withheld" (retired values)."""
    order, _, retired = label.partition("+")
    answerer.order = order
    answerer.retired_values = retired or "offered"


def locomo_answers(args, bundle, backend, orders: list[str], bank: Path) -> dict:
    """conv-26's scored questions answered by the bundle's Agent on a copy of `bank`, once per order."""
    import shutil

    from edge.agent import Agent
    from edge.evaluation.scoring import exact_match, f1_score, is_unknown, locomo_f1
    from edge.locomo import dev_question, load_locomo

    conversation = load_locomo(args.locomo_data)[0]
    questions = conversation.questions()
    out: dict = {"conversation": conversation.sample_id, "bank": str(bank), "questions": len(questions),
                 "orders": {}, "index": [], "answers": {}}  # answers: per order, in the order of `index` (qa index)
    with tempfile.TemporaryDirectory(prefix="edge-ku-locomo-") as folder:
        db = Path(folder) / "bank.db"
        shutil.copyfile(bank, db)
        # As `edge eval`'s `bundle` system opens it: its context window and answer_k.
        agent = Agent(bundle=bundle, db=db, user="locomo", backend=backend, n_ctx=8192,
                      answer_k=bundle.generation.answer_k)
        try:
            for label in orders:
                read_as(agent.answerer, label)
                scored = []
                for qa in questions:
                    result = agent.ask(qa.question)
                    seen = {t for m in result.retrieved for t in m.source_turns}
                    evidence = set(qa.evidence)
                    scored.append({
                        "index": qa.index, "category": qa.category, "answer": result.answer,
                        "locomo_f1": locomo_f1(result.answer, qa.answer, qa.category),
                        "f1": f1_score(result.answer, qa.answer), "em": exact_match(result.answer, qa.answer),
                        "unknown": is_unknown(result.answer),
                        "evidence_recall": len(evidence & seen) / len(evidence) if evidence else None,
                    })

                def mean(key: str) -> float:
                    values = [r[key] for r in scored if r[key] is not None]
                    return round(100 * statistics.fmean(values), 1)

                out["orders"][label] = {key: mean(key) for key in ("locomo_f1", "f1", "em", "evidence_recall")}
                out["orders"][label]["unknown_share"] = mean("unknown")
                dev = [r["locomo_f1"] for r in scored if dev_question(r["index"])]
                out["orders"][label]["dev_locomo_f1"] = round(100 * statistics.fmean(dev), 1) if dev else None
                out["orders"][label]["dev_questions"] = len(dev)
                out["index"] = [r["index"] for r in scored]
                out["answers"][label] = [r["answer"] for r in scored]
                print(f"conv-26 {label}: LoCoMo F1 {out['orders'][label]['locomo_f1']}", flush=True)
        finally:
            agent.close()
    return out


def main() -> None:
    from edge.generation import ANSWER_ORDERS, RETIRED_VALUES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=12, help="held-out synthetic conversations (test split)")
    parser.add_argument("--orders", default=",".join(ANSWER_ORDERS),
                        help=f"Answer Agent orders to answer with, comma-separated (of {', '.join(ANSWER_ORDERS)})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the banks here (a bank already built there is reused); default: a temporary folder")
    parser.add_argument("--locomo-bank", type=Path, default=None,
                        help="a conv-26 bank built by `edge eval locomo` (bundle system): answer its questions too")
    parser.add_argument("--locomo-log-bank", type=Path, default=None,
                        help="the same conversation's bank for `edge eval`'s bundle-log-only system: answered too")
    parser.add_argument("--locomo-orders", default="rank", help="orders to answer conv-26 with, comma-separated")
    parser.add_argument("--locomo-data", type=Path, default=CONV)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle folder to measure instead of the default bundle (e.g. one whose "
                             "generation.consolidation is \"extend\"); use its own --workdir")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    locomo_orders = [o.strip() for o in args.locomo_orders.split(",") if o.strip()] if args.locomo_bank else []
    unknown_orders = {o.partition("+")[0] for o in orders + locomo_orders} - set(ANSWER_ORDERS)
    unknown_retired = {o.partition("+")[2] for o in orders + locomo_orders if "+" in o} - set(RETIRED_VALUES)
    if unknown_orders or unknown_retired:
        raise SystemExit(f"unknown order(s) or retired_values {', '.join(sorted(unknown_orders | unknown_retired))}; "
                         f"have {', '.join(ANSWER_ORDERS)}, each optionally +{' or +'.join(RETIRED_VALUES)}")

    from edge.agent import Agent
    from edge.bundle import Bundle, build_default
    from edge.evaluation.scoring import exact_match, is_unknown
    from edge.manager import log_entry_for, turn_reference
    from edge.prompts import Turn
    from edge.train.synthetic import generate

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bundle = (Bundle.load(args.bundle) if args.bundle
              else build_default(log=lambda message: print(message, file=sys.stderr)))
    conversations = generate("test", args.conversations)
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="edge-ku-")
        workdir = Path(temp.name)
    else:
        workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []  # one per question, system and order
    ingest = {s: {"seconds": [], "turns": 0, "facts": 0, "grounded": 0, "superseded": 0, "ungrounded": [],
                  "ops": Counter(), "gold_changes": 0, "changes_superseding": 0, "gold_retracts": 0,
                  "retracts_superseding": 0} for s in SYSTEMS}
    # One model with the bundle's adapters, loaded as `edge.Agent` loads it, serves both banks' Agents.
    shared = bundle.load_backend("answer")
    for conv in conversations:
        history = slot_history(conv)
        agents = {}
        for system in SYSTEMS:
            db = workdir / f"{conv.sample_id}-{system}.db"
            done = db.with_suffix(".done.json")
            fresh = not done.exists()
            if fresh and db.exists():
                db.unlink()  # an interrupted build: start the bank again
            agent = Agent(bundle=bundle, db=db, user=USER, backend=shared)
            agents[system] = agent
            stats = ingest[system]
            if fresh:
                record = {"seconds": [], "ops": [], "gold": []}
                for synth in conv.turns:
                    turn = Turn(synth.speaker, synth.text, synth.time, synth.turn_id)
                    t0 = time.perf_counter()
                    if system == "bundle":
                        result = agent.remember([turn], wait=True)
                        ops = [op.action for op in result.applied if (op.after or op.before or {}).get("tier") != "episodic"]
                    else:
                        agent.bank.apply([log_entry_for(turn)], user=USER, actor="import", turn=turn_reference(turn))
                        ops = []
                    record["seconds"].append(time.perf_counter() - t0)
                    record["ops"].append(ops)
                    record["gold"].append(synth.kind)
                done.write_text(json.dumps(record))
            record = json.loads(done.read_text())
            stats["seconds"] += record["seconds"]
            stats["turns"] += len(conv.turns)
            for kind, ops in zip(record["gold"], record["ops"]):
                stats["ops"].update(ops)
                superseding = any(a in ("update", "delete", "supersede") for a in (o.lower() for o in ops))
                if kind == "change":
                    stats["gold_changes"] += 1
                    stats["changes_superseding"] += superseding
                if kind == "retract":
                    stats["gold_retracts"] += 1
                    stats["retracts_superseding"] += superseding
            checked = audit(agent.bank, conv)
            stats["facts"] += checked["stored"]
            stats["grounded"] += checked["grounded"]
            stats["superseded"] += checked["superseded"]
            stats["ungrounded"] += checked["ungrounded"]

        for label in orders:
            for system, agent in agents.items():
                read_as(agent.answerer, label)
                for q in conv.final_questions:
                    slot = history.get(q.slot, {"values": [], "changed": False, "retracted": False})
                    old = [v for v in dict.fromkeys(slot["values"]) if v != q.answer]
                    t0 = time.perf_counter()
                    result = agent.ask(q.question)
                    seconds = time.perf_counter() - t0
                    texts = [m.text for m in result.retrieved]
                    new_at = next((i for i, t in enumerate(texts) if q.answer != "unknown" and holds(t, q.answer)), None)
                    old_at = next((i for i, t in enumerate(texts) if any(holds(t, v) for v in old)
                                   and not (q.answer != "unknown" and holds(t, q.answer))), None)
                    rows.append({
                        "conversation": conv.sample_id, "system": system, "order": label, "question": q.question,
                        "gold": q.answer, "answer": result.answer, "slot": q.slot, "changed": slot["changed"],
                        "retracted": q.answer == "unknown",
                        "em": exact_match(result.answer, q.answer),
                        "old": bool(not holds(result.answer, q.answer) and any(holds(result.answer, v) for v in old)),
                        "unknown": is_unknown(result.answer),
                        "new_line_first": None if new_at is None else (old_at is None or new_at < old_at),
                        "answer_from": source_of(result), "shown": len(texts),
                        "facts_shown": sum(m.tier != "episodic" for m in result.retrieved),
                        "seconds": round(seconds, 3),
                    })
            print(f"{conv.sample_id} {label:18s} " + "  ".join(
                f"{s} EM {statistics.fmean(r['em'] for r in rows if r['conversation'] == conv.sample_id and r['system'] == s and r['order'] == label):.2f}"
                for s in SYSTEMS), flush=True)
        for agent in agents.values():
            read_as(agent.answerer, "rank")
            agent.close()
    locomo = locomo_answers(args, bundle, shared, locomo_orders, args.locomo_bank) if locomo_orders else None
    locomo_log = (locomo_answers(args, bundle, shared, locomo_orders, args.locomo_log_bank)
                  if locomo_orders and args.locomo_log_bank else None)
    shared.close()

    def mean(values) -> float | None:
        values = [float(v) for v in values if v is not None]
        return round(100 * statistics.fmean(values), 1) if values else None

    figures: dict[str, dict] = {}
    for system in SYSTEMS:
        stats = ingest[system]
        figures[system] = {
            "remember_s_p50": round(percentile(stats["seconds"], 0.5), 4),
            "remember_s_p95": round(percentile(stats["seconds"], 0.95), 4),
            "turns": stats["turns"],
            "facts_stored": stats["facts"],
            "facts_per_turn": round(stats["facts"] / max(1, stats["turns"]), 3),
            "facts_grounded": stats["grounded"],
            "facts_superseded": stats["superseded"],
            "ungrounded": stats["ungrounded"][:10],
            "manager_ops": dict(stats["ops"]),
            "change_turns": stats["gold_changes"],
            "change_turns_superseding": stats["changes_superseding"],
            "retract_turns": stats["gold_retracts"],
            "retract_turns_superseding": stats["retracts_superseding"],
            "orders": {},
        }
        for order in orders:
            mine = [r for r in rows if r["system"] == system and r["order"] == order]
            changed = [r for r in mine if r["changed"]]
            changed_values = [r for r in changed if not r["retracted"]]
            figures[system]["orders"][order] = {
                "questions": len(mine), "changed_questions": len(changed),
                "em": mean(r["em"] for r in mine),
                "em_changed": mean(r["em"] for r in changed),
                "em_unchanged": mean(r["em"] for r in mine if not r["changed"]),
                "em_retracted": mean(r["em"] for r in mine if r["retracted"]),
                "old_share": mean(r["old"] for r in changed),
                "unknown_share": mean(r["unknown"] for r in changed),
                "new_line_first": mean(r["new_line_first"] for r in changed_values),
                "answer_from": dict(Counter(r["answer_from"] for r in mine)),
                "facts_shown_mean": round(statistics.fmean(r["facts_shown"] for r in mine), 2) if mine else None,
                "ask_s_p50": round(percentile([r["seconds"] for r in mine], 0.5), 3),
                "ask_s_p95": round(percentile([r["seconds"] for r in mine], 0.95), 3),
            }

    print()
    print(f"{'system':16s} {'order':18s} {'EM':>5s} {'EM chg':>6s} {'EM unch':>7s} {'old':>5s} {'unk':>5s} "
          f"{'new 1st':>7s} {'facts':>5s}  answer from")
    for system in SYSTEMS:
        for order, f in figures[system]["orders"].items() if rows else ():
            print(f"{system:16s} {order:18s} {f['em']:5.1f} {f['em_changed']:6.1f} {f['em_unchanged']:7.1f} "
                  f"{f['old_share']:5.1f} {f['unknown_share']:5.1f} {f['new_line_first']:7.1f} "
                  f"{f['facts_shown_mean']:5.2f}  {f['answer_from']}")
    for name, answered in (("bundle", locomo), ("bundle-log-only", locomo_log)):
        if answered:
            print()
            for order, f in answered["orders"].items():
                print(f"conv-26 {name:16s} {order:18s} LoCoMo F1 {f['locomo_f1']:5.1f} (dev {f['dev_locomo_f1']:5.1f})"
                      f"  F1 {f['f1']:5.1f}  EM {f['em']:5.1f}  evidence recall {f['evidence_recall']:5.1f}"
                      f"  unknown {f['unknown_share']:5.1f}")
    for system in SYSTEMS:
        f = figures[system]
        print(f"{system}: {f['facts_per_turn']:.2f} facts/turn ({f['facts_grounded']}/{f['facts_stored']} grounded, "
              f"{f['facts_superseded']} superseded); change turns superseding {f['change_turns_superseding']}/"
              f"{f['change_turns']}, retracts {f['retract_turns_superseding']}/{f['retract_turns']}; "
              f"remember p50 {f['remember_s_p50']:.3f} s p95 {f['remember_s_p95']:.3f} s")

    from importlib.metadata import version

    report = {
        "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "llama_cpp_python": version("llama-cpp-python"),
        "load_average_at_start": load_at_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "timing_note": "wall-clock seconds on a shared machine (see the load averages); remember_s of "
        "bundle-log-only is one bank transaction with its embedding, of bundle that and the Manager's model call",
        "conversations": [c.sample_id for c in conversations], "split": "test",
        "questions": sum(len(c.final_questions) for c in conversations),
        "bundle": str(bundle.root), "generation": bundle.generation.to_manifest(), "orders": orders, "systems": figures, "locomo": locomo,
        "locomo_log_only": locomo_log,
        **compact_answers(rows), "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(pretty(report) + "\n")
    print(f"written to {args.out}")
    if temp is not None:
        temp.cleanup()


if __name__ == "__main__":
    main()
