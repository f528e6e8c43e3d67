"""Hugging Face folders to onnxruntime-genai model folders (decoder with KV cache).

The runtime serves ONNX models with onnxruntime-genai, so the export uses
the same package's model builder (`onnxruntime_genai.models.builder`): it
writes `model.onnx` (+ `model.onnx.data`) with GroupQueryAttention and a
KV cache, `genai_config.json` and the tokenizer files, and quantises
weight-only:

    fp32   the float model (the parity reference for the quantised ones)
    int8   MatMulNBits, 8-bit weights (the token embedding stays float)
    int4   MatMulNBits, 4-bit weights, block 32, embedding shared and quantised

The 0.18 builder is written against transformers 5; with the 4.56/4.57
that optimum-onnx pins it needs two small accommodations, applied only in
the builder's own subprocess (`_BUILDER_SHIM`): a few model classes it
imports that transformers 4.57 lacks are stubbed (the builder only uses
them for those architectures), and a config without `rope_scaling` is given
the explicit default (`{"rope_type": "default"}`, the same RoPE) because
the builder iterates over it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edge.errors import EdgeError, require_extra

PRECISIONS = ("fp32", "int8", "int4")

_BUILDER_SHIM = r"""
import json, runpy, sys
import transformers
for name in ("Gemma4ForCausalLM", "Gemma4UnifiedForCausalLM", "Lfm2AudioForConditionalGeneration",
             "Mistral3TextModel", "Qwen3_5DecoderLayer", "Qwen3_5ForConditionalGeneration",
             "Qwen3_5MoeDecoderLayer", "Qwen3_5MoeForConditionalGeneration"):
    if not hasattr(transformers, name):
        setattr(transformers, name, type(name, (), {}))
_load = transformers.AutoConfig.from_pretrained.__func__
def _from_pretrained(cls, *args, **kwargs):
    config = _load(cls, *args, **kwargs)
    if getattr(config, "rope_scaling", 0) is None:
        config.rope_scaling = {"rope_type": "default"}
    return config
transformers.AutoConfig.from_pretrained = classmethod(_from_pretrained)
builder = runpy.run_module("onnxruntime_genai.models.builder", run_name="edge_onnx_builder")
for job in json.loads(sys.argv[1]):
    args = (None, job["input"], job["output"], job["precision"], "cpu", job["cache"])
    options = builder["parse_extra_options"](*args, None)
    builder["create_model"](*args, **options)
"""


def check_onnx_tools() -> None:
    """Raise MissingExtraError unless the builder and its dependencies import."""
    require_extra("ONNX export", "onnx-genai", "onnx", "onnx_ir", "onnxruntime_genai")


def build_many(jobs: list[tuple[Path, Path, str]], *, cache: Path | None = None) -> list[Path]:
    """Build several (model folder, output folder, precision) jobs in one builder process.

    One process saves importing torch, transformers and the builder for each
    job. Each output appears complete or not at all.
    """
    for _, _, precision in jobs:
        if precision not in PRECISIONS:
            raise EdgeError(f"Unknown ONNX precision {precision!r}.", hint=f"choose from {', '.join(PRECISIONS)}")
    check_onnx_tools()
    if not jobs:
        return []
    staged, cleanup = [], []
    try:
        payload = []
        for model_dir, out_dir, precision in jobs:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
            staging.chmod(0o755)
            scratch = Path(tempfile.mkdtemp(prefix=".onnx-cache-", dir=cache or out_dir.parent))
            cleanup += [staging, scratch]
            staged.append((staging, out_dir))
            payload.append({"input": str(model_dir), "output": str(staging), "precision": precision,
                            "cache": str(scratch)})
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        result = subprocess.run(
            [sys.executable, "-c", _BUILDER_SHIM, json.dumps(payload)], capture_output=True, text=True, env=env
        )
        missing = [str(s) for s, _ in staged if not (s / "genai_config.json").is_file()]
        if result.returncode != 0 or missing:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise EdgeError(f"The onnxruntime-genai model builder failed:\n{tail}")
        for staging, out_dir in staged:
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(staging, out_dir)
    finally:
        for folder in cleanup:
            shutil.rmtree(folder, ignore_errors=True)
    return [out_dir for _, out_dir in staged]
