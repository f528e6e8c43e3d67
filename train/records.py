"""A training run's records: metrics.jsonl, metrics.csv and curve.png in its folder (rank 0 only).

`RunRecords` keeps one row per optimiser step and one per dev check, so a
resumed run rewrites the rows past its checkpoint; `plot_curve` draws the
training signal above the dev scores. Used by `edge.train.trainer`.
"""
from __future__ import annotations

import csv
import math
import json
from pathlib import Path
from typing import Any


def is_main_process() -> bool:
    """True in a plain run and on rank 0 under `accelerate launch`: only it evaluates and writes the run's files."""
    from accelerate import PartialState

    return PartialState().is_main_process


class RunRecords:
    """metrics.jsonl, metrics.csv and curve.png of one run folder."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.jsonl = out / "metrics.jsonl"
        self.writes = is_main_process()  # the other ranks of a multi-GPU run keep no records
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.is_file():
            self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def add(self, row: dict[str, Any]) -> None:
        """Append a row; a dev or warm-start evaluation replaces an earlier one of the same kind and step
        (a run resumed at its last step evaluates that step again)."""
        if not self.writes:
            return
        if row.get("kind") in ("dev", "sft"):
            self._keep([r for r in self.rows
                        if not (r.get("kind") == row["kind"] and r.get("step") == row.get("step"))])
        self.rows.append(row)
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_csv()

    def truncate_after(self, step: int) -> None:
        """Forget GRPO's rows past `step` (a resumed run redoes them); step -1 forgets every row.

        The warm start's rows ("sft_train", "sft") count their own steps and
        stay while the run resumes from its saved warm-start adapter.
        """
        self._keep([r for r in self.rows
                    if r.get("step", 0) <= step or (step >= 0 and r.get("kind") in ("sft_train", "sft"))])

    def _keep(self, kept: list[dict[str, Any]]) -> None:
        if self.writes and len(kept) != len(self.rows):
            self.rows = kept
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self._write_csv()

    def dev_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == "dev"]

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in columns and not isinstance(row[key], (dict, list)):
                    columns.append(key)
        with (self.out / "metrics.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)

    def plot(self, title: str) -> Path | None:
        return plot_curve(self.rows, self.out / "curve.png", title) if self.writes else None


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Training signal per optimiser step above dev scores, the warm start's steps first, then GRPO's.

    Top: the warm start's loss (rows of kind "sft_train") and GRPO's
    reward with its moving mean; bottom: the dev scores before training,
    after the warm start and at GRPO's evaluations.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    warm = [r for r in rows if r.get("kind") == "sft_train" and r.get("loss") is not None]
    offset = max((r["step"] for r in warm), default=0)  # GRPO's step 1 comes after the warm start's last
    train = [r for r in rows if r.get("kind") == "train" and r.get("reward") is not None]
    dev = [r for r in rows if r.get("kind") in ("dev", "sft")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if warm:
        top.plot([r["step"] for r in warm], [r["loss"] for r in warm], "-", color="tab:gray",
                 label="warm-start loss (decision tokens)")
    if train:
        steps = [offset + r["step"] for r in train]
        values = [r["reward"] for r in train]
        top.plot(steps, values, ".", alpha=0.35, label="GRPO reward (per step)")
        window = max(1, len(values) // 10)
        smooth = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
                  for i in range(len(values))]
        top.plot(steps, smooth, "-", label=f"moving mean ({window})")
        if any("reward_std" in r for r in train):
            top.plot(steps, [r.get("reward_std", math.nan) for r in train], ":", label="reward std (in groups)")
    top.set_ylabel("training loss / reward")
    if warm or train:
        top.legend(loc="best", fontsize=8)
    top.set_title(title)

    def x(row: dict[str, Any]) -> int:
        return offset if row["kind"] == "sft" else (row["step"] + offset if row["step"] else 0)

    for key, label in (("op_accuracy", "operation accuracy"), ("answer", "answer score (reader)"),
                       ("em", "answer EM"), ("f1", "answer F1"), ("format", "format score")):
        points = sorted((x(r), r[key]) for r in dev if r.get(key) is not None)
        if points:
            bottom.plot(*zip(*points), "o-", label=label)
    bottom.set_xlabel("optimiser step (warm start, then GRPO)")
    bottom.set_ylabel("dev (greedy)")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
