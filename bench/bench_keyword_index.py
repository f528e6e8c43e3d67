"""The keyword index's size per memory, with and without the substring (trigram) index, and its search time.

    python bench/bench_keyword_index.py               # 2,000 memories of each kind
    python bench/bench_keyword_index.py --memories 10000

Two banks, one run: conv-26's turns (English: no text needs the substring
index, so it stays empty) and the same number of sentences in Chinese,
Japanese, Hindi and with names like "C++" (every text goes into it). Sizes
are read with SQLite's dbstat: the bm25 keyword tables (`turn_fts`,
`memory_fts`, what the index was before the substring index) and
`memory_tri`, in bytes per memory. Then keyword search p50/p95 for words
found only through the substring index. Vectors from `HashEmbedder(384)`.
Writes bench/results/keyword_index.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import CONV, summary  # noqa: E402

from results_io import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "keyword_index.json"
TEMPLATES = ["我的妹妹住在里斯本，她每天喝茶 {i}", "妹はリスボンに住んでいます {i}", "मेरी बहन माया लिस्बन में रहती है {i}",
             "I write C++ and C# at work, project {i}"]
QUERIES = ["里斯本", "リスボン", "माया", "C++"]


def table_bytes(db: Path, prefixes: tuple[str, ...]) -> int:
    from edge.bank import db as sqlite

    conn = sqlite.connect(db)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    return sum(size for name, size in rows if any(name == p or name.startswith(p + "_") for p in prefixes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.locomo import load_locomo

    conversation = load_locomo(CONV)[0]
    english = [f"{t.speaker}: {t.full_text} ({i})" for i, (_, t) in
               enumerate(list(conversation.turns()) * (args.memories // 300 + 1))][: args.memories]
    scripts = [TEMPLATES[i % len(TEMPLATES)].format(i=i) for i in range(args.memories)]
    work = Path(tempfile.mkdtemp(prefix="edge-bench-keyword-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                     "memories": args.memories}
    for name, texts in (("english", english), ("scripts", scripts)):
        db = work / f"{name}.db"
        with MemoryBank.open(db, HashEmbedder(384), user="bench") as bank:
            for start in range(0, len(texts), 500):
                bank.add_many(texts[start:start + 500])
            times = []
            for _ in range(10):
                for query in QUERIES:
                    begin = time.perf_counter()
                    bank.search(query, k=10, mode="keyword")
                    times.append(time.perf_counter() - begin)
            found = {query: len(bank.search(query, k=10, mode="keyword")) for query in QUERIES}
            bank.checkpoint()
        keyword = table_bytes(db, ("turn_fts", "memory_fts"))
        substring = table_bytes(db, ("memory_tri",))
        results[name] = {
            "keyword_tables_bytes_per_memory": keyword / len(texts),
            "substring_index_bytes_per_memory": substring / len(texts),
            "keyword_index_before_bytes_per_memory": keyword / len(texts),
            "keyword_index_after_bytes_per_memory": (keyword + substring) / len(texts),
            "file_bytes_per_memory": db.stat().st_size / len(texts),
            "keyword_search_substring_terms": summary(times),
            "hits_per_query": found,
        }
        print(f"{name}: keyword {keyword / len(texts):.0f} B/memory, substring {substring / len(texts):.0f} B/memory",
              file=sys.stderr)
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
