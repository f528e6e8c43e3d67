"""`edge.Agent`: a bundle's models, a memory bank and the two agents, behind three calls.

    from edge import Agent
    agent = Agent(db="memory.db", user="alice")          # the default bundle
    agent.remember(["I moved to Lisbon last spring"])
    print(agent.ask("Where do I live?").answer)

`chat` answers from a bounded working state plus retrieved memories instead
of the whole history (MEM1), so the prompt stays the same size however
long the conversation runs; each user message then goes to the Manager.

`remember` does not wait for the Memory Manager unless asked (`wait=True`):
each turn is written to the episodic log at once, in one transaction with a
record that it is pending for the Manager, and a background thread has the
Manager go over the pending turns, oldest first. The log alone is what the
Answer Agent reads most (on LoCoMo conv-26 the Manager's facts held none of
the questions' evidence: `bench/results/eval-conv26-answer-before`), so
`ask` right after `remember` already sees the turn; `wait_for_manager()`
waits for the facts, and `close()` lets the Manager finish first.

A model that cannot be reached (a server gone away) costs no turn: the turn
is kept in the episodic log, recorded as pending in the bank, and the next
`remember` or `chat` first has the Manager go over the pending turns
(`catch_up`), oldest first.
"""
from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from edge import paths
from edge.answer import AnswerAgent, AnswerResult, core_block
from edge.backends.base import Backend
from edge.bank import EPISODIC, Memory, MemoryBank, clean_text, text_limit
from edge.bundle import Bundle
from edge.errors import BackendError, BundleError, InvalidInputError, TurnInterruptedError
from edge.generation import GenerationConfig
from edge.manager import MemoryManager, TurnResult, turn_time
from edge.model_calls import adapter_for, shown_memory, to_messages
from edge.operations import AppliedOp
from edge.prompts import (
    CHAT_CORE_CHARS,
    PROMPT_VERSION,
    READABLE_PROMPT_VERSIONS,
    Turn,
    chat_messages,
    clip_state,
    state_messages,
)

PENDING_META = "pending_manager_turns"  # bank meta of edge <= 0.x: pending turns as one JSON list (still read)
PENDING_PREFIX = "pending_manager_turn:"  # bank meta: one entry per turn the Manager has yet to go over
CHAT_MEMORIES_K = 16  # candidates; as many as fit the chat budget are shown
STATE_MAX_TOKENS = 96
AskResult = AnswerResult


@dataclass
class RememberResult:
    """What `Agent.remember` did: the Manager's result per turn, or the turns it goes over behind the call."""

    turns: list[TurnResult]
    seconds: float
    pending: list[Turn] = field(default_factory=list)  # logged now; the Manager goes over them in the background

    @property
    def applied(self) -> list[AppliedOp]:
        return [op for turn in self.turns for op in turn.applied]

    @property
    def rejected(self) -> list[tuple[dict[str, Any], str]]:
        return [r for turn in self.turns for r in turn.rejected]


@dataclass
class ChatResult:
    message: str
    reply: str
    memory_ids: list[str]
    remembered: TurnResult | None
    state: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    caught_up: list[TurnResult] = field(default_factory=list)  # earlier turns the Manager could go over only now

    @property
    def tokens_per_second(self) -> float:
        generate = self.timings.get("generate_s", 0.0)
        return self.completion_tokens / generate if generate > 0 else 0.0


class ChatStream:
    """Iterate for the reply's text pieces; `result` is filled once the turn is complete."""

    def __init__(self, agent: "Agent", message: str, remember: bool, cancel: threading.Event | None) -> None:
        self._agent = agent
        self._message = message
        self._remember = remember
        self.cancel = cancel or threading.Event()
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        self.result = yield from self._agent._chat_turn(self._message, self._remember, self.cancel)


def pending_records(bank: MemoryBank, user: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The turns in `bank`'s episodic log that the Manager has yet to go over, as (meta key, record), oldest first.

    A record holds user, speaker, text, time and turn_id; `user` None: every
    user's. A bank written by an earlier edge keeps them as one list under
    `PENDING_META`; those come first.
    """
    meta = bank.meta()
    old = [(PENDING_META, p) for p in json.loads(meta.get(PENDING_META) or "[]")]
    new = [(key, json.loads(value)) for key, value in sorted(meta.items()) if key.startswith(PENDING_PREFIX)]
    return [(key, p) for key, p in old + new if user is None or p.get("user") == user]


def now_stamp() -> str:
    """The time a turn entering edge now was said (local time, to the minute): its dates resolve against it."""
    return datetime.now().strftime("%Y-%m-%d %H:%M")


def _as_turn(item: Turn | dict | str, default_speaker: str) -> Turn:
    if isinstance(item, Turn):
        return item if item.time else Turn(item.speaker, item.text, now_stamp(), item.turn_id)
    if isinstance(item, str):
        return Turn(speaker=default_speaker, text=item, time=now_stamp())
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return Turn(
            speaker=str(item.get("speaker") or default_speaker), text=item["text"],
            time=item.get("time") or now_stamp(), turn_id=item.get("turn_id") or item.get("id"),
        )
    raise InvalidInputError(f"A turn must be a str, a dict with 'text', or an edge.prompts.Turn, not {item!r}.")


TURN_KEPT = "Your message is kept in the conversation log; memory is updated from it once the model answers again."


def _kept(exc: BackendError) -> BackendError:
    """`exc` saying that the turn was not lost: it is in the log and pending for the Manager."""
    said = f"{exc.hint.rstrip('.')}. " if exc.hint else ""
    return BackendError(exc.message, hint=f"{said}{TURN_KEPT}")


class Agent:
    """The memory agent for one user: remember turns, answer questions, chat."""

    def __init__(
        self,
        bundle: str | Path | Bundle | None = None,
        db: str | Path | None = None,
        user: str = paths.DEFAULT_USER,
        *,
        backend: Backend | None = None,
        n_ctx: int | None = None,
        answer_k: int | None = None,
        delete_cap: int | None = None,
        chat_max_tokens: int | None = None,
        n_threads: int | None = None,
        text_mode: str | None = None,
        answer_tokens: int | None = None,
    ) -> None:
        """Open `bundle` (default: the embedded default bundle, built on first use) and the bank `db`.

        The models are decoded with the bundle's `generation` settings
        (`Bundle.generation`, `edge.generation`); `n_ctx` (context window),
        `answer_k` (memories retrieved per question), `answer_tokens` (the
        most tokens their lines take), `text_mode` ("extractive" or "free":
        how fact texts and answers are written) and `chat_max_tokens`
        override them one by one. The result is `self.generation`, the one
        object the backends, the Manager and the Answer Agent are given.
        Each role is served by the adapter its `roles` entry names (None:
        the base model).

        `backend` replaces the bundle's models (e.g. an HTTP server) while
        the bundle still provides the embedder. `n_threads` is the llama.cpp
        thread count (default: chosen by the backend from the cores and the load).
        Raises `InvalidInputError` for a bad override, `BundleError` for a
        bundle that cannot serve this edge (or a role whose adapter its
        backend has not loaded), `EmbedderMismatchError` / `BankError` for a
        bank that does not fit it.
        """
        self.bundle = Bundle.resolve(bundle)
        self.bundle.check_compatible()
        self.generation: GenerationConfig = self.bundle.generation.override(
            n_ctx=n_ctx, answer_k=answer_k, answer_tokens=answer_tokens, text_mode=text_mode,
            chat_max_tokens=chat_max_tokens)
        self.user = user
        self._n_threads = n_threads
        self.bank = MemoryBank.open(Path(db) if db else paths.default_db(), self.bundle.load_embedder(), user=user)
        try:
            self._check_bank_prompts()
            self._backends: dict[Path, Backend] = {}
            self._owns_backends = backend is None
            self.manager_backend = backend or self._backend_for("manager")
            self.answer_backend = backend or self._backend_for("answer")
            self.chat_backend = backend or self._backend_for("chat")
            adapters = {role: self._role_adapter(role, b) for role, b in (
                ("manager", self.manager_backend), ("answer", self.answer_backend), ("chat", self.chat_backend))}
        except BaseException:
            self.close()
            raise
        extra: dict[str, Any] = {"delete_cap": delete_cap} if delete_cap is not None else {}
        self.manager = MemoryManager(self.manager_backend, self.bank, generation=self.generation,
                                     adapter=adapters["manager"], **extra)
        self.answerer = AnswerAgent(self.answer_backend, generation=self.generation, adapter=adapters["answer"])
        self.chat_adapter = adapters["chat"]
        self.state = ""
        self._lock = threading.RLock()
        self._start_worker_state()

    def _start_worker_state(self) -> None:
        self._wake = threading.Event()  # set when a turn is queued for the background Manager
        self._stop = threading.Event()  # set by close(): the background Manager stops between turns
        self._worker: threading.Thread | None = None
        self.manager_error: Exception | None = None  # why the background Manager last stopped short, if it did

    def for_user(self, user: str) -> "Agent":
        """An agent for `user` on the same bank file and the same loaded models (nothing is loaded again).

        For a process serving several users (`edge mcp --allow-users`): a
        model takes seconds to load and hundreds of MB to hold, so one copy
        serves them all. The new agent shares the bundle, the backends, the
        generation settings, the Answer Agent and this agent's lock (so model
        calls of the two never overlap); it has its own bank connection, its
        own Manager over that connection and its own chat state. Closing it
        closes only its connection; the models belong to this agent. Raises
        `BankError` when the bank cannot be opened again.
        """
        other = copy.copy(self)
        other.user = user
        other._owns_backends = False
        other.bank = MemoryBank.open(self.bank.path, self.bank.embedder, user=user, create=False)
        other.manager = copy.copy(self.manager)
        other.manager.bank = other.bank
        other.state = ""
        other._start_worker_state()
        return other

    @property
    def model_lock(self) -> threading.RLock:
        """The lock each model call of this agent holds, shared with the agents `for_user` made from it."""
        return self._lock

    @property
    def chat_max_tokens(self) -> int:
        """The chat reply budget, in tokens (`generation.chat_max_tokens`)."""
        return self.generation.chat_max_tokens

    @property
    def speaker(self) -> str:
        """How the user is named to the models: "User" for the default owner, else the owner's name."""
        return "User" if self.user == paths.DEFAULT_USER else self.user

    @property
    def backend(self) -> Backend:
        return self.chat_backend

    def _check_bank_prompts(self) -> None:
        recorded = self.bank.meta().get("prompt_version")
        if recorded is None or recorded in READABLE_PROMPT_VERSIONS:
            self.bank.set_meta("prompt_version", PROMPT_VERSION)
        elif recorded != PROMPT_VERSION:
            raise BundleError(
                f"The bank {self.bank.path} was managed with prompts {recorded!r}; this bundle uses {PROMPT_VERSION!r}.",
                hint="Use the bundle the bank was built with, or export the bank (`edge memory export`) and "
                "import it into a new one.",
            )

    def _backend_for(self, role: str) -> Backend:
        model, _ = self.bundle.role(role)
        if model not in self._backends:  # roles on one model share it (and its adapters)
            self._backends[model] = self.bundle.load_backend(role, n_threads=self._n_threads,
                                                             generation=self.generation)
        return self._backends[model]

    def _role_adapter(self, role: str, backend: Backend) -> str | None:
        """The adapter the bundle names for `role`, checked to be loaded in `backend` (None: the base model).

        Raises `BundleError` when it is not: serving the base model in its
        place would quietly answer with an untrained model.
        """
        name = self.bundle.role_adapter(role)
        if name is not None and name not in backend.adapters:
            raise BundleError(
                f"The bundle {self.bundle.root} serves its {role} role with the adapter {name!r}, "
                f"which {backend.name} has not loaded.",
                hint=f"loaded adapters: {', '.join(backend.adapters) or 'none'}; pass no backend= so the bundle's "
                "own (with its adapters) is loaded, or use a bundle whose roles name no adapter",
            )
        return name

    # ------------------------------------------------------------------ the three calls

    def remember(self, turns: Sequence[Turn | dict | str] | str, *, speaker: str | None = None,
                 cancel: threading.Event | None = None, wait: bool = False,
                 start_manager: bool = True) -> RememberResult:
        """Keep conversation turns and have the Memory Manager go over them, one bank transaction per turn.

        By default the call returns once every turn is in the episodic log
        (milliseconds: no model call), each logged in one transaction with a
        record that it is pending; a background thread then has the Manager
        go over them, oldest first (`result.pending` lists them;
        `wait_for_manager()` waits). `wait=True` returns after the Manager:
        `result.turns` holds what it applied and refused per turn.

        A text the log refuses (empty, binary, too long) or a time that
        cannot be read raises `InvalidInputError` and keeps none of `turns`. With `wait=True`, a
        model that cannot be reached raises `BackendError` (its hint says
        the turn is kept: in the log, pending for the Manager); `cancel`,
        once set, stops the Manager between model calls: the turn is kept
        the same way, none of its facts applied, and `TurnInterruptedError`
        is raised. `start_manager=False` (with `wait=False`) logs the turns
        and leaves the Manager asleep until `start_manager()`: a server that
        answers with another model first (`edge serve`) keeps the CPU for
        the reply.
        """
        if isinstance(turns, (str, Turn, dict)):
            turns = [turns]
        parsed = [_as_turn(t, speaker or self.speaker) for t in turns]
        start = time.perf_counter()
        if not wait:
            for turn in parsed:  # every turn checked before the first is kept
                clean_text(turn.text, what="turn", max_chars=text_limit(EPISODIC))
                turn_time(turn)
            # No agent lock: the Manager may hold it for a model call; the bank's own lock orders the writes.
            kept = [self._keep_pending(turn) for turn in parsed]
            if start_manager:
                self.start_manager()
            return RememberResult(turns=[], seconds=time.perf_counter() - start, pending=kept)
        with self._lock:
            self.catch_up(cancel=cancel)
            try:
                results = [self._manage(turn, cancel) for turn in parsed]
            except BackendError as exc:
                raise _kept(exc) from exc
        return RememberResult(turns=results, seconds=time.perf_counter() - start)

    def wait_for_manager(self, timeout: float | None = None) -> bool:
        """Block until the Manager has gone over every pending turn of this user (in this thread, in order).

        Returns True when none is left, False when `timeout` seconds (None:
        no limit) passed first or the model stopped answering (the turns
        stay pending; `manager_error` says why).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not self._catch_up_one():
                return not self.pending()
        return True

    def start_manager(self) -> None:
        """Have the background Manager go over this user's pending turns now (it sleeps when none is left)."""
        if self._worker is None or not self._worker.is_alive():
            self._stop.clear()
            self._worker = threading.Thread(target=self._work, name=f"edge-manager-{self.user}", daemon=True)
            self._worker.start()
        self._wake.set()

    def _work(self) -> None:
        """The background Manager: go over pending turns until none is left, then sleep until woken."""
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set() and self._catch_up_one(cancel=self._stop):
                pass

    # ------------------------------------------------------------------ turns the model missed

    def pending(self) -> list[Turn]:
        """This user's turns that are in the episodic log but that the Manager has not gone over yet, oldest first."""
        return [Turn(p["speaker"], p["text"], p["time"], p["turn_id"]) for _, p in self._pending_records()]

    def catch_up(self, *, cancel: threading.Event | None = None) -> list[TurnResult]:
        """Have the Manager go over the pending turns, oldest first; stop at the first the model still fails on.

        Never raises for an unreachable model or a set `cancel` (the turns stay pending); returns what was done.
        The lock is taken per turn, so an `ask` waits for one turn at most.
        """
        done: list[TurnResult] = []
        while self._catch_up_one(cancel=cancel, done=done):
            pass
        return done

    def _catch_up_one(self, *, cancel: threading.Event | None = None, done: list[TurnResult] | None = None) -> bool:
        """The Manager goes over the oldest pending turn; False when none is left or the model failed on it.

        The turn's facts and the removal of its pending record are one
        transaction: a turn is never gone over twice nor dropped.
        """
        with self._lock:
            records = self._pending_records()
            if not records:
                return False
            key, record = records[0]
            turn = Turn(record["speaker"], record["text"], record["time"], record["turn_id"])
            try:
                result = self.manager.process(turn, user=self.user, already_logged=True, cancel=cancel,
                                              meta=self._removal(key, record))
            except (BackendError, TurnInterruptedError) as exc:
                self.manager_error = exc
                return False
            self.manager_error = None
            if done is not None:
                done.append(result)
            return True

    def _manage(self, turn: Turn, cancel: threading.Event | None = None) -> TurnResult:
        """`manager.process`, recording the turn as pending when the model cannot be reached (the log keeps it).

        A text the episodic log would refuse (empty, binary, over
        `text_limit("episodic")` characters) raises `InvalidInputError` here,
        before the model reads it: the Manager would otherwise spend a model
        call on each piece of an over-long turn only for the bank to refuse it.
        """
        clean_text(turn.text, what="turn", max_chars=text_limit(EPISODIC))
        turn = turn if turn.turn_id else Turn(turn.speaker, turn.text, turn.time, "t" + secrets.token_hex(5))
        try:
            return self.manager.process(turn, user=self.user, cancel=cancel)
        except (BackendError, TurnInterruptedError, KeyboardInterrupt):
            self.bank.set_meta(*self._pending_entry(turn))
            raise

    def _keep_pending(self, turn: Turn) -> Turn:
        """Keep a turn without a model call: in the log now and pending for the Manager, in one transaction."""
        turn = Turn(turn.speaker, turn.text, turn.time or now_stamp(), turn.turn_id or "t" + secrets.token_hex(5))
        key, value = self._pending_entry(turn)
        self.manager.keep(turn, user=self.user, meta={key: value})
        return turn

    def _pending_entry(self, turn: Turn) -> tuple[str, str]:
        """The bank meta entry that records `turn` as pending: its key orders it after every earlier one."""
        record = {"user": self.user, "speaker": turn.speaker, "text": turn.text, "time": turn.time,
                  "turn_id": turn.turn_id}
        return f"{PENDING_PREFIX}{time.time_ns():020d}:{turn.turn_id}", json.dumps(record, ensure_ascii=False)

    def _pending_records(self) -> list[tuple[str, dict[str, Any]]]:
        return pending_records(self.bank, self.user)

    def _removal(self, key: str, record: dict[str, Any]) -> dict[str, str | None]:
        """The meta change that takes `record` off the pending turns."""
        if key != PENDING_META:
            return {key: None}
        rest = [p for p in json.loads(self.bank.meta().get(PENDING_META) or "[]") if p != record]
        return {PENDING_META: json.dumps(rest, ensure_ascii=False) if rest else None}

    def ask(self, question: str, *, k: int | None = None) -> AskResult:
        """Answer from memory: the answer, the memory ids it used, and timings.

        Raises `InvalidInputError` for a question that is empty, too long or not text (`clean_text`).
        """
        clean_text(question, what="question")
        with self._lock:
            return self.answerer.answer(self.bank, question, user=self.user, k=k)

    def chat(
        self, message: str, *, stream: bool = False, remember: bool = True, cancel: threading.Event | None = None
    ) -> ChatResult | ChatStream:
        """Reply to `message`; with `stream=True`, a `ChatStream` to iterate for text pieces."""
        chat_stream = ChatStream(self, message, remember, cancel)
        if stream:
            return chat_stream
        for _ in chat_stream:
            pass
        assert chat_stream.result is not None
        return chat_stream.result

    def chat_prompt(self, message: str) -> tuple[list, list[Memory]]:
        """The messages a chat turn sends, and the memories in them."""
        hits = self.bank.search(message, k=CHAT_MEMORIES_K, user=self.user, scope="all")
        memories = [h.memory for h in hits if h.memory.tier != "core"]
        shown = [shown_memory(str(i), m) for i, m in enumerate(memories)]
        core = core_block(self.bank, self.user, limit=CHAT_CORE_CHARS)
        messages, packed = chat_messages(message, memories=shown, core=core, state=self.state)
        return to_messages(messages), [memories[int(m.id)] for m in packed]

    def _chat_turn(self, message: str, remember: bool, cancel: threading.Event):
        if not isinstance(message, str) or not message.strip():
            raise InvalidInputError("The message is empty.")
        with self._lock:
            start = time.perf_counter()
            messages, memories = self.chat_prompt(message)
            retrieve_s = time.perf_counter() - start
            pieces: list[str] = []
            backend = self.chat_backend
            stream = None
            try:
                stream = backend.stream(messages, max_tokens=self.generation.chat_max_tokens,
                                        temperature=self.generation.chat_temperature, cancel=cancel,
                                        adapter=adapter_for(backend, self.chat_adapter))
                for piece in stream:
                    pieces.append(piece)
                    yield piece
            except BackendError as exc:
                if not remember:
                    raise
                self._keep_pending(Turn(self.speaker, message, now_stamp()))
                raise _kept(exc) from exc
            completion = stream.completion
            reply = "".join(pieces).strip()
            generate_s = time.perf_counter() - start - retrieve_s
            cancelled = bool(completion and completion.finish_reason == "cancelled")
            remembered = None
            caught_up: list[TurnResult] = []
            remember_start = time.perf_counter()
            if remember:
                caught_up = self.catch_up()
                try:
                    remembered = self._manage(Turn(self.speaker, message, now_stamp()))
                except BackendError as exc:
                    raise _kept(exc) from exc
            remember_s = time.perf_counter() - remember_start
            if reply and not cancelled:
                update = backend.complete(to_messages(state_messages(self.state, message, reply)),
                                          max_tokens=STATE_MAX_TOKENS, adapter=adapter_for(backend, self.chat_adapter))
                self.state = clip_state(update.text) or self.state
            return ChatResult(
                message=message, reply=reply, memory_ids=[m.id for m in memories], remembered=remembered,
                state=self.state,
                prompt_tokens=completion.prompt_tokens if completion else 0,
                completion_tokens=completion.completion_tokens if completion else 0,
                timings={"retrieve_s": retrieve_s, "generate_s": generate_s, "remember_s": remember_s,
                         "total_s": time.perf_counter() - start},
                cancelled=cancelled, caught_up=caught_up,
            )

    # ------------------------------------------------------------------ lifecycle

    def close(self, *, wait: bool = True) -> None:
        """Let the Manager go over the turns still pending (`wait`; Ctrl-C stops it, they stay pending), then
        stop the background Manager and close the bank and the models this agent loaded."""
        try:
            if getattr(self, "_worker", None) is not None:
                try:
                    if wait:
                        self.wait_for_manager()
                finally:
                    self._stop.set()
                    self._wake.set()
                    self._worker.join()  # type: ignore[union-attr]
        finally:
            if getattr(self, "_owns_backends", False):
                for backend in getattr(self, "_backends", {}).values():
                    backend.close()
            self.bank.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
