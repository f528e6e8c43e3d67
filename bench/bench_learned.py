"""Learned vs untrained agents, measured on the path a user runs: llama.cpp with the GGUF LoRA adapter.

For each training seed: the recipe of `train/configs/<config>.toml` (the
supervised warm start, then GRPO when the config asks for steps), its
adapter converted to a GGUF LoRA (`edge.export.gguf.lora_to_gguf`), then the
base model and each adapter answer the held-out synthetic **test** split
(test seed range: never trained on, never tuned on) on llama.cpp, greedy,
under the runtime's JSON schema, as `edge chat` would:

- Manager: operation accuracy (kinds and target ids), accuracy per gold
  operation, the confusion matrix, clause-selection precision and recall,
  and downstream answer EM (the reply applied to the bank before the turn,
  the frozen candidate reader answers the turn's questions);
- Answer Agent: EM and F1 on the test questions: synthetic facts over the
  gold banks, "When did ...?" over the episodic log, and FriendsQA's test
  file (`--friendsqa-scenes` of its scenes, every question, shown as the
  runtime shows them), each source apart (`em_facts`, `em_time`,
  `em_friendsqa`, `by_kind`); the best offered span's F1 (the ceiling of an
  extractive answer) and the share of it taken; and abstention: of the
  unanswerable questions (`--test-unanswerable` per answerable one, gold
  "unknown") the share answered "unknown", of the answerable ones the share
  wrongly answered "unknown".

`--compare-shipped` measures the adapter edge ships now beside the new ones,
and `--dev` serves the config's dev split too (the one checkpoints and
seeds are chosen on), in the same run. `--set reward.metric=f1` (any
setting) trains a variant of the config.

Seeds give mean and spread (max - min); the gain is compared with the
spread.

    python bench/bench_learned.py --agent manager --seeds 0 1 2
    python bench/bench_learned.py --agent answer --seeds 0 1 2
    python bench/bench_learned.py --agent answer --seeds 0 --compare-shipped --dev --runs runs/learned-f1 --set reward.metric=f1
    python bench/bench_learned.py --agent manager --seeds 0 --sft-steps 2 --test-conversations 1   # smoke

Writes the results into the runs folder (`--runs`, default runs/learned/), beside the adapters and curves;
with `--ship` into bench/results/learned_<agent>.json, the shipped adapter's figures (`--out` chooses).
With `--ship`, the seed with the best dev score (dev, never test: the test
split only measures) becomes the adapter edge ships for the default bundle:
`edge/adapters/<agent>.gguf`, its record `edge/adapters/<agent>.json`, and
its metrics and curve under bench/results/learned_<agent>_run/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def served_replies(backend, episodes, *, adapter: str | None, max_tokens: int,
                   choice_bias: dict[str, float] | None = None) -> list[str]:
    """Each episode's reply on llama.cpp: its runtime messages and schema, greedy, with `adapter` (None: base)
    and the Answer Agent's `choice_bias` (`GenerationConfig.answer_bias`) as the runtime applies it."""
    from edge.model_calls import to_messages

    replies = []
    for i, episode in enumerate(episodes, start=1):
        replies.append(backend.complete(to_messages(episode.messages()), schema=episode.schema(),
                                        max_tokens=max_tokens, temperature=0.0, adapter=adapter,
                                        choice_bias=choice_bias).text)
        print(f"\r  {adapter or 'base'} {i}/{len(episodes)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return replies


def score(agent: str, episodes, replies, embedder) -> dict:
    if agent == "manager":
        from edge.train.dev_scores import score_manager_replies
        from edge.prompts import ANSWER_TOP_K
        from edge.train.rewards import CandidateReader

        return score_manager_replies(episodes, replies, CandidateReader(k=ANSWER_TOP_K), embedder)
    from edge.train.dev_scores import score_answer_replies

    scores = score_answer_replies(episodes, replies)
    for kind, name in (("fact", "facts"), ("time", "time"), ("friendsqa", "friendsqa")):  # each source apart
        if kind in scores.get("by_kind", {}):
            scores[f"em_{name}"] = scores["by_kind"][kind]["em"]
            scores[f"n_{name}"] = scores["by_kind"][kind]["n"]
    return scores


def answer_test_episodes(config, embedder, test_convs, args) -> list:
    """The Answer Agent's held-out test split: synthetic questions (facts, "When did ...?") and FriendsQA's test file.

    Every FriendsQA test question is kept, offered or not, so the best
    offered span's F1 is the ceiling of the whole split; `--test-unanswerable`
    adds questions whose gold is "unknown" to both (the same for every
    config, so runs compare).
    """
    from edge.train.base_model import load_base
    from edge.train.episodes import friendsqa_answer_episodes, synthetic_answer_episodes, synthetic_time_episodes
    from edge.train.recipe import answer_context_agent

    d = config.data
    # Shown as the runtime Answer Agent shows them, sized by the served tokenizer.
    reader = answer_context_agent(load_base(config.base)[1], config)
    episodes = synthetic_answer_episodes(test_convs, embedder, k=d.answer_k, text_mode=d.text_mode)
    episodes += synthetic_time_episodes(test_convs, embedder, per_conversation=max(d.time_questions, 3), k=d.answer_k,
                                        text_mode=d.text_mode, reader=reader, unanswerable=args.test_unanswerable)
    if args.friendsqa_scenes and args.friendsqa and Path(args.friendsqa).is_dir():
        from edge.train.friendsqa import load_split

        scenes = load_split(args.friendsqa, "test")[: args.friendsqa_scenes]
        episodes += friendsqa_answer_episodes(scenes, embedder, k=d.answer_k, text_mode=d.text_mode, reader=reader,
                                              only_offered=False, unanswerable=args.test_unanswerable, seed=0)
    return episodes


def finished_run(out: Path) -> dict:
    """What a finished run recorded: dev scores before training and at its end, steps, and the time between."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if r["kind"] in ("dev", "sft")]
    best = out / "best-adapter" / "edge-adapter.json"
    return {"seconds": round(evaluated[-1]["time"] - evaluated[0]["time"], 1),  # training and the last dev check
            "steps": json.loads((out / "adapter" / "edge-adapter.json").read_text()).get("steps"),
            "dev_before": evaluated[0], "dev_after": evaluated[-1],
            "best_step": json.loads(best.read_text()).get("steps") if best.is_file() else None}


def dev_score(agent: str, run: dict) -> float:
    """The dev score a seed is chosen by: the trained adapter's, as the run chose its best checkpoint."""
    dev = run["dev_after"]
    return dev["op_accuracy"] if agent == "manager" else dev.get("em", 0.0)


def ship(agent: str, results: dict, runs: Path, command: str) -> Path:
    """Copy the dev-best seed's GGUF adapter into the package (`edge/adapters/`), with its record and curve."""
    import shutil
    from datetime import datetime, timezone

    from edge import __version__
    from edge.bundle import SHIPPED_ADAPTERS
    from edge.files import sha256_file
    from edge.prompts import PROMPT_VERSION

    seed = max(results["training"], key=lambda s: dev_score(agent, results["training"][s]))
    run = runs / f"{agent}-seed{seed}"
    gguf = run / f"{agent}.gguf"
    SHIPPED_ADAPTERS.mkdir(exist_ok=True)
    target = SHIPPED_ADAPTERS / f"{agent}.gguf"
    shutil.copyfile(gguf, target)
    meta = json.loads((Path(results["training"][seed]["adapter"]) / "edge-adapter.json").read_text())
    record = {
        "agent": agent,
        "command": command,
        "seed": int(seed),
        "chosen_by": "dev score of the trained adapter (manager: operation accuracy; answer: EM), best of the seeds",
        "gguf_sha256": sha256_file(target),
        "base": meta["base"], "base_sha256": meta["base_sha256"],
        "prompt_version": PROMPT_VERSION, "edge_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": meta["config"],
        "dev_before": meta["dev_before"], "dev": meta["dev"],
        "test_before": results["before"], "test": results["after"][str(seed)],
        "training_seconds": results["training"][seed].get("seconds"),
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    curve = RESULTS / f"learned_{agent}_run"
    curve.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "metrics.csv", "curve.png", "config.json"):
        if (run / name).is_file():
            shutil.copyfile(run / name, curve / name)
    print(f"shipped seed {seed}: {target} ({target.stat().st_size // 1024} KiB)")
    return target


def parse_settings(items: list[str]) -> dict:
    """`--set` items ("reward.metric=f1", "lora.r=32") as config overrides, values read as TOML (else strings)."""
    from edge.train.config import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set takes KEY=VALUE, not {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values), "values": values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=("manager", "answer"), default="manager")
    parser.add_argument("--config", default=None, help="training config (default: smollm2-135m-<agent>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=None, help="warm-start steps (default: the config's)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the config's)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config setting, e.g. --set reward.metric=f1 --set lora.r=32 (TOML values)")
    parser.add_argument("--test-conversations", type=int, default=12)
    parser.add_argument("--locomo", default=str(ROOT.parent / "shared" / "data" / "locomo" / "conv-26.json"),
                        help="LoCoMo file for configs that train on it")
    parser.add_argument("--friendsqa", default=str(ROOT.parent / "shared" / "data" / "friendsqa"),
                        help="FriendsQA folder: training data for configs that mix it in, and the Answer Agent's "
                             "test scenes (friendsqa_tst.json, never trained on)")
    parser.add_argument("--friendsqa-scenes", type=int, default=40,
                        help="Answer Agent: FriendsQA test scenes measured (0: none)")
    parser.add_argument("--test-unanswerable", type=float, default=0.2,
                        help="Answer Agent: unanswerable test questions (gold \"unknown\") per answerable one")
    parser.add_argument("--dev", action="store_true",
                        help="also serve the config's dev episodes on llama.cpp (the split checkpoints are chosen on)")
    parser.add_argument("--compare-shipped", action="store_true",
                        help="also measure the adapter edge ships now (edge/adapters/<agent>.gguf), in the same run")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "learned")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run has finished")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default: <runs>/learned_<agent>.json; with --ship, "
                             "bench/results/learned_<agent>.json)")
    parser.add_argument("--ship", action="store_true",
                        help="make the dev-best seed's adapter the one edge ships (edge/adapters/<agent>.gguf)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from edge.bundle import Bundle
    from edge.export.gguf import lora_to_gguf
    from edge.train.config import load_config
    from edge.train.episodes import synthetic_manager_episodes
    from edge.train.recipe import load_embedder
    from edge.generation import GenerationConfig
    from edge.train.synthetic import activity_conversations, generate
    from edge.train.trainer import train

    config_name = args.config or f"smollm2-135m-{args.agent}"
    overrides = {k: v for k, v in (("sft_steps", args.sft_steps), ("steps", args.steps)) if v is not None}
    overrides.update(parse_settings(args.settings))
    overrides["data.locomo_path"] = args.locomo
    if args.agent == "answer" and Path(args.friendsqa).is_dir():
        overrides["data.friendsqa_path"] = args.friendsqa
    base_config = load_config(config_name, **overrides)
    embedder = load_embedder(base_config.data.embedder)
    test_convs = generate("test", args.test_conversations)
    d = base_config.data
    if args.agent == "manager":
        if d.activity_conversations:  # a Manager trained on lists told over sessions is tested on them too
            test_convs = test_convs + activity_conversations("test", args.test_conversations)
        ops = GenerationConfig(consolidation=d.consolidation).manager_ops  # what it is served with
        episodes = synthetic_manager_episodes(test_convs, embedder, related_k=d.related_k, text_mode=d.text_mode,
                                              ops=ops)
    else:
        episodes = answer_test_episodes(base_config, embedder, test_convs, args)
    print(f"{len(episodes)} test episodes from {len(test_convs)} held-out conversations"
          + (f" and {args.friendsqa_scenes} FriendsQA test scenes" if args.agent == "answer" else ""), file=sys.stderr)
    dev_episodes = []
    if args.dev:
        from edge.train.recipe import build_data

        reader = None
        if args.agent == "answer":
            from edge.train.base_model import load_base
            from edge.train.recipe import answer_context_agent

            reader = answer_context_agent(load_base(base_config.base)[1], base_config)
        dev_episodes = build_data(base_config, embedder, reader=reader).dev
        print(f"{len(dev_episodes)} dev episodes", file=sys.stderr)

    started = time.perf_counter()
    adapters: dict[int, Path] = {}
    training: dict[int, dict] = {}
    for seed in args.seeds:
        config = load_config(config_name, seed=seed, **overrides)
        out = args.runs / f"{args.agent}-seed{seed}"
        t0 = time.perf_counter()
        if (out / "adapter" / "edge-adapter.json").is_file() and not args.retrain:
            training[seed] = finished_run(out)  # trained earlier (e.g. seeds run in parallel): measured as it is
        else:
            result = train(config, out=out, resume=True, show_progress=False)
            training[seed] = {"seconds": round(time.perf_counter() - t0, 1), "best_step": result.best_step,
                              "dev_before": result.dev_before, "dev_after": result.dev_after}
        chosen = out / "best-adapter" if (out / "best-adapter").is_dir() else out / "adapter"
        gguf = out / f"{args.agent}.gguf"
        if not gguf.is_file() or args.retrain:
            base_dir = Path(json.loads((chosen / "adapter_config.json").read_text())["base_model_name_or_path"])
            lora_to_gguf(chosen, base_dir, gguf)
        adapters[seed] = gguf
        training[seed]["adapter"] = str(chosen)
        print(f"seed {seed}: trained ({training[seed].get('seconds')} s)", file=sys.stderr)

    bundle = Bundle.resolve(None)
    model, _ = bundle.role(args.agent)
    backend_adapters = {f"seed{s}": path for s, path in adapters.items()}
    if args.compare_shipped:  # a copy: --ship may replace the packaged file below
        import shutil

        from edge.bundle import SHIPPED_ADAPTERS

        args.runs.mkdir(parents=True, exist_ok=True)
        backend_adapters["shipped"] = Path(shutil.copyfile(SHIPPED_ADAPTERS / f"{args.agent}.gguf",
                                                           args.runs / f"shipped-{args.agent}.gguf"))
    from edge.backends.llama_cpp import LlamaCppBackend

    generation = bundle.generation  # decoded as the bundle serves its roles
    max_tokens = generation.manager_max_tokens if args.agent == "manager" else generation.answer_max_tokens
    arms = [None, *(["shipped"] if args.compare_shipped else []), *(f"seed{s}" for s in args.seeds)]
    measured: dict[str, dict] = {}
    dev_measured: dict[str, dict] = {}
    with LlamaCppBackend(model, n_ctx=generation.n_ctx, adapters=backend_adapters,
                         repeat_penalty=generation.repeat_penalty) as backend:
        for arm in arms:
            measured[arm or "base"] = score(args.agent, episodes, served_replies(
                backend, episodes, adapter=arm, max_tokens=max_tokens), embedder)
            if dev_episodes:
                dev_measured[arm or "base"] = score(args.agent, dev_episodes, served_replies(
                    backend, dev_episodes, adapter=arm, max_tokens=max_tokens), embedder)
    before = measured["base"]
    after = {s: measured[f"seed{s}"] for s in args.seeds}
    keys = ("op_accuracy", "answer", "clause_precision", "clause_recall") if args.agent == "manager" else \
        ("em", "f1", "best_offered_f1", "taken", "gold_offered", "abstained", "false_unknown", "em_facts", "em_time",
         "em_friendsqa")
    results = {
        "bench": f"learned_{args.agent}",
        "what": f"{args.agent}: untrained SmolLM2-135M-Instruct vs its LoRA adapters (one per training seed), "
                "served on llama.cpp with the default bundle's model, held-out synthetic test split",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": config_name, "overrides": overrides,
        "test": {"conversations": args.test_conversations, "episodes": len(episodes)},
        "before": before,
        "after": {str(s): v for s, v in after.items()},
        "shipped": measured.get("shipped"),
        "dev": dev_measured or None,
        "summary": {k: {"before": before.get(k), "shipped": (measured.get("shipped") or {}).get(k),
                        "after": spread([after[s][k] for s in args.seeds])}
                    for k in keys  # a metric with nothing to measure (no clause written) is None: left out
                    if before.get(k) is not None and all(after[s].get(k) is not None for s in args.seeds)},
        "per_op_accuracy": {op: {"before": before["per_op_accuracy"].get(op),
                                 "after": spread([after[s]["per_op_accuracy"][op] for s in args.seeds])}
                            for op in before.get("per_op_accuracy", {})
                            if all(after[s]["per_op_accuracy"].get(op) is not None for s in args.seeds)},
        "training": {str(s): v for s, v in training.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    # Only the run that ships writes over the shipped adapter's figures; any other run keeps its own beside its runs.
    out_path = args.out or (RESULTS if args.ship else args.runs) / f"learned_{args.agent}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {out_path}")
    if args.ship:
        ship(args.agent, results, args.runs, "python bench/bench_learned.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
