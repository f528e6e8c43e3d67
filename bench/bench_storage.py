"""What the bank costs on disk: bytes per user in a shared file, and bytes per turn of the episodic log.

    python bench/bench_storage.py                     # users 1/100/1000, 10^5 turns
    python bench/bench_storage.py --turns 20000       # a quicker run
    python bench/bench_storage.py --label before      # name the run (results are merged by label)

Measures, on this machine:
- **Per user.** A new bank file with N users (1, 100, 1000) holding one
  short memory each: file size (database + WAL, checkpointed) divided by N.
  sqlite-vec allocated a chunk of vectors for every owner partition, so an
  idle user of a shared file cost megabytes; edge-prompts/2 banks (schema
  step m004) filter the owner inside the scan instead.
- **Per turn.** One user's episodic log of `--turns` turns (LoCoMo's conv-26
  turns, repeated with their number appended so every text differs), written
  through `MemoryBank.apply` in transactions of 500, as the Manager writes
  them: text, speaker, time, resolved dates, keyword row, vector, binary code,
  history row. Bytes per turn = file size / turns. Then hybrid search
  latency (p50/p95, query vector precomputed) over that bank.
Vectors come from `HashEmbedder(384)` (the default embedder's width, so
sizes are the same; embedding cost is excluded). Writes
bench/results/storage.json (one entry per `--label`).
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

RESULTS = Path(__file__).resolve().parent / "results" / "storage.json"
CONV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "conv-26.json"


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def checkpointed(bank) -> None:
    bank.checkpoint()


def per_user(work: Path, users: int) -> dict:
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder

    path = work / f"users-{users}.db"
    with MemoryBank.open(path, HashEmbedder(384)) as bank:
        empty = file_bytes(path)
        for i in range(users):
            bank.add(f"User {i} keeps a locker at the gym, number {i}.", user=f"user{i}")
        checkpointed(bank)
    total = file_bytes(path)
    return {"users": users, "bytes": total, "empty_bank_bytes": empty, "bytes_per_user": (total - empty) / users}


def log_ops(texts: list[tuple[str, str, str]], start: int, n: int):
    from edge.operations import AddOp

    ops = []
    for i in range(start, start + n):
        speaker, text, when = texts[i % len(texts)]
        turn_id = f"T{i}"
        ops.append(AddOp(f"{text} ({i})", "episodic", when, (turn_id,),
                         {"speaker": speaker, "turn_id": turn_id}))
    return ops


def per_turn(work: Path, turns: int, queries: int) -> dict:
    import numpy as np

    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.locomo import load_locomo

    conversation = load_locomo(CONV)[0]
    texts = [(t.speaker, t.full_text, s.date_time) for s, t in conversation.turns()]
    questions = [qa.question for qa in conversation.questions()][:queries]
    path = work / "turns.db"
    embedder = HashEmbedder(384)
    with MemoryBank.open(path, embedder, user="ana") as bank:
        empty = file_bytes(path)
        started = time.perf_counter()
        for start in range(0, turns, 500):
            bank.apply(log_ops(texts, start, min(500, turns - start)), actor="import")
            print(f"\rturns {min(turns, start + 500)}/{turns}", end="", file=sys.stderr)
        print(file=sys.stderr)
        write_s = time.perf_counter() - started
        checkpointed(bank)
        total = file_bytes(path)
        vectors = np.asarray(embedder.embed(questions), dtype=np.float32)
        scoped = "scope" in MemoryBank.search.__code__.co_varnames
        timings = []
        for question, vector in zip(questions, vectors):
            t = time.perf_counter()
            if scoped:
                bank.search(question, k=12, query_vector=vector, scope="all")
            else:
                bank.search(question, k=12, query_vector=vector)
            timings.append(time.perf_counter() - t)
        timings.sort()
    return {
        "turns": turns, "bytes": total, "bytes_per_turn": (total - empty) / turns,
        "mean_turn_chars": statistics.fmean(len(t[1]) for t in texts),
        "write_turns_per_s": turns / write_s,
        "hybrid_search_ms": {"p50": 1000 * timings[len(timings) // 2],
                             "p95": 1000 * timings[min(len(timings) - 1, int(0.95 * len(timings)))],
                             "queries": len(timings)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,100,1000", help="comma-separated user counts")
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--label", default="current", help="the entry of storage.json to write")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.bank import migrations

    work = Path(tempfile.mkdtemp(prefix="edge-bench-storage-"))
    result: dict = {
        "schema": migrations.names(), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "users": [per_user(work, int(n)) for n in args.users.split(",") if n],
    }
    for row in result["users"]:
        print(f"{row['users']:>5} users: {row['bytes'] / 1e6:8.2f} MB, {row['bytes_per_user'] / 1e3:8.1f} kB a user")
    if args.turns:
        result["episodic_log"] = per_turn(work, args.turns, args.queries)
        log = result["episodic_log"]
        print(f"{log['turns']} turns: {log['bytes'] / 1e6:.1f} MB, {log['bytes_per_turn']:.0f} bytes a turn "
              f"(turns of {log['mean_turn_chars']:.0f} characters), hybrid search p50 "
              f"{log['hybrid_search_ms']['p50']:.1f} ms, p95 {log['hybrid_search_ms']['p95']:.1f} ms")
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
