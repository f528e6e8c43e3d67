"""Turn an evaluation's results into report.md and one PNG chart per metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.evaluation.runner import METRIC_LABELS, METRICS


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _category_label(results: dict[str, Any], key: str) -> str:
    return "overall" if key == "overall" else f"{key} {results['category_names'].get(key, '')}".strip()


def _metrics_shown(results: dict[str, Any]) -> list[str]:
    """Metrics with at least one value (the judge only when one was configured)."""
    shown = []
    for metric in METRICS:
        if any(c.get(metric) is not None for s in results["systems"].values() for c in s["categories"].values()):
            shown.append(metric)
    return shown


def render_report(results: dict[str, Any]) -> str:
    settings = results["settings"]
    metrics = _metrics_shown(results)
    mapping = ", ".join(f"{k} {v}" for k, v in results["category_names"].items())
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
        "",
        "Scores are percentages. F1 and BLEU-1 use SQuAD-style normalisation (lowercase, no punctuation, no "
        "articles); BLEU-1 has the brevity penalty. Evidence recall is the share of a question's evidence turns "
        "among the source turns of what the answer model was shown (top-k memories; for full-context, the turns "
        "that fit the window).",
        "",
        "## Scores",
        "",
    ]
    header = ["system", "category", "n"] + [METRIC_LABELS[m] for m in metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, system in results["systems"].items():
        for key, scores in system["categories"].items():
            label = f"**{_category_label(results, key)}**" if key == "overall" else _category_label(results, key)
            cells = [name, label, str(scores["n"])] + [_pct(scores.get(m)) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
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


def write_report(results: dict[str, Any], path: Path) -> Path:
    path.write_text(render_report(results), encoding="utf-8")
    return path


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
    labels = [_category_label(results, k) for k in keys]
    width = 0.8 / max(1, len(names))
    for metric in _metrics_shown(results):
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
