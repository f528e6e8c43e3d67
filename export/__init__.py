"""Turning trained models into files the runtime loads: LoRA merge, GGUF, ONNX, quantisation, bundles.

    hf_base        the base as a Hugging Face folder (GGUF bases dequantised, tokenizer rebuilt)
    merge          reading LoRA adapters and folding them into the base in 16-bit
    gguf           llama.cpp's converters (from the installed llama-cpp-python's sdist) and quantisation
    onnx           onnxruntime-genai model builder: fp32, int8, int4
    devset/parity  the checks an export must pass
    bundle_writer  bundles from the exported files
    pipeline       `edge export`: all of the above, stage by stage
    embedder       the MiniLM embedder as ONNX (+ int8)
    default_bundle the default bundle's first-run build
    command        the `edge export` command

The runtime never imports this package: it finds `command` and the
first-run builds through the entry points pyproject.toml declares
(`edge.plugins`).
"""
