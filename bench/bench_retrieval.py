"""Evidence within the Answer Agent's budget, with the answer left out: rankings compared on conv-26 and FriendsQA.

    python bench/bench_retrieval.py                       # conv-26 and 40 FriendsQA test scenes, every ranking
    python bench/bench_retrieval.py --rankings hybrid-whole,hybrid --friendsqa-scenes 0

Each conversation is written to an episodic log as the runtime writes turns
(`edge.manager.log_entry_for`, the default bundle's embedder, real SQLite
and sqlite-vec; no Manager: what the Answer Agent reads of the log), and
every question is put to each ranking. What the Answer Agent is shown is
then the runtime's own budget (`AnswerAgent.fit`: the default bundle's
`answer_tokens`, focus windows, lines sized by the served tokenizer), so a
ranking changes only which memories come first. The rankings are
`edge.generation.RETRIEVALS` and "hybrid-whole", hybrid search with the
question embedded names and all (the retrieval before questions were
embedded without the log's speakers). Per ranking, data set and question
category:

- `recall_topk`: the share of a question's evidence turns among the
  ranking's candidates (before the budget), `recall`: among those shown;
- `best_offered_f1`: the F1 of the best span an extractive answer could
  give from what is shown (`edge.prompts.answer_spans`; the ceiling of an
  answer, which a ranking showing more but narrower lines could lower);
- `shown`: lines shown; `prompt_tokens`: their tokens; `retrieve_ms` p50/p95.

No text is generated. LoCoMo's evidence is its `evidence` turn ids;
FriendsQA's the utterances its answers lie in (category: the question's
first word). `--scale-turns N` also times the Answer Agent's retrieval
(`offered_turns`, every ranking) on a log of N turns (conv-26's turns
repeated, its 2 speakers renamed per block of 50 turns, 50 names in all;
a model-free embedder, since only the bank's work is timed) and reading the log's speakers afresh
(`MemoryBank.speakers`, done once and again after a turn is deleted).
Writes bench/results/retrieval.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONV = ROOT.parent / "shared" / "data" / "locomo" / "conv-26.json"
FRIENDSQA = ROOT.parent / "shared" / "data" / "friendsqa"
RESULTS = ROOT / "bench" / "results" / "retrieval.json"
# Hybrid search with the question embedded whole, names and all: the Answer Agent's retrieval before it embedded
# questions without the log's speakers (`edge.answer.without_speakers`).
WHOLE = "hybrid-whole"
sys.path.insert(0, str(ROOT / "bench"))

from results_io import write_results  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))] if ordered else 0.0


def locomo_items(path: Path):
    """(log turns, [(question, gold answer, evidence turn ids, category)]) of each LoCoMo conversation in `path`."""
    from edge.locomo import load_locomo
    from edge.prompts import Turn

    for conversation in load_locomo(path):
        turns = [Turn(t.speaker, t.full_text, s.date_time, t.dia_id) for s, t in conversation.turns()]
        questions = [(q.question, q.answer, set(q.evidence), q.category_name) for q in conversation.questions()
                     if q.evidence]
        yield conversation.sample_id, turns, questions


def friendsqa_items(root: Path, scenes: int):
    """The same for FriendsQA test scenes: each scene a log, its questions with the utterances holding answers."""
    from edge.prompts import Turn
    from edge.train.friendsqa import load_split

    for scene in load_split(root, "test")[:scenes]:
        turns = [Turn(u.speaker, u.text, u.time, u.turn_id) for u in scene.utterances]
        questions = [(q.question, q.answers[0], {f"{scene.scene_id}:u{uid}" for uid in q.utterance_ids},
                      q.question.split()[0].lower()) for q in scene.questions]
        yield scene.scene_id, turns, questions


def retrieve(agent, bank, question: str, ranking: str) -> list:
    """What `ranking` offers for `question`: `agent.retrieve`, or for "hybrid-whole" hybrid search with the question
    embedded names and all, followed by `retrieve`'s search of the facts (so that the times compare)."""
    if ranking != WHOLE:
        return agent.retrieve(bank, question)
    turns = [h.memory for h in bank.search(question, k=agent.k, mode="hybrid", scope="episodic")]
    bank.search(question, k=max(2, agent.k // 3) + len(turns), mode="hybrid", scope="facts")
    return turns


def at_scale(n: int, data: list, agents: dict) -> dict:
    """Retrieval time p50/p95 (ms) per ranking on a log of `n` turns, and the time of reading its speakers."""
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.manager import log_entry_for
    from edge.prompts import Turn

    turns = [t for source, (_, ts, _) in data if source == "locomo" for t in ts]
    questions = [q for source, (_, _, qs) in data if source == "locomo" for q, *_ in qs][:150]
    out: dict = {"turns": n, "questions": len(questions), "embedder": "hash (model-free)"}
    with MemoryBank.open(":memory:", HashEmbedder()) as bank:
        for start in range(0, n, 500):
            block = [turns[i % len(turns)] for i in range(start, min(n, start + 500))]
            bank.apply([log_entry_for(Turn(f"{t.speaker}{(start + j) // 50 % 25}", t.text, t.time, f"s{start + j}"))
                        for j, t in enumerate(block)])
        for name in ("speakers_first_read_ms", "speakers_kept_ms"):
            t0 = time.perf_counter()
            count = len(bank.speakers())
            out[name] = round(1000 * (time.perf_counter() - t0), 2)
        bank.delete(bank.list(tier="episodic", limit=1)[0].id)
        t0 = time.perf_counter()
        bank.speakers()
        out["speakers_after_a_delete_ms"] = round(1000 * (time.perf_counter() - t0), 2)
        out["speakers"] = count
        ms: dict[str, list[float]] = {ranking: [] for ranking in agents}
        for i, question in enumerate(questions):  # the rankings take turns on each question: one load for all
            for ranking in (list(agents) if i % 2 else list(reversed(agents))):
                agent = agents[ranking]
                t0 = time.perf_counter()
                retrieve(agent, bank, question, ranking)
                ms[ranking].append(1000 * (time.perf_counter() - t0))
        for ranking in agents:
            out[ranking] = {"retrieve_ms_p50": round(percentile(ms[ranking], 0.5), 1),
                            "retrieve_ms_p95": round(percentile(ms[ranking], 0.95), 1)}
            print(f"{ranking:16s} {n} turns  retrieve p50 {out[ranking]['retrieve_ms_p50']} ms "
                  f"p95 {out[ranking]['retrieve_ms_p95']} ms", file=sys.stderr)
    print(f"speakers: {count} names; first read {out['speakers_first_read_ms']} ms, kept "
          f"{out['speakers_kept_ms']} ms, after a delete {out['speakers_after_a_delete_ms']} ms", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locomo", type=Path, default=CONV)
    parser.add_argument("--friendsqa", type=Path, default=FRIENDSQA)
    parser.add_argument("--friendsqa-scenes", type=int, default=40, help="FriendsQA test scenes (0: none)")
    parser.add_argument("--rankings", default="", help="comma-separated rankings to run (default: all)")
    parser.add_argument("--scale-turns", type=int, default=0, help="also time retrieval on a log of this many turns")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.bundle import build_default
    from edge.evaluation.scoring import best_offered
    from edge.generation import RETRIEVALS
    from edge.manager import log_entry_for
    from edge.prompts import answer_spans

    bundle = build_default(log=lambda message: print(message, file=sys.stderr))
    backend = bundle.load_backend("answer")
    embedder = bundle.load_embedder()
    names = [n.strip() for n in args.rankings.split(",") if n.strip()] or [WHOLE, *RETRIEVALS]
    agents = {name: AnswerAgent(backend, generation=bundle.generation.override(
        answer_retrieval="hybrid" if name == WHOLE else name), adapter=None) for name in names}
    data = [("locomo", item) for item in locomo_items(args.locomo)]
    if args.friendsqa_scenes and args.friendsqa.is_dir():
        data += [("friendsqa", item) for item in friendsqa_items(args.friendsqa, args.friendsqa_scenes)]

    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (ranking, data set) -> one row per question
    started = time.perf_counter()
    for source, (name, turns, questions) in data:
        with MemoryBank.open(":memory:", embedder) as bank:
            bank.apply([log_entry_for(turn) for turn in turns])
            for question, gold, evidence, category in questions:
                for ranking, agent in agents.items():
                    t0 = time.perf_counter()
                    candidates = retrieve(agent, bank, question, ranking)
                    retrieve_ms = 1000 * (time.perf_counter() - t0)
                    kept, _, _, shown = agent.fit(question, candidates)
                    seen_topk = {t for m in candidates for t in m.source_turns}
                    seen = {t for m in kept for t in m.source_turns}
                    rows[ranking, source].append({
                        "category": category,
                        "recall_topk": len(evidence & seen_topk) / len(evidence),
                        "recall": len(evidence & seen) / len(evidence),
                        "best_offered_f1": best_offered(answer_spans(shown, question), gold)[1],
                        "shown": len(kept),
                        "prompt_tokens": sum(backend.count_tokens(s.text) for s in shown),
                        "retrieve_ms": retrieve_ms,
                    })
        print(f"{source} {name}: {len(questions)} questions", file=sys.stderr)

    def figures(items: list[dict]) -> dict:
        out = {key: round(100 * statistics.fmean(r[key] for r in items), 1)
               for key in ("recall_topk", "recall", "best_offered_f1")}
        out.update(n=len(items), shown=round(statistics.fmean(r["shown"] for r in items), 1),
                   prompt_tokens=round(statistics.fmean(r["prompt_tokens"] for r in items), 1),
                   retrieve_ms_p50=round(percentile([r["retrieve_ms"] for r in items], 0.5), 1),
                   retrieve_ms_p95=round(percentile([r["retrieve_ms"] for r in items], 0.95), 1))
        return out

    results: dict = {}
    for (ranking, source), items in rows.items():
        by_category = defaultdict(list)
        for r in items:
            by_category[r["category"]].append(r)
        entry = figures(items)
        entry["by_category"] = {c: figures(rs) for c, rs in sorted(by_category.items())}
        results.setdefault(ranking, {})[source] = entry
        print(f"{ranking:16s} {source:9s} recall {entry['recall']:5.1f} % (top-k {entry['recall_topk']:5.1f} %)  "
              f"best span F1 {entry['best_offered_f1']:5.1f}  shown {entry['shown']:4.1f}  "
              f"tokens {entry['prompt_tokens']:5.1f}  retrieve p50 {entry['retrieve_ms_p50']:.1f} ms "
              f"p95 {entry['retrieve_ms_p95']:.1f} ms")
        for category, f in entry["by_category"].items():
            print(f"    {category:22s} n {f['n']:3d}  recall {f['recall']:5.1f} %  best span F1 {f['best_offered_f1']:5.1f}")
    scale = at_scale(args.scale_turns, data, agents) if args.scale_turns else None
    backend.close()
    report = {"bench": "retrieval", "at_scale": scale, "budget_tokens": bundle.generation.answer_tokens, "k": bundle.generation.answer_k,
              "locomo": str(args.locomo), "friendsqa_scenes": args.friendsqa_scenes, "rankings": results,
              "seconds": round(time.perf_counter() - started, 1)}
    write_results(args.out, report, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
