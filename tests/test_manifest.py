"""The typed manifest: what every bundle writer builds and `Bundle.load` reads, and backends a bundle may name.

- the default bundle's `bundle.json` reads as a `Manifest` and writes back as the same JSON;
- a writer cannot write a manifest the reader would refuse (nothing is written);
- a backend kind registered with a bundle loader (`register_backend(..., from_bundle=...)`) can be named
  in a manifest and serves the bundle's roles; one that is not registered is refused with the kinds listed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.backends import BACKENDS, BUNDLE_LOADERS, BundleModel, bundle_kinds, register_backend
from edge.backends.scripted import ScriptedBackend
from edge.bundle import MANIFEST, Bundle, write_manifest
from edge.errors import BundleError
from edge.files import link_or_copy
from edge.manifest import Manifest, ModelEntry


def test_the_default_manifest_reads_typed_and_writes_back_as_it_was(default_bundle: Bundle) -> None:
    spec = default_bundle.spec
    assert spec.model_backend("base") == "llama.cpp" and spec.role("answer").adapter == "answer"
    assert spec.models["base"].quantization == "Q8_0" and spec.embedder.dim == 384
    assert spec.role("no-such-role") == spec.role("answer"), "a role the manifest does not name is served as answer"
    assert spec.to_json() == default_bundle.manifest
    assert Manifest.from_json(spec.to_json()) == spec


def test_unknown_keys_are_kept_as_written() -> None:
    data = {"format": "edge-bundle", "format_version": 1, "prompt_version": "p", "backend": "llama.cpp",
            "models": {"base": {"path": "m.gguf", "layers": 30}}, "roles": {"answer": {"model": "base"}},
            "embedder": {"name": "e", "dim": 4, "path": "embedder"}, "export": {"from": "run 7"}}
    spec = Manifest.from_json(data)
    assert spec.extra == {"export": {"from": "run 7"}} and spec.models["base"].extra == {"layers": 30}
    back = spec.to_json()
    assert back["export"] == {"from": "run 7"} and back["models"]["base"]["layers"] == 30


def test_a_writer_cannot_write_what_the_reader_refuses(default_bundle: Bundle, tmp_path: Path) -> None:
    broken = {k: v for k, v in default_bundle.manifest.items() if k != "files"}
    broken["roles"] = {**broken["roles"], "answer": {"model": "nowhere", "adapter": None}}
    with pytest.raises(BundleError, match="role 'answer' names unknown model 'nowhere'"):
        write_manifest(tmp_path, broken)
    assert not (tmp_path / MANIFEST).exists()


def _copy_with_model_backend(source: Bundle, target: Path, kind: str) -> Path:
    for rel in source.manifest["files"]:
        link_or_copy(source.root / rel, target / rel)
    spec = source.spec
    write_manifest(target, spec.with_model("base", ModelEntry(**{**spec.models["base"].__dict__, "backend": kind})))
    return target


def test_a_registered_backend_can_be_named_in_a_bundle(default_bundle: Bundle, tmp_path: Path) -> None:
    """A kind registered with a bundle loader is served by it: the loader gets the model's file, its adapters,
    the bundle's context window and repetition penalty."""
    given: list[BundleModel] = []

    def from_bundle(model: BundleModel) -> ScriptedBackend:
        given.append(model)
        return ScriptedBackend(['{"answer": "unknown"}'], adapters=list(model.adapters))

    register_backend("scripted-test", ScriptedBackend, from_bundle=from_bundle)
    try:
        assert "scripted-test" in bundle_kinds()
        named = Bundle.load(_copy_with_model_backend(default_bundle, tmp_path / "named", "scripted-test"))
        backend = named.load_backend("answer")
        assert isinstance(backend, ScriptedBackend) and set(backend.adapters) == {"manager", "answer"}
        (model,) = given
        assert model.path == named.root / "model.gguf" and model.n_ctx == named.generation.n_ctx
        assert model.repeat_penalty == named.generation.repeat_penalty
    finally:
        BACKENDS.pop("scripted-test", None)
        BUNDLE_LOADERS.pop("scripted-test", None)
    with pytest.raises(BundleError, match="unknown backend 'scripted-test'") as raised:
        Bundle.load(tmp_path / "named")
    assert "llama.cpp" in raised.value.hint


def test_a_manifest_that_is_not_an_object_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps(["not", "a", "manifest"]))
    with pytest.raises(BundleError, match="not an object"):
        Bundle.load(tmp_path)
