"""The Answer Agent: retrieve, let the model pick the memories that matter, answer from them.

As in Memory-R1, many memories are retrieved (hybrid search over the
current facts and the episodic turn log), each shown with its date; the
model first lists the ids it finds relevant ("memory distillation") and
then answers. With extractive answers (the default bundle) the answer can
only be a span of a shown memory, a date shown with one, or "unknown"
(constrained decoding). With nothing retrieved the answer is "unknown"
without asking the model. The answer reports which real memory ids it
used, whether it is supported by what was shown, and where the time went.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edge.backends.base import Backend
from edge.bank import Memory, MemoryBank
from edge.errors import ModelOutputError
from edge.manager import adapter_for, shown_memories, to_messages
from edge.prompts import (
    ANSWER_TOP_K,
    CORE_MEMORY_CHARS,
    UNKNOWN,
    answer_messages,
    answer_schema,
    answer_spans,
    answer_supported,
    parse_answer_output,
)

CORE_LIMIT = 20


@dataclass
class AnswerResult:
    question: str
    answer: str
    memory_ids: list[str]
    memories: list[Memory]
    retrieved: list[Memory]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    raw: str = ""
    supported: bool = True  # the answer is "unknown" or a span of a memory (or date) it was shown

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `edge ask --json` prints)."""
        return {
            "question": self.question, "answer": self.answer, "supported": self.supported,
            "memory_ids": self.memory_ids,
            "memories": [{"id": m.id, "tier": m.tier, "text": m.text, "event_time": m.event_time} for m in self.memories],
            "retrieved": [m.id for m in self.retrieved],
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "timings": {k: round(v, 4) for k, v in self.timings.items()}, "error": self.error,
        }


def core_block(bank: MemoryBank, user: str | None = None, *, limit: int = CORE_MEMORY_CHARS) -> str:
    """The bounded core memory: always in context, newest kept when it overflows `limit` characters."""
    lines: list[str] = []
    size = 0
    for memory in reversed(bank.list(user=user, tier="core")[-CORE_LIMIT:]):
        if size + len(memory.text) + 1 > limit:
            break
        lines.insert(0, memory.text)
        size += len(memory.text) + 1
    return "\n".join(lines)


class AnswerAgent:
    def __init__(
        self,
        backend: Backend,
        *,
        k: int = ANSWER_TOP_K,
        adapter: str | None = "answer",
        max_tokens: int = 96,
        context_tokens: int | None = None,
        text_mode: str = "extractive",
    ) -> None:
        self.backend = backend
        self.k = k
        self.adapter = adapter
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens or getattr(backend, "n_ctx", 4096)
        self.text_mode = text_mode

    def answer(self, bank: MemoryBank, question: str, *, user: str | None = None, k: int | None = None) -> AnswerResult:
        """Retrieve memories (hybrid search) and answer from them: `retrieve`, then `answer_from`."""
        start = time.perf_counter()
        retrieved = self.retrieve(bank, question, user=user, k=k)
        core = core_block(bank, user)
        retrieve_s = time.perf_counter() - start
        result = self.answer_from(question, retrieved, core=core)
        result.timings.update(retrieve_s=retrieve_s, total_s=time.perf_counter() - start)
        return result

    def retrieve(self, bank: MemoryBank, question: str, *, user: str | None = None, k: int | None = None) -> list[Memory]:
        """What the Answer Agent reads: up to k//3 facts beside the top-k turns of the episodic log.

        The turns are what plain retrieval over raw turns would show (so the
        evidence it finds is never crowded out); the facts come on top, best
        first, leaving out any whose source turns are all shown already.
        Facts first in the list: they are short and name the person. A bank
        without a log (facts only) gets its top-k facts.
        """
        k = k or self.k
        turns = [h.memory for h in bank.search(question, k=k, mode="hybrid", user=user, scope="episodic")]
        shown = {t for m in turns for t in m.source_turns}
        room = max(2, k // 3) if turns else k
        facts = []
        for hit in bank.search(question, k=room + len(turns), mode="hybrid", user=user, scope="facts"):
            memory = hit.memory
            if memory.tier == "core" or (memory.source_turns and set(memory.source_turns) <= shown):
                continue
            facts.append(memory)
            if len(facts) == room:
                break
        return facts + turns

    def answer_from(self, question: str, memories: list[Memory], *, core: str = "") -> AnswerResult:
        """Answer from given memories (best first; the lowest-ranked are dropped if they do not fit)."""
        start = time.perf_counter()
        if not memories and not core:
            return AnswerResult(question=question, answer=UNKNOWN, memory_ids=[], memories=[], retrieved=[],
                                timings={"fit_s": 0.0, "generate_s": 0.0, "total_s": time.perf_counter() - start})
        memories, messages, id_map, shown = self._fit(question, memories, core)
        spans = answer_spans(shown, question) if self.text_mode == "extractive" else None
        generate_start = time.perf_counter()
        try:
            completion = self.backend.complete(
                messages, schema=answer_schema(id_map.local_ids, spans=spans), max_tokens=self.max_tokens,
                temperature=0.0, adapter=adapter_for(self.backend, self.adapter),
            )
        except ModelOutputError as exc:  # a backend that checks the schema itself refused the reply
            return AnswerResult(question=question, answer=UNKNOWN, memory_ids=[], memories=[], retrieved=memories,
                                timings={"total_s": time.perf_counter() - start}, error=exc.message)
        parsed = parse_answer_output(completion.text, id_map.local_ids)
        used_ids = [id_map.real(local) for local in parsed.relevant]
        by_id = {m.id: m for m in memories}
        end = time.perf_counter()
        return AnswerResult(
            question=question,
            answer=parsed.answer,
            memory_ids=[i for i in used_ids if i],
            memories=[by_id[i] for i in used_ids if i in by_id],
            retrieved=memories,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            timings={"fit_s": generate_start - start, "generate_s": end - generate_start, "total_s": end - start},
            error=parsed.error,
            raw=completion.text,
            supported=answer_supported(parsed.answer, shown),
        )

    def _fit(self, question: str, memories: list[Memory], core: str):
        """Drop the lowest-ranked memories until the prompt and the answer fit the context."""
        budget = self.context_tokens - self.max_tokens - 16
        kept = list(memories)
        while True:
            id_map, shown = shown_memories(kept)
            messages = to_messages(answer_messages(question, shown, core=core))
            size = sum(self.backend.count_tokens(m.content) + 4 for m in messages)
            if size <= budget or not kept:
                return kept, messages, id_map, shown
            overflow = size - budget
            drop = max(1, min(len(kept), overflow // 24))
            kept = kept[: len(kept) - drop]
