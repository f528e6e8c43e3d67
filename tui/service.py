"""The one object between the chat app and `edge.Agent`.

Screens and widgets never touch the agent or the memory bank: they call this
service (from worker threads, since every call may take a while) and get
back plain values (`Memory`, `OpView`, `Listing`, `StatusInfo`). Nothing
here imports Textual, so it is tested without a screen.

A turn and a change made by hand never overlap: while a reply is being
generated (and the Manager applies its operations), edits, deletes and
undos are refused with `BusyError` instead of queueing behind it.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from edge import paths
from edge.agent import Agent, ChatResult
from edge.backends.base import Backend
from edge.bank import MIN_SIMILARITY, Memory
from edge.bundle import Bundle
from edge.errors import EdgeError
from edge.operations import AppliedOp
from edge.prompts import FACT_TIERS

Progress = Callable[[str], None]
LIST_LIMIT = 200
SEARCH_K = 50


class BusyError(EdgeError):
    """A reply is being generated; the bank cannot be changed by hand until it is done."""


@dataclass(frozen=True)
class ChatConfig:
    """What `edge chat` opens. `None` means the default under $EDGE_HOME."""

    bundle: Path | Bundle | None = None
    db: Path | None = None
    user: str = paths.DEFAULT_USER
    backend: Backend | None = None  # replaces the bundle's models (a server, or scripted replies in tests)
    text_mode: str | None = None  # "extractive" | "free"; None: the bundle's `generation.text_mode`
    source: Any = None  # an `edge.model_source.ModelChoice` (a GGUF file, a server, a bundle); used when bundle is None


@dataclass(frozen=True)
class OpView:
    """One change to the bank as the memory panel shows it."""

    action: str  # ADD | UPDATE | DELETE | RESTORE | UNDO
    label: str  # "added", "updated", "deleted", "restored", "undo: removed", ...
    memory_id: str
    text: str
    old_text: str | None = None
    actor: str = "manager"

    @classmethod
    def of(cls, op: AppliedOp, actor: str) -> "OpView":
        before = op.before or {}
        after = op.after or {}
        text = after.get("text") or before.get("text") or ""
        old = before.get("text") if op.action == "UPDATE" else None
        label = {"ADD": "added", "UPDATE": "updated", "DELETE": "deleted", "RESTORE": "restored"}.get(op.action)
        if op.action == "UNDO":
            if after.get("deleted_at") and not before.get("deleted_at"):
                label = "undo: removed"
            elif before.get("deleted_at") and not after.get("deleted_at"):
                label = "undo: restored"
            else:
                label, old = "undo: reverted", before.get("text")
        return cls(op.action, label or op.action.lower(), op.memory_id, text, old, actor)


@dataclass(frozen=True)
class TurnOutcome:
    """What a finished turn changed and how fast it ran."""

    reply: str
    ops: list[OpView]
    note: str | None  # why nothing was remembered, when the Manager changed nothing
    tokens_per_second: float
    completion_tokens: int
    cancelled: bool


@dataclass(frozen=True)
class Listing:
    """Memories to show: the newest ones, or the hits of a search."""

    memories: list[Memory]
    total: int  # live memories of the user
    query: str = ""


@dataclass(frozen=True)
class StatusInfo:
    model: str
    bundle: str
    user: str
    db: Path
    memories: int


@dataclass
class ReplyStream:
    """Iterate for the reply's text pieces; `outcome` is set once the turn (and its memory update) is done."""

    service: "ChatService"
    message: str
    cancel: threading.Event
    outcome: TurnOutcome | None = field(default=None, init=False)

    def __iter__(self) -> Iterator[str]:
        agent = self.service.agent
        if not self.service._turn_lock.acquire(blocking=False):
            raise BusyError("A reply is already being generated.", hint="Wait for it, or press Escape to cancel it.")
        try:
            stream = agent.chat(self.message, stream=True, cancel=self.cancel)
            yield from stream
            assert stream.result is not None
            self.outcome = describe_turn(stream.result)
        finally:
            self.service._turn_lock.release()


def describe_turn(result: ChatResult) -> TurnOutcome:
    remembered = result.remembered
    ops = [OpView.of(op, "manager") for op in remembered.applied] if remembered else []
    caught_up = [OpView.of(op, "manager") for earlier in result.caught_up for op in earlier.applied]
    note = None
    if result.caught_up:  # turns kept while the model was unreachable, gone over now
        ops = caught_up + ops
        note = f"also went over {len(result.caught_up)} earlier message(s) kept while the model was unreachable"
    elif remembered is None:
        note = "not sent to the Manager"
    elif remembered.error:
        note = f"nothing remembered: {remembered.error}"
    elif not ops:
        note = "nothing new to remember"
    return TurnOutcome(
        reply=result.reply, ops=ops, note=note, tokens_per_second=result.tokens_per_second,
        completion_tokens=result.completion_tokens, cancelled=result.cancelled,
    )


class ChatService:
    """Opens the agent for `config` and exposes what the chat app may do with it."""

    def __init__(self, config: ChatConfig) -> None:
        self.config = config
        self.agent: Agent | None = None
        self._turn_lock = threading.Lock()
        self._cancel: threading.Event | None = None

    # ------------------------------------------------------------------ opening

    def open(self, progress: Progress = lambda _: None) -> StatusInfo:
        """Build the default bundle if needed (first run), open the bank and load the models.

        Raises `EdgeError` (e.g. `BundleError`, `BankLockedError`, `BackendError`) with a hint.
        """
        bundle = self.config.bundle
        source = self.config.source
        if bundle is None and source is not None and not (source.is_default and not source.generation):
            progress(f"Model: {source.describe()}")
            bundle = source.open(progress)
        if bundle is not None and not isinstance(bundle, Bundle):
            progress(f"Reading the bundle {bundle}")
        bundle = Bundle.resolve(bundle, log=progress)
        progress(f"Bundle: {bundle.name}")
        db = Path(self.config.db) if self.config.db else paths.default_db()
        progress(f"Opening the memory bank {db} and loading the models ...")
        self.agent = Agent(bundle=bundle, db=db, user=self.config.user, backend=self.config.backend,
                           text_mode=self.config.text_mode)
        info = self.info()
        progress(f"Ready: {info.model}, {info.memories} memories for {info.user}.")
        return info

    @property
    def ready(self) -> bool:
        return self.agent is not None

    def info(self) -> StatusInfo:
        agent = self._agent()
        return StatusInfo(
            model=self._model_label(agent), bundle=agent.bundle.name, user=agent.user,
            db=agent.bank.path, memories=agent.bank.count(tier=FACT_TIERS),
        )

    def _model_label(self, agent: Agent) -> str:
        """The models as people call them: "SmolLM2-135M-Instruct Q4_1" when one serves every role, else
        "chat qwen2.5:3b @ http://... · memory SmolLM2-135M-Instruct Q4_1" (`edge.role_models`); a backend
        given in place of the bundle's by its name."""
        if self.config.backend is not None:
            return agent.backend.name
        chat = agent.bundle.model_label("chat")
        memory = sorted({agent.bundle.model_label(role) for role in ("manager", "answer")})
        return chat if memory == [chat] else f"chat {chat} · memory {' / '.join(memory)}"

    def close(self, wait_s: float = 60.0) -> None:
        """Cancel a reply in progress, wait for its turn to finish, then release the models and the bank."""
        if self._cancel is not None:
            self._cancel.set()
        acquired = self._turn_lock.acquire(timeout=wait_s)
        try:
            if self.agent is not None and acquired:
                self.agent.close()
                self.agent = None
        finally:
            if acquired:
                self._turn_lock.release()

    # ------------------------------------------------------------------ chatting

    def reply(self, message: str, cancel: threading.Event | None = None) -> ReplyStream:
        """A turn: iterate it for the streamed reply; then `.outcome` holds what the Manager changed."""
        self._agent()
        self._cancel = cancel or threading.Event()
        return ReplyStream(self, message, self._cancel)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    @property
    def busy(self) -> bool:
        return self._turn_lock.locked()

    # ------------------------------------------------------------------ memories

    def memories(self, query: str = "", *, limit: int = LIST_LIMIT) -> Listing:
        """The user's newest memories (newest first), or the best matches for `query`."""
        bank = self._agent().bank
        total = bank.count(tier=FACT_TIERS)
        query = query.strip()
        if query:
            hits = bank.search(query, k=SEARCH_K, scope="facts", min_similarity=MIN_SIMILARITY)
            return Listing([h.memory for h in hits], total, query)
        newest = bank.list(tier=FACT_TIERS, limit=limit, offset=max(0, total - limit))
        return Listing(list(reversed(newest)), total)

    def add(self, text: str) -> list[OpView]:
        return self._change(lambda bank: [bank.add(text, actor="user")], "ADD")

    def edit(self, memory_id: str, text: str) -> list[OpView]:
        return self._change(lambda bank: [bank.update(memory_id, text, actor="user")], "UPDATE", memory_id)

    def delete(self, memory_id: str) -> list[OpView]:
        return self._change(lambda bank: [bank.delete(memory_id, actor="user")], "DELETE", memory_id)

    def undo(self) -> list[OpView]:
        """Revert the latest change (the Manager's whole turn, or one change made by hand)."""
        with self._idle():
            return [OpView.of(op, "user") for op in self._agent().bank.undo(actor="user")]

    def _change(self, apply: Callable[[Any], list[Memory]], action: str, memory_id: str | None = None) -> list[OpView]:
        with self._idle():
            bank = self._agent().bank
            old = bank.get(memory_id).text if memory_id and action == "UPDATE" else None
            changed = apply(bank)[0]
            label = {"ADD": "added", "UPDATE": "updated", "DELETE": "deleted"}[action]
            return [OpView(action, label, changed.id, changed.text, old, "user")]

    @contextmanager
    def _idle(self) -> Iterator[None]:
        if not self._turn_lock.acquire(blocking=False):
            raise BusyError(
                "The memory bank cannot be changed while a reply is being generated.",
                hint="Wait for the reply (the Manager updates memory after it), or press Escape to cancel it.",
            )
        try:
            yield
        finally:
            self._turn_lock.release()

    def _agent(self) -> Agent:
        if self.agent is None:
            raise EdgeError("The agent is not open yet.", hint="Wait for the models to load.")
        return self.agent
