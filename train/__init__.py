"""Training the Memory Manager and the Answer Agent with GRPO + LoRA (`edge train`).

Importing this package is cheap; torch, transformers, TRL and PEFT are
imported when a run starts.

    from edge.train import load_config, train
    result = train(load_config("smollm2-135m-manager"), out="runs/manager", steps=50)
"""
from __future__ import annotations

from edge.train.config import ConfigError, TrainConfig, load_config
from edge.train.trainer import TrainResult, read_adapter_meta, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "load_config", "read_adapter_meta", "train"]
