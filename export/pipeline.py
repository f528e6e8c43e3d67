"""`edge export`: trained LoRA adapters to bundles, stage by stage.

    from pathlib import Path
    from edge.export.pipeline import ExportOptions, export
    result = export(ExportOptions(out=Path("dist"), adapters={"manager": Path("runs/manager/adapter")},
                                  gguf=("q4_k_m",), onnx=("int4",)))
    print(result.report.table())

Stages (each a step of one progress bar):

    base         the base as a Hugging Face folder (a GGUF base is dequantised once and cached)
    merge        each adapter folded into the base, saved in 16-bit        (edge.export.merge)
    gguf         f16 GGUF of each model, then the requested quantisations   (edge.export.gguf)
    lora         layout "adapters": each adapter as a GGUF LoRA
    onnx         fp32 (parity reference) and the requested precisions       (edge.export.onnx)
    parity       greedy-token and task-score gates                         (edge.export.parity)
    bundles      one bundle per format, plus <out>/export.json             (edge.export.bundle_writer)

Intermediate files live in `<out>/.work` and are removed at the end unless
`keep_work` is set; bundles hard-link to them, so nothing is written twice.
A missed parity gate raises `ParityError` after export.json is written and
before any bundle is.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edge import __version__
from edge.bundle import ADAPTER_ROLES, default_generation
from edge.errors import EdgeError, MissingExtraError
from edge.export.gguf import QUANT_TYPES
from edge.export.onnx import PRECISIONS
from edge.export.parity import DEFAULT_MARGIN, ParityReport
from edge.generation import GenerationConfig
from edge.prompts import PROMPT_VERSION

LAYOUTS = ("merged", "adapters")
SUMMARY_FILE = "export.json"


@dataclass
class ExportOptions:
    out: Path = field(metadata={"help": "folder that receives one bundle per format and export.json"})
    adapters: dict[str, Path] = field(default_factory=dict, metadata={"help": "role -> PEFT LoRA folder"})
    base: str | None = field(default=None, metadata={
        "help": "'bundled', a GGUF file, a HF folder or hub id; default: what the adapter records, else bundled"})
    gguf: tuple[str, ...] = field(default=("q4_k_m",), metadata={"help": f"GGUF types: {', '.join(QUANT_TYPES)}"})
    onnx: tuple[str, ...] = field(default=(), metadata={"help": f"ONNX precisions: {', '.join(PRECISIONS)}"})
    layout: str = field(default="merged", metadata={
        "help": "merged: one GGUF per role; adapters: one base GGUF + a GGUF LoRA per role (GGUF only)"})
    embedder_int8: bool = field(default=False, metadata={"help": "ship the int8 embedder instead of the float one"})
    parity: bool = field(default=True, metadata={"help": "run the parity gates (and fail the export on a miss)"})
    margin: float = field(default=DEFAULT_MARGIN, metadata={"help": "allowed task-score drop of a quantisation"})
    parity_items: int | None = field(default=None, metadata={
        "help": "dev items per role for the parity checks (default: all eight)"})
    dtype: str = field(default="float16", metadata={"help": "dtype of merged weights: float16 | bfloat16 | float32"})
    keep_work: bool = field(default=False, metadata={"help": "keep <out>/.work (merged HF folders, f16 files)"})
    allow_unrecorded_prompts: bool = field(default=False, metadata={
        "help": "accept adapters without a recorded prompt version"})
    name: str | None = field(default=None, metadata={"help": "bundle label; default from base and formats"})
    generation: GenerationConfig = field(default_factory=default_generation, metadata={
        "help": "how the bundles' models are decoded: written into their manifests and used by the parity checks "
                "(default: the default bundle's, which the training reward's reader also starts from)"})

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        if not isinstance(self.generation, GenerationConfig):  # a manifest-style table
            self.generation = GenerationConfig.from_manifest(self.generation, source="--generation")
        self.adapters = {role: Path(path).expanduser() for role, path in self.adapters.items() if path}
        unknown = set(self.adapters) - set(ADAPTER_ROLES)
        if unknown:
            raise EdgeError(f"Unknown adapter role(s): {', '.join(sorted(unknown))}.", hint="roles: manager, answer")
        self.gguf = tuple(dict.fromkeys(q.strip().lower() for q in self.gguf if q.strip()))
        self.onnx = tuple(dict.fromkeys(p.strip().lower() for p in self.onnx if p.strip()))
        bad = [q for q in self.gguf if q not in QUANT_TYPES]
        if bad:
            raise EdgeError(f"Unknown GGUF type(s): {', '.join(bad)}.", hint=f"choose from {', '.join(QUANT_TYPES)}")
        bad = [p for p in self.onnx if p not in PRECISIONS]
        if bad:
            raise EdgeError(f"Unknown ONNX precision(s): {', '.join(bad)}.",
                            hint=f"choose from {', '.join(PRECISIONS)}")
        if not self.gguf and not self.onnx:
            raise EdgeError("Nothing to export.", hint="ask for at least one format, e.g. --gguf q4_k_m or --onnx int4")
        if self.layout not in LAYOUTS:
            raise EdgeError(f"Unknown layout {self.layout!r}.", hint="use --layout merged or --layout adapters")
        if self.layout == "adapters" and not self.adapters:
            raise EdgeError("The adapters layout needs at least one adapter.", hint="pass --adapter DIR")
        if not 0 <= self.margin <= 1:
            raise EdgeError(f"--parity-margin must lie in [0, 1], not {self.margin}.")
        if self.parity_items is not None and self.parity_items < 1:
            raise EdgeError("--parity-items must be at least 1.")


@dataclass
class ExportResult:
    bundles: list[Path]
    report: ParityReport | None
    sizes: dict[str, int]  # artifact label -> bytes
    timings: dict[str, float]  # stage -> seconds
    seconds: float
    summary_path: Path


def check_tools(options: ExportOptions) -> None:
    """Fail before any work when an optional dependency is missing, naming the extra that brings it."""
    for module in ("torch", "transformers", "safetensors"):
        try:
            __import__(module)
        except ImportError as exc:
            what = "GGUF export" if options.gguf else "ONNX export"
            raise MissingExtraError(what, "export") from exc
    if options.adapters:
        try:
            import peft  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("Merging LoRA adapters (peft)", "export") from exc
    if options.gguf:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("GGUF export", "export") from exc
    if options.onnx:
        from edge.export.onnx import check_onnx_tools

        check_onnx_tools()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _default_base(options: ExportOptions, recorded: list[str | None], log: Callable[[str], None]) -> str:
    from edge.export.hf_base import BUNDLED, BUNDLED_NAME

    if options.base:
        return options.base
    names = {r for r in recorded if r}
    if not names:
        return BUNDLED
    if len(names) > 1:
        raise EdgeError(f"The adapters record different base models: {', '.join(sorted(names))}.",
                        hint="adapters sharing a bundle must share a base; pass --base to choose")
    name = names.pop()
    if name in (BUNDLED, BUNDLED_NAME) or (name.endswith(".gguf") and Path(name).name.startswith("SmolLM2-135M")):
        log(f"base: the bundled SmolLM2-135M-Instruct GGUF (recorded by the adapter as {name})")
        return BUNDLED
    return name


def _check_same_base(base, adapters) -> None:
    """Refuse an adapter whose record names another GGUF than the one the base was rebuilt from."""
    for adapter in adapters:
        if adapter.base_sha256 and base.gguf_sha256 and adapter.base_sha256 != base.gguf_sha256:
            raise EdgeError(
                f"The {adapter.role} adapter was trained on a base rebuilt from another GGUF file "
                f"(sha256 {adapter.base_sha256[:12]}…, this base: {base.gguf_sha256[:12]}…).",
                hint="pass the --base the adapter was trained on",
            )


class _Stages:
    """One progress bar over the export's stages, with their timings."""

    def __init__(self, total: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="export", unit="stage", disable=not progress, leave=True)
        self.timings: dict[str, float] = {}

    def run(self, label: str, fn: Callable[[], Any]) -> Any:
        self.bar.set_description(label)
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[label] = round(time.perf_counter() - start, 2)
            self.bar.update(1)

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text[:60])

    def log(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def served_as_trained(options: ExportOptions, adapters: dict, log: Callable[[str], None] | None = None
                      ) -> ExportOptions:
    """`options` with the generation settings its adapters were trained for: a Manager trained with
    `[data] consolidation = "extend"` is offered EXTEND in its prompt and grammar, so its bundles serve it so."""
    manager = adapters.get("manager")
    trained = getattr(manager, "consolidation", None)
    if not trained or trained == options.generation.consolidation:
        return options
    if log is not None:
        log(f"generation.consolidation = {trained!r}: what the Manager adapter was trained with")
    return replace(options, generation=options.generation.override(consolidation=trained))


def export(options: ExportOptions, *, progress: bool = True, log: Callable[[str], None] | None = None) -> ExportResult:
    """Run every stage for `options` and return where the bundles are and how they did."""
    from edge.export import gguf, hf_base, merge, onnx, parity
    from edge.export.bundle_writer import write_bundle

    check_tools(options)
    started = time.perf_counter()
    adapters = {role: merge.read_adapter(path, role) for role, path in options.adapters.items()}
    for adapter in adapters.values():
        merge.check_prompt_version(adapter, allow_unrecorded=options.allow_unrecorded_prompts)
    options = served_as_trained(options, adapters, log)

    roles_with = [r for r in ADAPTER_ROLES if r in adapters]
    # Model keys in the merged layout: a role with an adapter gets its merged model, others share "base".
    merged_keys = list(dict.fromkeys(r if r in adapters else "base" for r in ADAPTER_ROLES))
    gguf_keys = ["base"] if options.layout == "adapters" else merged_keys
    gguf_variants = list(dict.fromkeys(["f16", *options.gguf])) if options.gguf else []
    onnx_variants = list(dict.fromkeys((["fp32"] if options.parity else []) + list(options.onnx)))
    n_stages = (1 + len(roles_with) + len(gguf_keys) * len(gguf_variants)
                + (len(roles_with) if options.layout == "adapters" and options.gguf else 0)
                + (1 if onnx_variants else 0) + (1 if options.parity else 0) + 1)
    stages = _Stages(n_stages, progress)
    say = log or stages.log

    work = options.out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    try:
        base_spec = _default_base(options, [a.base_model for a in adapters.values()], say)
        base = stages.run("base", lambda: hf_base.prepare_base(base_spec, log=say))
        _check_same_base(base, adapters.values())
        sources: dict[str, Path] = {"base": base.path}
        for role in roles_with:
            sources[role] = stages.run(
                f"merge {role}",
                lambda role=role: merge.merge_adapter(base, adapters[role], work / f"hf-{role}", dtype=options.dtype),
            )

        gguf_files: dict[tuple[str, str], Path] = {}
        for key in gguf_keys:
            f16 = stages.run(f"gguf {key} f16", lambda key=key: gguf.hf_to_gguf(
                sources[key], work / f"{key}-f16.gguf", model_name=f"{base.name} ({key})", log=say))
            gguf_files[(key, "f16")] = f16
            for quant in gguf_variants[1:]:
                gguf_files[(key, quant)] = stages.run(
                    f"gguf {key} {quant}",
                    lambda key=key, quant=quant: gguf.quantize_gguf(f16, work / f"{key}-{quant}.gguf", quant),
                )
        lora_files: dict[str, Path] = {}
        if options.layout == "adapters" and options.gguf:
            for role in roles_with:
                lora_files[role] = stages.run(f"lora {role}", lambda role=role: gguf.lora_to_gguf(
                    adapters[role].path, base.path, work / f"lora-{role}.gguf", log=say))

        onnx_dirs: dict[tuple[str, str], Path] = {
            (key, precision): work / f"onnx-{key}-{precision}" for key in merged_keys for precision in onnx_variants
        }
        if onnx_dirs:
            jobs = [(sources[key], folder, precision) for (key, precision), folder in onnx_dirs.items()]
            stages.run(f"onnx ({len(jobs)} models)", lambda: onnx.build_many(jobs, cache=work))

        for (key, variant), path in gguf_files.items():
            sizes[f"gguf {key} {variant}"] = _size(path)
        for role, path in lora_files.items():
            sizes[f"gguf lora {role}"] = _size(path)
        for (key, variant), path in onnx_dirs.items():
            sizes[f"onnx {key} {variant}"] = _size(path)

        report = None
        if options.parity:
            checks = parity_plan(options, merged_keys, sources, gguf_files, lora_files, onnx_dirs, gguf_variants)
            report = stages.run("parity", lambda: parity.run_checks(
                checks, margin=options.margin, per_role=options.parity_items, tick=stages.note,
                generation=options.generation))

        summary = _summary(options, base, adapters, sizes, report, stages.timings, started)
        summary_path = options.out / SUMMARY_FILE
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        if report is not None:
            say(report.table())
            report.raise_on_failure()

        def write_all() -> list[Path]:
            embedder_dir, embedder_info = _embedder(options, work)
            specs = _bundle_specs(options, base, adapters, merged_keys, gguf_files, lora_files, onnx_dirs, summary)
            return [write_bundle(options.out, spec, embedder_dir, embedder_info).root for spec in specs]

        bundles = stages.run("bundles", write_all)
    finally:
        stages.close()
        if not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    summary["seconds"] = round(seconds, 1)
    summary["timings"] = stages.timings
    summary["bundles"] = [str(p) for p in bundles]
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return ExportResult(bundles, report, sizes, stages.timings, seconds, summary_path)


def parity_plan(options, merged_keys, sources, gguf_files, lora_files, onnx_dirs, gguf_variants):
    """The parity targets, every runner decoding with `options.generation` (what the bundles will serve with)."""
    from edge.export.parity import Candidate, Target, gguf_runner, onnx_runner

    generation = options.generation
    targets = []
    for key in merged_keys:
        served = tuple(r for r in ADAPTER_ROLES if (r if r in sources else "base") == key)
        candidates: list[Candidate] = []
        for variant in gguf_variants:
            if options.layout == "adapters":
                model, lora = gguf_files[("base", variant)], lora_files.get(key)
                artifact = f"gguf {variant}" + (" + lora" if lora else "")
            else:
                model, lora = gguf_files[(key, variant)], None
                artifact = f"gguf {variant}"
            candidates.append(Candidate(key, artifact, "gguf", variant,
                                        lambda model=model, lora=lora: gguf_runner(model, lora,
                                                                                   generation=generation),
                                        reference=variant == "f16"))
        for (onnx_key, precision), folder in onnx_dirs.items():
            if onnx_key == key:
                candidates.append(Candidate(key, f"onnx {precision}", "onnx", precision,
                                            lambda folder=folder: onnx_runner(folder, generation=generation),
                                            reference=precision == "fp32"))
        targets.append(Target(key, sources[key], candidates, served))
    return targets


def _embedder(options: ExportOptions, work: Path) -> tuple[Path, dict[str, Any]]:
    from edge.export.embedder import build_default_minilm

    embedder = build_default_minilm()
    folder = Path(embedder.model_dir)
    if options.embedder_int8:
        from edge.export.embedder import quantize_embedder_int8

        folder = quantize_embedder_int8(folder, work / "embedder-int8")
        config = json.loads((folder / "embedder.json").read_text())
        return folder, {"name": config["name"], "dim": int(config["dim"])}
    return folder, {"name": embedder.name, "dim": embedder.dim}


def _quant_label(variant: str) -> str:
    return variant.upper() if variant.startswith(("q", "f")) else variant


def _bundle_specs(options, base, adapters, merged_keys, gguf_files, lora_files, onnx_dirs, summary):
    from edge.export.bundle_writer import BundleSpec

    roles_with = [r for r in ADAPTER_ROLES if r in adapters]
    answer_key = "answer" if "answer" in adapters else "base"
    export_info = {
        "base": base.name,
        "layout": options.layout,
        "adapters": {role: summary["adapters"][role] for role in roles_with},
        "parity": summary.get("parity"),
    }
    specs = []
    for variant in options.gguf:
        if options.layout == "adapters":
            models = {"base": (gguf_files[("base", variant)], {
                "format": "gguf", "quantization": _quant_label(variant), "base": base.name})}
            roles = {role: {"model": "base", "adapter": role if role in lora_files else None} for role in ADAPTER_ROLES}
            roles["chat"] = {"model": "base", "adapter": None}
            adapter_files = dict(lora_files)
        else:
            models = {key: (gguf_files[(key, variant)], {
                "format": "gguf", "quantization": _quant_label(variant), "base": base.name,
                **({"adapter": role_info(summary, key)} if key != "base" else {})}) for key in merged_keys}
            roles = {role: {"model": role if role in adapters else "base", "adapter": None} for role in ADAPTER_ROLES}
            roles["chat"] = {"model": answer_key, "adapter": None}
            adapter_files = {}
        specs.append(BundleSpec(
            folder_name=f"gguf-{variant}", backend="llama.cpp",
            label=options.name or f"{Path(base.name).name} {_quant_label(variant)} ({'+'.join(roles_with) or 'base'})",
            models=models, adapters=adapter_files, roles=roles, export_info=export_info,
            generation=options.generation.to_manifest(),
            notes=f"Exported by edge {__version__} (layout {options.layout}).",
        ))
    for precision in options.onnx:
        models = {key: (onnx_dirs[(key, precision)], {
            "format": "onnx", "quantization": precision, "base": base.name,
            **({"adapter": role_info(summary, key)} if key != "base" else {})}) for key in merged_keys}
        roles = {role: {"model": role if role in adapters else "base", "adapter": None} for role in ADAPTER_ROLES}
        roles["chat"] = {"model": answer_key, "adapter": None}
        specs.append(BundleSpec(
            folder_name=f"onnx-{precision}", backend="onnx-genai",
            label=options.name or f"{Path(base.name).name} ONNX {precision} ({'+'.join(roles_with) or 'base'})",
            models=models, roles=roles, export_info=export_info, generation=options.generation.to_manifest(),
            notes=f"Exported by edge {__version__}; ONNX models are always merged (onnxruntime-genai).",
        ))
    return specs


def role_info(summary: dict, role: str) -> dict:
    return summary["adapters"].get(role, {})


def _summary(options, base, adapters, sizes, report, timings, started) -> dict[str, Any]:
    return {
        "edge_version": __version__,
        "prompt_version": PROMPT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": {"name": base.name, "source": base.source},
        "adapters": {
            role: {"path": str(a.path), "prompt_version": a.prompt_version, "recorded_base": a.base_model,
                   "rank": a.rank, "target_modules": a.target_modules}
            for role, a in adapters.items()
        },
        "layout": options.layout,
        "generation": options.generation.to_manifest(),
        "gguf": list(options.gguf),
        "onnx": list(options.onnx),
        "sizes_bytes": sizes,
        "parity": None if report is None else {
            "passed": not report.failures, "margin": options.margin, "seconds": round(report.seconds, 1),
            "rows": report.to_json(),
        },
        "timings": dict(timings),
        "seconds": round(time.perf_counter() - started, 1),
    }
