"""GRPO + LoRA for the Memory Manager and the Answer Agent: a thin layer over TRL's `GRPOTrainer`.

What it adds to TRL:
- rollouts decoded under the JSON schema of each row (`schema` column),
  the constraint the runtime decodes with (`edge.train.constrained`);
- checkpoints every `save_every` steps, resumed automatically;
- a dev evaluation before training, every `eval_every` steps and at the end;
- `metrics.jsonl` / `metrics.csv` (one row per step, plus dev rows),
  `curve.png` (reward and dev scores against steps) and a progress bar;
- the adapter in `OUT/adapter/`, with `edge-adapter.json` next to it
  recording the prompt version, the base model and the final dev scores.

    from edge.train import load_config, train
    result = train(load_config("smollm2-135m-manager"), out="runs/manager", steps=50)

Command line: `edge train manager --config smollm2-135m-manager --steps 50 --out runs/manager`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.prompts import PROMPT_VERSION

from edge.train.config import TrainConfig
from edge.train.records import RunRecords

log = logging.getLogger("edge.train")

ADAPTER_META = "edge-adapter.json"


@dataclass
class TrainResult:
    out: Path
    adapter: Path  # after the last step
    steps: int
    dev_before: dict[str, Any] = field(default_factory=dict)
    dev_after: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    best_adapter: Path | None = None  # the dev evaluation's best, when it beat the base model
    best_step: int | None = None
    dev_best: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- TRL with constrained rollouts


def _constrained_trainer_class():
    import torch
    from trl import GRPOTrainer
    from trl.models import unwrap_model_for_generation
    from trl.trainer.utils import pad

    from edge.train.constrained import runtime_processors

    class ConstrainedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose rollouts follow each row's JSON schema (column `schema`)."""

        def __init__(self, *args: Any, constraint: Any, choice_temperature: float = 1.0, loss_tokens: str = "all",
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.choice_temperature = choice_temperature
            self.loss_tokens = loss_tokens
            self._choice_masks: list[list[int]] | None = None
            if self.use_vllm or self.use_transformers_continuous_batching:
                raise ValueError("constrained rollouts need transformers generation (use_vllm off)")
            self.constraint = constraint
            self._row_schemas: list[dict[str, Any]] | None = None

        def _generate_and_score_completions(self, inputs):
            self._row_schemas = [json.loads(x["schema"]) for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _generate(self, prompts):
            out = list(super()._generate(prompts))
            if self.loss_tokens == "choices":  # TRL multiplies this mask into the loss mask
                out[2] = self._choice_masks
            return tuple(out)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            schemas = self._row_schemas
            if schemas is None or len(schemas) != len(prompt_ids):
                raise RuntimeError("rows and schemas are out of step")
            device = self.accelerator.device
            pad_id = self._tokenizer.pad_token_id
            tensors = [torch.tensor(ids) for ids in prompt_ids]
            inputs = {
                "input_ids": pad(tensors, padding_value=pad_id, padding_side="left"),
                "attention_mask": pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left"),
            }
            inputs = {k: v.to(device) for k, v in inputs.items()}
            processor = self.constraint.processor(schemas, choice_temperature=self.choice_temperature)
            with (
                unwrap_model_for_generation(
                    self.model_wrapped, self.accelerator,
                    gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                    generation_kwargs=self.generation_kwargs,
                    gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                ) as model,
                torch.no_grad(),
            ):
                out = model.generate(**inputs, generation_config=self.generation_config,
                                     logits_processor=runtime_processors(processor))
            completion_ids = out[:, inputs["input_ids"].size(1):].cpu()
            result = []
            eos = set(self.eos_token_ids)
            for row in completion_ids.tolist():
                ids = []
                for token in row:
                    ids.append(token)
                    if token in eos:
                        break
                result.append(ids)
            self._choice_masks = [
                [int(flag) for flag in flags[: len(ids)]] + [0] * (len(ids) - len(flags))
                for flags, ids in zip(processor.choices, result)
            ]
            return result, None

    return ConstrainedGRPOTrainer


# --------------------------------------------------------------------------- the run


def _callbacks(records: RunRecords, evaluate, config: TrainConfig, total: int,
               show_progress: bool):
    from transformers import TrainerCallback

    class EdgeCallback(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if show_progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=state.global_step, desc=f"train {config.agent}", unit="step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "reward" not in logs:
                return
            row = {"kind": "train", "step": state.global_step, "time": round(time.time(), 1)}
            row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            records.add(row)
            if self.bar is not None:
                self.bar.set_postfix(reward=f"{logs['reward']:.3f}", std=f"{logs.get('reward_std', 0):.3f}")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
            every = config.eval_every
            if every and state.global_step % every == 0 and state.global_step < total:
                evaluate(kwargs["model"], state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return [EdgeCallback()]


def _latest_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


def train(config: TrainConfig, *, out: Path | str, steps: int | None = None, resume: bool = True,
          show_progress: bool = True) -> TrainResult:
    """Train `config.agent` with GRPO + LoRA; everything lands in `out` (see `TrainingRun`)."""
    return TrainingRun(config, out=out, steps=steps, resume=resume, show_progress=show_progress).run()


class TrainingRun:
    """One training run in `out`: the base model and data loaded once, then resume, warm start, GRPO, the adapter.

    Its parts in the order `run` calls them: `resume_state` (a checkpoint
    to continue from, or a fresh start evaluated on dev), `warm_start`
    (the supervised warm start, when the config asks for one), `grpo`
    (TRL's trainer, with constrained rollouts), `finish` (the last dev
    check and the adapter with its record). `evaluate` is what every dev
    check calls; it keeps the best adapter in `out/best-adapter`.
    """

    def __init__(self, config: TrainConfig, *, out: Path | str, steps: int | None = None, resume: bool = True,
                 show_progress: bool = True) -> None:
        import torch

        from edge.train.base_model import load_base
        from edge.train.constrained import SchemaConstraint
        from edge.train.recipe import answer_context_agent, answer_metric, build_data, build_reader, load_embedder

        self.started = time.perf_counter()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.config, self.resume, self.show_progress = config, resume, show_progress
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.total = steps or config.steps
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = config.resolved_device()

        self.model, self.tokenizer, self.base = load_base(config.base, dtype=config.dtype)
        self.model.to(self.device)
        self.constraint = SchemaConstraint.for_tokenizer(self.tokenizer, [self.tokenizer.eos_token_id])
        self.embedder = load_embedder(config.data.embedder)
        context = answer_context_agent(self.tokenizer, config) if config.agent == "answer" else None
        self.data = build_data(config, self.embedder, reader=context)
        self.reader = build_reader(config) if config.agent == "manager" else None
        log.info("%d training episodes, %d dev episodes", len(self.data.train), len(self.data.dev))
        (self.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

        self.records = RunRecords(self.out)
        self.metric = answer_metric(config)
        self.main = self.records.writes  # rank 0 (or the only process)
        self.best_metric = "op_accuracy" if config.agent == "manager" and config.data.source == "synthetic" else (
            "answer" if config.agent == "manager" else config.reward.metric)
        self.best: dict[str, Any] = {"value": float("-inf"), "step": None, "scores": {}}
        self.dev_before: dict[str, Any] = {}
        self.checkpoints = self.out / "checkpoints"
        self.done = 0

    # ------------------------------------------------------------------ dev checks and records

    def evaluate(self, model, step: int, kind: str = "dev") -> dict[str, Any]:
        """Dev scores of `model` at `step`, recorded; a new best (after step 0) is saved as `best-adapter`."""
        from edge.train import dev_scores as ev

        if not self.main:  # rank 0 evaluates; the others wait for it at the next step's gradient exchange
            return {}
        config = self.config
        was_training = model.training
        model.eval()
        try:
            if config.agent == "manager":
                scores, _ = ev.evaluate_manager(
                    model, self.tokenizer, self.constraint, self.data.dev, self.reader, self.embedder,
                    max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size, metric=self.metric,
                    context=config.reward.context)
            else:
                scores, _ = ev.evaluate_answer(model, self.tokenizer, self.constraint, self.data.dev,
                                               max_new_tokens=config.eval_max_new_tokens,
                                               batch_size=config.eval_batch_size)
        finally:
            if was_training:
                model.train()
        self.records.add({"kind": kind, "step": step, "time": round(time.time(), 1), **scores})
        self.records.plot(f"{config.agent}: {self.base.name}")
        value = scores.get(self.best_metric)
        if step > 0 and value is not None and value > self.best["value"]:
            self.keep_best(model, step, scores)
        return scores

    def keep_best(self, model, step: int, scores: dict[str, Any]) -> None:
        self.best.update(value=scores[self.best_metric], step=step, scores=scores)
        if self.main:
            model.save_pretrained(str(self.out / "best-adapter"))
        self.write_meta(self.out / "best-adapter", step, scores)

    def write_meta(self, folder: Path, step: int, scores: dict[str, Any]) -> None:
        """`edge-adapter.json` beside an adapter: prompts, base model, steps, dev scores before and now, config."""
        if not self.main:
            return
        meta = {
            "agent": self.config.agent,
            "prompt_version": PROMPT_VERSION,
            "base": self.base.name,
            "base_sha256": self.base.sha256,
            "base_gguf": str(self.base.gguf) if self.base.gguf else None,
            "steps": step,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dev_before": self.dev_before,
            "dev": scores,
            "config": self.config.to_dict(),
        }
        (folder / ADAPTER_META).write_text(json.dumps(meta, indent=2))

    def result(self, adapter: Path, steps: int, dev_after: dict[str, Any]) -> TrainResult:
        has_best = self.best["step"] is not None and (self.out / "best-adapter").is_dir()
        return TrainResult(out=self.out, adapter=adapter, steps=steps, dev_before=self.dev_before,
                           dev_after=dev_after, seconds=time.perf_counter() - self.started,
                           best_adapter=self.out / "best-adapter" if has_best else None,
                           best_step=self.best["step"], dev_best=self.best["scores"])

    # ------------------------------------------------------------------ the run

    def run(self) -> TrainResult:
        last = self.resume_state()
        if self.config.sft_steps:
            self.warm_start(fresh=last is None)
            if not self.config.steps:
                return self.finish_warm_start(fresh=last is None)
        return self.finish(self.grpo(last))

    def resume_state(self) -> str | None:
        """The checkpoint to continue from (None: a fresh start, whose base model is evaluated on dev first)."""
        if not self.resume and self.checkpoints.exists():
            import shutil

            shutil.rmtree(self.checkpoints)  # a fresh run must not resume from, or rotate, an older run's checkpoints
        last = _latest_checkpoint(self.checkpoints) if self.resume else None
        if last is None:
            # A saved warm start is reused (`_warm_started`): its loss rows stay, GRPO's go.
            self.records.truncate_after(0 if self.config.sft_steps and _saved_warm_start(self.out) else -1)
            if (self.out / "best-adapter").exists():
                import shutil

                shutil.rmtree(self.out / "best-adapter")
            self.dev_before.update(self.evaluate(self.model, 0))
        else:
            self.done = int(Path(last).name.rsplit("-", 1)[-1])
            if self.done > self.total:
                raise EdgeError(f"{self.out} already holds a run trained to step {self.done}, past the {self.total} "
                                "steps asked for.", hint=f"ask for --steps {self.done} or more, or train into another --out")
            self.records.truncate_after(self.done)
            self.dev_before.update(next((r for r in self.records.dev_rows() if r["step"] == 0), {}))
            for row in self.records.dev_rows():
                value = row.get(self.best_metric)
                if 0 < row["step"] <= self.done and value is not None and value > self.best["value"]:
                    self.best.update(value=value, step=row["step"], scores=row)
            log.info("resuming from %s", last)
        self.best["value"] = max(self.best["value"], self.dev_before.get(self.best_metric) or float("-inf"))
        return last

    def warm_start(self, *, fresh: bool) -> None:
        """The supervised warm start (reused when saved); on a fresh run its adapter is evaluated on dev."""
        lora = lora_config(self.config, self.model.config.num_hidden_layers)
        self.model, losses = _warm_started(self.model, self.tokenizer, self.data.train, lora, self.config,
                                           self.out, self.device, self.constraint, self.resume)
        for step, loss in enumerate(losses, start=1):
            self.records.add({"kind": "sft_train", "step": step, "loss": loss})
        self.sft_scores: dict[str, Any] = {}
        if fresh:
            self.sft_scores = self.evaluate(self.model, 0, kind="sft")
            if (self.sft_scores.get(self.best_metric) or float("-inf")) > self.best["value"]:  # it beat the base
                self.keep_best(self.model, 0, self.sft_scores)

    def finish_warm_start(self, *, fresh: bool) -> TrainResult:
        """A run without GRPO steps: the warm start's adapter is the run's."""
        adapter = self.out / "adapter"
        if self.main:
            self.model.save_pretrained(str(adapter))
        self.write_meta(adapter, 0, self.sft_scores if fresh else {})
        self.records.plot(f"{self.config.agent}: {self.base.name}")
        return self.result(adapter, 0, self.sft_scores if fresh else {})

    def grpo(self, last: str | None):
        """TRL's GRPO trainer run to `total` steps (from `last` when resuming); returns the trained model."""
        from datasets import Dataset

        from edge.train.recipe import build_rewards

        config = self.config
        reward_funcs, weights = build_rewards(config, self.embedder, self.reader)
        lora = None if config.sft_steps else lora_config(config, self.model.config.num_hidden_layers)
        trainer = grpo_trainer(
            config, self.model, self.tokenizer, Dataset.from_list([e.row() for e in self.data.train]), reward_funcs,
            weights, self.constraint, checkpoints=self.checkpoints, steps=self.total, device=self.device,
            peft_config=lora,  # after the warm start GRPO trains its adapter on
            callbacks=_callbacks(self.records, self.evaluate, config, self.total, self.show_progress))
        if last is not None and self.done == self.total:
            # Nothing left to train (Trainer would take one more step): evaluate and save the checkpoint's adapter.
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(trainer.model, load_file(str(Path(last) / "adapter_model.safetensors")))
        else:
            trainer.train(resume_from_checkpoint=last)
        return trainer.model

    def finish(self, model) -> TrainResult:
        """The last dev check, the adapter after the last step and its record."""
        dev_after = self.evaluate(model, self.total)
        adapter = self.out / "adapter"
        if self.main:
            model.save_pretrained(str(adapter))
        self.write_meta(adapter, self.total, dev_after)
        self.records.plot(f"{self.config.agent}: {self.base.name}")
        return self.result(adapter, self.total, dev_after)


def lora_config(config: TrainConfig, n_layers: int):
    """The PEFT `LoraConfig` of `config.lora` for a model of `n_layers` layers (`top_layers`: only the last ones)."""
    from peft import LoraConfig

    top = config.lora.top_layers
    return LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM",
        layers_to_transform=list(range(n_layers - top, n_layers)) if top and top < n_layers else None,
    )




def grpo_trainer(config: TrainConfig, model, tokenizer, dataset, reward_funcs, weights: list[float], constraint, *,
                 checkpoints: Path, steps: int, device: str, peft_config=None, callbacks=None):
    """The TRL `GRPOTrainer` (with constrained rollouts) that `train` runs: `config`'s GRPO settings, one place.

    `dataset`: rows of `Episode.row()` (prompt, schema and the reward's
    columns); `model` is a PEFT model already (after a warm start) or gets
    `peft_config`'s LoRA. Also what `bench/bench_train_gpu.py` times, so the
    step measured is the step trained.
    """
    from trl import GRPOConfig

    settings = dict(
        output_dir=str(checkpoints),
        max_steps=steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        epsilon=config.epsilon,
        max_grad_norm=config.max_grad_norm,
        reward_weights=weights,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=config.dtype == "bfloat16",
        fp16=config.dtype == "float16",
        use_cpu=device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=2,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        shuffle_dataset=not config.data.balance_ops,  # balanced episodes come in rounds, already shuffled
    )
    args = GRPOConfig(**{**settings, **config.grpo})  # the config's [grpo] table as written, over edge's values
    return _constrained_trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        constraint=constraint,
        choice_temperature=config.choice_temperature,
        loss_tokens=config.loss_tokens,
    )


def _saved_warm_start(out: Path) -> Path | None:
    """The warm start's adapter a run in `out` saved earlier (reused when it resumes), if any."""
    saved = out / "sft-adapter"
    return saved if (saved / "adapter_model.safetensors").is_file() else None


def _warm_started(model, tokenizer, episodes, lora, config: TrainConfig, out: Path, device: str, constraint,
                  resume: bool = True):
    """The base model with the supervised warm start's adapter: trained now, or read back when a run resumes."""
    from edge.train.sft import warm_start

    saved = _saved_warm_start(out)
    if saved:
        from peft import PeftModel

        log.info("warm start: reusing %s", saved)
        return PeftModel.from_pretrained(model, str(saved), is_trainable=True), []
    return warm_start(model, tokenizer, episodes, lora, steps=config.sft_steps,
                      learning_rate=config.sft_learning_rate, batch_size=config.sft_batch_size, seed=config.seed,
                      out=out, use_cpu=device == "cpu", bf16=config.dtype == "bfloat16",
                      loss_tokens=config.sft_loss_tokens,
                      constraint=constraint, save_every=config.save_every, resume=resume)


def read_adapter_meta(adapter: Path | str) -> dict[str, Any]:
    """The `edge-adapter.json` written next to a trained adapter."""
    return json.loads((Path(adapter) / ADAPTER_META).read_text())



def load_trained(adapter: Path | str, *, dtype: str = "float32"):
    """(model, tokenizer, meta): the base model named in the adapter's record with the adapter applied."""
    from peft import PeftModel

    from edge.train.base_model import load_base

    meta = read_adapter_meta(adapter)
    if meta.get("prompt_version") != PROMPT_VERSION:
        from edge.errors import EdgeError

        raise EdgeError(
            f"The adapter {adapter} was trained on prompts {meta.get('prompt_version')!r}; this edge uses "
            f"{PROMPT_VERSION!r}.", hint="train it again with this version of edge")
    base = meta["config"]["base"] if meta.get("config") else meta["base"]
    model, tokenizer, _ = load_base(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer, meta
