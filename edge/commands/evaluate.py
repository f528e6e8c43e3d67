"""`edge eval ...`: benchmarks over the Python API (`edge.evaluation`)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from edge.bundle import DEFAULT_GENERATION
from edge.commands import model_options
from edge.evaluation.runner import DEFAULT_SYSTEMS, EvalSettings
from edge.evaluation.systems import SYSTEMS
from edge.generation import MIN_N_CTX

DATA_ENV = "EDGE_LOCOMO_DATA"


@click.group()
def evaluate() -> None:
    """Measure memory systems on public benchmarks."""


def _system_help() -> str:
    return "; ".join(f"{name}: {cls.summary}" for name, cls in SYSTEMS.items())


@evaluate.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=lambda: os.environ.get(DATA_ENV), show_default=f"${DATA_ENV}",
              help="LoCoMo file in the locomo10.json layout (e.g. locomo10.json, or one conversation of it).")
@model_options(generation=False)
@click.option("--system", "systems", multiple=True, type=click.Choice(list(SYSTEMS)),
              help=f"System to run; repeat for several. [default: {', '.join(DEFAULT_SYSTEMS)}] "
              f"({_system_help()})")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Ask only the first N questions of each conversation (every turn is still ingested).")
@click.option("--sessions", type=click.IntRange(min=1), default=None,
              help="Only the first N sessions of each conversation, and only the questions whose evidence "
              "lies in them (a shorter run that is still consistent).")
@click.option("--sample", "samples", multiple=True, help="Only this conversation (sample_id); repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("locomo-eval"),
              show_default=True, help="Output folder; rerunning with the same folder resumes where it stopped.")
@click.option("--k", "answer_k", type=click.IntRange(min=1), default=None,
              help="Memories retrieved for each question (default: the bundle's generation.answer_k; "
              f"{DEFAULT_GENERATION['answer_k']} for the default bundle, 60 in Memory-R1).")
@click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=8192, show_default=True,
              help="Context window of the model, in tokens (full-context fills it).")
@click.option("--include-adversarial", is_flag=True,
              help="Also ask category 5 (adversarial) questions, scored against 'Not mentioned in the conversation'.")
@click.option("--judge-url", default=None,
              help="OpenAI-compatible server for LLM-as-judge scoring (e.g. http://localhost:8080/v1).")
@click.option("--judge-model", default=None, help="Model name to request from the judge server.")
@click.option("--judge-api-key", envvar="EDGE_JUDGE_API_KEY", default=None,
              help="API key for the judge server. [env: EDGE_JUDGE_API_KEY]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def locomo(data: Path | None, source, systems: tuple[str, ...], limit: int | None,
           sessions: int | None, samples: tuple[str, ...], out: Path, answer_k: int | None, n_ctx: int, include_adversarial: bool,
           judge_url: str | None, judge_model: str | None, judge_api_key: str | None, quiet: bool) -> None:
    """Evaluate memory systems on LoCoMo conversations.

    Each conversation's sessions are fed turn by turn, in time order, to
    each system; then every question is asked and scored. Categories follow
    LoCoMo's evaluation code: 1 multi-hop, 2 temporal, 3 open-domain,
    4 single-hop, 5 adversarial (excluded unless --include-adversarial);
    the report also gives the names Mem0's paper uses (1 single-hop,
    3 multi-hop, 4 open-domain).

    Scores: F1 (SQuAD-style and LoCoMo's own), BLEU-1, exact match, the
    judge's, and evidence recall, overall and split into the turn log
    (episodic) and the facts the Manager wrote. Each system's stored facts
    are checked against the turns they cite: the report gives the share
    that is not grounded (hallucination rate) and a few examples.

    With extractive answers each answer is also scored against the best
    span it was offered (its ceiling): the report gives the share of that
    F1 the Answer Agent took, per category, and how often it answered
    "unknown" (rightly on adversarial questions, wrongly on the others).
    Run bundle and bundle-log-only together for the Manager's contribution:
    the same Answer Agent with and without the facts it wrote.

    Writes OUT/results.json, OUT/report.md (tables per system and category)
    and a PNG chart per metric (offered.png: F1 against its ceiling).
    Progress is saved as it goes: run the same command again to resume.

    \b
    Example:
      edge eval locomo --data locomo10.json --sample conv-26 --system rag-turns --limit 20
    """
    from edge.evaluation.runner import run_locomo

    if data is None:
        raise click.UsageError(
            f"Missing --data: the LoCoMo file does not ship with edge. Get locomo10.json from "
            f"https://github.com/snap-research/locomo (CC BY-NC 4.0) and pass it, or set ${DATA_ENV}."
        )
    if bool(judge_url) != bool(judge_model):
        raise click.UsageError("--judge-url and --judge-model go together.")
    settings = EvalSettings(
        data=data, out=out, systems=list(systems or DEFAULT_SYSTEMS), bundle=None if source.is_default else source.open(),
        limit=limit,
        include_adversarial=include_adversarial, samples=list(samples) or None, sessions=sessions, n_ctx=n_ctx, answer_k=answer_k,
        progress=not quiet,
    )
    judge = None
    if judge_url:
        from edge.backends import load_backend
        from edge.evaluation.scoring import LLMJudge

        judge = LLMJudge(load_backend("http", base_url=judge_url, model=judge_model, api_key=judge_api_key))
    results = run_locomo(settings, judge=judge)
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    click.echo(f"results: {out / 'results.json'}; charts: {', '.join(results.get('charts', [])) or 'none'}")


@evaluate.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(out: Path) -> None:
    """Rewrite OUT/report.md and the charts from OUT/results.json, without running anything.

    Works on the results of older runs too; figures they did not record show as "—".
    """
    from edge.evaluation.report import regenerate

    if not (out / "results.json").is_file():
        raise click.UsageError(f"No results.json in {out}: run `edge eval locomo --out {out}` first.")
    path, charts = regenerate(out)
    click.echo(path.read_text(encoding="utf-8"))
    click.echo(f"report: {path}; charts: {', '.join(charts) or 'none'}")
