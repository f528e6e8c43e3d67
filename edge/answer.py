"""The Answer Agent: retrieve, let the model pick the memories that matter, answer from them.

As in Memory-R1, many memories are retrieved (top 60 by default, hybrid
search), each shown with its date; the model first lists the ids it finds
relevant ("memory distillation") and then answers. The answer reports which
real memory ids it used and where the time went.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge.backends.base import Backend
from edge.bank import Memory, MemoryBank
from edge.manager import adapter_for, shown_memories, to_messages
from edge.prompts import ANSWER_TOP_K, CORE_MEMORY_CHARS, answer_messages, answer_schema, parse_answer_output

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
    ) -> None:
        self.backend = backend
        self.k = k
        self.adapter = adapter
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens or getattr(backend, "n_ctx", 4096)

    def answer(self, bank: MemoryBank, question: str, *, user: str | None = None, k: int | None = None) -> AnswerResult:
        """Retrieve the top-k memories (hybrid search) and answer from them."""
        start = time.perf_counter()
        hits = bank.search(question, k=k or self.k, mode="hybrid", user=user)
        retrieved = [h.memory for h in hits if h.memory.tier != "core"]
        core = core_block(bank, user)
        retrieve_s = time.perf_counter() - start
        result = self.answer_from(question, retrieved, core=core)
        result.timings.update(retrieve_s=retrieve_s, total_s=time.perf_counter() - start)
        return result

    def answer_from(self, question: str, memories: list[Memory], *, core: str = "") -> AnswerResult:
        """Answer from given memories (best first; the lowest-ranked are dropped if they do not fit)."""
        start = time.perf_counter()
        memories, messages, id_map = self._fit(question, memories, core)
        generate_start = time.perf_counter()
        completion = self.backend.complete(
            messages, schema=answer_schema(id_map.local_ids), max_tokens=self.max_tokens, temperature=0.0,
            adapter=adapter_for(self.backend, self.adapter),
        )
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
                return kept, messages, id_map
            overflow = size - budget
            drop = max(1, min(len(kept), overflow // 24))
            kept = kept[: len(kept) - drop]
