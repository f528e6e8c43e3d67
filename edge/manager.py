"""The Memory Manager: turns one conversation turn into checked memory operations.

For each turn: retrieve the related memories, show them to the model under
local ids ("0", "1", ...), decode its reply under the JSON schema of
`edge.prompts`, validate every operation (ids it was shown, non-empty
text, the per-turn delete cap), and apply what survives in one bank
transaction that records the turn. A reply that cannot be parsed is
retried once; after that the turn is a NOOP with the reason logged. A
failure never changes the bank.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from edge.backends.base import Backend, Message
from edge.bank import Memory, MemoryBank
from edge.errors import EdgeError, ModelOutputError
from edge.operations import AddOp, AppliedOp, DeleteOp, Op, UpdateOp
from edge.prompts import (
    DEFAULT_DELETE_CAP,
    IdMap,
    ManagerParse,
    ShownMemory,
    Turn,
    manager_messages,
    manager_schema,
    parse_manager_output,
)

log = logging.getLogger("edge.manager")

RELATED_K = 8
RETRY_TEMPERATURE = 0.7


@dataclass
class TurnResult:
    """What the Manager did with one turn."""

    turn: Turn
    applied: list[AppliedOp] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    error: str | None = None
    raw: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def to_messages(messages: list[dict[str, str]]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in messages]


def adapter_for(backend: Backend, name: str | None) -> str | None:
    """The adapter to use, if the backend has it loaded; else the plain base model."""
    return name if name and name in getattr(backend, "adapters", ()) else None


def shown_memories(memories: list[Memory]) -> tuple[IdMap, list[ShownMemory]]:
    id_map = IdMap([m.id for m in memories])
    return id_map, [ShownMemory(id_map.to_local[m.id], m.tier, m.text, m.event_time) for m in memories]


def turn_reference(turn: Turn) -> str:
    """How a turn is named in history: its id, speaker, time and the start of its text."""
    return json.dumps(
        {"id": turn.turn_id, "speaker": turn.speaker, "time": turn.time, "text": turn.text[:200]}, ensure_ascii=False
    )


class MemoryManager:
    def __init__(
        self,
        backend: Backend,
        bank: MemoryBank,
        *,
        related_k: int = RELATED_K,
        delete_cap: int = DEFAULT_DELETE_CAP,
        adapter: str | None = "manager",
        max_tokens: int = 160,
    ) -> None:
        self.backend = backend
        self.bank = bank
        self.related_k = related_k
        self.delete_cap = delete_cap
        self.adapter = adapter
        self.max_tokens = max_tokens

    def related(self, turn: Turn, user: str | None = None) -> list[Memory]:
        """Memories the model should see for this turn: the closest ones, core memories first."""
        hits = self.bank.search(f"{turn.speaker}: {turn.text}", k=self.related_k, user=user)
        core = [h.memory for h in hits if h.memory.tier == "core"]
        return core + [h.memory for h in hits if h.memory.tier != "core"]

    def propose(self, turn: Turn, related: list[Memory]) -> tuple[IdMap, ManagerParse, TurnResult]:
        """Ask the model for operations on `related`; parse and validate them (nothing is applied)."""
        result = TurnResult(turn=turn)
        id_map, shown = shown_memories(related)
        messages = to_messages(manager_messages(turn, shown))
        schema = manager_schema(id_map.local_ids)
        parse = ManagerParse(error="not asked")
        for attempt, temperature in enumerate((0.0, RETRY_TEMPERATURE), start=1):
            result.attempts = attempt
            try:
                completion = self.backend.complete(
                    messages, schema=schema, max_tokens=self.max_tokens, temperature=temperature,
                    adapter=adapter_for(self.backend, self.adapter),
                )
            except ModelOutputError as exc:  # a backend that checks the schema itself refused the reply
                parse = ManagerParse(error=exc.message)
                log.warning("manager reply unusable (attempt %d): %s", attempt, exc.message)
                continue
            result.raw = completion.text
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            parse = parse_manager_output(completion.text, id_map.local_ids, delete_cap=self.delete_cap)
            if parse.ok:
                break
            log.warning("manager reply unusable (attempt %d): %s: %r", attempt, parse.error, completion.text[:200])
        result.rejected = parse.rejected
        for raw, reason in parse.rejected:
            log.warning("manager op rejected: %s: %r", reason, raw)
        return id_map, parse, result

    def process(self, turn: Turn, *, user: str | None = None) -> TurnResult:
        """Turn one conversation turn into applied operations (or a logged NOOP)."""
        start = time.perf_counter()
        owner = user or self.bank.user
        related = self.related(turn, owner)
        id_map, parse, result = self.propose(turn, related)
        if not parse.ok:
            result.error = f"no usable reply after {result.attempts} attempts: {parse.error}"
            log.warning("turn %s is a NOOP: %s", turn.turn_id or "", result.error)
        else:
            ops = self._drop_redundant(self.to_bank_ops(parse, id_map, turn), related, result)
            if ops:
                try:
                    result.applied = self.bank.apply(ops, user=owner, actor="manager", turn=turn_reference(turn))
                except EdgeError as exc:
                    result.error = f"operations refused by the bank: {exc.message}"
                    log.warning("turn %s: %s", turn.turn_id or "", result.error)
        result.seconds = time.perf_counter() - start
        return result

    @staticmethod
    def _drop_redundant(ops: list[Op], related: list[Memory], result: TurnResult) -> list[Op]:
        """Refuse an ADD of a memory already shown and an UPDATE that changes nothing."""
        def norm(text: str) -> str:
            return " ".join(text.lower().split())

        current = {m.id: norm(m.text) for m in related}
        kept: list[Op] = []
        for op in ops:
            reason = None
            if isinstance(op, AddOp) and norm(op.text) in current.values():
                reason = "the same memory is already stored"
            elif isinstance(op, UpdateOp) and current.get(op.id) == norm(op.text):
                reason = "the update does not change the memory"
            elif isinstance(op, AddOp) and any(isinstance(k, AddOp) and norm(k.text) == norm(op.text) for k in kept):
                reason = "the same memory is added twice in one turn"
            if reason:
                result.rejected.append(({"op": type(op).__name__, "text": getattr(op, "text", None)}, reason))
                log.info("manager op dropped: %s", reason)
            else:
                kept.append(op)
        return kept

    @staticmethod
    def to_bank_ops(parse: ManagerParse, id_map: IdMap, turn: Turn) -> list[Op]:
        """Map the model's local ids back to real ones; the turn becomes each op's source."""
        sources = (turn.turn_id,) if turn.turn_id else ()
        ops: list[Op] = []
        for proposed in parse.ops:
            if proposed.op == "ADD":
                event_time = turn.time if proposed.tier == "episodic" else None
                ops.append(AddOp(proposed.text or "", proposed.tier or "semantic", event_time, sources))  # type: ignore[arg-type]
            elif proposed.op == "UPDATE":
                ops.append(UpdateOp(id_map.real(proposed.id or "") or "", proposed.text or "", None, sources))
            elif proposed.op == "DELETE":
                ops.append(DeleteOp(id_map.real(proposed.id or "") or ""))
        return ops
