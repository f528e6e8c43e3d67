"""The default embedder: all-MiniLM-L6-v2 exported to ONNX and run on onnxruntime.

Real model, real export, no mocks. The export (≈6 s) runs once, into the
persistent test cache (EDGE_CACHE, see conftest.py); the rebuild test exports
once more into its own temporary cache.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.embedder import Embedder
from edge.errors import BundleError
from edge.onnx_embedder import (
    CONFIG_FILE,
    DEFAULT_CACHE_NAME,
    MODEL_FILE,
    TOKENIZER_FILE,
    OnnxEmbedder,
    minilm_source_dir,
)
from edge.export.embedder import build_default_minilm

SENTENCES = [
    "The cat sits on the mat.",
    "I moved to Lisbon in March 2023 for a new job.",
    "Caroline went to the LGBTQ support group on 7 May.",
    "ok",
    "Café naïve résumé — unicode survives tokenising.",
    "memory " * 400,  # longer than max_length: truncated to 256 tokens
]


@pytest.fixture(scope="session")
def embedder(minilm) -> OnnxEmbedder:
    """The default embedder, built into the test cache once (conftest's `minilm`)."""
    return minilm


@pytest.fixture(scope="session")
def model_dir(embedder) -> Path:
    return embedder.model_dir


def _reference(texts: list[str]) -> np.ndarray:
    """sentence-transformers' recipe with transformers + torch on the shipped safetensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    source = minilm_source_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(source), local_files_only=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


# ---------------------------------------------------------------- behaviour


def test_built_cache_holds_the_three_files(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE])
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert config["name"] == "all-MiniLM-L6-v2"
    assert config["dim"] == 384
    assert config["max_length"] == 256
    assert config["pooling"] == "mean" and config["normalize"] is True
    assert len(config["onnx_sha256"]) == 64
    # No temporary or replaced folders left beside it.
    assert not [p.name for p in model_dir.parent.iterdir() if p.name.startswith(f".{DEFAULT_CACHE_NAME}")]


def test_implements_the_embedder_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.dim == 384


def test_matches_transformers_reference(embedder):
    ours = embedder.embed(SENTENCES)
    ref = _reference(SENTENCES)
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() > 0.999, cosines


def test_rows_are_unit_length_float32(embedder):
    vectors = embedder.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_batching_and_padding_do_not_change_vectors(embedder):
    texts = [f"note {i}: " + "word " * (i % 13) for i in range(40)]  # > one batch, mixed lengths
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_similar_sentences_score_higher_than_unrelated(embedder):
    query, close, far = embedder.embed(
        ["Where does Melanie work now?", "Melanie started a new job at the hospital.", "The soup needs more salt."]
    )
    assert query @ close > query @ far + 0.2


def test_single_text_must_be_in_a_list(embedder):
    with pytest.raises(TypeError):
        embedder.embed("not a list")


def test_runtime_imports_neither_torch_nor_transformers(model_dir):
    code = (
        "import sys; from edge.onnx_embedder import OnnxEmbedder; "
        f"OnnxEmbedder({str(model_dir)!r}).embed(['hello']); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ), timeout=120)


RUNTIME_ONLY = """
import sys
from edge.agent import Agent
from edge.bank import MemoryBank
with MemoryBank.open(sys.argv[1] + "/plain.db", user="alice") as bank:  # no embedder: the default one
    bank.add("Alice keeps bees on her roof")
    assert bank.search("insects", k=1)[0].memory.text == "Alice keeps bees on her roof"
with Agent(bundle=sys.argv[2], db=sys.argv[1] + "/agent.db", user="alice") as agent:
    agent.bank.add("Alice keeps bees on her roof")
    assert agent.ask("What does Alice keep on her roof?").retrieved
bad = [m for m in ("torch", "transformers", "edge.export", "edge.train") if m in sys.modules]
assert not bad, bad
"""


def test_opening_a_bank_and_answering_never_import_torch(default_bundle, tmp_path):
    """The runtime loads what `edge bundle build-default` built; it never reaches the export code."""
    subprocess.run([sys.executable, "-c", RUNTIME_ONLY, str(tmp_path), str(default_bundle.root)],
                   check=True, env=dict(os.environ), timeout=300)


def test_a_bank_without_an_embedder_never_builds_one(tmp_path):
    code = (
        "import sys\n"
        "from edge.bank import MemoryBank\n"
        "from edge.errors import BundleError\n"
        "try:\n"
        "    MemoryBank.open(sys.argv[1])\n"
        "except BundleError as exc:\n"
        "    assert 'edge bundle build-default' in exc.hint, exc.hint\n"
        "else:\n"
        "    raise AssertionError('opened a new bank with no embedder built')\n"
        "bad = [m for m in ('torch', 'edge.export') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, EDGE_CACHE=str(tmp_path / "empty-cache"))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "bank.db")], check=True, env=env, timeout=120)
    assert not (tmp_path / "empty-cache" / DEFAULT_CACHE_NAME).exists()


# ---------------------------------------------------------------- broken or missing files


def _copy(model_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(model_dir, dest))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(BundleError) as info:
        OnnxEmbedder(tmp_path / "nowhere")
    assert "No embedder folder" in info.value.message
    assert "edge bundle build-default" in str(info.value)


def test_missing_file_is_named(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "m")
    (folder / TOKENIZER_FILE).unlink()
    with pytest.raises(BundleError, match=TOKENIZER_FILE):
        OnnxEmbedder(folder)


def test_unreadable_config_is_reported(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "m")
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=CONFIG_FILE):
        OnnxEmbedder(folder)


def test_truncated_onnx_fails_the_checksum(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path / "m")
    _truncate(folder / MODEL_FILE)
    with pytest.raises(BundleError, match="checksum"):
        OnnxEmbedder(folder)
    # Without the checksum, onnxruntime's own failure is still reported as a BundleError.
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxEmbedder(folder, verify=False)


def test_broken_default_cache_is_rebuilt(model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    cache = tmp_path / "cache"
    _copy(model_dir, cache / DEFAULT_CACHE_NAME)
    _truncate(cache / DEFAULT_CACHE_NAME / MODEL_FILE)
    monkeypatch.setenv("EDGE_CACHE", str(cache))

    rebuilt = build_default_minilm()

    assert "rebuilding" in capsys.readouterr().err
    assert (rebuilt.model_dir / MODEL_FILE).stat().st_size == (model_dir / MODEL_FILE).stat().st_size
    sentence = ["The cat sits on the mat."]
    np.testing.assert_allclose(rebuilt.embed(sentence), OnnxEmbedder(model_dir).embed(sentence), atol=1e-6)
    assert rebuilt.model_dir == cache / DEFAULT_CACHE_NAME
    assert [p.name for p in cache.iterdir()] == [DEFAULT_CACHE_NAME]


def test_int8_copy_stays_close_and_has_its_own_name(model_dir, tmp_path, embedder):
    pytest.importorskip("onnx")
    from edge.export.embedder import quantize_embedder_int8

    small = OnnxEmbedder(quantize_embedder_int8(model_dir, tmp_path / "int8"))
    assert small.name == "all-MiniLM-L6-v2-int8"
    assert (small.model_dir / MODEL_FILE).stat().st_size < (model_dir / MODEL_FILE).stat().st_size / 3
    cosines = (small.embed(SENTENCES) * embedder.embed(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.95 and cosines.mean() > 0.98, cosines
