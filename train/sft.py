"""Supervised warm start: LoRA fine-tuning on gold replies before GRPO, with TRL's `SFTTrainer`.

Why a warm start: on the extractive action space the Manager's choice is a
classification over the turn's clauses (and ADD/UPDATE/DELETE/NOOP), and
the synthetic generator knows the right one for every turn; LoCoMo names
each question's evidence turns. GRPO from the untrained 135M model spent
its steps finding the format and collapsed onto one operation
(bench/results/train_cpu_ops*.json); the supervised step starts it from a
policy that already picks each operation (DeepSeek-R1 and Memory-R1's
successors warm-start the same way).

Rows are the episode's runtime messages (`edge.prompts`) as the prompt and
the gold reply as `json.dumps` writes it (`ManagerEpisode.gold_reply`,
`AnswerEpisode.gold_reply`) as the completion. With `loss_tokens="all"`
they are TRL's conversational prompt-completion rows and the loss is on
every reply token (`completion_only_loss`). With `"choices"` (the shipped
configs) they are tokenized here and labelled only at the grammar's branch
points (`SchemaConstraint.choice_flags`): the operation, the id, the
clause's distinguishing tokens. Served decoding is constrained to the same
grammar, so those are the only tokens the model decides; a loss on the
others (mostly a clause copied from the turn, ~20 tokens to the
operation's 1) taught the 135M Manager the operations' marginal and not
which turn calls for which. The chat template is the tokenizer's own, the
one llama.cpp reads from the GGUF at run time.
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


def decision_rows(episodes: Sequence[Any], tokenizer, constraint) -> list[dict[str, list[int]]]:
    """Tokenized rows, `input_ids` and `labels`, labelled (not -100) only at the reply's branch-point tokens.

    `constraint`: an `edge.train.constrained.SchemaConstraint` for
    `tokenizer`. The prompt is the chat template's text tokenized as the
    rollouts tokenize it; the reply ends with the end-of-turn token.
    Raises `ValueError` when a gold reply is not in its schema's grammar.
    """
    from edge.train.base_model import render_chat

    rows = []
    for episode in episodes:
        reply = episode.gold_reply()
        if not reply:
            continue
        prompt = tokenizer(render_chat(tokenizer, episode.messages()), add_special_tokens=False)["input_ids"]
        completion = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        flags = constraint.choice_flags(episode.schema(), completion)
        rows.append({"input_ids": prompt + completion,
                     "labels": [-100] * len(prompt) + [t if f else -100 for t, f in zip(completion, flags)]})
    return rows


def warm_start(model, tokenizer, episodes: Sequence[Any], lora, *, steps: int, learning_rate: float,
               batch_size: int, seed: int, out: Path, use_cpu: bool, bf16: bool = False,
               loss_tokens: str = "all", constraint: Any = None, save_every: int = 0, resume: bool = True):
    """`model` with a LoRA adapter (`lora`, a peft `LoraConfig`) fitted to the episodes' gold replies.

    Returns (the peft model, adapter trainable for GRPO to continue; the
    per-step losses). Raises `ValueError` when no episode has a gold reply,
    or with `loss_tokens="choices"` and no `constraint`. `steps` optimiser
    steps of `batch_size` rows; the adapter is saved to `out`. With
    `save_every` > 0 a checkpoint (adapter, optimiser, data order) is kept in
    `out/sft-checkpoints` every that many steps and, with `resume`, a warm
    start that was stopped goes on from its last one (transformers'
    `Trainer.train(resume_from_checkpoint=...)`).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if loss_tokens == "choices":
        if constraint is None:
            raise ValueError("loss_tokens='choices' needs the schema constraint that finds the branch points")
        rows = decision_rows(episodes, tokenizer, constraint)
    else:
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
        max_length=None if loss_tokens == "choices" else 2048,  # a cut row could lose its labelled tokens
        packing=False,
        logging_steps=1,
        save_strategy="steps" if save_every > 0 else "no",
        save_steps=save_every or 500,
        save_total_limit=1,
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
    checkpoints = out / "sft-checkpoints"
    last = None
    if checkpoints.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(checkpoints)) if resume else None
        if last is None:
            import shutil

            shutil.rmtree(checkpoints)  # an older run's checkpoints must not be rotated into this one
    trainer.train(resume_from_checkpoint=last)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    log.info("SFT (%s tokens): %d rows, %d steps, loss %.3f -> %.3f", loss_tokens, len(rows), steps, losses[0],
             losses[-1])
    trainer.save_model(str(out / "sft-adapter"))  # rank 0 only under `accelerate launch`
    return trainer.model, losses
