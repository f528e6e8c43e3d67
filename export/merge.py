"""LoRA adapters: reading what they were trained for, and merging them into their base.

An adapter is a PEFT LoRA folder (`adapter_config.json` +
`adapter_model.safetensors`) plus a JSON file written by `edge train`
(`edge-adapter.json`: the role, prompt version, base model and the checksum
of the GGUF the base was rebuilt from). Any JSON file in the folder with a
`prompt_version` key is read as that record. Merging loads the base in
float32, applies the adapter, folds it into the weights
(`merge_and_unload`) and saves the result in 16-bit (float16 by default),
never from or into a quantised model. The tokenizer is taken from the base
folder (see `edge.export.hf_base`), not from the adapter folder, whose
copy may be the broken one transformers writes for a GGUF base.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError, MissingExtraError
from edge.files import staged_dir
from edge.export.hf_base import BaseModel
from edge.prompts import PROMPT_VERSION

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_NOT_RECORDS = {ADAPTER_CONFIG, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "config.json", "generation_config.json", "vocab.json", "trainer_state.json"}
DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Adapter:
    path: Path
    role: str  # "manager" | "answer"
    prompt_version: str | None  # as recorded at training time (None: no record found)
    base_model: str | None  # as recorded (adapter_config.json's base_model_name_or_path if nothing else)
    rank: int
    target_modules: list[str]
    base_sha256: str | None = None  # of the GGUF the base was rebuilt from, when recorded
    # A Manager's `[data] consolidation` ("none" | "extend"): the operations its prompt and grammar offered, so
    # the bundle serves it with the same ones (`edge.generation.GenerationConfig.consolidation`). None: not recorded.
    consolidation: str | None = None


def read_adapter(path: Path | str, role: str) -> Adapter:
    """Check that `path` is a PEFT LoRA folder and read what it records."""
    folder = Path(path).expanduser()
    if not (folder / ADAPTER_CONFIG).is_file():
        raise EdgeError(
            f"{folder} is not a LoRA adapter folder (no {ADAPTER_CONFIG}).",
            hint="pass the folder `edge train` wrote (adapter_config.json + adapter_model.safetensors)",
        )
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise EdgeError(f"The adapter folder {folder} has no adapter_model.safetensors.")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise EdgeError(f"{folder} holds a {config.get('peft_type')} adapter; only LoRA adapters can be exported.")
    record = _training_record(folder)
    trained_for = record.get("agent") or record.get("role")
    if trained_for in ("manager", "answer") and trained_for != role:
        raise EdgeError(
            f"{folder} was trained for the {trained_for} role, not the {role} role.",
            hint="pass it with " + ("--adapter" if trained_for == "manager" else "--answer-adapter"),
        )
    targets = config.get("target_modules") or []
    return Adapter(
        path=folder,
        role=role,
        prompt_version=record.get("prompt_version"),
        base_model=_recorded_base(record) or config.get("base_model_name_or_path"),
        rank=int(config.get("r", 0)),
        target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
        base_sha256=record.get("base_sha256"),
        consolidation=_recorded_data(record).get("consolidation"),
    )


def _recorded_data(record: dict) -> dict:
    """The `[data]` table of the training config the adapter records (empty when none)."""
    config = record.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def _recorded_base(record: dict) -> str | None:
    """The base as the user named it at training time ("bundled", a path, a hub id), if recorded."""
    config = record.get("config")
    if isinstance(config, dict) and isinstance(config.get("base"), str):
        return config["base"]
    gguf = record.get("base_gguf")
    if isinstance(gguf, str) and Path(gguf).is_file():
        return gguf
    return record.get("base_model") or record.get("base")


def _training_record(folder: Path) -> dict:
    """The JSON file next to the adapter that records its prompt version (any name)."""
    for candidate in sorted(folder.glob("*.json")):
        if candidate.name in _NOT_RECORDS:
            continue
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "prompt_version" in data:
            return data
    return {}


def check_prompt_version(adapter: Adapter, *, allow_unrecorded: bool = False) -> None:
    """Refuse an adapter trained with other prompts than the ones this edge sends."""
    if adapter.prompt_version is None:
        if allow_unrecorded:
            return
        raise EdgeError(
            f"The {adapter.role} adapter {adapter.path} records no prompt version.",
            hint="export adapters written by `edge train`, or pass --allow-unrecorded-prompts if you know it "
            f"was trained with {PROMPT_VERSION!r}",
        )
    if adapter.prompt_version != PROMPT_VERSION:
        raise EdgeError(
            f"The {adapter.role} adapter was trained with prompts {adapter.prompt_version!r}; "
            f"this edge sends {PROMPT_VERSION!r}.",
            hint="retrain it with this edge, or export it with the edge version it was trained with",
        )


def merge_adapter(base: BaseModel, adapter: Adapter, out_dir: Path, *, dtype: str = "float16") -> Path:
    """Fold `adapter` into `base` and save a Hugging Face folder in `dtype` at `out_dir`."""
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingExtraError("Merging a LoRA adapter", "export") from exc
    if dtype not in DTYPES:
        raise EdgeError(f"Unknown dtype {dtype!r}.", hint=f"choose from {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(model, str(adapter.path))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise EdgeError(
            f"The {adapter.role} adapter does not fit the base model {base.name}: {exc}",
            hint="pass the --base the adapter was trained on",
        ) from exc
    merged = model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.config._name_or_path = base.name
    with staged_dir(out_dir) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(base.path)).save_pretrained(staging)
        (staging / "tokenizer.model").unlink(missing_ok=True)
        (staging / "edge_merge.json").write_text(json.dumps({
            "base": base.name,
            "adapter": str(adapter.path),
            "role": adapter.role,
            "prompt_version": adapter.prompt_version or PROMPT_VERSION,
            "dtype": dtype,
        }, indent=2) + "\n")
    return out_dir
