"""Where edge keeps its state: one place for every default path.

`EDGE_HOME` relocates everything (tests point it at a temporary folder);
`EDGE_CACHE` relocates only the rebuildable cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """The root of all of edge's state for this user."""
    override = os.environ.get("EDGE_HOME")
    root = Path(override) if override else Path(platformdirs.user_data_dir("edge", appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_db() -> Path:
    return home() / "memory.db"


def bundles_dir() -> Path:
    path = home() / "bundles"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_bundle_dir() -> Path:
    return bundles_dir() / "default"


def cache_dir() -> Path:
    """Derived files that can be rebuilt (e.g. the embedder's ONNX); `EDGE_CACHE` moves them."""
    override = os.environ.get("EDGE_CACHE")
    path = Path(override) if override else home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


DEFAULT_USER = "me"
