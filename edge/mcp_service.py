"""What `edge mcp`'s tools call: the memory bank and both agents for one server, in plain Python (no MCP).

`MemoryService` turns a tool call into calls of `edge.Agent` and
`edge.MemoryBank`, and its results into the records below, which the MCP
server publishes as each tool's output schema (`edge.mcp_server`).

- **Users.** The service serves one user (`edge mcp --user`); a call may
  name another only when the server was started with `--allow-users`. Every
  bank call passes its owner, and the bank scopes ids by owner, so another
  user's id is "not found". Other users' agents share the first agent's
  models (`Agent.for_user`): nothing is loaded twice.
- **Locks.** Calls that change the bank (`add_memory`, `update_memory`,
  `delete_memory`, `undo`) and `ask` (it runs on the model the Manager
  uses) run one at a time under one lock. Reads (`search_memories`,
  `list_memories`, `get_memory`, `history`, the core block) run beside them
  on a connection of their own: a `MemoryBank` is one SQLite connection, and
  a read on the writer's connection would see a transaction half done (the
  bank locks its searches and transactions, not its plain reads); on its own
  connection (WAL) a read sees the last committed state and never waits for
  the writer. Reads take turns on that connection, a few milliseconds each.
  The MCP server runs each call on a worker thread.
- **Errors.** Every method raises `EdgeError` subclasses with a hint, and
  every change is one bank transaction, so a refused call writes nothing.
"""
from __future__ import annotations

import threading
import time as clock
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edge.bank import MIN_SIMILARITY, HistoryEntry, Memory, MemoryBank, clean_text
from edge.errors import InvalidInputError
from edge.operations import AddOp, AppliedOp, Tier

if TYPE_CHECKING:
    from edge.agent import Agent

MAX_NAME_CHARS = 100  # a user or speaker name
MAX_RESULTS = 200  # the most memories or history rows one call returns
SEARCH_POOL = 5  # a search restricted to core or semantic facts reads this many times `limit` facts, then filters


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
    applied: list[Change]
    rejected: list[Refusal] = []
    error: str | None = Field(None, description="why the Manager made no operation, when it failed to")
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


# ----------------------------------------------------------------------------- the service behind the tools


def checked_name(value: str, what: str) -> str:
    """A user or speaker name as given (stripped); `InvalidInputError` for an empty, binary or overlong one."""
    if isinstance(value, str) and len(value.strip()) > MAX_NAME_CHARS:
        raise InvalidInputError(f"The {what} is {len(value.strip())} characters; at most {MAX_NAME_CHARS} are allowed.",
                                hint=f"Give a name as the {what}, not a sentence.")
    return clean_text(value, what=what, max_chars=MAX_NAME_CHARS)


class MemoryService:
    """The memory bank and both agents for MCP tool calls: users, one lock for changes, a connection for reads.

    `agent` serves the default user (the server's `--user`) and owns the
    models; `allow_users` lets a call name another user of the same bank.
    Every method raises `EdgeError` subclasses with a hint (`InvalidInputError`
    for a bad argument, `MemoryNotFoundError` for an id this user has not,
    `NothingToUndoError`, `BackendError` when the model fails).
    """

    def __init__(self, agent: "Agent", *, allow_users: bool = False) -> None:
        self.agent = agent
        self.user = agent.user
        self.allow_users = allow_users
        self._agents: dict[str, Agent] = {agent.user: agent}
        self._changes = threading.Lock()  # changes to the bank and model calls, one at a time
        self._opening = threading.Lock()  # creating another user's agent
        # One SQLite connection does one thing at a time: reads take turns on it (milliseconds each).
        self._reading = threading.Lock()
        self.reader = MemoryBank.open(agent.bank.path, agent.bank.embedder, user=agent.user, create=False)

    @property
    def path(self) -> Path:
        return self.agent.bank.path

    def close(self) -> None:
        """Close the read connection and every agent (the models last, with the server's own agent)."""
        with self._reading:
            self.reader.close()
        for user, agent in list(self._agents.items()):
            if user != self.user:
                agent.close()
        self.agent.close()

    # ------------------------------------------------------------------ users

    def owner(self, user: str | None) -> str:
        """Whose memories a call reads or changes: the server's user, or `user` where the server allows it."""
        if user is None or user == self.user:
            return self.user
        name = checked_name(user, "user name")
        if name != self.user and not self.allow_users:
            raise InvalidInputError(
                f"This server serves user {self.user!r} only; a call cannot name user {name!r}.",
                hint="Leave out `user`, or start the server with `edge mcp --allow-users` to let calls name users.",
            )
        return name

    def agent_for(self, user: str | None) -> "Agent":
        owner = self.owner(user)
        with self._opening:
            if owner not in self._agents:
                self._agents[owner] = self.agent.for_user(owner)
            return self._agents[owner]

    # ------------------------------------------------------------------ changes (one at a time)

    def add_memory(self, text: str, *, speaker: str | None = None, time: str | None = None, infer: bool = True,
                   tier: Tier | None = None, user: str | None = None) -> Added:
        """A turn through the Memory Manager (`Agent.remember`: logged, grounded, one transaction), or with
        `infer=False` the text stored as given in `tier` (default semantic), as `edge memory add` does."""
        agent = self.agent_for(user)
        if infer:
            if tier is not None:
                raise InvalidInputError("`tier` is for a memory stored as given (infer=false); the Memory Manager "
                                        "chooses the tier of what it keeps.",
                                        hint="Leave out `tier`, or set infer=false.")
            turn: dict[str, Any] = {"text": text, "time": time}
            if speaker is not None:
                turn["speaker"] = checked_name(speaker, "speaker")
            with self._changes:
                result = agent.remember([turn]).turns[0]
            return Added(
                user=agent.user, inferred=True, logged=result.logged.memory_id if result.logged else None,
                turn=TurnRecord(speaker=result.turn.speaker, text=result.turn.text, time=result.turn.time,
                                turn_id=result.turn.turn_id),
                applied=[Change.of(op) for op in result.applied],
                rejected=[Refusal(op=raw, reason=reason) for raw, reason in result.rejected],
                error=result.error, seconds=round(result.seconds, 4),
            )
        if speaker is not None:
            raise InvalidInputError("`speaker` is for a conversation turn (infer=true); a memory stored as given "
                                    "has no speaker.", hint="Leave out `speaker`, or set infer=true.")
        start = clock.perf_counter()
        with self._changes:
            applied = agent.bank.apply([AddOp(text, tier or "semantic", time)], actor="api")
        return Added(user=agent.user, inferred=False, applied=[Change.of(op) for op in applied],
                     seconds=round(clock.perf_counter() - start, 4))

    def update_memory(self, memory_id: str, text: str, *, user: str | None = None) -> MemoryRecord:
        agent = self.agent_for(user)
        with self._changes:
            return MemoryRecord.of(agent.bank.update(memory_id, text, actor="api"))

    def delete_memory(self, memory_id: str, *, user: str | None = None) -> MemoryRecord:
        agent = self.agent_for(user)
        with self._changes:
            return MemoryRecord.of(agent.bank.delete(memory_id, actor="api"))

    def undo(self, steps: int = 1, *, user: str | None = None) -> Undone:
        agent = self.agent_for(user)
        with self._changes:
            return Undone(user=agent.user, undone=[Change.of(op) for op in agent.bank.undo(steps, actor="api")])

    def ask(self, question: str, *, user: str | None = None) -> Answer:
        """The Answer Agent's answer; under the change lock, as it runs on the model the Manager uses."""
        agent = self.agent_for(user)
        with self._changes:
            return Answer.model_validate(agent.ask(question).to_dict())

    # ------------------------------------------------------------------ reads (beside the changes)

    def search_memories(self, query: str, *, limit: int = 10, tier: Tier | None = None,
                        user: str | None = None) -> SearchResults:
        """Hybrid search as `edge memory search` runs it (hits that match no keyword must be close in meaning)."""
        owner = self.owner(user)
        scope = "all" if tier is None else "episodic" if tier == "episodic" else "facts"
        k = limit if tier in (None, "episodic") else limit * SEARCH_POOL
        with self._reading:
            hits = self.reader.search(query, k=k, user=owner, scope=scope,  # type: ignore[arg-type]
                                      min_similarity=MIN_SIMILARITY)
        kept = [h for h in hits if tier is None or h.memory.tier == tier][:limit]
        return SearchResults(user=owner, query=query, results=[
            SearchHitRecord(**h.memory.to_dict(), rank=rank, score=h.score) for rank, h in enumerate(kept, start=1)])

    def list_memories(self, *, tier: Tier | None = None, limit: int = 50, user: str | None = None) -> MemoryList:
        """The latest `limit` current memories (of one tier or all), oldest first."""
        owner = self.owner(user)
        with self._reading, self.reader.snapshot():
            total = self.reader.count(user=owner, tier=tier)
            memories = self.reader.list(user=owner, tier=tier, limit=limit, offset=max(0, total - limit))
        return MemoryList(user=owner, total=total, memories=[MemoryRecord.of(m) for m in memories])

    def get_memory(self, memory_id: str, *, user: str | None = None) -> MemoryRecord:
        owner = self.owner(user)
        with self._reading:
            return MemoryRecord.of(self.reader.get(memory_id, user=owner))

    def history(self, *, limit: int = 20, user: str | None = None) -> History:
        """The latest `limit` changes of the user's memories, oldest first."""
        owner = self.owner(user)
        with self._reading:
            entries = self.reader.history(user=owner, limit=limit)
        return History(user=owner, entries=[HistoryRecord.of(e) for e in entries])

    def core_block(self) -> str:
        """The server user's core memories, as the agents see them in every prompt."""
        from edge.answer import core_block

        with self._reading:
            return core_block(self.reader, self.user)
