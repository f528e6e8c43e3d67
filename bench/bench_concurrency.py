"""Processes racing on one new bank: N processes each open it, write one memory and close it, M times.

    python bench/bench_concurrency.py                          # 4 processes x 200 opens + writes
    python bench/bench_concurrency.py --processes 2 --opens 50
    python bench/bench_concurrency.py --keep /tmp/race         # keep the bank file

Writes bench/results/concurrency.json, prints the failures and the timings,
and exits 1 when any open or write failed.

What it does:
- Creates nothing beforehand: the bank file does not exist when the
  processes start, so their first opens race to create it (switch it to
  WAL, create the schema). They are released together by a barrier.
- Each process then repeats: `MemoryBank.open` (a new connection), one
  `add` (a write transaction), `close`. Closing the last connection of a
  WAL database checkpoints and deletes its WAL while others may be opening
  it, the other moment where SQLite answers "database is locked" without
  waiting for the busy timeout.
- The embedder is the model-free HashEmbedder (the race is in SQLite, not in
  the model; loading MiniLM in every process would only add start-up time).
- A failure is any exception; they are counted by type and message. A
  healthy bank has none: a busy moment must be waited out, and a locked
  bank must never be reported as corrupt.
- At the end the bank must hold exactly N x M memories and pass `check()`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "concurrency.json"
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: edge is importable from the checkout


def worker(index: int, folder: str, opens: int, banks: int, jitter_ms: float, barrier, queue) -> None:
    """Open, write one memory, close, `opens` times over `banks` new banks; report to `queue`."""
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder

    embedder = HashEmbedder()
    rng = random.Random(index)
    open_ms: list[float] = []
    write_ms: list[float] = []
    failures: list[tuple[str, str]] = []
    for bank_number, share in enumerate(split(opens, banks)):
        path = Path(folder) / f"race{bank_number}.db"
        barrier.wait()  # every process reaches the new bank together ...
        time.sleep(rng.random() * jitter_ms / 1000)  # ... give or take a few ms, as real starts are
        for step in range(share):
            started = time.perf_counter()
            try:
                bank = MemoryBank.open(path, embedder, user=f"worker{index}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever it is
                failures.append((f"open: {type(exc).__name__}", str(exc).splitlines()[0]))
                continue
            opened = time.perf_counter()
            open_ms.append((opened - started) * 1000)
            try:
                bank.add(f"worker {index} wrote memory number {step} of bank {bank_number}")
                write_ms.append((time.perf_counter() - opened) * 1000)
            except Exception as exc:  # noqa: BLE001
                failures.append((f"write: {type(exc).__name__}", str(exc).splitlines()[0]))
            finally:
                bank.close()
    queue.put({"index": index, "open_ms": open_ms, "write_ms": write_ms, "failures": failures})


def split(total: int, parts: int) -> list[int]:
    """`total` opens over `parts` banks, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def run(processes: int, opens: int, folder: Path, *, banks: int = 50, jitter_ms: float = 5.0) -> dict:
    """Race `processes` processes on banks that do not exist yet; the figures and failures as a dict."""
    context = multiprocessing.get_context("spawn")  # separate interpreters, as separate `edge` commands are
    barrier = context.Barrier(processes)
    queue = context.Queue()
    workers = [
        context.Process(target=worker, args=(i, str(folder), opens, banks, jitter_ms, barrier, queue))
        for i in range(processes)
    ]
    started = time.perf_counter()
    for process in workers:
        process.start()
    reports = [queue.get() for _ in workers]
    for process in workers:
        process.join()
    wall_s = time.perf_counter() - started
    failures = [tuple(f) for r in reports for f in r["failures"]]
    crashed = [p.exitcode for p in workers if p.exitcode != 0]
    open_ms = [v for r in reports for v in r["open_ms"]]
    write_ms = [v for r in reports for v in r["write_ms"]]
    paths = [folder / f"race{b}.db" for b in range(banks)]
    return {
        "processes": processes,
        "opens_per_process": opens,
        "new_banks": banks,
        "start_jitter_ms": jitter_ms,
        "attempts": processes * opens,
        "failures": len(failures) + len(crashed),
        "failure_kinds": dict(Counter(kind for kind, _ in failures)),
        "failure_examples": sorted({f"{kind}: {message}" for kind, message in failures})[:10],
        "crashed_processes": crashed,
        "open_ms": percentiles(open_ms),
        "write_ms": percentiles(write_ms),
        "wall_s": round(wall_s, 2),
        "memories_in_banks": sum(count_memories(p) or 0 for p in paths),
        "bank_problems": [f"{p.name}: {problem}" for p in paths for problem in check(p)],
    }


def count_memories(path: Path) -> int | None:
    if not path.exists():
        return None
    from edge.bank import db

    conn = db.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
    finally:
        conn.close()


def check(path: Path) -> list[str]:
    if not path.exists():
        return ["the bank was never created"]
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder

    with MemoryBank.open(path, HashEmbedder()) as bank:
        return bank.check()


def sqlite_version() -> str:
    from edge.bank import db

    return db.driver.sqlite_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--opens", type=int, default=200, help="opens + writes per process")
    parser.add_argument("--banks", type=int, default=50,
                        help="new banks the opens are spread over; each is created by racing processes")
    parser.add_argument("--jitter-ms", type=float, default=5.0, help="random delay of each process at each new bank")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="create the bank in this folder and keep it")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="edge-race-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("race*.db*"):
        stale.unlink()
    try:
        result = run(args.processes, args.opens, folder, banks=args.banks, jitter_ms=args.jitter_ms)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    expected = args.processes * args.opens - sum(
        n for kind, n in result["failure_kinds"].items() if kind.startswith("open") or kind.startswith("write"))
    result.update({
        "memories_expected": expected,
        "sqlite": sqlite_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    })
    print(f"{args.processes} processes x {args.opens} opens + writes on {args.banks} new bank(s): "
          f"{result['failures']} failures in {result['wall_s']} s")
    for example in result["failure_examples"]:
        print(f"  {example}")
    print(f"open  ms: {result['open_ms']}")
    print(f"write ms: {result['write_ms']}")
    print(f"memories in the banks: {result['memories_in_banks']} (expected {expected}); "
          f"check: {result['bank_problems'] or 'ok'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    healthy = not result["failures"] and not result["bank_problems"] and result["memories_in_banks"] == expected
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
