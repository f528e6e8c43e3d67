"""Supervised warm start: LoRA fine-tuning on gold replies before GRPO, with TRL's `SFTTrainer`.

Why a warm start: on the extractive action space the Manager's choice is a
classification over the turn's clauses (and ADD/UPDATE/DELETE/NOOP), and
the synthetic generator knows the right one for every turn; LoCoMo names
each question's evidence turns. GRPO from the untrained 135M model spent
its steps finding the format and collapsed onto one operation
(bench/results/train_cpu_ops*.json); the supervised step starts it from a
policy that already picks each operation (DeepSeek-R1 and Memory-R1's
successors warm-start the same way).

Rows are TRL's conversational prompt-completion format: the prompt is the
episode's runtime messages (`edge.prompts`), the completion the gold reply
as `json.dumps` writes it (`ManagerEpisode.gold_reply`,
`AnswerEpisode.gold_reply`), so the loss is on the reply tokens only
(`completion_only_loss`). The chat template is the tokenizer's own, the one
llama.cpp reads from the GGUF at run time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


def sft_rows(episodes: Sequence[Any]) -> list[dict[str, Any]]:
    """One prompt-completion row per episode that has a gold reply (episodes without one are left out)."""
    rows = []
    for episode in episodes:
        reply = episode.gold_reply()
        if reply:
            rows.append({"prompt": episode.messages(),
                         "completion": [{"role": "assistant", "content": reply}]})
    return rows


def warm_start(model, tokenizer, episodes: Sequence[Any], lora, *, steps: int, learning_rate: float,
               batch_size: int, seed: int, out: Path, use_cpu: bool, bf16: bool = False):
    """`model` with a LoRA adapter (`lora`, a peft `LoraConfig`) fitted to the episodes' gold replies.

    Returns the peft model (adapter trainable, for GRPO to continue).
    Raises `ValueError` when no episode has a gold reply. `steps` optimiser
    steps of `batch_size` rows; the adapter is saved to `out`.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = sft_rows(episodes)
    if not rows:
        raise ValueError("no episode has a gold reply to learn from")
    args = SFTConfig(
        output_dir=str(out / "sft-checkpoints"),
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=batch_size,
        completion_only_loss=True,
        max_length=2048,
        packing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=use_cpu,
        bf16=bf16,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    log.info("SFT: %d rows, %d steps, loss %.3f -> %.3f", len(rows), steps, losses[0], losses[-1])
    trainer.model.save_pretrained(str(out / "sft-adapter"))
    return trainer.model, losses
