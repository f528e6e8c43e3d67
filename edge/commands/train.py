"""`edge train manager|answer`: GRPO + LoRA fine-tuning, a thin layer over `edge.train`."""
from __future__ import annotations

from pathlib import Path

import click

from edge.errors import require_extra

CONFIG_HELP = ("A TOML file, or a shipped config: smollm2-135m-manager, smollm2-135m-answer (CPU), "
               "smollm2-135m-manager-outcome (the outcome as served; GPU-sized), "
               "qwen2.5-3b-manager, qwen2.5-3b-answer (GPU).")


def _require_training_extra() -> None:
    require_extra("Training", "train", "peft", "torch", "trl")


@click.group()
def train() -> None:
    """Fine-tune the Memory Manager or the Answer Agent: LoRA, a warm start, then GRPO.

    A config's `sft_steps` first fit the adapter to the episodes' gold
    replies (TRL's SFT trainer); `steps` of GRPO then train it on its
    reward. Episodes use the runtime's prompts (edge.prompts), action space
    (clauses of the turn, spans of what is shown) and grammar (the GBNF
    llama.cpp serves with, run by llguidance), so a trained adapter is
    served with what it was trained on. Every fifth LoCoMo question, and
    every fifth FriendsQA scene, is held out for dev. A run writes checkpoints (it
    resumes when started again with the same --out), metrics.jsonl/csv, a
    curve.png, and OUT/adapter/ with edge-adapter.json (prompt version and
    base model).

    \b
    Examples:
      edge train manager --config smollm2-135m-manager --steps 40 --out runs/manager
      edge train answer --config smollm2-135m-answer --locomo conv-26.json --friendsqa data/friendsqa
      edge train answer --config qwen2.5-3b-answer --locomo locomo10.json --out runs/answer
    """


def _options(fn):
    fn = click.option("--config", "config_name", required=True, help=CONFIG_HELP)(fn)
    fn = click.option("--steps", type=click.IntRange(min=1), default=None, help="GRPO steps [default: the config's].")(fn)
    fn = click.option("--sft-steps", type=click.IntRange(min=0), default=None,
                      help="Warm-start steps before GRPO [default: the config's].")(fn)
    fn = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="Run folder [default: runs/<agent>]. An unfinished run in it is resumed.")(fn)
    fn = click.option("--base", default=None, help="Base model: 'bundled', a .gguf, a folder or a hub id.")(fn)
    fn = click.option("--locomo", "locomo_path", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="LoCoMo file for configs whose data source is 'locomo', 'both' or 'mix'.")(fn)
    fn = click.option("--friendsqa", "friendsqa_path", type=click.Path(exists=True, file_okay=False), default=None,
                      help="FriendsQA folder (friendsqa_dev.json, friendsqa_tst.json) for configs that mix it in.")(fn)
    fn = click.option("--seed", type=int, default=None, help="Random seed [default: the config's].")(fn)
    fn = click.option("--fresh", is_flag=True, help="Start over instead of resuming a run in --out.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(fn)
    return fn


def _run(agent: str, config_name: str, steps: int | None, sft_steps: int | None, out: Path | None,
         base: str | None, locomo_path: str | None, friendsqa_path: str | None, seed: int | None, fresh: bool,
         quiet: bool) -> None:
    _require_training_extra()
    from edge.train import load_config
    from edge.train import train as run_training

    config = load_config(config_name, base=base, seed=seed, sft_steps=sft_steps,
                         **{"data.locomo_path": locomo_path, "data.friendsqa_path": friendsqa_path})
    if config.agent != agent:
        raise click.UsageError(f"The config {config_name!r} trains the {config.agent}; use `edge train {config.agent}`.")
    out = out or Path("runs") / agent
    result = run_training(config, out=out, steps=steps, resume=not fresh, show_progress=not quiet)
    click.echo(f"adapter: {result.adapter}")
    for label, scores in (("dev before", result.dev_before), ("dev after", result.dev_after)):
        shown = {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}
        click.echo(f"{label}: {shown}")
    if result.best_adapter:
        click.echo(f"best on dev: step {result.best_step}, {result.best_adapter}")
    click.echo(f"curve: {result.out / 'curve.png'}   metrics: {result.out / 'metrics.csv'}")


@train.command()
@_options
def manager(**kwargs) -> None:
    """Train the Memory Manager (reward: a frozen reader's answers after its edits)."""
    _run("manager", **kwargs)


@train.command()
@_options
def answer(**kwargs) -> None:
    """Train the Answer Agent (reward: exact match of its answer)."""
    _run("answer", **kwargs)
