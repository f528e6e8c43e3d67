"""Time to first token through `edge serve` against the upstream alone, one run.

    python bench/bench_serve.py                 # 30 streamed requests each way
    python bench/bench_serve.py --requests 50

The upstream is llama-cpp-python's server on the bundled SmolLM2-135M
(started and stopped here); `edge serve` runs in front of it on the default
bundle, on a bank that already holds conv-26's observations (184 facts) so
every request retrieves memories as it would in use. The two paths take
turns, one request each, with the same messages, so a busy moment of the
machine falls on both. `edge serve` adds the memories to the system
message, so the upstream reads a longer prompt through it (the prompt
tokens are recorded as the upstream reports them; llama-cpp-python's
server reports none in a stream, hence 0), and a second `edge serve` with
`--memory-chars 0` (turns still logged, memories still retrieved, none
added) measures the proxy alone.

Target (issue 30): at most 100 ms added at p95 on 2 cores.
Writes bench/results/serve.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import CONV, observation_facts, summary  # noqa: E402
from bench_server import free_port, start_server  # noqa: E402

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
QUESTIONS = ["What did Caroline research?", "When did Melanie paint a sunrise?", "What is Caroline's identity?",
             "What does Melanie do to destress?", "Where did Caroline move from?"]


def first_token_s(client, messages: list[dict], user: str | None) -> tuple[float, int]:
    """Seconds from sending a streamed request to its first content piece, and the prompt tokens it reported."""
    start = time.perf_counter()
    extra = {"user": user} if user else {}
    stream = client.chat.completions.create(model="smollm2", messages=messages, stream=True, max_tokens=16,
                                            stream_options={"include_usage": True}, **extra)
    first, prompt_tokens = None, 0
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if getattr(chunk, "usage", None):
            prompt_tokens = chunk.usage.prompt_tokens
    return (first if first is not None else time.perf_counter() - start), prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import openai

    from edge.backends.threads import default_threads
    from edge.bank import MemoryBank
    from edge.models import bundled_gguf_path

    work = Path(tempfile.mkdtemp(prefix="edge-bench-serve-"))
    threads = default_threads()
    upstream, url = start_server(bundled_gguf_path(), threads, work / "upstream.log")
    serving: list[subprocess.Popen] = []
    try:
        db = work / "bank.db"
        with MemoryBank.open(db, user="bench") as bank:
            bank.add_many(observation_facts(CONV), user="bench")
        ports = []
        for name, extra in (("memories", []), ("no-memories", ["--memory-chars", "0"])):
            port = free_port()
            log = work / f"serve-{name}.log"
            serving.append(subprocess.Popen([sys.executable, "-m", "edge.cli", "serve", "--upstream", f"{url}/v1",
                                             "--http", f"127.0.0.1:{port}", "--db", str(db), "--user", "bench",
                                             *extra], stdout=log.open("w"), stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if serving[-1].poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"edge serve did not start: {log.read_text()[-2000:]}")
                    time.sleep(0.3)
            ports.append(port)
        arms = {"upstream": openai.OpenAI(base_url=f"{url}/v1", api_key="unused"),
                "edge_serve": openai.OpenAI(base_url=f"http://127.0.0.1:{ports[0]}/v1", api_key="unused"),
                "edge_serve_no_memories": openai.OpenAI(base_url=f"http://127.0.0.1:{ports[1]}/v1", api_key="unused")}
        for client in arms.values():
            first_token_s(client, [{"role": "user", "content": "warm-up"}], None)
        times: dict[str, list[float]] = {name: [] for name in arms}
        tokens: dict[str, list[int]] = {name: [] for name in arms}
        for i in range(args.requests):
            messages = [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}]
            for name, client in arms.items():
                seconds, prompt = first_token_s(client, messages, None)
                times[name].append(seconds)
                tokens[name].append(prompt)
            print(f"\rrequest {i + 1}/{args.requests}", end="", file=sys.stderr)
        print(file=sys.stderr)
    finally:
        for process in (*serving, upstream):
            process.terminate()
            process.wait(timeout=120)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "llama_threads": threads},
        "requests": args.requests,
        **{f"ttft_{name}": summary(values) for name, values in times.items()},
        "added_p50_s": summary(times["edge_serve"])["p50_s"] - summary(times["upstream"])["p50_s"],
        "added_p95_s": summary(times["edge_serve"])["p95_s"] - summary(times["upstream"])["p95_s"],
        "proxy_added_p50_s": summary(times["edge_serve_no_memories"])["p50_s"] - summary(times["upstream"])["p50_s"],
        "proxy_added_p95_s": summary(times["edge_serve_no_memories"])["p95_s"] - summary(times["upstream"])["p95_s"],
        "prompt_tokens_mean": {name: sum(v) / len(v) if v else 0 for name, v in tokens.items()},
        "target_added_p95_s": 0.1,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_results(args.out, results)


if __name__ == "__main__":
    main()
