"""Decode speed of LlamaCppBackend against llama-cpp-python used directly.

Same model, prompt, thread count and greedy sampling; end-of-generation is
ignored so every run decodes exactly --tokens tokens. The figure compared is
decode tokens/s, timed from the first generated token to the last (prompt
evaluation is excluded: the backend reuses cached prompts, which would flatter
it). Runs are interleaved, the order alternating each repetition; medians and
best runs are reported. Baselines:

- `raw_generate`: a bare loop over `Llama.generate` — the floor of Python
  overhead, what the backend should match (target ratio >= 0.95);
- `raw_chat_completion`: `Llama.create_chat_completion(stream=True)`, the
  usual way to call llama-cpp-python (it stops at EOS, so its runs may be
  shorter; its rate is over the tokens it did decode).

    python bench/bench_decode.py [--tokens 128] [--reps 5] [--threads N]

writes bench/results/decode.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import llama_cpp

from edge.backends import Message
from edge.backends.llama_cpp import LlamaCppBackend
from edge.models import bundled_gguf_path

MESSAGES = [
    Message("system", "You are a helpful assistant."),
    Message("user", "Write a long story about a lighthouse keeper and a storm."),
]


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rates(decoded: int, first: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """Tokens per wall-clock second and per CPU second of this process."""
    return (decoded - 1) / (end[0] - first[0]), (decoded - 1) / (end[1] - first[1])


def time_backend(backend: LlamaCppBackend, n_tokens: int) -> tuple[float, float]:
    first = None
    stream = backend.stream(MESSAGES, max_tokens=n_tokens, ignore_eos=True)
    for _ in stream:
        if first is None:
            first = clock()
    end = clock()
    decoded = stream.completion.completion_tokens
    assert decoded == n_tokens, decoded
    return rates(decoded, first, end)


def time_raw_generate(llm: llama_cpp.Llama, prompt_tokens: list[int], n_tokens: int) -> tuple[float, float]:
    llm.reset()
    first, decoded, text = None, 0, b""
    for token in llm.generate(prompt_tokens, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if first is None:
            first = clock()
        text += llm.detokenize([token])
        decoded += 1
        if decoded >= n_tokens:
            break
    end = clock()
    return rates(decoded, first, end)


def time_raw_chat(llm: llama_cpp.Llama, n_tokens: int) -> tuple[float, float]:
    llm.reset()
    first, pieces = None, 0
    messages = [{"role": m.role, "content": m.content} for m in MESSAGES]
    for chunk in llm.create_chat_completion(messages, max_tokens=n_tokens, temperature=0.0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            if first is None:
                first = clock()
            pieces += 1
    end = clock()
    return rates(pieces, first, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: the backend's default")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decode.json")
    args = parser.parse_args()

    model = bundled_gguf_path()
    backend = LlamaCppBackend(model, n_ctx=2048, n_threads=args.threads)
    threads = backend.n_threads
    llm = llama_cpp.Llama(  # same settings as the backend's (threads, flash attention)
        str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False
    )
    prompt_tokens = llm.tokenize(backend.render_prompt(MESSAGES).encode(), add_bos=False, special=True)

    names = ("backend", "raw_generate", "raw_chat_completion")
    runs = {name: [] for name in names}
    cpu_runs = {name: [] for name in names}
    time_backend(backend, 16)  # warm both up
    time_raw_generate(llm, prompt_tokens, 16)
    for rep in range(args.reps):
        order = list(names) if rep % 2 == 0 else list(reversed(names))
        for name in order:
            if name == "backend":
                wall, cpu = time_backend(backend, args.tokens)
            elif name == "raw_generate":
                wall, cpu = time_raw_generate(llm, prompt_tokens, args.tokens)
            else:
                wall, cpu = time_raw_chat(llm, args.tokens)
            runs[name].append(round(wall, 2))
            cpu_runs[name].append(round(cpu, 2))
            print(f"rep {rep}  {name:20s} {wall:7.1f} tok/s  {cpu:7.1f} tok/CPU-s", flush=True)

    def ratio(table: dict, pick, other: str = "raw_generate") -> float:
        return round(pick(table["backend"]) / pick(table[other]), 3)

    median = statistics.median
    result = {
        "model": model.name,
        "tokens": args.tokens,
        "reps": args.reps,
        "threads": threads,
        "sampling": "greedy, end-of-generation ignored (raw_chat_completion stops at EOS)",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "llama_cpp_python": llama_cpp.__version__,
        "decode_tokens_per_s": runs,
        "decode_tokens_per_cpu_s": cpu_runs,
        "median_tokens_per_s": {k: median(v) for k, v in runs.items()},
        "best_tokens_per_s": {k: max(v) for k, v in runs.items()},
        "median_tokens_per_cpu_s": {k: median(v) for k, v in cpu_runs.items()},
        "ratio_backend_vs_raw_generate": ratio(runs, median),
        "ratio_backend_vs_raw_chat_completion": ratio(runs, median, "raw_chat_completion"),
        # On a busy machine wall time is noisy: the best run and the CPU time
        # of this process are steadier estimates of the overhead.
        "ratio_best_backend_vs_raw_generate": ratio(runs, max),
        "ratio_cpu_backend_vs_raw_generate": ratio(cpu_runs, median),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("median_tokens_per_s", "best_tokens_per_s", "median_tokens_per_cpu_s",
            "ratio_backend_vs_raw_generate", "ratio_backend_vs_raw_chat_completion",
            "ratio_best_backend_vs_raw_generate", "ratio_cpu_backend_vs_raw_generate")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    backend.close()
    llm.close()


if __name__ == "__main__":
    main()
