"""edge: an on-device memory agent.

    from edge import MemoryBank
    bank = MemoryBank.open("memory.db", user="alice")
    bank.add("Alice's sister is called Maya")
    bank.search("who is Maya?")
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.bank import HistoryEntry, Memory, MemoryBank, SearchHit
from edge.errors import EdgeError
from edge.operations import AddOp, AppliedOp, DeleteOp, RestoreOp, UpdateOp

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edge.agent import Agent

__all__ = [
    "Agent", "AddOp", "AppliedOp", "DeleteOp", "EdgeError", "HistoryEntry", "Memory", "MemoryBank",
    "RestoreOp", "SearchHit", "UpdateOp", "__version__",
]


def __getattr__(name: str) -> Any:
    # The agent pulls in the LLM backends; load it only when asked for.
    if name == "Agent":
        from edge.agent import Agent

        return Agent
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
