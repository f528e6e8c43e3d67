"""What both agents need to ask a model: chat messages, the adapter serving a role, memories as shown.

The Memory Manager (`edge.manager`), the Answer Agent (`edge.answer`), the
chat path of `edge.Agent`, the evaluation and training all build their
model calls with these, so a memory is shown the same way wherever a model
reads it (`edge.prompts.memory_line` writes the line).
"""
from __future__ import annotations

from edge.backends.base import Backend, Message
from edge.bank import Memory
from edge.errors import BackendError
from edge.prompts import IdMap, ShownMemory, cited_turns


def to_messages(messages: list[dict[str, str]]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in messages]


def adapter_for(backend: Backend, name: str | None) -> str | None:
    """The adapter `name` as the argument `backend.complete(adapter=...)` takes; None is the plain base model.

    A role whose bundle names an adapter is served by that adapter or not at
    all: an adapter the backend has not loaded raises `BackendError`
    instead of quietly answering with the base model (which would serve an
    untrained Manager under a trained bundle's name).
    """
    if name is None:
        return None
    if name not in backend.adapters:
        raise BackendError(
            f"The adapter {name!r} is not loaded in {backend.name}; its role would be served by the base model.",
            hint=f"loaded adapters: {', '.join(backend.adapters) or 'none'}; load it with the backend "
            "(`Bundle.load_backend` attaches a bundle's adapters), or pass adapter=None for the base model",
        )
    return name


def shown_memory(local_id: str, memory: Memory, *, max_chars: int | None = None) -> ShownMemory:
    """A bank memory as the prompts show it (dates, speaker, resolved relative dates, superseded mark)."""
    text = memory.text
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rsplit(" ", 1)[0] + "…"
    dates = memory.metadata.get("dates") or {}
    return ShownMemory(
        local_id, memory.tier, text, memory.event_time,
        speaker=memory.speaker if memory.tier == "episodic" else None,
        dates=tuple((str(k), str(v)) for k, v in dates.items()) if memory.tier == "episodic" else (),
        until=memory.valid_until,
        turns=cited_turns(memory.tier, memory.source_turns),
    )


def shown_memories(memories: list[Memory], *, max_chars: int | None = None) -> tuple[IdMap, list[ShownMemory]]:
    id_map = IdMap([m.id for m in memories])
    return id_map, [shown_memory(id_map.to_local[m.id], m, max_chars=max_chars) for m in memories]
