"""Two real GRPO steps on the CPU for each agent: an adapter, its record, metrics and a curve come out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from edge.errors import EdgeError  # noqa: E402
from edge.prompts import PROMPT_VERSION  # noqa: E402
from edge.train import load_config, read_adapter_meta, train  # noqa: E402

TINY = {
    "steps": 2,
    "sft_steps": 0,
    "data.source": "synthetic",
    "data.embedder": "hash",
    "threads": 1,
    "prompts_per_step": 1,
    "num_generations": 4,
    "max_completion_length": 24,
    "eval_every": 0,
    "save_every": 1,
    "eval_max_new_tokens": 24,
    "data.train_conversations": 2,
    "data.dev_conversations": 1,
    "data.max_dev_episodes": 2,
    "lora.top_layers": 2,
}


TINY_MANAGER_TOML = """
agent = "manager"
base = "bundled"
device = "cpu"
threads = 1
steps = 5  # --steps 2 overrides it
prompts_per_step = 1
num_generations = 4
max_completion_length = 32
choice_temperature = 4.0
learning_rate = 4e-4
eval_every = 0
save_every = 1
eval_max_new_tokens = 32
[lora]
top_layers = 2
[data]
source = "synthetic"
train_conversations = 2
dev_conversations = 1
max_dev_episodes = 2
embedder = "hash"
balance_ops = true
[reward]
reader = "candidates"
op_match_weight = 1.0
"""


# The tiny Manager with a 2-step warm start and no GRPO (steps = 0).
WARM_ONLY_TOML = TINY_MANAGER_TOML.replace("steps = 5  # --steps 2 overrides it",
                                           "steps = 0\nsft_steps = 2\nsft_batch_size = 2\nsft_loss_tokens = \"choices\"")


def _warm_start_only(tmp_path: Path) -> tuple[Path, Path]:
    """(config file, run folder) of a finished WARM_ONLY_TOML run in `tmp_path`."""
    config = tmp_path / "warm.toml"
    config.write_text(WARM_ONLY_TOML)
    run = tmp_path / "manager"
    train(load_config(config), out=run, show_progress=False)
    return config, run


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_steps_of_the_answer_agent_write_an_adapter_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "answer"
    result = train(load_config("smollm2-135m-answer", **TINY), out=run, show_progress=False)
    assert (result.adapter / "adapter_model.safetensors").is_file()
    meta = read_adapter_meta(result.adapter)
    assert meta["prompt_version"] == PROMPT_VERSION and meta["agent"] == "answer"
    assert meta["base"].endswith(".gguf") and len(meta["base_sha256"]) == 64
    assert set(meta["dev"]) >= {"em", "f1", "format"} and meta["steps"] == 2
    rows = _rows(run)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in rows if r["kind"] == "dev"] == [0, 2]
    assert (run / "metrics.csv").is_file() and (run / "curve.png").is_file()
    assert (run / "checkpoints" / "checkpoint-2").is_dir()

    again = train(load_config("smollm2-135m-answer", **{**TINY, "steps": 3}), out=run, show_progress=False)
    steps = [r["step"] for r in _rows(run) if r["kind"] == "train"]
    assert steps == [1, 2, 3], "a resumed run continues from its last checkpoint"
    assert again.steps == 3

    train(load_config("smollm2-135m-answer", **{**TINY, "steps": 3}), out=run, show_progress=False)
    rows = _rows(run)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3], "nothing left to train"
    assert [r["step"] for r in rows if r["kind"] == "dev"] == [0, 2, 3], "step 3's evaluation is redone, not added"
    with pytest.raises(EdgeError, match="already holds a run trained to step 3"):
        train(load_config("smollm2-135m-answer", **TINY), out=run, show_progress=False)


def test_two_steps_of_the_manager_from_the_command_line(tmp_path: Path) -> None:
    """`edge train manager`: rollouts are schema-valid, so rewards differ inside a group from the first step."""
    config = tmp_path / "tiny-manager.toml"
    config.write_text(TINY_MANAGER_TOML)
    out = tmp_path / "manager"
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "train", "manager", "--config", str(config), "--steps", "2", "--out",
         str(out), "--quiet"], capture_output=True, text=True, timeout=1500, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "adapter:" in done.stdout
    meta = read_adapter_meta(out / "adapter")
    assert meta["agent"] == "manager" and meta["prompt_version"] == PROMPT_VERSION
    train_rows = [r for r in _rows(out) if r["kind"] == "train"]
    assert len(train_rows) == 2
    assert all(r["rewards/manager_format_reward/mean"] > 0.9 for r in train_rows)  # constrained: replies parse
    assert all("rewards/manager_op_match_reward/mean" in r for r in train_rows)
    assert any(r["reward_std"] > 0 for r in train_rows), "no reward spread: nothing to learn from"
    dev = [r for r in _rows(out) if r["kind"] == "dev"]
    assert {"op_accuracy", "answer", "format"} <= set(dev[-1])


def test_a_warm_start_then_grpo_continues_on_the_warm_started_adapter(tmp_path: Path) -> None:
    """`sft_steps` fits the LoRA to gold replies first; GRPO then trains that adapter, not a fresh one."""
    from safetensors.torch import load_file

    config = tmp_path / "tiny-manager.toml"
    # GRPO at learning rate 0: its adapter must come out as the warm start left it (a fresh LoRA has B = 0).
    config.write_text(TINY_MANAGER_TOML.replace("steps = 5  # --steps 2 overrides it",
                                                "steps = 1\nsft_steps = 2\nsft_batch_size = 2\n"
                                                "sft_loss_tokens = \"choices\"")
                      .replace("learning_rate = 4e-4", "learning_rate = 0.0"))
    run = tmp_path / "manager"
    result = train(load_config(config), out=run, show_progress=False)
    rows = _rows(run)
    assert [r["kind"] for r in rows if r["kind"] in ("sft", "dev")] == ["dev", "sft", "dev"]
    warm = load_file(str(run / "sft-adapter" / "adapter_model.safetensors"))
    final = load_file(str(result.adapter / "adapter_model.safetensors"))
    b_keys = [k for k in warm if "lora_B" in k]
    assert b_keys and all(float(warm[k].abs().sum()) > 0 for k in b_keys)  # B starts at zero: SFT moved it
    assert set(final) == set(warm)
    assert all(bool((final[key] == warm[key]).all()) for key in warm)


def test_grpo_after_a_warm_start_only_run_keeps_the_warm_starts_rows(tmp_path: Path) -> None:
    """A run that stopped after its warm start (steps = 0), continued with GRPO in the same folder, reuses
    the saved warm start and keeps its loss rows; its evaluations are redone, not doubled."""
    config, run = _warm_start_only(tmp_path)
    losses = [r for r in _rows(run) if r["kind"] == "sft_train"]
    assert [r["step"] for r in losses] == [1, 2]
    warm = (run / "sft-adapter" / "adapter_model.safetensors").read_bytes()

    result = train(load_config(config, steps=1), out=run, show_progress=False)
    rows = _rows(run)
    assert [r for r in rows if r["kind"] == "sft_train"] == losses, "the warm start's losses are kept as they were"
    assert (run / "sft-adapter" / "adapter_model.safetensors").read_bytes() == warm, "the warm start is reused"
    assert [(r["kind"], r["step"]) for r in rows if r["kind"] in ("sft", "dev")] == [("dev", 0), ("sft", 0),
                                                                                       ("dev", 1)]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1]
    assert result.steps == 1


def test_a_stopped_warm_start_goes_on_from_its_last_checkpoint(tmp_path: Path) -> None:
    """A warm start stopped after its checkpoint (no sft-adapter saved yet) resumes there instead of
    starting over: the losses of the steps before come from the checkpoint, not from training again."""
    config, run = _warm_start_only(tmp_path)
    checkpoint = run / "sft-checkpoints" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    import shutil

    shutil.rmtree(run / "sft-adapter")  # as if the process had stopped between the checkpoint and the save
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    first = next(row for row in state["log_history"] if "loss" in row)
    first["loss"] = 123.0  # a value no training step gives: seen again only if the checkpoint was read
    state_file.write_text(json.dumps(state))

    config.write_text(WARM_ONLY_TOML.replace("sft_steps = 2", "sft_steps = 3"))
    train(load_config(config), out=run, show_progress=False)
    losses = [r["loss"] for r in _rows(run) if r["kind"] == "sft_train"]
    assert len(losses) == 3 and losses[0] == 123.0
    assert (run / "sft-adapter" / "adapter_model.safetensors").is_file()
