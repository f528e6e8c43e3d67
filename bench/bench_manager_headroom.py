"""The outcome reward's headroom: how much can one Manager reply change what the frozen Answer Agent answers?

    python bench/bench_manager_headroom.py                          # 12 synthetic test conversations + 40 conv-26 turns
    python bench/bench_manager_headroom.py --conversations 4 --locomo-episodes 0

Memory-R1 trains the Manager on the answers a frozen Answer Agent gives from
the bank the Manager built; a GRPO group learns only where its replies are
scored differently. Before paying for such a run, this measures, for the
episodes `edge train manager` builds (`edge.train.episodes`), every reply
the extractive Manager can give:

- NOOP; ADD of each clause of the turn (`extractive_candidates`); UPDATE of
  each shown fact with each clause (synthetic only: LoCoMo's shown memories
  are stand-ins for facts); DELETE of each shown fact;
- the generator's gold reply (synthetic) and the shipped Manager's own
  greedy reply (the default bundle's Manager with its adapter, asked on the
  facts it would be shown).

Each is scored as the reward scores it (`edge.train.rewards.score_reply`:
the bank rebuilt, the reply applied by `edge.manager.to_bank_ops`, the
episode's questions answered by the shipped Answer Agent with its adapter,
exact match), once per reward context: "facts" (the reader sees the facts
alone, the reward as trained so far) and "served" (the conversation's
episodic log too, as the bundle serves it: a reply earns only what its
facts add to the log).

Figures per source and context (means over episodes with questions; exact
match, the reward's metric, and under "f1" the same for token F1):
`noop`, `gold`, `shipped`: the score of that reply; `oracle`: the best
score any reply reaches (the most one-turn outcome training could teach);
`signal`: the share of episodes whose replies do not all score the same
(a GRPO group there can have a non-zero advantage); `shipped_below_oracle`:
the share where some reply beats the shipped one. `gold` and `shipped` are
means over the episodes that have that reply (`gold_episodes`: LoCoMo turns
with an evidence clause; `shipped_episodes`: those where the Manager was
shown the episode's facts in its order), the others over all. Synthetic figures are
also given per turn kind (intro, change, retract, ...).

The reader decodes greedily, so an answer depends only on the lines it is
shown: `AgentReader` answers a context it has seen before from its cache;
`reader_calls` counts the model calls made. Writes
bench/results/manager_headroom.json (`--out`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_io import write_results  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "manager_headroom.json"
CONV = ROOT.parent / "shared" / "data" / "locomo" / "conv-26.json"
CONTEXTS = ("facts", "served")
NOOP = json.dumps({"ops": [{"op": "NOOP"}]})


def candidate_replies(episode, *, updates: bool) -> list[tuple[str, str]]:
    """(name, reply) for every reply of the extractive action space on `episode` (one operation per reply)."""
    replies = [("noop", NOOP)]
    clauses = episode.candidates or []
    for c, clause in enumerate(clauses):
        replies.append((f"add:{c}", json.dumps({"ops": [{"op": "ADD", "text": clause}]})))
    for i in episode.shown_ids:
        if updates:
            for c, clause in enumerate(clauses):
                replies.append((f"update:{i}:{c}", json.dumps({"ops": [{"op": "UPDATE", "id": i, "text": clause}]})))
        replies.append((f"delete:{i}", json.dumps({"ops": [{"op": "DELETE", "id": i}]})))
    return replies


def shipped_reply(episode, manager_backend, generation, adapter, embedder) -> str | None:
    """The shipped Manager's greedy reply to `episode`, asked on the facts it would be shown (None: it was
    shown them in another order than the episode's, so its ids would not match)."""
    from edge.manager import MemoryManager
    from edge.train.rewards import rebuild_bank

    bank, keys = rebuild_bank([asdict(m) for m in episode.bank], embedder)
    try:
        manager = MemoryManager(manager_backend, bank, generation=generation, adapter=adapter)
        related = manager.related(episode.turn)
        key_of = {v: k for k, v in keys.items()}
        if [key_of.get(m.id) for m in related] != list(episode.shown):
            return None
        _, _, result = manager.propose(episode.turn, related)
        return result.raw
    finally:
        bank.close()


def measure(episodes, reader, embedder, manager, *, updates: bool) -> list[dict]:
    """Per episode with questions: each reply's score under each context."""
    from edge.evaluation.scoring import f1_score
    from edge.train.rewards import CachedEmbedder, score_reply

    cached = CachedEmbedder(embedder)
    rows = []
    for n, episode in enumerate(episodes, start=1):
        if not episode.questions:
            continue
        row = episode.row()
        replies = candidate_replies(episode, updates=updates)
        gold = episode.gold_reply()  # synthetic: the gold operations; LoCoMo: ADD of the evidence clause
        if gold:
            replies.append(("gold", gold))
        shipped = shipped_reply(episode, *manager, cached)
        if shipped is not None:
            replies.append(("shipped", shipped))
        scores: dict[str, dict[str, float]] = {}
        f1: dict[str, dict[str, float]] = {}
        for ctx in CONTEXTS:
            scores[ctx], f1[ctx] = {}, {}
            for name, text in replies:
                scores[ctx][name], answers = score_reply(text, row, reader, cached, context=ctx)
                f1[ctx][name] = sum(f1_score(a, q["answer"]) for a, q in zip(answers, episode.questions)) / len(answers)
        rows.append({"episode": episode.episode_id, "kind": episode.kind or "turn", "shipped": shipped,
                     "questions": [q["question"] for q in episode.questions], "scores": scores, "f1": f1})
        print(f"  {n}/{len(episodes)} {episode.episode_id}: "
              + "; ".join(f"{ctx} noop {s['noop']:.2f} best {max(s.values()):.2f}"
                          + (f" shipped {s['shipped']:.2f}" if "shipped" in s else "")
                          for ctx, s in scores.items()), file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], metric: str = "scores") -> dict:
    """Figures per context (and per turn kind) of `metric`: "scores" (exact match, the reward) or "f1"."""
    def figures(subset: list[dict], ctx: str) -> dict:
        def mean(values):
            values = [v for v in values if v is not None]
            return round(sum(values) / len(values), 4) if values else None

        per = [r[metric][ctx] for r in subset]
        return {
            "episodes": len(per),
            "noop": mean([s["noop"] for s in per]),
            "gold": mean([s.get("gold") for s in per]),  # over the episodes that have one (`gold_episodes`)
            "gold_episodes": sum("gold" in s for s in per),
            "shipped": mean([s.get("shipped") for s in per]),  # over `shipped_episodes`: the Manager saw its ids
            "shipped_episodes": sum("shipped" in s for s in per),
            "oracle": mean([max(s.values()) for s in per]),
            "signal": mean([float(len(set(s.values())) > 1) for s in per]),
            "shipped_below_oracle": mean([float(s["shipped"] < max(s.values())) for s in per if "shipped" in s]),
            "replies_per_episode": mean([len(s) for s in per]),
        }

    out = {ctx: figures(rows, ctx) for ctx in CONTEXTS}
    kinds = sorted({r["kind"] for r in rows})
    if len(kinds) > 1:
        out["by_kind"] = {k: {ctx: figures([r for r in rows if r["kind"] == k], ctx) for ctx in CONTEXTS}
                          for k in kinds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=12, help="synthetic conversations (test split)")
    parser.add_argument("--locomo-episodes", type=int, default=40,
                        help="conv-26 evidence turns, evenly spaced (0: none)")
    parser.add_argument("--locomo-data", type=Path, default=CONV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.agent import Agent
    from edge.bundle import build_default
    from edge.locomo import load_locomo
    from edge.train.episodes import locomo_manager_episodes, synthetic_manager_episodes
    from edge.train.rewards import AgentReader
    from edge.train.synthetic import generate

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bundle = build_default(log=lambda message: print(message, file=sys.stderr))
    embedder = bundle.load_embedder()
    scratch = tempfile.TemporaryDirectory(prefix="edge-headroom-")
    agent = Agent(bundle=bundle, db=Path(scratch.name) / "scratch.db", user="headroom")
    reader = AgentReader(agent.answerer)
    manager = (agent.manager_backend, agent.generation, agent.manager.adapter)
    results: dict = {
        "bench": "manager_headroom", "bundle": str(bundle.root),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_at_start": load_at_start},
        "reader": "the default bundle's Answer Agent with its adapter (greedy); exact match, and token F1 under f1",
        "sources": {},
    }
    sources = [("synthetic-test", lambda: synthetic_manager_episodes(generate("test", args.conversations), embedder),
                True)]
    if args.locomo_episodes:
        def conv26():
            episodes = [e for e in locomo_manager_episodes(load_locomo(args.locomo_data), embedder)
                        if e.questions]
            step = max(1, len(episodes) // args.locomo_episodes)
            return episodes[::step][: args.locomo_episodes]
        sources.append(("locomo-conv-26", conv26, False))
    try:
        for name, build, updates in sources:
            episodes = build()
            print(f"{name}: {len(episodes)} episodes", file=sys.stderr, flush=True)
            calls, start = reader.calls, time.perf_counter()
            rows = measure(episodes, reader, embedder, manager, updates=updates)
            results["sources"][name] = {**summarise(rows), "f1": summarise(rows, "f1"),
                                        "reader_calls": reader.calls - calls,
                                        "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    finally:
        agent.close(wait=False)
        scratch.cleanup()
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in results["sources"].items()}
    print(json.dumps(summary, indent=2))
    write_results(args.out, results, show=False)


if __name__ == "__main__":
    main()
