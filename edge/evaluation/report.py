"""Turn an evaluation's results into report.md and one PNG chart per metric.

`render_report` also reads the results.json of older runs: a figure they
did not record (LoCoMo's F1, evidence recall by memory kind, the stored-fact
audit) is shown as "—".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.evaluation.runner import MEM0_CATEGORY_NAMES, METRIC_LABELS, METRICS

MISSING = "—"
OPTIONAL_METRICS = ("judge",)  # columns shown only when some system has a value


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _mem0_names(results: dict[str, Any]) -> dict[str, str]:
    """Mem0-paper names of the categories (older results did not store them)."""
    return results.get("category_names_mem0") or {str(k): v for k, v in MEM0_CATEGORY_NAMES.items()}


def _category_label(results: dict[str, Any], key: str, *, sep: str = " ") -> str:
    """"1 multi-hop (Mem0: single-hop)": the number, LoCoMo's name and the Mem0 paper's name."""
    if key == "overall":
        return "overall"
    label = f"{key} {results['category_names'].get(key, '')}".strip()
    mem0 = _mem0_names(results).get(key)
    return f"{label}{sep}(Mem0: {mem0})" if mem0 else label


def _has_values(results: dict[str, Any], metric: str) -> bool:
    return any(c.get(metric) is not None for s in results["systems"].values() for c in s["categories"].values())


def _metrics_shown(results: dict[str, Any]) -> list[str]:
    """Table columns: every metric, but the judge only when one was configured."""
    return [m for m in METRICS if m not in OPTIONAL_METRICS or _has_values(results, m)]


def _metrics_charted(results: dict[str, Any]) -> list[str]:
    """Metrics with at least one value: one chart each."""
    return [m for m in METRICS if _has_values(results, m)]


def render_report(results: dict[str, Any]) -> str:
    settings = results["settings"]
    metrics = _metrics_shown(results)
    mapping = ", ".join(f"{k} {v}" for k, v in results["category_names"].items())
    mem0_mapping = ", ".join(f"{k} {v}" for k, v in _mem0_names(results).items())
    lines = [
        "# LoCoMo evaluation",
        "",
        f"- data: `{results['data']}` (conversations: {', '.join(results['conversations'])})",
        f"- model: {settings['bundle']} (`{settings['model']}`), adapters: {', '.join(settings['adapters']) or 'none'}",
        f"- prompts: {settings['prompt_version']}; context window {settings['n_ctx']} tokens; "
        f"answer top-k {settings['answer_k']}; greedy decoding, "
        f"repeat penalty {settings.get('repeat_penalty', 1.0)}",
        f"- questions: {'first ' + str(settings['limit']) + ' per conversation' if settings['limit'] else 'all'}, "
        f"adversarial (5) {'included' if settings['include_adversarial'] else 'excluded'}"
        + (f"; only the first {settings['sessions']} sessions and the questions whose evidence lies in them"
           if settings.get("sessions") else ""),
        f"- judge: {results['judge'] or 'none configured'}",
        f"- categories (LoCoMo's own evaluation code): {mapping}",
        f"- the same categories as Mem0's paper names them (and Memory-R1, MemLoRA after it): {mem0_mapping}",
        "",
        "Scores are percentages. F1 and BLEU-1 use SQuAD-style normalisation (lowercase, no punctuation, no "
        "articles); BLEU-1 has the brevity penalty. LoCoMo F1 is LoCoMo's own (task_eval/evaluation.py): also "
        "drops \"and\", stems with Porter, scores multi-hop (1) as the mean over the gold's comma-separated "
        "parts of the best-matching part of the answer, and keeps open-domain (3) gold before \";\". "
        "Evidence recall is the share of a question's evidence turns among the source turns of what the answer "
        "model was shown (top-k memories; for full-context, the turns that fit the window); its episodic column "
        "counts only the turn-log memories shown, its facts column only the facts the Manager wrote (semantic, "
        f"core). {MISSING}: not measured (no memory of that kind shown, or a run that did not record it).",
        "",
        "## Scores",
        "",
    ]
    header = ["system", "category", "n"] + [METRIC_LABELS[m] for m in metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, system in results["systems"].items():
        for key, scores in system["categories"].items():
            label = f"**{_category_label(results, key)}**" if key == "overall" else _category_label(results, key)
            cells = [name, label, str(scores.get("n", MISSING))] + [_pct(scores.get(m)) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _split_section(results, metrics)
    lines += _facts_section(results)
    lines += [
        "",
        "## Cost",
        "",
        "Latencies are wall-clock seconds on this machine: ingest per turn, answer per question (retrieval "
        "included). Peak RSS is the evaluating process's, which runs the systems one after another.",
        "",
        "| system | turns | ingest p50 | ingest p95 | ingest total | questions | answer p50 | answer p95 | "
        "answer total | total s | prompt tokens (mean) | memories | bank MB | peak RSS MB | errors (ingest/answer) |",
        "|" + "---|" * 15,
    ]
    for name, s in results["systems"].items():
        cells = [
            name, str(s["turns"]), _num(s["ingest_s"]["p50"], 3), _num(s["ingest_s"]["p95"], 3),
            _num(s["ingest_s"]["total"], 0), str(s["questions"]), _num(s["answer_s"]["p50"]),
            _num(s["answer_s"]["p95"]), _num(s["answer_s"]["total"], 0),
            _num(s["ingest_s"]["total"] + s["answer_s"]["total"], 0), _num(s["prompt_tokens"]["mean"], 0),
            str(s["bank"]["memories"]), _num(s["bank"]["bytes"] / 1e6), _num(s["peak_rss_mb"], 0),
            f"{s['ingest_errors']}/{s['answer_errors']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Systems:", ""]
    lines += [f"- `{name}`: {s['summary']}" for name, s in results["systems"].items()]
    return "\n".join(lines) + "\n"


def _split_section(results: dict[str, Any], metrics: list[str]) -> list[str]:
    """Scores on the questions `edge train` holds out (dev: every fifth) beside those it may train on."""
    if not any(s.get("split") for s in results["systems"].values()):
        return []  # results written before the split was recorded
    lines = ["", "## Dev and trained questions", "",
             "`edge train` never trains on the dev questions (every fifth, `edge.locomo.dev_question`); a model "
             "tuned to this conversation does better on the others than on them.", ""]
    header = ["system", "questions", "n"] + [METRIC_LABELS[m] for m in metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, system in results["systems"].items():
        for key, scores in (system.get("split") or {}).items():
            cells = [name, key, str(scores.get("n", MISSING))] + [_pct(scores.get(m)) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _facts_row(name: str, facts: dict[str, Any] | None) -> str:
    """One system's stored facts, grounded ones and hallucination rate ("—" with no facts or no audit)."""
    if not facts or not facts.get("stored"):
        stored = MISSING if not facts else str(facts.get("stored", MISSING))
        return f"| {name} | {stored} | {MISSING} | {MISSING} |"
    return (f"| {name} | {facts['stored']} | {facts['grounded']} | "
            f"{_pct(facts.get('hallucination_rate'))} |")


def _example_line(example: dict[str, Any]) -> str:
    turns = ", ".join(example.get("source_turns") or []) or "none"
    missing = "; ".join(example.get("missing") or [])
    where = f"{example['sample_id']} " if example.get("sample_id") else ""
    marks = "".join(f" ({mark})" for mark in ("deleted", "superseded") if example.get(mark))
    said = f" — not in the source: {missing}" if missing else ""
    return f"  - {where}[{turns}]{marks} {example.get('text', '')!r}{said}"


def _facts_section(results: dict[str, Any]) -> list[str]:
    """The stored-fact audit: per system, facts stored, grounded, hallucination rate, and a few ungrounded."""
    lines = [
        "",
        "## Stored facts",
        "",
        "Facts are the semantic and core memories a system's bank held after ingest, deleted and superseded "
        "versions included. "
        "One is grounded when `edge.grounding` finds each of its content words in the turns it names as its "
        "source, as the Manager's own check does: their text, speaker, session date and the dates their "
        "expressions (\"yesterday\") resolve to, and for a newer version the fact it replaced. The "
        f"hallucination rate is the share of stored facts that are not grounded. {MISSING}: no facts (or no "
        "audit in this run).",
        "",
        "| system | facts stored | grounded | hallucination rate |",
        "|---|---|---|---|",
    ]
    systems = results["systems"]
    lines += [_facts_row(name, s.get("facts")) for name, s in systems.items()]
    examples = [(name, (s.get("facts") or {}).get("examples") or []) for name, s in systems.items()]
    if any(found for _, found in examples):
        lines += ["", "Ungrounded facts (the first few per system):", ""]
        for name, found in examples:
            if found:
                lines.append(f"- `{name}`:")
                lines += [_example_line(e) for e in found]
    return lines


def write_report(results: dict[str, Any], path: Path) -> Path:
    path.write_text(render_report(results), encoding="utf-8")
    return path


def load_results(path: Path) -> dict[str, Any]:
    """A results.json, from this version of `edge eval` or an older one."""
    return json.loads(path.read_text(encoding="utf-8"))


def regenerate(out: Path) -> tuple[Path, list[str]]:
    """Rewrite out/report.md and the charts from out/results.json; the report's path and the charts written."""
    results = load_results(out / "results.json")
    return write_report(results, out / "report.md"), write_charts(results, out)


def write_charts(results: dict[str, Any], out: Path) -> list[str]:
    """One grouped bar chart per metric (categories × systems); returns the files written."""
    try:
        import matplotlib
    except ImportError:
        return []  # charts are optional; report.md and results.json hold the same numbers
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(results["systems"])
    keys = list(results["categories"]) + ["overall"]
    labels = [_category_label(results, k, sep="\n") for k in keys]
    width = 0.8 / max(1, len(names))
    for metric in _metrics_charted(results):
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
        for i, name in enumerate(names):
            cats = results["systems"][name]["categories"]
            values = [100 * (cats.get(k, {}).get(metric) or 0.0) for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], values, width, label=name)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))], labels)
        ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
        ax.set_title(f"LoCoMo {METRIC_LABELS[metric]} by category")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (what, label) in enumerate((("ingest_s", "ingest per turn"), ("answer_s", "answer per question"))):
        for j, pct in enumerate(("p50", "p95")):
            values = [results["systems"][n][what][pct] or 0.0 for n in names]
            ax.bar([x + (2 * i + j) * 0.2 for x in range(len(names))], values, 0.2, label=f"{label} {pct}")
    ax.set_xticks([x + 0.3 for x in range(len(names))], names)
    ax.set_ylabel("seconds")
    ax.set_title("Latency")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")
    return written
