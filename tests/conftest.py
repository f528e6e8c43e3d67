"""Shared fixtures: every test gets its own EDGE_HOME; rebuildable caches persist across runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGE_TEST_CACHE", REPO / ".cache" / "edge"))


def pytest_configure(config: pytest.Config) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    os.environ["EDGE_CACHE"] = str(CACHE)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EDGE_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set EDGE_RUN_SLOW=1 (bench/ and CI run it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def edge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "edge-home"
    monkeypatch.setenv("EDGE_HOME", str(home))
    monkeypatch.setenv("EDGE_CACHE", str(CACHE))
    return home


@pytest.fixture(scope="session")
def minilm():
    """The real default embedder (all-MiniLM-L6-v2 on onnxruntime)."""
    from edge.onnx_embedder import build_default_minilm

    return build_default_minilm()


@pytest.fixture(scope="session")
def default_bundle(minilm):
    """The default bundle, built once per machine into the test cache."""
    from edge.bundle import build_default

    target = CACHE / "bundle-default"
    try:
        bundle = build_default(target, log=lambda _: None)  # rebuilt when made by another edge version
        if not bundle.verify():
            return bundle
    except Exception:  # noqa: BLE001 - any problem: rebuild
        pass
    return build_default(target, force=True, log=lambda _: None)


@pytest.fixture(scope="session")
def llama_backend(default_bundle):
    """One llama.cpp backend on the bundled model, shared by the tests that only read from it."""
    from edge.backends.llama_cpp import LlamaCppBackend
    from edge.prompts import REPEAT_PENALTY

    model, _ = default_bundle.role("answer")
    backend = LlamaCppBackend(model, n_ctx=4096, repeat_penalty=REPEAT_PENALTY)
    yield backend
    backend.close()
