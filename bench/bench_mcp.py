"""The cost of MCP: each `edge mcp` tool call over stdio against the same call in process, one run.

    python bench/bench_mcp.py                         # 10 LoCoMo turns, 10 questions, 40 of each cheap call
    python bench/bench_mcp.py --turns 20 --questions 20 --calls 100

Two banks get the same contents (conv-26's 184 observation facts, user
"bench"). One is served by `edge mcp --bundle <default bundle>` as a real
subprocess, driven by the SDK's client (`ClientSession` over `stdio_client`);
the other is used in process through `edge.Agent` (the same bundle, the same
llama.cpp thread count) and its `MemoryBank`. The two sides take turns, one
call each, so a busy moment of the machine falls on both.

Each tool is timed from the client's side (request written to the answer
parsed) against its in-process counterpart: add_memory against
`Agent.remember` (LoCoMo turns with their session times) and, with
infer=false, `MemoryBank.apply([AddOp])`; ask against `Agent.ask`;
search_memories against `MemoryBank.search` (hybrid, the same min_similarity);
list_memories, get_memory, history against `list`, `get`, `history`;
update_memory, delete_memory, undo against `update`, `delete`, `undo` (one
cycle per fact: update, delete, then undo brings it back). The difference is
what MCP costs: JSON-RPC over pipes, argument validation, a worker thread,
the structured result and its text copy.

Writes bench/results/mcp.json and prints p50/p95 per tool.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_agent import CONV, observation_facts, summary  # noqa: E402

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "mcp.json"
USER = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10, help="LoCoMo turns through add_memory / remember")
    parser.add_argument("--questions", type=int, default=10, help="LoCoMo questions through ask")
    parser.add_argument("--calls", type=int, default=40, help="calls of each cheap tool (search, list, get, ...)")
    parser.add_argument("--data", type=Path, default=CONV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import anyio

    results = anyio.run(run, args)
    write_results(args.out, results, show=False)
    print(f"\n{'tool':24s} {'in process p50/p95 ms':>22s} {'over MCP p50/p95 ms':>22s} {'+p50 ms':>8s}")
    for tool, row in results["tools"].items():
        local, served = row["in_process"], row["mcp"]
        print(f"{tool:24s} {local['p50_s'] * 1e3:10.1f} / {local['p95_s'] * 1e3:8.1f}  "
              f"{served['p50_s'] * 1e3:10.1f} / {served['p95_s'] * 1e3:8.1f}  {row['overhead_p50_ms']:8.1f}")
    print(f"server ready (process start, bundle and bank open, MCP handshake): {results['server_start_s']:.2f} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from edge.agent import Agent
    from edge.backends.threads import default_threads
    from edge.bank import MIN_SIMILARITY, MemoryBank
    from edge.bundle import Bundle
    from edge.locomo import load_locomo
    from edge.operations import AddOp
    from edge.prompts import Turn

    conversation = load_locomo(args.data)[0]
    turns = [Turn(t.speaker, t.full_text, s.date_time, t.dia_id) for s, t in conversation.turns()][: args.turns]
    questions = [qa.question for qa in conversation.questions()][: args.questions]
    facts = observation_facts(args.data)
    bundle = Bundle.resolve(None)
    threads = default_threads()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-mcp-"))
    local_db, served_db = work / "local.db", work / "served.db"
    embedder = bundle.load_embedder()
    fact_ids: dict[str, list[str]] = {}
    for name, db in (("local", local_db), ("served", served_db)):
        with MemoryBank.open(db, embedder, user=USER) as bank:
            fact_ids[name] = bank.add_many(facts)

    agent = Agent(bundle=bundle, db=local_db, user=USER, n_threads=threads)
    env = {**os.environ, "EDGE_THREADS": str(threads)}
    params = StdioServerParameters(command=sys.executable, env=env, args=[
        "-m", "edge.cli", "mcp", "--bundle", str(bundle.root), "--db", str(served_db), "--user", USER])
    times: dict[str, dict[str, list[float]]] = {}

    def record(tool: str, side: str, seconds: float) -> None:
        times.setdefault(tool, {"in_process": [], "mcp": []})[side].append(seconds)

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()[0]},
        "bundle": bundle.root.name, "llama_threads": threads, "transport": "stdio",
        "bank": f"{len(facts)} LoCoMo observation facts of user {USER!r}, plus what the turns add",
        "counts": {"turns": len(turns), "questions": len(questions), "cheap_calls": args.calls},
    }
    started = time.perf_counter()
    with open(work / "server.log", "w") as log:
        async with stdio_client(params, errlog=log) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=300) as session:
                await session.initialize()
                results["server_start_s"] = round(time.perf_counter() - started, 3)

                async def served(tool: str, label: str | None = None, **arguments: Any) -> dict[str, Any]:
                    start = time.perf_counter()
                    result = await session.call_tool(tool, arguments)
                    record(label or tool, "mcp", time.perf_counter() - start)
                    if result.is_error:
                        raise SystemExit(f"{tool}({arguments}) failed: {result.content[0].text}")
                    return result.structured_content

                def local(tool: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    value = fn(*args, **kwargs)
                    record(tool, "in_process", time.perf_counter() - start)
                    return value

                await served("ask", question="warm-up question?")
                agent.ask("warm-up question?")
                times.clear()
                for i, turn in enumerate(turns, start=1):
                    local("add_memory", agent.remember, [turn])
                    await served("add_memory", text=turn.text, speaker=turn.speaker, time=turn.time)
                    print(f"\radd_memory {i}/{len(turns)}", end="", file=sys.stderr)
                for i, question in enumerate(questions, start=1):
                    local("ask", agent.ask, question)
                    await served("ask", question=question)
                    print(f"\rask {i}/{len(questions)}   ", end="", file=sys.stderr)
                print(file=sys.stderr)
                bank = agent.bank
                for i in range(args.calls):
                    query = questions[i % len(questions)]
                    local("search_memories", bank.search, query, k=10, min_similarity=MIN_SIMILARITY)
                    await served("search_memories", query=query, limit=10)
                    local("list_memories", lambda: bank.list(limit=50, offset=max(0, bank.count() - 50)))
                    await served("list_memories", limit=50)
                    local("get_memory", bank.get, fact_ids["local"][i])
                    await served("get_memory", id=fact_ids["served"][i])
                    local("history", bank.history, limit=20)
                    await served("history", limit=20)
                    text = f"{facts[i]} (checked {i})"
                    local("add_memory infer=false", bank.apply, [AddOp(text)], actor="api")
                    await served("add_memory", "add_memory infer=false", text=text, infer=False)
                    local("update_memory", bank.update, fact_ids["local"][i], text, actor="api")
                    await served("update_memory", id=fact_ids["served"][i], text=text)
                    local("delete_memory", bank.delete, fact_ids["local"][i], actor="api")
                    await served("delete_memory", id=fact_ids["served"][i])
                    local("undo", bank.undo, 1, actor="api")
                    await served("undo")
                    print(f"\rcheap calls {i + 1}/{args.calls}", end="", file=sys.stderr)
                print(file=sys.stderr)
    agent.close()
    results["tools"] = {}
    for tool, sides in times.items():
        row = {side: summary(values) for side, values in sides.items()}
        row["overhead_p50_ms"] = round((row["mcp"]["p50_s"] - row["in_process"]["p50_s"]) * 1e3, 2)
        row["ratio_p50"] = round(row["mcp"]["p50_s"] / row["in_process"]["p50_s"], 3)
        results["tools"][tool] = row
    results["load_average_at_end"] = os.getloadavg()[0]
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


if __name__ == "__main__":
    main()
