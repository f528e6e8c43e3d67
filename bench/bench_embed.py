"""Default embedder speed: one short query (latency) and batches of 32 (throughput).

    python bench/bench_embed.py                     # the cached default embedder (built if missing)
    python bench/bench_embed.py --model-dir DIR     # any exported embedder folder (e.g. an int8 copy)

Writes bench/results/embed.json and prints it. A short query is what the
agent embeds once per question and once per memory operation, so its p50 is
the number that matters; the target is ≤ 15 ms on 2 cores.
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

import numpy as np

from edge.export.embedder import build_default_minilm
from edge.onnx_embedder import OnnxEmbedder

RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"

SHORT_QUERIES = [
    "where did I park my car?",
    "what is my sister's name?",
    "when is the dentist appointment?",
    "which book did Caroline recommend?",
    "does Melanie like camping?",
    "what did I eat on Friday?",
]

# Memory-sized texts, 6 to 40 words, the kind a bank holds.
MEMORY_TEXTS = [
    f"On {day} I talked with {who} about {topic}; " + "we agreed to meet again soon and " * (i % 5)
    for i, (day, who, topic) in enumerate(
        (d, w, t)
        for d in ("Monday", "7 May 2023", "last weekend", "the morning of the 3rd")
        for w in ("Maya", "my manager", "Caroline", "the landlord")
        for t in ("the move to Lisbon", "a new painting class", "the broken heater", "her adoption plans")
    )
][:32]


def measure(embedder, *, runs: int, batch_reps: int) -> dict:
    for query in SHORT_QUERIES * 3:  # warm up
        embedder.embed([query])
    latencies = []
    for i in range(runs):
        query = SHORT_QUERIES[i % len(SHORT_QUERIES)]
        started = time.perf_counter()
        embedder.embed([query])
        latencies.append((time.perf_counter() - started) * 1000)

    embedder.embed(MEMORY_TEXTS)
    batch_seconds = []
    for _ in range(batch_reps):
        started = time.perf_counter()
        embedder.embed(MEMORY_TEXTS)
        batch_seconds.append(time.perf_counter() - started)
    per_batch = statistics.median(batch_seconds)
    return {
        "single_query_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "single_query_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "single_query_runs": runs,
        "batch32_ms_median": round(per_batch * 1000, 1),
        "batch32_texts_per_s": round(len(MEMORY_TEXTS) / per_batch, 1),
        "batch_reps": batch_reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an exported embedder folder (default: the cached MiniLM)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default min(2, cpus))")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--batch-reps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import onnxruntime

    started = time.perf_counter()
    if args.model_dir:
        embedder = OnnxEmbedder(args.model_dir, threads=args.threads)
    else:
        embedder = build_default_minilm(threads=args.threads)
    load_s = time.perf_counter() - started

    result = {
        "embedder": embedder.name,
        "dim": embedder.dim,
        "model_dir": str(embedder.model_dir),
        "load_s": round(load_s, 2),
        **measure(embedder, runs=args.runs, batch_reps=args.batch_reps),
        "threads": args.threads or min(2, os.cpu_count() or 1),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
