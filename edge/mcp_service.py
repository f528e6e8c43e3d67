"""What `edge mcp`'s tools call: the memory bank and both agents for one server, in plain Python (no MCP).

`MemoryService` turns a tool call into calls of `edge.Agent` and
`edge.MemoryBank`, and its results into the records below, which the MCP
server publishes as each tool's output schema (`edge.mcp_server`).

- **Users.** The service serves one user (`edge mcp --user`); a call may
  name another only when the server was started with `--allow-users`. Every
  bank call passes its owner, and the bank scopes ids by owner, so another
  user's id is "not found". Edits, undo and `ask` for another user run on
  the server's own agent and connection with that owner; only the Memory
  Manager needs an agent of the user's own (`Agent.for_user`: the same
  models, a connection of its own), and the service keeps the
  `MAX_USER_AGENTS` most recently used ones open, closing the oldest.
  Arguments are checked before any of this: a refused call opens nothing.
- **Locks.** Calls that change the bank (`add_memory`, `update_memory`,
  `delete_memory`, `restore_memory`, `undo`) and `ask` (it runs on the model
  the Manager uses) run one at a time under one lock. Reads
  (`search_memories`, `list_memories`, `get_memory`, `history`, the core
  block) run beside them on a connection of their own: a `MemoryBank` is one
  SQLite connection, and a read on the writer's connection would see a
  transaction half done (the bank locks its searches and transactions, not
  its plain reads); on its own connection (WAL) a read sees the last
  committed state and never waits for the writer. Reads take turns on that
  connection, a few milliseconds each. The MCP server runs each call on a
  worker thread.
- **Cancelling and stopping.** A change takes a `cancel` event: set while
  the call waits for the lock, the call gives up having done nothing; set
  while the Memory Manager works on a turn, the Manager stops before its
  next model call and applies none of the turn's facts (the turn is kept in
  the conversation log, pending, as when the model cannot be reached).
  `stop` sets every running call's event and refuses new calls (a server
  shutting down).
- **Errors.** Every method raises `EdgeError` subclasses with a hint, and
  every change is one bank transaction, so a refused call writes nothing. A
  SQLite error becomes the bank's own error (`CorruptBankError` for a
  damaged file, with how to restore it); any other exception is logged with
  its traceback and raised as `UnexpectedError`, which names it and says
  whether the bank changed.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time as clock
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from edge.bank import db as sqlite
from edge.bank import MIN_SIMILARITY, HistoryEntry, Memory, MemoryBank, clean_name, clean_text, text_limit
from edge.bank.opening import unusable
from edge.errors import BackendError, EdgeError, InvalidInputError, TurnInterruptedError, shorten
from edge.operations import AddOp, AppliedOp, Tier

if TYPE_CHECKING:
    from edge.agent import Agent

MAX_RESULTS = 200  # the most memories or history rows one call returns
SEARCH_POOL = 5  # a search restricted to core or semantic facts reads this many times `limit` facts, then filters
MAX_USER_AGENTS = 8  # other users' Memory Manager agents kept open (a bank connection each), least recently used closed
LOCK_POLL_S = 0.05  # how often a call waiting for the change lock looks at its cancel event
CLOSE_WAIT_S = 60.0  # how long closing waits for a running change to finish before leaving the bank to the OS

log = logging.getLogger("edge.mcp")
T = TypeVar("T")


# ----------------------------------------------------------------------------- what the tools return


class MemoryRecord(BaseModel):
    """A memory as `edge memory show --json` prints it (times are ISO 8601, UTC for created/updated/deleted)."""

    id: str
    owner: str
    tier: str = Field(description="core (always in context), semantic (a fact), episodic (a turn, verbatim)")
    text: str
    created_at: str
    updated_at: str
    event_time: str | None = Field(None, description="when the remembered event happened or the turn was said")
    source_turns: list[str] = []
    metadata: dict[str, Any] = {}
    deleted_at: str | None = Field(None, description="set when deleted (undo or restore brings it back)")
    valid_until: str | None = Field(None, description="set when a later turn superseded this fact")
    superseded_by: str | None = None
    superseded_turn: str | None = None

    @classmethod
    def of(cls, memory: Memory | dict[str, Any]) -> "MemoryRecord":
        return cls.model_validate(memory.to_dict() if isinstance(memory, Memory) else memory)


class SearchHitRecord(MemoryRecord):
    rank: int = Field(description="1 for the best hit")
    score: float = Field(description="fused rank score (vectors + keywords); higher is better")


class Change(BaseModel):
    """One operation applied to the bank: its history row, and the memory before and after it."""

    seq: int = Field(description="the history row's number")
    action: str = Field(description="ADD, UPDATE, DELETE, RESTORE or UNDO")
    memory_id: str
    text: str | None = Field(description="the memory's text after the operation (before it, for a DELETE)")
    before: MemoryRecord | None
    after: MemoryRecord | None

    @classmethod
    def of(cls, op: AppliedOp) -> "Change":
        before = MemoryRecord.of(op.before) if op.before else None
        after = MemoryRecord.of(op.after) if op.after else None
        shown = after if after is not None and op.action != "DELETE" else before
        return cls(seq=op.seq, action=op.action, memory_id=op.memory_id, text=shown.text if shown else None,
                   before=before, after=after)


class Refusal(BaseModel):
    op: Any = Field(description="the operation the Memory Manager proposed")
    reason: str


class TurnRecord(BaseModel):
    speaker: str
    text: str
    time: str | None
    turn_id: str | None


class Added(BaseModel):
    """What add_memory did: with infer, the turn's log entry and the Manager's operations applied and refused."""

    user: str
    inferred: bool = Field(description="true: the Memory Manager chose the operations; false: stored as given")
    turn: TurnRecord | None = None
    logged: str | None = Field(None, description="id of the turn's entry in the episodic log")
    pending: bool = Field(False, description=(
        "true: the turn is kept in the episodic log, but the Memory Manager could not go over it yet (the model "
        "could not be reached, or the call was interrupted); it does so once the model answers again, with a later "
        "turn. Do not send the turn again."))
    applied: list[Change]
    rejected: list[Refusal] = []
    error: str | None = Field(None, description="why the Manager made no operation, when it failed to")
    note: str | None = Field(None, description="what became of the turn, when it is pending")
    seconds: float


class SearchResults(BaseModel):
    user: str
    query: str
    results: list[SearchHitRecord]


class MemoryList(BaseModel):
    user: str
    total: int = Field(description="current memories of this user (and tier), of which the latest are listed")
    memories: list[MemoryRecord] = Field(description="oldest first")


class ShownMemory(BaseModel):
    id: str
    tier: str
    text: str
    event_time: str | None


class Answer(BaseModel):
    """The Answer Agent's result, as `edge ask --json` prints it (`AnswerResult.to_dict()`)."""

    model_config = ConfigDict(extra="allow")

    question: str
    answer: str = Field(description='the answer, or "unknown" when the memories do not hold it')
    supported: bool = Field(description="whether the answer's words are in the memories the agent was shown")
    memory_ids: list[str] = Field(description="the memories the answer came from")
    memories: list[ShownMemory]
    retrieved: list[str]
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = Field(description="seconds spent retrieving and generating")
    error: str | None


class HistoryRecord(BaseModel):
    seq: int
    at: str = Field(description="when the change was made (ISO 8601, UTC)")
    action: str = Field(description="ADD, UPDATE, DELETE, RESTORE or UNDO")
    memory_id: str
    actor: str = Field(description="manager, user, api (a tool call) or import")
    text: str | None = Field(description="the memory's text after the change (before it, for a DELETE)")
    before_text: str | None
    turn: str | None = Field(description="the turn the change came from (the Manager's changes)")
    reverts: int | None = Field(description="for an UNDO: the row it reverted")
    undone_by: int | None = Field(description="the UNDO row that reverted this change, if any")

    @classmethod
    def of(cls, entry: HistoryEntry) -> "HistoryRecord":
        before = (entry.before or {}).get("text")
        after = (entry.after or {}).get("text")
        return cls(seq=entry.seq, at=entry.at, action=entry.action, memory_id=entry.memory_id, actor=entry.actor,
                   text=before if entry.action == "DELETE" else after or before, before_text=before,
                   turn=entry.turn, reverts=entry.reverts, undone_by=entry.undone_by)


class History(BaseModel):
    user: str
    entries: list[HistoryRecord] = Field(description="oldest first")


class Undone(BaseModel):
    user: str
    undone: list[Change] = Field(description="the reverts, newest change first")


# ----------------------------------------------------------------------------- errors of the service itself


class ServerStoppingError(EdgeError):
    """The server is shutting down: the call was not run."""

    def __init__(self) -> None:
        super().__init__("edge mcp is stopping; this call was not run and changed nothing.",
                         hint="Call it again once the server is running again.")


class CallCancelledError(EdgeError):
    """The call was cancelled while it waited for its turn: it did nothing."""

    def __init__(self) -> None:
        super().__init__("The call was cancelled before it started; it changed nothing.")


class UnexpectedError(EdgeError):
    """An exception edge does not expect: named, with whether the bank changed (the traceback is in the log)."""


# ----------------------------------------------------------------------------- the service behind the tools


def is_date(text: str | None) -> bool:
    """Whether `text` is an ISO date with no time of day ("2025-03-02")."""
    return text is not None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) is not None


def checked_name(value: str, what: str) -> str:
    """A user or speaker name as given (stripped); `InvalidInputError` otherwise (`edge.bank.clean_name`)."""
    return clean_name(value, what=what)


class MemoryService:
    """The memory bank and both agents for MCP tool calls: users, one lock for changes, a connection for reads.

    `agent` serves the default user (the server's `--user`) and owns the
    models; `allow_users` lets a call name another user of the same bank.
    Every method raises `EdgeError` subclasses with a hint (`InvalidInputError`
    for a bad argument, `MemoryNotFoundError` for an id this user has not,
    `NothingToUndoError`, `BackendError` when the model fails to answer,
    `CorruptBankError` for a damaged file, `UnexpectedError` for a bug).
    """

    def __init__(self, agent: "Agent", *, allow_users: bool = False, max_user_agents: int = MAX_USER_AGENTS) -> None:
        self.agent = agent
        self.user = agent.user
        self.allow_users = allow_users
        self.max_user_agents = max_user_agents
        self._others: OrderedDict[str, Agent] = OrderedDict()  # other users' agents, least recently used first
        self._changes = threading.Lock()  # changes to the bank and model calls, one at a time
        # One SQLite connection does one thing at a time: reads take turns on it (milliseconds each).
        self._reading = threading.Lock()
        self._running: set[threading.Event] = set()  # the cancel events of the changes under way
        self._running_lock = threading.Lock()
        self._stopping = threading.Event()
        self.reader = MemoryBank.open(agent.bank.path, agent.bank.embedder, user=agent.user, create=False)

    @property
    def path(self) -> Path:
        return self.agent.bank.path

    @property
    def open_user_agents(self) -> int:
        """How many other users' agents are open (at most `max_user_agents`)."""
        return len(self._others)

    def stop(self) -> None:
        """Stop serving: changes under way stop before they apply a turn's facts, and new calls are refused.

        Safe from a signal handler or another thread: it only sets events.
        """
        self._stopping.set()
        with self._running_lock:
            for event in self._running:
                event.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        """Close the read connection and every agent (the models last, with the server's own agent).

        Waits up to `CLOSE_WAIT_S` for a change under way (after `stop` it
        ends within a model call); past that the agents are left open for
        the process's exit (the bank stays consistent: each change is one
        transaction).
        """
        self.stop()
        with self._reading:
            self.reader.close()
        if not self._changes.acquire(timeout=CLOSE_WAIT_S):
            log.warning("a change is still running after %.0f s; the bank is left to close with the process",
                        CLOSE_WAIT_S)
            return
        try:
            while self._others:
                self._others.popitem(last=False)[1].close()
            self.agent.close()
        finally:
            self._changes.release()

    # ------------------------------------------------------------------ users

    def owner(self, user: str | None) -> str:
        """Whose memories a call reads or changes: the server's user, or `user` where the server allows it."""
        if user is None or user == self.user:
            return self.user
        name = checked_name(user, "user name")
        if name != self.user and not self.allow_users:
            raise InvalidInputError(
                f"This server serves user {shorten(repr(self.user))} only; a call cannot name user "
                f"{shorten(repr(name))}.",
                hint="Leave out `user`, or start the server with `edge mcp --allow-users` to let calls name users.",
            )
        return name

    def _agent_for(self, owner: str) -> "Agent":
        """The agent whose Memory Manager remembers `owner`'s turns; only under the change lock.

        Another user's agent is opened on first use and kept among the
        `max_user_agents` most recently used; the least recently used one is
        closed to make room (safe: every use of these agents holds the lock).
        """
        if owner == self.user:
            return self.agent
        agent = self._others.pop(owner, None)
        if agent is None:
            while self._others and len(self._others) >= self.max_user_agents:
                self._others.popitem(last=False)[1].close()
            agent = self.agent.for_user(owner)
        self._others[owner] = agent  # the most recently used, last
        return agent

    # ------------------------------------------------------------------ calls: cancelling, the lock, errors

    @contextmanager
    def _change(self, owner: str, cancel: threading.Event | None) -> Iterator[threading.Event]:
        """Run a change: registered for `stop`, under the change lock (given up when cancelled while waiting),
        with its errors as `_errors` makes them. Yields the call's cancel event."""
        cancel = cancel or threading.Event()
        if self._stopping.is_set():
            raise ServerStoppingError()
        with self._running_lock:
            self._running.add(cancel)
        try:
            if self._stopping.is_set():
                cancel.set()
            while not self._changes.acquire(timeout=LOCK_POLL_S):
                if cancel.is_set():
                    raise ServerStoppingError() if self._stopping.is_set() else CallCancelledError()
            try:
                if cancel.is_set():  # while it waited: it has not started, so it does nothing
                    raise ServerStoppingError() if self._stopping.is_set() else CallCancelledError()
                with self._errors(owner, change=True):
                    yield cancel
            finally:
                self._changes.release()
        finally:
            with self._running_lock:
                self._running.discard(cancel)

    @contextmanager
    def _read(self, owner: str) -> Iterator[None]:
        if self._stopping.is_set():
            raise ServerStoppingError()
        with self._reading, self._errors(owner, change=False):
            yield

    @contextmanager
    def _errors(self, owner: str, *, change: bool) -> Iterator[None]:
        """`EdgeError`s as they are; a SQLite error as the bank's own error; anything else `UnexpectedError`."""
        before, started = None, False
        try:
            before = self._latest_change(owner) if change else None
            started = True
            yield
        except EdgeError:
            raise
        except sqlite.DatabaseError as exc:
            raise unusable(self.path, exc, "changing it" if change else "reading it") from exc
        except Exception as exc:
            log.exception("unexpected %s in a %s for user %r", type(exc).__name__, "change" if change else "read",
                          owner)
            if not change:
                state = "Nothing was changed (a read)."
            elif not started:
                state = "The bank was left unchanged (the call did not start)."
            else:
                try:
                    state = ("The bank was left unchanged." if self._latest_change(owner) == before
                             else "The bank changed before the error: call history to see what.")
                except Exception:  # noqa: BLE001 - the bank itself may be what failed
                    state = "Whether the bank changed is unknown: call history to see."
            raise UnexpectedError(f"Unexpected {type(exc).__name__}: {shorten(str(exc), 200)}. {state}",
                                  hint="This is a bug in edge: please report it with the traceback the server "
                                  "wrote to its log (stderr).") from exc

    def _latest_change(self, owner: str) -> int | None:
        """The seq of `owner`'s latest history row (None: none yet), read on the read connection."""
        with self._reading:
            entries = self.reader.history(user=owner, limit=1)
        return entries[-1].seq if entries else None

    # ------------------------------------------------------------------ changes (one at a time)

    def add_memory(self, text: str, *, speaker: str | None = None, time: str | None = None, infer: bool = True,
                   tier: Tier | None = None, user: str | None = None, cancel: threading.Event | None = None) -> Added:
        """A turn through the Memory Manager (`Agent.remember`: logged, grounded, one transaction), or with
        `infer=False` the text stored as given in `tier` (default semantic), as `edge memory add` does.

        Every argument is checked before the lock is taken or a model is
        asked. A model that cannot be reached, or a `cancel` set while the
        Manager works, is not an error: the turn is kept in the log and the
        result says it is `pending`.
        """
        from edge.dates import parse_time

        owner = self.owner(user)
        at = parse_time(time) if time is not None else None
        if infer:
            if tier is not None:
                raise InvalidInputError("`tier` is for a memory stored as given (infer=false); the Memory Manager "
                                        "chooses the tier of what it keeps.",
                                        hint="Leave out `tier`, or set infer=false.")
            said_by = checked_name(speaker, "speaker") if speaker is not None else None
            clean_text(text, what="turn", max_chars=text_limit("episodic"))
            return self._remember(owner, text, said_by, time, cancel)
        if speaker is not None:
            raise InvalidInputError("`speaker` is for a conversation turn (infer=true); a memory stored as given "
                                    "has no speaker.", hint="Leave out `speaker`, or set infer=true.")
        tier = tier or "semantic"
        text = clean_text(text, max_chars=text_limit(tier))
        start = clock.perf_counter()
        # As the log writes a turn's time (ISO, to the minute); a date alone stays a date.
        event_time = None if at is None else (at.date().isoformat() if is_date(time)
                                              else at.isoformat(timespec="minutes"))
        with self._change(owner, cancel):
            applied = self.agent.bank.apply([AddOp(text, tier, event_time)], user=owner, actor="api")
        return Added(user=owner, inferred=False, applied=[Change.of(op) for op in applied],
                     seconds=round(clock.perf_counter() - start, 4))

    def _remember(self, owner: str, text: str, speaker: str | None, time: str | None,
                  cancel: threading.Event | None) -> Added:
        from edge.agent import TURN_KEPT, now_stamp
        from edge.prompts import Turn

        start = clock.perf_counter()
        with self._change(owner, cancel) as cancel:
            agent = self._agent_for(owner)
            turn = Turn(speaker or agent.speaker, text, time or now_stamp(), "t" + secrets.token_hex(5))
            record = TurnRecord(speaker=turn.speaker, text=turn.text, time=turn.time, turn_id=turn.turn_id)
            try:
                result = agent.remember([turn], cancel=cancel, wait=True).turns[0]
            except (BackendError, TurnInterruptedError) as exc:
                logged = self._logged(agent.bank, owner, turn.turn_id)
                if logged is None:  # not kept after all: the error is the call's
                    raise
                if isinstance(exc, TurnInterruptedError):
                    why = ("the server is stopping" if self._stopping.is_set()
                           else "the call was cancelled, or its client went away")
                    log.warning("add_memory interrupted (%s): turn %s of user %r is kept in the episodic "
                                "log as %s, pending for the Memory Manager; none of its facts were applied",
                                why, turn.turn_id, owner, logged)
                    error = f"Interrupted ({why}) before the Memory Manager applied the turn's facts."
                else:
                    error = exc.message
                return Added(user=owner, inferred=True, turn=record, logged=logged, pending=True, applied=[],
                             error=error, note=f"{TURN_KEPT} Do not send it again.",
                             seconds=round(clock.perf_counter() - start, 4))
        return Added(
            user=owner, inferred=True, logged=result.logged.memory_id if result.logged else None, turn=record,
            applied=[Change.of(op) for op in result.applied],
            rejected=[Refusal(op=raw, reason=reason) for raw, reason in result.rejected],
            error=result.error, seconds=round(result.seconds, 4),
        )

    @staticmethod
    def _logged(bank: MemoryBank, owner: str, turn_id: str | None) -> str | None:
        """The id of the episodic log entry the Manager wrote for `turn_id`, from the latest history rows."""
        for entry in reversed(bank.history(user=owner, limit=5)):
            try:
                said = json.loads(entry.turn or "{}")
            except ValueError:
                continue
            if entry.action == "ADD" and isinstance(said, dict) and said.get("id") == turn_id:
                return entry.memory_id
        return None

    def update_memory(self, memory_id: str, text: str, *, user: str | None = None,
                      cancel: threading.Event | None = None) -> MemoryRecord:
        owner = self.owner(user)
        with self._change(owner, cancel):
            return MemoryRecord.of(self.agent.bank.update(memory_id, text, user=owner, actor="api"))

    def delete_memory(self, memory_id: str, *, user: str | None = None,
                      cancel: threading.Event | None = None) -> MemoryRecord:
        owner = self.owner(user)
        with self._change(owner, cancel):
            return MemoryRecord.of(self.agent.bank.delete(memory_id, user=owner, actor="api"))

    def restore_memory(self, memory_id: str, *, user: str | None = None,
                       cancel: threading.Event | None = None) -> MemoryRecord:
        """Bring back a deleted (or superseded) memory, as `edge memory restore` does."""
        owner = self.owner(user)
        with self._change(owner, cancel):
            return MemoryRecord.of(self.agent.bank.restore(memory_id, user=owner, actor="api"))

    def undo(self, steps: int = 1, *, user: str | None = None, cancel: threading.Event | None = None) -> Undone:
        owner = self.owner(user)
        with self._change(owner, cancel):
            return Undone(user=owner, undone=[Change.of(op) for op in
                                              self.agent.bank.undo(steps, user=owner, actor="api")])

    def ask(self, question: str, *, user: str | None = None, cancel: threading.Event | None = None) -> Answer:
        """The Answer Agent's answer; under the change lock, as it runs on the model the Manager uses.

        Another user's question runs on the server's own Answer Agent and
        connection with that owner (`Agent.ask` does the same for its user).
        """
        owner = self.owner(user)
        clean_text(question, what="question")
        with self._change(owner, cancel):
            result = self.agent.answerer.answer(self.agent.bank, question, user=owner)
        return Answer.model_validate(result.to_dict())

    # ------------------------------------------------------------------ reads (beside the changes)

    def search_memories(self, query: str, *, limit: int = 10, tier: Tier | None = None,
                        user: str | None = None) -> SearchResults:
        """Hybrid search as `edge memory search` runs it (hits that match no keyword must be close in meaning)."""
        owner = self.owner(user)
        scope = "all" if tier is None else "episodic" if tier == "episodic" else "facts"
        k = limit if tier in (None, "episodic") else limit * SEARCH_POOL
        with self._read(owner):
            hits = self.reader.search(query, k=k, user=owner, scope=scope,  # type: ignore[arg-type]
                                      min_similarity=MIN_SIMILARITY)
        kept = [h for h in hits if tier is None or h.memory.tier == tier][:limit]
        return SearchResults(user=owner, query=query, results=[
            SearchHitRecord(**h.memory.to_dict(), rank=rank, score=h.score) for rank, h in enumerate(kept, start=1)])

    def list_memories(self, *, tier: Tier | None = None, limit: int = 50, user: str | None = None) -> MemoryList:
        """The latest `limit` current memories (of one tier or all), oldest first."""
        owner = self.owner(user)
        with self._read(owner), self.reader.snapshot():
            total = self.reader.count(user=owner, tier=tier)
            memories = self.reader.list(user=owner, tier=tier, limit=limit, offset=max(0, total - limit))
        return MemoryList(user=owner, total=total, memories=[MemoryRecord.of(m) for m in memories])

    def get_memory(self, memory_id: str, *, user: str | None = None) -> MemoryRecord:
        owner = self.owner(user)
        with self._read(owner):
            return MemoryRecord.of(self.reader.get(memory_id, user=owner))

    def history(self, *, limit: int = 20, user: str | None = None) -> History:
        """The latest `limit` changes of the user's memories, oldest first."""
        owner = self.owner(user)
        with self._read(owner):
            entries = self.reader.history(user=owner, limit=limit)
        return History(user=owner, entries=[HistoryRecord.of(e) for e in entries])

    def core_block(self) -> str:
        """The server user's core memories, as the agents see them in every prompt."""
        from edge.answer import core_block

        with self._read(self.user):
            return core_block(self.reader, self.user)
