"""Turn an evaluation's results into report.md and one PNG chart per metric.

`render_report` also reads the results.json of older runs: a figure they
did not record (LoCoMo's F1, evidence recall by memory kind, the stored-fact
audit) is shown as "—", and a section they hold nothing for (best offered
span, abstention) is left out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.evaluation.scoring import ANSWER_METRICS, MEM0_CATEGORY_NAMES, METRIC_LABELS

MISSING = "—"
OPTIONAL_METRICS = ("judge",)  # columns shown only when some system has a value
# Columns of "What the Answer Agent takes of what it is offered".
OFFERED_COLUMNS = ("f1", "best_offered_f1", "taken", "locomo_f1", "best_offered_locomo_f1", "gold_offered")
# Columns of "The Manager's contribution": `bundle` minus `bundle-log-only`.
MANAGER_COLUMNS = ("f1", "locomo_f1", "em", "evidence_recall")
WITH_MANAGER, WITHOUT_MANAGER = "bundle", "bundle-log-only"


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
    """The "Scores" columns: every answer metric, but the judge only when one was configured."""
    return [m for m in ANSWER_METRICS if m not in OPTIONAL_METRICS or _has_values(results, m)]


def _metrics_charted(results: dict[str, Any]) -> list[str]:
    """Answer metrics with at least one value: one chart each (the ceiling has its own, `offered.png`)."""
    return [m for m in ANSWER_METRICS if _has_values(results, m)]


def _signed(value: float | None) -> str:
    """A difference of two shares in percentage points, signed ("+3.2", "-0.5")."""
    return MISSING if value is None else f"{100 * value:+.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


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
        f"adversarial (5) {'included (scored by abstention; overall and dev/trained are over 1-4)' if settings['include_adversarial'] else 'excluded'}"
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
    lines += _offered_section(results)
    lines += _manager_section(results)
    lines += _abstention_section(results)
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


def _offered_cells(scores: dict[str, Any]) -> list[str]:
    return [str(scores.get("n", MISSING))] + [_pct(scores.get(m)) for m in OFFERED_COLUMNS]


def _offered_section(results: dict[str, Any]) -> list[str]:
    """Per system and category: F1 beside the F1 of the best span offered, and the share of it taken.

    Left out when no system recorded what it was offered (free-text answers, or a run before this table).
    """
    if not _has_values(results, "best_offered_f1"):
        return []
    lines = ["", "## What the Answer Agent takes of what it is offered", "",
             "With extractive answers the reply can only be one of the spans it was offered (`edge.prompts."
             "answer_spans` of what it was shown, and \"unknown\"). Best offered F1 is what it would have scored "
             "had it always chosen the offered span closest to the gold answer (SQuAD-style F1; LoCoMo's F1 of that "
             "same span beside it); taken is F1 / best offered F1, the share of that ceiling it reached; gold offered "
             "is the share of questions where the gold answer itself was among the spans (exact match reachable). "
             "A low ceiling is what it was shown (retrieval, the token budget, or a gold answer no span words), a "
             "low share taken is the model's choice. Adversarial questions (5) have no span to find: see Abstention. "
             f"{MISSING}: free-text answers, or a run that did not record what was offered.", ""]
    header = ["system", "category", "n"] + [METRIC_LABELS[m] for m in OFFERED_COLUMNS]
    rows = []
    for name, system in results["systems"].items():
        for key, scores in system["categories"].items():
            label = f"**{_category_label(results, key)}**" if key == "overall" else _category_label(results, key)
            rows.append([name, label] + _offered_cells(scores))
    lines += _table(header, rows)
    split = [[name, key] + _offered_cells(scores) for name, system in results["systems"].items()
             for key, scores in (system.get("split") or {}).items()]
    if split:
        lines += ["", "On the dev questions (never trained on) and the others:", ""]
        lines += _table(["system", "questions", "n"] + [METRIC_LABELS[m] for m in OFFERED_COLUMNS], split)
    return lines


def _difference(with_manager: dict[str, Any], without: dict[str, Any], metric: str) -> float | None:
    a, b = with_manager.get(metric), without.get(metric)
    return None if a is None or b is None else a - b


def _manager_row(label: str, with_manager: dict[str, Any] | None, without: dict[str, Any] | None) -> list[str]:
    with_manager, without = with_manager or {}, without or {}
    n = f"{with_manager.get('n', MISSING)}/{without.get('n', MISSING)}"
    return [label, n] + [_signed(_difference(with_manager, without, m)) for m in MANAGER_COLUMNS]


def _manager_section(results: dict[str, Any]) -> list[str]:
    """`bundle` minus `bundle-log-only` per category and dev/trained: what the Manager's facts add to the answers.

    Both run the bundle's Answer Agent with its adapter; only `bundle` has a Manager writing facts beside the
    episodic log. Left out unless both systems ran.
    """
    systems = results["systems"]
    if WITH_MANAGER not in systems or WITHOUT_MANAGER not in systems:
        return []
    full, alone = systems[WITH_MANAGER], systems[WITHOUT_MANAGER]
    lines = ["", "## The Manager's contribution", "",
             f"`{WITH_MANAGER}` minus `{WITHOUT_MANAGER}`, in percentage points: the same Answer Agent with the same "
             "adapter, with and without the facts the Memory Manager wrote beside the episodic log. n is the "
             f"questions each answered ({WITH_MANAGER}/{WITHOUT_MANAGER}); positive: the Manager helped.", ""]
    keys = list(dict.fromkeys([*full["categories"], *alone["categories"]]))
    keys = [k for k in keys if k != "overall"] + ["overall"]
    rows = [_manager_row(f"**{_category_label(results, k)}**" if k == "overall" else _category_label(results, k),
                         full["categories"].get(k), alone["categories"].get(k)) for k in keys]
    for key in ("dev", "trained"):
        if (full.get("split") or {}).get(key) is not None or (alone.get("split") or {}).get(key) is not None:
            rows.append(_manager_row(key, (full.get("split") or {}).get(key), (alone.get("split") or {}).get(key)))
    header = ["questions", "n"] + [f"{METRIC_LABELS[m]} Δ" for m in MANAGER_COLUMNS]
    return lines + _table(header, rows)


def _abstention_section(results: dict[str, Any]) -> list[str]:
    """Per system: the share of unanswerable (5) questions answered "unknown", and of answerable (1-4) ones."""
    measured = {name: s["abstention"] for name, s in results["systems"].items() if s.get("abstention")}
    if not measured:
        return []  # a run before abstention was recorded
    lines = ["", "## Abstention", "",
             "How often each system answered \"unknown\": on adversarial questions (5, gold \"Not mentioned in the "
             "conversation\"; asked only with --include-adversarial) that is right, on answerable ones (1-4) it is a "
             f"false unknown. {MISSING}: no question of that kind asked.", ""]
    header = ["system", "unanswerable (5)", "answered unknown", "answerable (1-4)", "false unknown"]
    rows = [[name, str(a.get("unanswerable", MISSING)), _pct(a.get("abstained_unanswerable")),
             str(a.get("answerable", MISSING)), _pct(a.get("false_unknown"))] for name, a in measured.items()]
    return lines + _table(header, rows)


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


def _offered_chart(results: dict[str, Any], out: Path, plt: Any) -> str:
    """offered.png: per category and system, F1 (solid) inside the best offered F1 (pale, the ceiling)."""
    names = list(results["systems"])
    keys = list(results["categories"]) + ["overall"]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)) + 2.5, 4))
    for i, name in enumerate(names):
        cats = results["systems"][name]["categories"]
        xs = [x + i * width for x in range(len(keys))]
        color = f"C{i}"
        ceiling = [100 * (cats.get(k, {}).get("best_offered_f1") or 0.0) for k in keys]
        ax.bar(xs, ceiling, width, color=color, alpha=0.3, label=f"{name} best offered")
        ax.bar(xs, [100 * (cats.get(k, {}).get("f1") or 0.0) for k in keys], width * 0.6, color=color,
               label=f"{name} F1")
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))],
                  [_category_label(results, k, sep="\n") for k in keys])
    ax.set_ylabel("F1 (%)")
    ax.set_title("LoCoMo F1 and the best offered span's F1 by category")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # two entries a system: beside the bars
    fig.tight_layout()
    fig.savefig(out / "offered.png", dpi=110)
    plt.close(fig)
    return "offered.png"


def write_charts(results: dict[str, Any], out: Path) -> list[str]:
    """One grouped bar chart per answer metric (categories × systems), F1 against its ceiling (offered.png) when
    recorded, and latency; returns the files written."""
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
    if _has_values(results, "best_offered_f1"):
        written.append(_offered_chart(results, out, plt))
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
