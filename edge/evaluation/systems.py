"""The systems `edge eval` compares, on the same conversation and the same model.

    full-context      no memory: as many of the newest raw turns as fit the
                      context window, then the Answer Agent's prompt over them
    rag-turns         every raw turn stored as a memory (no Manager); the
                      Answer Agent over the top-k retrieved
    manager-prompted  our Memory Manager and Answer Agent, untrained (base
                      model, no adapters)
    bundle            `edge.Agent` on the bundle as shipped (its trained
                      adapters when it has them)
    bundle-log-only   the same `edge.Agent`, its Answer Agent with its
                      adapter, over the episodic log alone: every turn is
                      logged as the runtime logs it and no Manager runs, so
                      `bundle` minus this is what the Manager's facts add

Every system answers with the prompt and schema of `edge.prompts` and
greedy decoding, so what differs is only what reaches the context. Each
is driven the same way: `open(conversation, workdir)`, `ingest_turn(...)`
for every turn in time order, then `answer(question)`. Systems that keep
a bank keep it in `workdir/bank.db`, so an interrupted run resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edge.answer import AnswerAgent
from edge.backends.base import Backend
from edge.bank import Memory, MemoryBank
from edge.bundle import Bundle
from edge.embedder import Embedder
from edge.errors import EdgeError
from edge.generation import GenerationConfig
from edge.locomo import Conversation, LocoTurn, Session
from edge.manager import MemoryManager, log_entry_for, turn_reference
from edge.model_calls import shown_memories, to_messages
from edge.operations import AddOp
from edge.prompts import Turn, answer_messages, memory_line

BANK_USER = "locomo"
QUESTION_ALLOWANCE = 64  # tokens kept free for the question in full-context (LoCoMo's are shorter)


@dataclass
class EvalContext:
    """What every system shares: the bundle, one loaded model and the embedder."""

    bundle: Bundle
    backend: Backend
    embedder: Embedder
    # The bundle's decoding settings with the evaluation's context window and k: one object, which every system
    # reads and the run's fingerprint records (`edge.generation`).
    generation: GenerationConfig
    manager_max_tokens: int | None = None  # None: the Manager's own default

    @classmethod
    def load(cls, bundle: Bundle, *, n_ctx: int = 8192, answer_k: int | None = None) -> "EvalContext":
        """Load the bundle's answer model (with the bundle's adapters, used only by `bundle`).

        `answer_k` None: the bundle's own (`generation.answer_k`), as `edge.Agent` reads it. The context
        window is what the backend could load of `n_ctx`.
        """
        bundle.check_compatible()
        backend = bundle.load_backend("answer", n_ctx=n_ctx)  # decoded as `edge.Agent` decodes the bundle
        generation = bundle.generation.override(n_ctx=int(backend.n_ctx), answer_k=answer_k)
        return cls(bundle=bundle, backend=backend, embedder=bundle.load_embedder(), generation=generation)

    def close(self) -> None:
        self.backend.close()


@dataclass
class SystemAnswer:
    answer: str
    context_turns: list[str]  # source turns of everything shown to the answer model
    used_turns: list[str]  # source turns of the memories the model said it used
    prompt_tokens: int
    seconds: float
    shown: int  # memories (or raw turns) in the prompt
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # `context_turns` split by memory kind: "episodic" (the verbatim turn log) and "fact" (semantic and core
    # memories the Manager wrote), each the source turns of the memories of that kind shown.
    context_turns_by_tier: dict[str, list[str]] = field(default_factory=dict)
    # The answers the model could have given (`AnswerResult.offered`): extractive spans of what it was shown, [] when
    # nothing was, None for free text (any answer was possible: no ceiling to measure).
    offered: list[str] | None = None


def as_turn(session: Session, turn: LocoTurn) -> Turn:
    return Turn(speaker=turn.speaker, text=turn.full_text, time=session.date_time, turn_id=turn.dia_id)


def session_time(session: Session) -> str:
    """The session's date as edge stores times (ISO, to the minute)."""
    from edge.dates import parse_time

    at = parse_time(session.date_time)
    return at.isoformat(timespec="minutes") if at else session.date_time


def turn_line(turn: LocoTurn) -> str:
    return f"{turn.speaker}: {turn.full_text}"


def source_turns(memories: list[Memory]) -> list[str]:
    return list(dict.fromkeys(t for m in memories for t in m.source_turns))


class System:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    keeps_bank: ClassVar[bool] = True  # False: nothing to resume, ingest is replayed on every run

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.bank: MemoryBank | None = None

    def open(self, conversation: Conversation, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.conversation = conversation
        self.bank = MemoryBank.open(workdir / "bank.db", self.ctx.embedder, user=BANK_USER)

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        """Take in one turn; returns what to log about it (counts, errors)."""
        raise NotImplementedError

    def ingest(self, conversation: Conversation) -> list[float]:
        """Every turn in time order; the seconds each took."""
        seconds = []
        for session, turn in conversation.turns():
            start = time.perf_counter()
            self.ingest_turn(session, turn)
            seconds.append(time.perf_counter() - start)
        return seconds

    def answer(self, question: str) -> SystemAnswer:
        raise NotImplementedError

    def size(self) -> dict[str, int]:
        """Live memories and bytes on disk of the bank (0 for systems without one)."""
        if self.bank is None:
            return {"memories": 0, "bytes": 0}
        path = self.bank.path
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return {"memories": self.bank.count(), "bytes": sum(p.stat().st_size for p in files if p.exists())}

    def close(self) -> None:
        if self.bank is not None:
            self.bank.close()
            self.bank = None

    @staticmethod
    def from_agent_answer(result: Any, seconds: float) -> SystemAnswer:
        """An Answer Agent's `AnswerResult` as the evaluation scores it: the answer, the turns it was shown and
        used, its offered spans, its time."""
        return SystemAnswer(
            answer=result.answer,
            context_turns=source_turns(result.retrieved),
            used_turns=source_turns(result.memories),
            prompt_tokens=int(result.prompt_tokens),
            seconds=seconds,
            shown=len(result.retrieved),
            error=result.error,
            timings=dict(result.timings),
            context_turns_by_tier={
                "episodic": source_turns([m for m in result.retrieved if m.tier == "episodic"]),
                "fact": source_turns([m for m in result.retrieved if m.tier != "episodic"]),
            },
            offered=getattr(result, "offered", None),
        )


class FullContext(System):
    name = "full-context"
    summary = "newest raw turns that fit the context window, no memory"
    keeps_bank = False

    def open(self, conversation: Conversation, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.conversation = conversation
        self.turns: list[Memory] = []
        self.turn_tokens: list[int] = []
        self._window: tuple[tuple[int, int], list[Memory]] | None = None

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        memory = Memory(
            id=turn.dia_id, owner=BANK_USER, tier="episodic", text=turn_line(turn), created_at="", updated_at="",
            event_time=session_time(session), source_turns=(turn.dia_id,),
        )
        self.turns.append(memory)
        # The line as the prompt shows it, e.g. "[123] 8 May 2023: Ann: hi".
        _, shown = shown_memories([memory])
        self.turn_tokens.append(self.ctx.backend.count_tokens(memory_line(shown[0])) + 3)  # + longer ids, newline
        self._window = None
        return {}

    def window(self) -> list[Memory]:
        """The newest turns that fit, oldest first; the same for every question (so the prefix is reused)."""
        key = (len(self.turns), self.ctx.generation.n_ctx)  # a new turn or another context window: fit again
        if self._window is None or self._window[0] != key:
            empty = to_messages(answer_messages("", []))
            fixed = sum(self.ctx.backend.count_tokens(m.content) + 8 for m in empty)
            budget = self.ctx.generation.n_ctx - AnswerAgent(self.ctx.backend).max_tokens - fixed - QUESTION_ALLOWANCE
            kept, used = 0, 0
            for tokens in reversed(self.turn_tokens):
                if used + tokens > budget:
                    break
                used += tokens
                kept += 1
            self._window = (key, self.turns[len(self.turns) - kept :])
        return self._window[1]

    def answer(self, question: str) -> SystemAnswer:
        start = time.perf_counter()
        answerer = AnswerAgent(self.ctx.backend, adapter=None, text_mode=self.ctx.generation.text_mode)
        result = answerer.answer_from(question, self.window())
        return self.from_agent_answer(result, time.perf_counter() - start)

    def size(self) -> dict[str, int]:
        return {"memories": 0, "bytes": 0}


class RagTurns(System):
    name = "rag-turns"
    summary = "every raw turn stored as a memory, no Manager; Answer Agent over top-k"

    def open(self, conversation: Conversation, workdir: Path) -> None:
        super().open(conversation, workdir)
        self.answerer = AnswerAgent(self.ctx.backend, k=self.ctx.generation.answer_k, adapter=None, text_mode=self.ctx.generation.text_mode,
                                    answer_tokens=self.ctx.generation.answer_tokens)

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        assert self.bank is not None
        op = AddOp(turn_line(turn), "episodic", session_time(session), (turn.dia_id,))
        self.bank.apply([op], actor="import", turn=turn.dia_id)
        return {"applied": 1}

    def answer(self, question: str) -> SystemAnswer:
        assert self.bank is not None
        start = time.perf_counter()
        result = self.answerer.answer(self.bank, question, user=BANK_USER)
        return self.from_agent_answer(result, time.perf_counter() - start)


class ManagerPrompted(System):
    name = "manager-prompted"
    summary = "Memory Manager + Answer Agent on the base model, no adapters"

    def open(self, conversation: Conversation, workdir: Path) -> None:
        super().open(conversation, workdir)
        assert self.bank is not None
        extra = {"max_tokens": self.ctx.manager_max_tokens} if self.ctx.manager_max_tokens else {}
        self.manager = MemoryManager(self.ctx.backend, self.bank, adapter=None, text_mode=self.ctx.generation.text_mode, **extra)
        self.answerer = AnswerAgent(self.ctx.backend, k=self.ctx.generation.answer_k, adapter=None, text_mode=self.ctx.generation.text_mode,
                                    answer_tokens=self.ctx.generation.answer_tokens)

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        result = self.manager.process(as_turn(session, turn), user=BANK_USER)
        return _turn_log(result)

    def answer(self, question: str) -> SystemAnswer:
        assert self.bank is not None
        start = time.perf_counter()
        result = self.answerer.answer(self.bank, question, user=BANK_USER)
        return self.from_agent_answer(result, time.perf_counter() - start)


class BundleAgent(System):
    name = "bundle"
    summary = "edge.Agent on the bundle as shipped (trained adapters when it has them)"

    def open(self, conversation: Conversation, workdir: Path) -> None:
        from edge.agent import Agent

        workdir.mkdir(parents=True, exist_ok=True)
        self.conversation = conversation
        bundle = self.ctx.bundle
        one_model = len({bundle.role(r)[0] for r in ("manager", "answer")}) == 1
        # One model for every role: share the loaded one (it carries the bundle's adapters).
        self.agent = Agent(
            bundle=bundle, db=workdir / "bank.db", user=BANK_USER,
            backend=self.ctx.backend if one_model else None, n_ctx=self.ctx.generation.n_ctx, answer_k=self.ctx.generation.answer_k,
        )
        self.bank = self.agent.bank
        if self.ctx.manager_max_tokens:
            self.agent.manager.max_tokens = self.ctx.manager_max_tokens

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        result = self.agent.remember([as_turn(session, turn)], wait=True)
        return _turn_log(result.turns[0])

    def answer(self, question: str) -> SystemAnswer:
        start = time.perf_counter()
        result = self.agent.ask(question)
        return self.from_agent_answer(result, time.perf_counter() - start)

    def close(self) -> None:
        if getattr(self, "agent", None) is not None:
            self.agent.close()  # closes the bank; a shared backend stays open
            self.agent = None
        self.bank = None


class BundleLogOnly(BundleAgent):
    """`bundle` without its Manager: what the bundle's Answer Agent makes of the verbatim turn log alone.

    The same `edge.Agent` as `bundle` (so the same generation settings,
    answer adapter, k and token budget, and the same shared backend), but
    each turn only enters the episodic log, written as the runtime writes it
    (`edge.manager.log_entry_for`: verbatim, with speaker, time, turn id and
    resolved dates). No fact is ever written, so `bundle` minus this system
    is the Manager's contribution to the answers.
    """

    name = "bundle-log-only"
    summary = "the bundle's Answer Agent (with its adapter) over the episodic log alone, no Manager"

    def ingest_turn(self, session: Session, turn: LocoTurn) -> dict[str, Any]:
        assert self.bank is not None
        said = as_turn(session, turn)
        self.bank.apply([log_entry_for(said)], user=BANK_USER, actor="import", turn=turn_reference(said))
        return {"logged": 1}


def _turn_log(result: Any) -> dict[str, Any]:
    return {
        "applied": [a.action for a in result.applied],
        "rejected": len(result.rejected),
        "error": result.error,
        "prompt_tokens": result.prompt_tokens,
    }


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (FullContext, RagTurns, ManagerPrompted, BundleAgent, BundleLogOnly)
}


def make_system(name: str, ctx: EvalContext) -> System:
    if name not in SYSTEMS:
        raise EdgeError(f"Unknown system {name!r}.", hint=f"choose from: {', '.join(SYSTEMS)}")
    return SYSTEMS[name](ctx)
