"""The changes a memory bank accepts, independent of who proposes them.

The Manager's model output is parsed (in `edge.prompts`) into these; the
CLI, the API and the chat app build them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Tier = Literal["core", "semantic", "episodic"]
TIERS: tuple[str, ...] = ("core", "semantic", "episodic")
Actor = Literal["manager", "user", "api", "import"]
ACTORS: tuple[str, ...] = ("manager", "user", "api", "import")


@dataclass(frozen=True)
class AddOp:
    text: str
    tier: Tier = "semantic"
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateOp:
    id: str
    text: str
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteOp:
    id: str


@dataclass(frozen=True)
class RestoreOp:
    """Bring back a soft-deleted memory, or make a superseded one current again."""

    id: str


@dataclass(frozen=True)
class SupersedeOp:
    """Retire a fact without destroying it: the Manager's UPDATE and DELETE.

    The old version stays in the bank as superseded, valid until `at` (the
    time of the turn that replaced it) and naming that turn; with `text`, a
    new version carrying it becomes the current fact (an UPDATE), without,
    the fact is only retired (a DELETE). Zep and Mem0's graph memory
    invalidate contradicted facts the same way instead of deleting them.
    """

    id: str
    text: str | None = None
    at: str | None = None
    turn_id: str | None = None
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtendOp:
    """Grow a current fact by one clause of a later turn: a consolidated fact (the Manager's EXTEND).

    The bank joins `clause` to the fact's text as it is when the change is
    applied (`consolidated_text`), so a change made to the fact meanwhile
    is kept, and refuses a fact that is deleted or superseded; the fact's
    source turns gain `source_turns`. mem0 merges related memories into one
    the same way; Memory-R1's UPDATE adds to a memory.
    """

    id: str
    clause: str
    speaker: str | None = None
    source_turns: tuple[str, ...] = ()


Op = Union[AddOp, UpdateOp, DeleteOp, RestoreOp, SupersedeOp, ExtendOp]


def consolidated_text(fact: str, clause: str, speaker: str | None) -> str:
    """`fact` grown by `clause`: "Maya took up pottery" + "Maya started swimming" -> "Maya took up pottery;
    started swimming". The clause's leading speaker name (which `edge.grounding.clauses` puts for "I") is
    dropped, the fact already names them; every word is still one that was said."""
    head = fact.strip().rstrip(".;").rstrip()
    tail = clause.strip().rstrip(".;").rstrip()
    if speaker and tail.casefold().startswith(speaker.strip().casefold() + " "):
        tail = tail[len(speaker.strip()) + 1:].lstrip()
    return f"{head}; {tail}"


@dataclass(frozen=True)
class AppliedOp:
    """What one operation did: the history row it wrote and the memory after it."""

    seq: int
    action: str
    memory_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reverts: int | None = None  # an undo or redo: the history row it reverted
