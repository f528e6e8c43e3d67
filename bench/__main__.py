"""Run every benchmark in bench/ in turn: `python -m bench [NAME ...]`.

Each `bench_*.py` runs as its own process with its default settings; NAME
(e.g. `bank` or `bench_bank`) picks some of them. A script that fails is
reported and the next one runs. At the end, a summary lists each script's
outcome and the result files it wrote (the lines it printed as
"written to PATH").
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(names: list[str]) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if not names:
        return found
    wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in (Path(n).stem for n in names)}
    unknown = wanted - {p.stem for p in found}
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))} (have: {', '.join(p.stem for p in found)})")
    return [p for p in found if p.stem in wanted]


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    summary = []
    for script in scripts(argv):
        print(f"=== {script.name}", flush=True)
        started = time.perf_counter()
        written: list[str] = []
        try:
            proc = subprocess.Popen(
                [sys.executable, str(script)], cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith("written to "):
                    written.append(line[len("written to "):].strip())
            code = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            summary.append((script.name, "interrupted", time.perf_counter() - started, written))
            break
        except OSError as exc:
            code, written = -1, [f"(could not start: {exc})"]
        outcome = "ok" if code == 0 else f"FAILED (exit {code})"
        summary.append((script.name, outcome, time.perf_counter() - started, written))
    print("\n=== summary")
    for name, outcome, seconds, written in summary:
        print(f"{name:28s} {outcome:18s} {seconds:7.1f} s  {', '.join(written) or '-'}")
    return 0 if all(outcome == "ok" for _, outcome, _, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
