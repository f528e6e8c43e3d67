"""How far "unknown" must lead for the Answer Agent to say it: `GenerationConfig.unknown_margin`, chosen on dev.

    python bench/bench_unknown_margin.py --adapter shipped=edge/adapters/answer.gguf \\
        --adapter locomo2=runs/learned-locomo2/answer-seed0/answer.gguf --test

Every Answer LoRA trained with FriendsQA in its mix answers "unknown" to
answerable questions too (conv-26 dev: 23 to 42 % of them). The margin is
a logit offset against the first token of "unknown" where the extractive
answer's options begin (`Backend.complete(choice_bias=...)`, the offset the
runtime's `AnswerAgent` applies): "unknown" is answered only when it leads
every span by the margin.

Each adapter answers the dev split of `--config` (synthetic facts and "When
did ...?", conv-26's dev questions, FriendsQA dev scenes, their
unanswerable questions) on llama.cpp with the default bundle's model, as
`bench_learned.py --dev` serves it, at margin 0; then, for each margin, only
the questions it answered "unknown" are asked again (a margin changes
nothing else: the offset applies at the step where the options begin, and
only to "unknown"). Two rules choose a margin on dev: `chosen`, the best
mean of conv-26 dev F1 and FriendsQA dev F1 over all their questions (which
rewards abstaining), and the one edge ships by, `--choose-from RESULTS.json`
(`floor_margin`): the smallest margin at which the answerable questions of
both dev sets get at least what the shipped adapter gives them. `--test`
then serves the held-out test split (`bench_learned.py`'s, never used to
choose) at margin 0, at `chosen` and at `--test-margins`. Writes
bench/results/unknown_margin.json.

    python bench/bench_unknown_margin.py --choose-from bench/results/unknown_margin.json
    python bench/bench_unknown_margin.py --choose-from bench/results/unknown_margin_recipe.json --reference-margin 1.5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from results_io import write_results  # noqa: E402

MARGINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
KEYS = ("n", "em", "f1", "best_offered_f1", "taken", "abstained", "false_unknown")


def replies_at(backend, episodes, first: list[str], margin: float, *, adapter: str, max_tokens: int) -> list[str]:
    """The replies at `margin`: those of margin 0 (`first`), the "unknown" ones asked again with the offset."""
    from bench_learned import served_replies
    from edge.evaluation.scoring import is_unknown
    from edge.generation import GenerationConfig
    from edge.prompts import parse_answer_output

    if not margin:
        return list(first)
    again = [i for i, (e, r) in enumerate(zip(episodes, first)) if is_unknown(parse_answer_output(r, e.shown_ids).answer)]
    bias = GenerationConfig(unknown_margin=margin).answer_bias
    redone = served_replies(backend, [episodes[i] for i in again], adapter=adapter, max_tokens=max_tokens,
                            choice_bias=bias)
    out = list(first)
    for i, reply in zip(again, redone):
        out[i] = reply
    return out


def summary(scores: dict) -> dict:
    """The figures that decide: overall and per kind of question."""
    out = {k: scores.get(k) for k in KEYS}
    out["by_kind"] = {kind: {k: v.get(k) for k in KEYS} for kind, v in scores.get("by_kind", {}).items()}
    return out


def dev_objective(scores: dict) -> float:
    """Mean F1 of conv-26's dev questions and FriendsQA's dev questions: the two the issue ships on."""
    kinds = scores["by_kind"]
    return (kinds["locomo"]["f1"] + kinds["friendsqa"]["f1"]) / 2


def answerable_f1(kind: dict) -> float:
    """F1 over a kind's answerable questions (`taken` is that F1 over the best offered span's)."""
    return (kind.get("taken") or 0.0) * (kind.get("best_offered_f1") or 0.0)


def floor_margin(entry: dict, reference: dict, served: float = 0.0) -> float | None:
    """The smallest margin at which `entry`'s answerable F1 on conv-26 dev and on FriendsQA dev are both at least
    `reference`'s at margin `served` (the adapter edge ships, as it is served): as much abstention as keeps what
    the answerable questions get. None when no margin does.

    The rule ships on what answerable questions get (F1 over all dev questions rewards abstaining: conv-26's
    dev holds 9 adversarial questions of 40) and keeps the most "unknown" that costs them nothing.
    """
    floor = {kind: answerable_f1(reference["dev"][str(float(served))]["by_kind"][kind]) for kind in ("locomo", "friendsqa")}
    for margin in sorted(entry["dev"], key=float):
        kinds = entry["dev"][margin]["by_kind"]
        if all(answerable_f1(kinds[kind]) >= floor[kind] - 1e-9 for kind in floor):
            return float(margin)
    return None


def choose(path: Path, reference: str, served: float = 0.0) -> dict:
    """Each adapter's margin by `floor_margin` against `reference` served at `served`, from a finished run's file;
    with each adapter's answerable F1 (conv-26 dev, FriendsQA dev) at every margin it was measured at."""
    results = json.loads(path.read_text())
    ref = results["adapters"][reference]
    return {name: {"margin": floor_margin(entry, ref, served),
                   "answerable_f1": {margin: {kind: round(100 * answerable_f1(row["by_kind"][kind]), 1)
                                              for kind in ("locomo", "friendsqa")}
                                     for margin, row in sorted(entry["dev"].items(), key=lambda kv: float(kv[0]))}}
            for name, entry in results["adapters"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choose-from", type=Path, default=None, metavar="RESULTS.json",
                        help="serve nothing: print each adapter's margin by the answerable-floor rule from a finished "
                        "run (the adapter named by --reference is the floor)")
    parser.add_argument("--reference", default="shipped", help="the adapter whose answerable F1 is the floor")
    parser.add_argument("--reference-margin", type=float, default=0.0,
                        help="the margin the reference is served at (the default bundle's today: "
                        "edge.bundle.DEFAULT_GENERATION['unknown_margin'])")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=FILE.gguf",
                        help="an Answer LoRA (GGUF) to measure; repeatable")
    parser.add_argument("--config", default=str(ROOT / "runs" / "configs" / "answer-locomo2.toml"),
                        help="the training config whose dev split is served")
    parser.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    parser.add_argument("--test", action="store_true", help="serve the test split at margin 0 and the chosen one")
    parser.add_argument("--test-margins", type=float, nargs="*", default=[],
                        help="more margins to serve the test split at (a setting chosen on dev by another rule)")
    parser.add_argument("--locomo", default=str(ROOT.parent / "shared" / "data" / "locomo" / "conv-26.json"))
    parser.add_argument("--friendsqa", default=str(ROOT.parent / "shared" / "data" / "friendsqa"))
    parser.add_argument("--friendsqa-scenes", type=int, default=40)
    parser.add_argument("--test-conversations", type=int, default=12)
    parser.add_argument("--test-unanswerable", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unknown_margin.json")
    args = parser.parse_args(argv)
    if args.choose_from:
        print(json.dumps(choose(args.choose_from, args.reference, args.reference_margin), indent=2))
        return 0
    if not args.adapter:
        parser.error("name at least one --adapter NAME=FILE.gguf (or --choose-from RESULTS.json)")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from bench_learned import answer_test_episodes, score, served_replies
    from edge.backends.llama_cpp import LlamaCppBackend
    from edge.bundle import Bundle
    from edge.train.base_model import load_base
    from edge.train.config import load_config
    from edge.train.recipe import answer_context_agent, build_data, load_embedder
    from edge.train.synthetic import generate

    adapters = dict(item.split("=", 1) for item in args.adapter)
    config = load_config(args.config, **{"data.locomo_path": args.locomo, "data.friendsqa_path": args.friendsqa})
    embedder = load_embedder(config.data.embedder)
    reader = answer_context_agent(load_base(config.base)[1], config)
    dev = build_data(config, embedder, reader=reader).dev
    test = answer_test_episodes(config, embedder, generate("test", args.test_conversations), args) if args.test else []
    print(f"{len(dev)} dev episodes, {len(test)} test episodes", file=sys.stderr)

    bundle = Bundle.resolve(None)
    model, _ = bundle.role("answer")
    generation = bundle.generation
    started = time.perf_counter()
    results: dict = {"bench": "unknown_margin", "config": args.config, "margins": args.margins, "adapters": {}}
    with LlamaCppBackend(model, n_ctx=generation.n_ctx, adapters={k: Path(v) for k, v in adapters.items()},
                         repeat_penalty=generation.repeat_penalty) as backend:
        for name in adapters:
            mt = generation.answer_max_tokens
            first = served_replies(backend, dev, adapter=name, max_tokens=mt)
            sweep = {}
            for margin in args.margins:
                scores = score("answer", dev, replies_at(backend, dev, first, margin, adapter=name, max_tokens=mt),
                               embedder)
                sweep[str(margin)] = summary(scores)
                kinds = scores["by_kind"]
                print(f"{name} margin {margin}: dev F1 {scores['f1']:.3f} conv-26 {kinds['locomo']['f1']:.3f} "
                      f"FriendsQA {kinds['friendsqa']['f1']:.3f} answerable->unknown {scores['false_unknown']:.3f} "
                      f"unanswerable->unknown {scores['abstained']:.3f}", file=sys.stderr)
            chosen = max(args.margins, key=lambda m: (dev_objective(sweep[str(m)]), -m))
            entry = {"file": adapters[name], "dev": sweep, "chosen": chosen}
            if test:
                first = served_replies(backend, test, adapter=name, max_tokens=mt)
                entry["test"] = {str(m): summary(score("answer", test, replies_at(
                    backend, test, first, m, adapter=name, max_tokens=mt), embedder))
                    for m in sorted({0.0, chosen, *args.test_margins})}
            results["adapters"][name] = entry
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # each adapter kept as it finishes
    results["seconds"] = round(time.perf_counter() - started, 1)
    for name, entry in results["adapters"].items():
        print(f"{name}: chosen margin {entry['chosen']}")
    write_results(args.out, results, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
