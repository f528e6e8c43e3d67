"""Assemble exported files into bundles (see `edge.bundle` for the format).

One bundle per runtime format, because a bundle names one backend:

    <out>/gguf-q4_k_m/   backend llama.cpp
        models/manager.gguf, models/answer.gguf          layout "merged"
        models/base.gguf + adapters/{manager,answer}.gguf  layout "adapters"
        embedder/
    <out>/onnx-int4/     backend onnx-genai
        models/manager/, models/answer/                  (onnxruntime-genai folders)
        embedder/

Roles: the Manager and the Answer Agent get their own model (or adapter);
`chat` uses the answer model in the merged layout and the plain base in the
adapters layout. A role with no adapter is served by the base model.
Each bundle is built in a hidden staging folder and renamed into place.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.bundle import Bundle, write_manifest
from edge.manifest import AdapterEntry, EmbedderEntry, Manifest, ModelEntry, RoleEntry
from edge.files import link_or_copy, staged_dir


@dataclass
class BundleSpec:
    folder_name: str  # e.g. "gguf-q4_k_m"
    backend: str  # "llama.cpp" | "onnx-genai"
    label: str  # shown in the UI
    models: dict[str, tuple[Path, dict[str, Any]]]  # key -> (file or folder, manifest fields)
    adapters: dict[str, Path] = field(default_factory=dict)  # key -> GGUF LoRA file
    roles: dict[str, dict[str, str | None]] = field(default_factory=dict)
    export_info: dict[str, Any] = field(default_factory=dict)  # recorded under "export"
    generation: dict[str, Any] | None = None  # the manifest's `generation` table (None: the runtime's defaults)
    notes: str = ""


def _place(src: Path, dst: Path, *, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dst)
    elif src.is_dir():
        shutil.copytree(src, dst, copy_function=link_or_copy)
    else:
        link_or_copy(src, dst)


def _suffix(path: Path) -> str:
    return ".gguf" if path.is_file() else ""


def write_bundle(out_dir: Path, spec: BundleSpec, embedder_dir: Path, embedder: dict[str, Any],
                 *, move: bool = False) -> Bundle:
    """Write `spec` as a bundle at `out_dir / spec.folder_name`; files are linked/copied (or moved)."""
    target = out_dir / spec.folder_name
    with staged_dir(target) as staging:
        models = {}
        for key, (src, fields) in spec.models.items():
            rel = f"models/{key}{_suffix(src)}"
            _place(src, staging / rel, move=move)
            models[key] = ModelEntry.from_json({**fields, "path": rel})
        adapters = {}
        for key, src in spec.adapters.items():
            rel = f"adapters/{key}.gguf"
            _place(src, staging / rel, move=move)
            adapters[key] = AdapterEntry(rel, "base")
        _place(embedder_dir, staging / "embedder", move=False)
        write_manifest(staging, Manifest(
            name=spec.label,
            backend=spec.backend,
            models=models,
            adapters=adapters,
            roles={role: RoleEntry(r["model"], r.get("adapter")) for role, r in spec.roles.items()},
            embedder=EmbedderEntry(embedder["name"], int(embedder["dim"]), "embedder"),
            generation=spec.generation,
            notes=spec.notes,
            extra={"export": spec.export_info},
        ))
    return Bundle.load(target)
