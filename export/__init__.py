"""Turning trained models into files the runtime loads: LoRA merge, GGUF, ONNX, quantisation, bundles."""
