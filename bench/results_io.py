"""Writing a benchmark's figures: one JSON file under bench/results/, printed too.

Every bench script ends with `write_results(path, results)`: the folder is
made, the JSON written, the figures printed, and the line "written to PATH"
that `python -m bench` collects into its summary.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(path: Path, results: dict[str, Any], *, show: bool = True) -> Path:
    """Write `results` as indented JSON at `path` (folders made); print them when `show`, then where they went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    if show:
        print(text, end="")
    print(f"written to {path}")
    return path
