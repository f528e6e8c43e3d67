"""edge: an on-device memory agent.

    from edge import MemoryBank
    bank = MemoryBank.open("memory.db", user="alice")
    bank.add("Alice's sister is called Maya")
    bank.search("who is Maya?")
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edge.agent import Agent
    from edge.bank import HistoryEntry, Memory, MemoryBank, SearchHit
    from edge.errors import EdgeError
    from edge.operations import AddOp, AppliedOp, DeleteOp, RestoreOp, UpdateOp

# Each public name loads its module when first asked for (PEP 562): `import edge` (and the `edge` command's
# start, where a Ctrl-C should meet edge's own handler, not a traceback inside numpy's import) stays light, and the
# agent, which pulls in the model backends, loads only when used.
_LAZY = {
    "Agent": "edge.agent", "AddOp": "edge.operations", "AppliedOp": "edge.operations",
    "DeleteOp": "edge.operations", "EdgeError": "edge.errors", "HistoryEntry": "edge.bank", "Memory": "edge.bank",
    "MemoryBank": "edge.bank", "RestoreOp": "edge.operations", "SearchHit": "edge.bank", "UpdateOp": "edge.operations",
}

__all__ = [
    "Agent", "AddOp", "AppliedOp", "DeleteOp", "EdgeError", "HistoryEntry", "Memory", "MemoryBank",
    "RestoreOp", "SearchHit", "UpdateOp", "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
