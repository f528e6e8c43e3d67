"""Agent latency and prompt size with the default bundle (SmolLM2-135M on llama.cpp).

    python bench/bench_agent.py                 # remember/ask latency + 200 chat turns
    python bench/bench_agent.py --chat-turns 50 # shorter chat run
    python bench/bench_agent.py --chat-turns 0 --answer-adapter runs/answer.gguf   # ask: shipped vs candidate
    python bench/bench_agent.py --chat-turns 0 --answer-retrieval hybrid   # ask: the bundle's retrieval vs another

Measures, on this machine:
- `remember` latency per turn (p50/p95) over LoCoMo turns of conv-26, waiting for the Manager
  (`wait=True`, as `edge remember` does) and not (the Python API's default: the turn is logged
  at once and the Manager goes over it behind the call; also the time until it is done),
- `ask` latency per question (p50/p95) over its questions, against the bank those turns built,
- prompt tokens of a chat turn at turns 10, 100 and 200: the working state + retrieved
  memories replace the history, so the prompt should stay flat (target: turn 200 within
  10 % of turn 10).
Targets on 2 cores: ask p95 ≤ 1.5 s, remember p95 ≤ 2 s per turn.
Writes bench/results/agent.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "agent.json"
CONV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "conv-26.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_s": percentile(values, 50), "p95_s": percentile(values, 95),
            "mean_s": statistics.fmean(values) if values else float("nan")}


def chat_messages_for(turn: int) -> str:
    topics = ["my garden", "the marathon I'm training for", "my sister Maya", "a recipe for ramen",
              "my new job at the library", "the trip to Kyoto", "my cat Luna", "learning the violin"]
    return f"Let me tell you about {topics[turn % len(topics)]} (day {turn})."


def observation_facts(path: Path) -> list[str]:
    """LoCoMo's per-session observations: short facts about each speaker, as a Manager would store them."""
    raw = json.loads(Path(path).read_text())
    sample = raw[0] if isinstance(raw, list) else raw
    return [fact[0] for session in sample.get("observation", {}).values() for facts in session.values()
            for fact in facts if isinstance(fact, list) and fact and isinstance(fact[0], str)]


def candidate_backend(adapter: Path, threads: int | None):
    """The default bundle's backend with its adapters and `adapter` as "candidate" (what `--answer-adapter` times)."""
    from edge.backends import load_backend
    from edge.bundle import Bundle

    bundle = Bundle.resolve(None)
    model, _ = bundle.role("answer")
    generation = bundle.generation
    return load_backend("llama.cpp", model_path=model, n_ctx=generation.n_ctx, n_threads=threads,
                        adapters={**bundle.adapter_paths(), "candidate": adapter},
                        repeat_penalty=generation.repeat_penalty)


def previous_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40, help="LoCoMo turns fed to remember")
    parser.add_argument("--questions", type=int, default=30, help="LoCoMo questions asked")
    parser.add_argument("--chat-turns", type=int, default=200)
    parser.add_argument("--data", type=Path, default=CONV)
    parser.add_argument("--answer-k", type=int, default=None, help="memories the Answer Agent retrieves (default 60)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the backend's choice)")
    parser.add_argument("--answer-adapter", type=Path, default=None,
                        help="a GGUF LoRA for the Answer Agent to time beside the bundle's own, question by question "
                             "on the same bank (reported as ask_candidate)")
    parser.add_argument("--answer-retrieval", default=None,
                        help="another generation.answer_retrieval to time beside the bundle's, question by question "
                             "on the same bank (reported as ask_retrieval_candidate)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.agent import Agent
    from edge.locomo import load_locomo
    from edge.prompts import Turn

    conversation = load_locomo(args.data)[0]
    turns = [
        Turn(t.speaker, t.full_text, s.date_time, t.dia_id) for s, t in conversation.turns()
    ][: args.turns]
    questions = [qa.question for qa in conversation.questions()][: args.questions]
    work = Path(tempfile.mkdtemp(prefix="edge-bench-agent-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}

    if args.turns or args.questions:
        backend = candidate_backend(args.answer_adapter, args.threads) if args.answer_adapter else None
        with Agent(db=work / "bank.db", user="bench", n_threads=args.threads, answer_k=args.answer_k,
                   backend=backend) as agent:
            results["llama_threads"] = agent.backend.n_threads
            results["bundle"] = agent.bundle.name
            agent.ask("warm-up question?")
            remember_s = []
            for i, turn in enumerate(turns, start=1):
                result = agent.remember([turn], wait=True)
                remember_s.append(result.seconds)
                print(f"\rremember {i}/{len(turns)} {result.seconds:.2f}s", end="", file=sys.stderr)
            print(file=sys.stderr)
            results["bank_memories_after_remember"] = agent.bank.count()
            # What an untrained 135M Manager keeps from 40 turns is a handful of memories; ask against the
            # bank a good Manager would hold instead: LoCoMo's own per-session observations (facts with
            # their source turns), so retrieval fills the Answer Agent's top-k as it would in use.
            facts = observation_facts(args.data)
            agent.bank.add_many(facts, user="bench")
            results["ask_bank"] = {"memories": agent.bank.count(), "source": "conv-26 observations + remembered",
                                   "answer_k": agent.answerer.k}
            shipped_adapter = agent.answerer.adapter
            served = agent.answerer.generation

            def ask_with(question: str, adapter: str | None, generation):
                agent.answerer.adapter, agent.answerer.generation = adapter, generation
                try:
                    return agent.ask(question)
                finally:
                    agent.answerer.adapter, agent.answerer.generation = shipped_adapter, served

            # Each question is asked once per variant, one right after the other (one run, the same load), in
            # an order that alternates: the second ask of a question reads a prompt whose start llama.cpp
            # still holds, and that advantage must not always go to the same variant.
            variants = {"ask": (shipped_adapter, served)}
            if args.answer_adapter:
                variants["ask_candidate"] = ("candidate", served)
            if args.answer_retrieval:
                variants["ask_retrieval_candidate"] = (shipped_adapter,
                                                       served.override(answer_retrieval=args.answer_retrieval))
            seconds: dict[str, list[float]] = {name: [] for name in variants}
            tokens: dict[str, list[int]] = {name: [] for name in variants}
            for i, question in enumerate(questions, start=1):
                order = list(variants) if i % 2 else list(reversed(variants))
                for name in order:
                    answer = ask_with(question, *variants[name])
                    seconds[name].append(answer.timings["total_s"])
                    tokens[name].append(answer.prompt_tokens)
                print(f"\rask {i}/{len(questions)} {seconds['ask'][-1]:.2f}s", end="", file=sys.stderr)
            ask_s, ask_tokens = seconds["ask"], tokens["ask"]
            print(file=sys.stderr)
            results["remember"] = summary(remember_s)
            # The same turns again, for another user on the same models, as the Python API's default
            # `remember` takes them: logged at once, the Manager going over them in the background.
            behind = agent.for_user("bench-behind")
            behind_s = []
            start = time.perf_counter()
            for i, turn in enumerate(turns, start=1):
                result = behind.remember([turn])
                behind_s.append(result.seconds)
                print(f"\rremember (Manager behind) {i}/{len(turns)} {result.seconds:.3f}s", end="", file=sys.stderr)
            print(file=sys.stderr)
            behind.wait_for_manager()
            results["remember_behind"] = {**summary(behind_s), "manager_done_s": time.perf_counter() - start,
                                          "waited_total_s": sum(remember_s)}
            behind.close()
            results["ask"] = {**summary(ask_s), "prompt_tokens_mean": statistics.fmean(ask_tokens) if ask_tokens else 0,
                              "adapter": shipped_adapter, "answer_retrieval": served.answer_retrieval}
            if args.answer_retrieval:
                results["ask_retrieval_candidate"] = {**summary(seconds["ask_retrieval_candidate"]),
                                                      "answer_retrieval": args.answer_retrieval,
                                                      "prompt_tokens_mean": statistics.fmean(tokens["ask_retrieval_candidate"])}
            elif "ask_retrieval_candidate" in previous_results(args.out):
                results["ask_retrieval_candidate"] = None
            if args.answer_adapter:
                results["ask_candidate"] = {**summary(seconds["ask_candidate"]), "adapter": str(args.answer_adapter),
                                            "prompt_tokens_mean": statistics.fmean(tokens["ask_candidate"])}
            elif "ask_candidate" in previous_results(args.out):  # a stale comparison must not be merged in
                results["ask_candidate"] = None

    if args.chat_turns:
        prompt_tokens: dict[int, int] = {}
        chat_s = []
        with Agent(db=work / "chat.db", user="bench", chat_max_tokens=32, n_threads=args.threads) as agent:
            chat_threads = agent.backend.n_threads
            # A user with history: the bank starts with conv-26's observation facts, so each turn's retrieval
            # has more than fits and the prompt shows what the budget allows, not what an untrained Manager
            # happened to keep (it deletes as often as it adds).
            agent.bank.add_many(observation_facts(args.data), user="bench")
            for turn in range(1, args.chat_turns + 1):
                message = chat_messages_for(turn)
                messages, _ = agent.chat_prompt(message)
                prompt_tokens[turn] = sum(agent.backend.count_tokens(m.content) + 4 for m in messages)
                result = agent.chat(message)
                chat_s.append(result.timings["total_s"])
                print(f"\rchat {turn}/{args.chat_turns} prompt={prompt_tokens[turn]} tokens", end="", file=sys.stderr)
            print(file=sys.stderr)
        marks = [t for t in (10, 100, 200) if t in prompt_tokens]
        results["chat"] = {
            "turn_seconds": summary(chat_s),
            "prompt_tokens": {str(t): prompt_tokens[t] for t in marks},
            "prompt_tokens_max": max(prompt_tokens.values()) if prompt_tokens else 0,
            "prompt_tokens_every_10": {str(t): n for t, n in prompt_tokens.items() if t % 10 == 0},
            "prompt_tokens_range_from_turn_10": [min(n for t, n in prompt_tokens.items() if t >= 10),
                                                 max(n for t, n in prompt_tokens.items() if t >= 10)]
            if args.chat_turns >= 10 else None,
            "llama_threads": chat_threads,
            "bank_at_start": "conv-26 observation facts (184)",
        }
        if 10 in prompt_tokens and marks[-1] != 10:
            last = marks[-1]
            results["chat"][f"turn{last}_vs_turn10"] = prompt_tokens[last] / prompt_tokens[10]
    results["targets"] = {"ask_p95_s": 1.5, "remember_p95_s": 2.0, "chat_prompt_growth_max": 1.10}

    # Sections measured in separate runs (e.g. --chat-turns 0, then --turns 0 --questions 0) are merged.
    previous = previous_results(args.out)
    results = {**previous, **results, "measured_at": {**previous.get("measured_at", {}), **{
        key: time.strftime("%Y-%m-%d %H:%M:%S") for key in ("remember", "remember_behind", "ask", "chat") if key in results}}}
    write_results(args.out, results)


if __name__ == "__main__":
    main()
