"""One GRPO step on a Qwen2.5-3B-shaped model with LoRA in bf16: edge's trainer next to a plain TRL script.

The model is Qwen2.5-3B-Instruct's architecture (its `config.json`, copied
into `QWEN25_3B` below) with random weights: no download, the same shapes,
FLOPs and memory as the real model. The tokenizer is the bundled
SmolLM2's (49,152 tokens, all inside Qwen's 151,936-row embedding), since
Qwen's is not on this machine; the prompts are therefore tokenized
differently from a real Qwen run, which changes their lengths, not the
step's shape.

Two trainers take the same prompts (the Answer Agent's episodes of
`qwen2.5-3b-answer`, synthetic and LoCoMo; the same seed draws the same
rows) with the same GRPO settings (group of 8, 4 prompts a step, LoRA
r=32 on every projection, bf16, gradient checkpointing):

- **edge**: `edge.train.trainer.grpo_trainer`, the trainer `edge train`
  runs: rollouts decoded under each row's JSON schema (llguidance), the
  exact-match and format rewards, the loss on the decision tokens when the
  config says so;
- **plain TRL**: `trl.GRPOTrainer` as its documentation shows it, free
  decoding and a trivial reward, `max_completion_length` set to the longest
  completion of edge's steps (a random model seldom stops by itself, so the
  plain run decodes about as many tokens as edge's does).

Per step: wall time (CUDA synchronised), tokens (prompt + completion, from
TRL's `num_tokens` log), tokens/s, completion tokens, and peak CUDA memory
(allocated and reserved, `torch.cuda.max_memory_*`). The first step of
each warms up kernels and allocator and is reported apart; the figures are
the median of the others. Checks on the edge run: every rollout parsed
(format reward 1.0), loss finite, LoRA weights moved.

    python bench/bench_train_gpu.py                          # on one CUDA GPU
    python bench/bench_train_gpu.py --agent manager          # the Manager's step (train_gpu_manager.json)
    python bench/bench_train_gpu.py --tiny --device cpu      # the same code on a tiny model (smoke run)

With `--agent manager` the prompts are the Manager's episodes
(`qwen2.5-3b-manager`) and its reward is Memory-R1's: after each rollout's
operations a frozen copy of the model (saved and loaded back as the config's
`base`, `reader_model = "base"`) answers the episode's questions, which
the step's time includes.

Writes bench/results/train_gpu.json or train_gpu_manager.json (`--out` to change).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Qwen/Qwen2.5-3B-Instruct config.json (architecture fields).
QWEN25_3B = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
}


# --tiny: the same architecture, small enough for a CPU smoke run of this script.
TINY = {"vocab_size": 49152, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}


def load_tokenizer(path: str | None):
    """The bundled SmolLM2 tokenizer (or the one in `path`), its eos the end-of-turn token."""
    from transformers import AutoTokenizer

    from edge.train.base_model import fix_special_tokens

    if path is None:
        from edge.train.base_model import resolve_base

        path = str(resolve_base("bundled").path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    fix_special_tokens(tokenizer, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return tokenizer


def random_model(tokenizer, *, tiny: bool, device: str, seed: int):
    """Qwen2.5-3B's architecture with random bf16 weights, built on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = dict(QWEN25_3B, **TINY) if tiny else QWEN25_3B
    config = Qwen2Config(**shape, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    with torch.device(device):  # bf16 as the GPU configs train; a CPU smoke run in float32, as edge.train requires
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device != "cpu" else torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


class StepTimer:
    """A TRL callback: each optimiser step's wall time, tokens and peak CUDA memory."""

    def __init__(self, device: str) -> None:
        from transformers import TrainerCallback

        self.device = device
        self.steps: list[dict] = []
        self._start = 0.0
        self._tokens_before = 0.0
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._sync()
                if timer.device == "cuda":
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer._sync()
                row = {"seconds": time.perf_counter() - timer._start}
                if timer.device == "cuda":
                    import torch

                    row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
                    row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
                timer.steps.append(row)

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                if not timer.steps or "num_tokens" not in logs:
                    return
                row = timer.steps[-1]
                row["tokens"] = logs["num_tokens"] - timer._tokens_before
                timer._tokens_before = logs["num_tokens"]
                row["completion_tokens_mean"] = logs.get("completions/mean_length")
                row["completion_tokens_max"] = logs.get("completions/max_length")
                row["loss"] = logs.get("loss")
                row["grad_norm"] = logs.get("grad_norm")
                row["rewards"] = {k: v for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean")}

        self.callback = Callback()

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def summary(self) -> dict:
        timed = self.steps[1:] or self.steps
        seconds = statistics.median(r["seconds"] for r in timed)
        tokens = statistics.median(r.get("tokens", 0) for r in timed)
        out = {"first_step_seconds": self.steps[0]["seconds"] if self.steps else None,
               "step_seconds": seconds, "tokens_per_step": tokens,
               "tokens_per_second": tokens / seconds if seconds else None,
               "completion_tokens_mean": statistics.median(r.get("completion_tokens_mean") or 0 for r in timed),
               "steps_timed": len(timed)}
        if self.device == "cuda":
            out["peak_allocated_gib"] = max(r["peak_allocated_gib"] for r in self.steps)
            out["peak_reserved_gib"] = max(r["peak_reserved_gib"] for r in self.steps)
        return out


def lora_snapshot(model) -> dict:
    return {n: p.detach().float().clone().cpu() for n, p in model.named_parameters() if p.requires_grad}


def edge_step(config, model, tokenizer, data, steps: int, device: str, workdir: Path, rewards: tuple
              ) -> tuple[dict, list[dict], dict]:
    """`steps` GRPO steps of edge's trainer with `rewards` (`build_rewards`); (summary, per-step rows, checks)."""
    from datasets import Dataset

    from edge.train.constrained import SchemaConstraint
    from edge.train.trainer import grpo_trainer, lora_config

    constraint = SchemaConstraint.for_tokenizer(tokenizer, [tokenizer.eos_token_id])
    reward_funcs, weights = rewards
    timer = StepTimer(device)
    trainer = grpo_trainer(
        config, model, tokenizer, Dataset.from_list([e.row() for e in data.train]), reward_funcs, weights,
        constraint, checkpoints=workdir / "edge", steps=steps, device=device,
        peft_config=lora_config(config, model.config.num_hidden_layers), callbacks=[timer.callback])
    before = lora_snapshot(trainer.model)
    trainer.train()
    after = lora_snapshot(trainer.model)
    moved = sum(1 for n in before if not bool((before[n] == after[n]).all()))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    formats = [r["rewards"].get(f"rewards/{config.agent}_format_reward/mean") for r in timer.steps if r.get("rewards")]
    checks = {
        "format_reward_per_step": formats,
        "every_rollout_parsed": bool(formats) and all(f == 1.0 for f in formats if f is not None),
        "loss_finite": all(r.get("loss") is not None and math.isfinite(r["loss"]) for r in timer.steps),
        "grad_norm_per_step": [r.get("grad_norm") for r in timer.steps],
        # A random model's answers all miss (EM 0 in every group): zero advantages, so the LoRA weights may
        # not move although the backward pass ran in full.
        "lora_tensors_moved": moved,
        "lora_tensors": len(before),
        "trainable_parameters": trainable,
    }
    del trainer
    return timer.summary(), timer.steps, checks


def plain_trl_step(config, model, tokenizer, data, steps: int, device: str, workdir: Path,
                   max_completion_length: int) -> tuple[dict, list[dict]]:
    """The same step as a plain TRL script would write it: GRPOTrainer, free decoding, a trivial reward."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    def reward_len(completions, **kwargs):
        return [-float(len(str(c))) for c in completions]

    args = GRPOConfig(
        output_dir=str(workdir / "plain"), max_steps=steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations, max_completion_length=max_completion_length,
        temperature=config.temperature, beta=config.beta, loss_type=config.loss_type,
        gradient_checkpointing=config.gradient_checkpointing, bf16=device == "cuda", use_cpu=device == "cpu",
        seed=config.seed, data_seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True,
    )
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, target_modules=list(config.lora.target_modules),
                      task_type="CAUSAL_LM")
    timer = StepTimer(device)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=args,
                          train_dataset=Dataset.from_list([{"prompt": e.row()["prompt"]} for e in data.train]),
                          processing_class=tokenizer, peft_config=lora, callbacks=[timer.callback])
    trainer.train()
    del trainer
    return timer.summary(), timer.steps


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", choices=["answer", "manager"], default="answer",
                        help="whose step: the Manager's reward runs a frozen copy of the model as reader")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda: bf16, as the GPU configs train; cpu: float32 (a smoke run, with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 128-wide model (a smoke run of this script)")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per trainer (at least 2); the first is "
                        "warm-up, reported apart")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder [default: the bundled SmolLM2's]")
    parser.add_argument("--locomo", default=None, help="LoCoMo file for the config's LoCoMo episodes")
    parser.add_argument("--synthetic-conversations", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None,
                        help="[default: bench/results/train_gpu.json, train_gpu_manager.json with --agent manager]")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step warms up and is not among the figures")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here; `--tiny --device cpu` runs the same code on a tiny model")
    args.out = args.out or RESULTS / ("train_gpu.json" if args.agent == "answer" else f"train_gpu_{args.agent}.json")

    import torch
    import transformers
    import trl

    from edge.train.config import load_config, with_overrides
    from edge.train.recipe import answer_context_agent, build_data, build_rewards, load_embedder

    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = load_config(f"qwen2.5-3b-{args.agent}", steps=args.steps, device=args.device,
                         **({"dtype": "float32"} if args.device == "cpu" else {}))
    source = "both" if args.locomo else "synthetic"
    # The hash embedder: retrieval quality does not change the step's shape, and it needs no model download.
    config = with_overrides(config, **{"data.source": source, "data.locomo_path": args.locomo, "data.embedder": "hash",
                                       "data.train_conversations": args.synthetic_conversations,
                                       "data.dev_conversations": 1})
    tokenizer = load_tokenizer(args.tokenizer)
    embedder = load_embedder("hash")
    data = build_data(config, embedder, reader=answer_context_agent(tokenizer, config))
    prompt_tokens = [len(tokenizer.apply_chat_template(e.row()["prompt"], add_generation_prompt=True))
                     for e in data.train]
    print(f"{len(data.train)} training episodes, prompt tokens median {statistics.median(prompt_tokens):.0f}, "
          f"max {max(prompt_tokens)} ({time.perf_counter() - started:.0f} s)", flush=True)

    result: dict = {
        "bench": "train_gpu",
        "what": f"one GRPO step of the {args.agent} (4 prompts x 8 rollouts) on a Qwen2.5-3B-shaped model (random "
                f"weights{', --tiny' if args.tiny else ''}) with LoRA r=32, {config.dtype}, gradient checkpointing: "
                "edge's trainer vs plain TRL",
        "agent": args.agent,
        "model": {"architecture": "Qwen2.5-3B-Instruct" + (" (--tiny)" if args.tiny else ""),
                  "config": dict(QWEN25_3B, **TINY) if args.tiny else QWEN25_3B,
                  "tokenizer": "SmolLM2-135M-Instruct (bundled)"},
        "settings": {k: getattr(config, k) for k in ("prompts_per_step", "num_generations", "max_completion_length",
                                                     "learning_rate", "beta", "loss_type", "loss_tokens",
                                                     "gradient_checkpointing", "dtype")},
        "lora": {"r": config.lora.r, "alpha": config.lora.alpha, "target_modules": list(config.lora.target_modules)},
        "data": {"source": source, "train_episodes": len(data.train),
                 "prompt_tokens_median": statistics.median(prompt_tokens), "prompt_tokens_max": max(prompt_tokens)},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "transformers": transformers.__version__, "trl": trl.__version__,
                    "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = random_model(tokenizer, tiny=args.tiny, device=args.device, seed=0)
        result["model"]["parameters"] = sum(p.numel() for p in model.parameters())
        reader = None
        if args.agent == "manager":  # Memory-R1's reward: a frozen copy of the base model answers after the ops
            from edge.train.recipe import build_reader

            base = work / "base"
            model.save_pretrained(base)
            tokenizer.save_pretrained(base)
            config = with_overrides(config, base=str(base), **{"reward.reader": "agent", "reward.reader_model": "base"})
            reader = build_reader(config)
        rewards = build_rewards(config, embedder, reader)
        t0 = time.perf_counter()
        summary, steps, checks = edge_step(config, model, tokenizer, data, args.steps, args.device, work, rewards)
        print(f"edge: {json.dumps(summary)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["edge"] = {"summary": summary, "steps": steps}
        result["checks"] = checks
        print(f"checks: {json.dumps(checks)}", flush=True)
        del model, reader, rewards
        free(args.device)

        longest = max(int(r.get("completion_tokens_max") or 1) for r in steps)
        model = random_model(tokenizer, tiny=args.tiny, device=args.device, seed=0)
        t0 = time.perf_counter()
        summary_plain, steps_plain = plain_trl_step(config, model, tokenizer, data, args.steps, args.device, work,
                                                    max_completion_length=longest)
        print(f"plain TRL: {json.dumps(summary_plain)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["plain_trl"] = {"summary": summary_plain, "steps": steps_plain, "max_completion_length": longest}
        del model
        free(args.device)

    ratio = {}
    for key in ("step_seconds", "tokens_per_second", "peak_allocated_gib"):
        a, b = summary.get(key), summary_plain.get(key)
        if a and b:
            ratio[key] = a / b
    result["edge_over_plain"] = ratio
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"edge": summary, "plain_trl": summary_plain, "edge_over_plain": ratio,
                      "checks": checks}, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
