"""The cost of the HTTP path: `remember` and `ask` through `--server` vs in process, same model, one run.

    python bench/bench_server.py                      # 12 LoCoMo turns, 10 questions
    python bench/bench_server.py --turns 30 --questions 20

Both sides run SmolLM2-135M-Instruct (the bundled GGUF) with the same edge
settings (extractive text, answer_k 12, n_ctx 4096) and the same llama.cpp
thread count: in process through llama-cpp-python (`--model FILE.gguf`), and
through `python -m llama_cpp.server` on a local port (`--server URL`), which
this script starts and stops. The two agents take turns, one call each, on
banks of their own, so a busy moment of the machine falls on both.

What differs besides the HTTP round trip: the in-process backend checks the
grammar on the chosen token first and keeps system-prompt snapshots
(edge.backends.llama_cpp); the server runs llama.cpp's sampler chain and its
own prompt cache, and decodes with its own repetition penalty. So the ratio
is the cost of serving edge from a server as it is, not of the socket alone;
completion tokens per call are recorded beside the times to show whether
both sides wrote about as much.

Writes bench/results/server.json.
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

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "server.json"
SETTINGS = {"text_mode": "extractive", "answer_k": 12, "n_ctx": 4096}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(SETTINGS["n_ctx"]),
         "--n_threads", str(threads), "--n_threads_batch", str(threads)],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("llama_cpp.server did not start within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=12, help="LoCoMo turns fed to remember")
    parser.add_argument("--questions", type=int, default=10, help="LoCoMo questions asked")
    parser.add_argument("--data", type=Path, default=CONV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.agent import Agent
    from edge.backends.threads import default_threads
    from edge.locomo import load_locomo
    from edge.model_source import gguf_bundle, server_bundle, with_generation
    from edge.models import bundled_gguf_path
    from edge.prompts import Turn

    conversation = load_locomo(args.data)[0]
    turns = [Turn(t.speaker, t.full_text, s.date_time, t.dia_id) for s, t in conversation.turns()][: args.turns]
    questions = [qa.question for qa in conversation.questions()][: args.questions]
    facts = observation_facts(args.data)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-server-"))
    threads = default_threads()
    model = bundled_gguf_path()
    process, url = start_server(model, threads, work / "server.log")
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "load_average_at_start": os.getloadavg()[0]},
                     "model": model.name, "llama_threads": threads, "settings": SETTINGS,
                     "turns": len(turns), "questions": len(questions)}
    try:
        sides = {
            "in_process": Agent(bundle=with_generation(gguf_bundle(model), SETTINGS), db=work / "local.db",
                                user="bench", n_threads=threads),
            "server": Agent(bundle=server_bundle(url, "smollm2", generation=SETTINGS), db=work / "served.db",
                            user="bench"),
        }
        times: dict[str, dict[str, list[float]]] = {side: {"remember": [], "ask": []} for side in sides}
        tokens: dict[str, dict[str, list[int]]] = {side: {"remember": [], "ask": []} for side in sides}
        for agent in sides.values():
            agent.ask("warm-up question?")
        for i, turn in enumerate(turns, start=1):
            for side, agent in sides.items():
                result = agent.remember([turn], wait=True).turns[0]
                times[side]["remember"].append(result.seconds)
                tokens[side]["remember"].append(result.completion_tokens)
            print(f"\rremember {i}/{len(turns)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        for agent in sides.values():  # the same bank contents to answer from on both sides
            agent.bank.add_many(facts, user="bench")
        for i, question in enumerate(questions, start=1):
            for side, agent in sides.items():
                answer = agent.ask(question)
                times[side]["ask"].append(answer.timings["total_s"])
                tokens[side]["ask"].append(answer.prompt_tokens)
            print(f"\rask {i}/{len(questions)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        for side, agent in sides.items():
            results[side] = {
                "remember": {**summary(times[side]["remember"]),
                             "completion_tokens_mean": sum(tokens[side]["remember"]) / max(1, len(turns))},
                "ask": {**summary(times[side]["ask"]),
                        "prompt_tokens_mean": sum(tokens[side]["ask"]) / max(1, len(questions))},
            }
            agent.close()
        results["server_kind"] = sides["server"].manager_backend.server_kind
        results["structured_output"] = sides["server"].manager_backend.schema_format
        results["ratio_server_over_in_process"] = {
            call: {stat: results["server"][call][stat] / results["in_process"][call][stat]
                   for stat in ("p50_s", "p95_s", "mean_s")}
            for call in ("remember", "ask")
        }
    finally:
        process.terminate()
        process.wait(timeout=20)
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
