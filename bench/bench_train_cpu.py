"""Does GRPO teach the bundled 135M Memory Manager anything on a CPU?

Trains SmolLM2-135M-Instruct (the bundled GGUF, rebuilt in transformers)
as Memory Manager with `edge.train` on synthetic episodes
(`configs/smollm2-135m-manager.toml`), then compares the base model and the
trained adapter on held-out test conversations (test seed range, never
trained or tuned on), both decoded greedily under the runtime's JSON
schema:

- operation accuracy: the reply's operation kinds and target ids are the
  gold ones (texts not compared);
- downstream answer EM: the reply is applied to the bank as it was before
  the turn and the frozen candidate reader answers the turn's questions
  (the Manager's training reward, without its format and size terms);
- both per turn kind, and the learning curve on the dev split.

The trained model evaluated is the adapter the periodic dev evaluations
picked (dev split; the test split is never looked at before the end);
the adapter after the last step is evaluated too (`last_step_test`).

Spread: the test conversations are split into disjoint groups (different
generator seeds); each score is reported per group, and the improvement is
compared with the spread (max - min) of the groups' scores. With several
`--seeds`, each training seed gets its own run and the spread between
training seeds is reported too.

    python bench/bench_train_cpu.py --parallel 2    # two training seeds at once, one core each
    python bench/bench_train_cpu.py --steps 4 --test-conversations 1 --groups 1   # smoke run

Writes bench/results/train_cpu.json and bench/results/train_cpu.png; the
run folders (checkpoints, adapters) go under $EDGE_CACHE/bench-train-cpu/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def auto_threads() -> int:
    """All cores on an idle machine; one when other jobs keep them busy (torch threads then stall each other)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores if busy < 0.5 * cores else 1


def evaluate_groups(model, tokenizer, constraint, groups, reader, embedder, config) -> list[dict]:
    from edge.train.dev_scores import evaluate_manager

    scores = []
    for episodes in groups:
        result, _ = evaluate_manager(model, tokenizer, constraint, episodes, reader, embedder,
                                     max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size,
                                     context=config.reward.context)
        scores.append(result)
    return scores


def summary(groups: list[dict], key: str) -> dict:
    values = [g[key] for g in groups if g.get(key) is not None]
    return {"mean": sum(values) / len(values) if values else None, "groups": values,
            "spread": (max(values) - min(values)) if values else None}


def plot(path: Path, runs: list[dict], before: dict, after_by_seed: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    for run in runs:
        train = [r for r in run["rows"] if r.get("kind") == "train"]
        dev = [r for r in run["rows"] if r.get("kind") == "dev"]
        steps = [r["step"] for r in train]
        rewards = [r["reward"] for r in train]
        window = max(1, len(rewards) // 8)
        smooth = [sum(rewards[max(0, i - window + 1): i + 1]) / len(rewards[max(0, i - window + 1): i + 1])
                  for i in range(len(rewards))]
        top.plot(steps, rewards, ".", alpha=0.3)
        top.plot(steps, smooth, "-", label=f"seed {run['seed']}: reward (moving mean {window})")
        for key, style in (("op_accuracy", "o-"), ("answer", "s--")):
            points = [(r["step"], r[key]) for r in dev if r.get(key) is not None]
            if points:
                bottom.plot(*zip(*points), style, label=f"seed {run['seed']}: dev {key.replace('_', ' ')}")
    last = max((r["step"] for run in runs for r in run["rows"]), default=1)
    for key, colour in (("op_accuracy", "tab:green"), ("answer", "tab:purple")):
        bottom.hlines(before[key]["mean"], 0, last, colors=colour, linestyles=":",
                      label=f"test {key.replace('_', ' ')}: base")
        for after in after_by_seed:
            bottom.hlines(after[key]["mean"], 0, last, colors=colour, linestyles="-", alpha=0.5,
                          label=f"test {key.replace('_', ' ')}: trained (seed {after['seed']})")
    top.set_ylabel("training reward")
    top.legend(fontsize=7)
    top.set_title("SmolLM2-135M Memory Manager, GRPO + LoRA on CPU (synthetic episodes)")
    bottom.set_ylabel("score (greedy)")
    bottom.set_xlabel("step")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)  # numbers, true/false, lists
        except ValueError:
            overrides[key.strip()] = value  # a bare string
    return overrides


def held_out_setup(config, args):
    """(embedder, reader, groups of test episodes): the same in the parent and in every training process."""
    from edge.train.episodes import synthetic_manager_episodes
    from edge.train.recipe import build_reader, load_embedder
    from edge.train.synthetic import generate

    embedder = load_embedder(config.data.embedder)
    groups = [
        synthetic_manager_episodes(generate("test", args.test_conversations, offset=g * args.test_conversations),
                                   embedder, related_k=config.data.related_k)
        for g in range(args.groups)
    ]
    return embedder, build_reader(config), groups


def train_and_test(seed: int, args, overrides: dict, threads: int, shared: tuple | None = None) -> dict:
    """Train one seed, then score the dev-picked adapter (and the last step's) on the test groups.

    `shared`: the parent's (embedder, reader, groups, constraint) when run in its process; a training
    process builds its own.
    """
    import torch

    from edge import paths
    from edge.train import load_config, train
    from edge.train.constrained import SchemaConstraint
    from edge.train.trainer import load_trained

    torch.set_num_threads(threads)
    cfg = load_config(args.config, threads=threads, steps=args.steps, seed=seed, **overrides)
    embedder, reader, groups, constraint = shared or (*held_out_setup(cfg, args), None)
    run_dir = paths.cache_dir() / "bench-train-cpu" / f"seed-{seed}{'-' + args.tag if args.tag else ''}"
    t0 = time.time()
    result = train(cfg, out=run_dir, resume=not args.fresh, show_progress=args.parallel == 1)
    train_s = time.time() - t0
    # The adapter the dev evaluations picked (model selection on dev; test is never looked at), and the
    # one after the last step.
    chosen = result.best_adapter or result.adapter
    trained, tokenizer, _ = load_trained(chosen)
    constraint = constraint or SchemaConstraint.for_tokenizer(tokenizer, [tokenizer.eos_token_id])
    t0 = time.time()
    after = evaluate_groups(trained, tokenizer, constraint, groups, reader, embedder, cfg)
    last = after
    if chosen != result.adapter:
        last_model, _, _ = load_trained(result.adapter)
        last = evaluate_groups(last_model, tokenizer, constraint, groups, reader, embedder, cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    print(f"seed {seed}: trained in {train_s:.0f} s", flush=True)
    run = {"seed": seed, "train_seconds": round(train_s), "eval_seconds": round(time.time() - t0),
           "rows": rows, "adapter": str(chosen), "chosen_step": result.best_step or result.steps,
           "last_step_test": {k: summary(last, k) for k in ("op_accuracy", "value_accuracy", "answer")}}
    return {"run": run, "after": after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="smollm2-135m-manager")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds, one run each")
    parser.add_argument("--parallel", type=int, default=1,
                        help="seeds trained at once, each in its own process on one torch thread (1: one after "
                             "another, on --threads)")
    parser.add_argument("--groups", type=int, default=3, help="disjoint groups of test conversations")
    parser.add_argument("--test-conversations", type=int, default=3, help="test conversations per group")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: auto from the machine's load)")
    parser.add_argument("--fresh", action="store_true", help="ignore finished checkpoints of earlier runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config setting, e.g. --set reward.op_match_weight=0.5 (repeatable)")
    parser.add_argument("--tag", default="", help="suffix for the results files and run folders")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from edge.train import load_config
    from edge.train.base_model import load_base
    from edge.train.constrained import SchemaConstraint

    threads = args.threads or auto_threads()
    torch.set_num_threads(threads)
    overrides = parse_overrides(args.set)
    config = load_config(args.config, threads=threads, steps=args.steps, **overrides)
    embedder, reader, groups = held_out_setup(config, args)
    started = time.time()
    print(f"threads={threads}, test episodes per group: {[len(g) for g in groups]}", flush=True)

    model, tokenizer, base = load_base(config.base)
    constraint = SchemaConstraint.for_tokenizer(tokenizer, [tokenizer.eos_token_id])
    t0 = time.time()
    before_groups = evaluate_groups(model, tokenizer, constraint, groups, reader, embedder, config)
    before_s = time.time() - t0
    print(f"base model evaluated in {before_s:.0f} s", flush=True)
    del model

    if args.parallel == 1:
        shared = (embedder, reader, groups, constraint)
        outcomes = [train_and_test(seed, args, overrides, threads, shared) for seed in args.seeds]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(train_and_test, args.seeds, [args] * len(args.seeds),
                                     [overrides] * len(args.seeds), [1] * len(args.seeds)))
    runs = [o["run"] for o in outcomes]
    after_groups_by_seed = [o["after"] for o in outcomes]

    keys = ("op_accuracy", "value_accuracy", "answer", "format")
    before = {k: summary(before_groups, k) for k in keys}
    after_by_seed = [{"seed": s, **{k: summary(g, k) for k in keys}} for s, g in zip(args.seeds, after_groups_by_seed)]
    result = {
        "bench": "train_cpu",
        "what": "SmolLM2-135M-Instruct Memory Manager, GRPO + LoRA on CPU, synthetic episodes; held-out test split",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": threads,
                    "training_threads": threads if args.parallel == 1 else 1, "parallel": args.parallel,
                    "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "config": config.to_dict(),
        "base": base.name,
        "test": {"groups": args.groups, "conversations_per_group": args.test_conversations,
                 "episodes_per_group": [len(g) for g in groups]},
        "before": before,
        "after": after_by_seed,
        "improvement": [
            {"seed": a["seed"], **{k: (a[k]["mean"] - before[k]["mean"]) if a[k]["mean"] is not None
                                   and before[k]["mean"] is not None else None for k in keys}}
            for a in after_by_seed
        ],
        "by_kind_before": [g.get("by_kind") for g in before_groups],
        "by_kind_after": [[g.get("by_kind") for g in groups_] for groups_ in after_groups_by_seed],
        "ops_used_before": [g.get("ops_used") for g in before_groups],
        "ops_used_after": [[g.get("ops_used") for g in groups_] for groups_ in after_groups_by_seed],
        "training": [{k: v for k, v in run.items() if k != "rows"} for run in runs],
        "curves": [{"seed": run["seed"], "train": [{k: r.get(k) for k in ("step", "reward", "reward_std",
                                                                         "frac_reward_zero_std", "op_accuracy")}
                                                   for r in run["rows"] if r.get("kind") == "train"],
                    "dev": [{k: r.get(k) for k in ("step", "op_accuracy", "value_accuracy", "answer", "format")}
                            for r in run["rows"] if r.get("kind") == "dev"]} for run in runs],
        "seconds": round(time.time() - started),
    }
    if len(args.seeds) > 1:
        means = [a["op_accuracy"]["mean"] for a in after_by_seed]
        result["spread_between_training_seeds"] = {"op_accuracy": max(means) - min(means)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"train_cpu{'_' + args.tag if args.tag else ''}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(RESULTS / f"{stem}.png", runs, before, after_by_seed)
    print(json.dumps({k: result[k] for k in ("before", "after", "improvement", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
