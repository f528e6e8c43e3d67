"""The Answer Agent: retrieve, let the model pick the memories that matter, answer from them.

As in Memory-R1, many memories are retrieved (hybrid search over the
current facts and the episodic turn log), each shown with its date. With
free-text answers the model first lists the ids it finds relevant
("memory distillation") and then answers. With extractive answers (the
default bundle) the reply is the answer alone, which can only be a span of
a shown memory, a date shown with one, or "unknown" (constrained
decoding); the memories it used are those that hold it. With nothing
retrieved the answer is "unknown" without asking the model. The answer
reports which real memory ids it used, whether it is supported by what was
shown, and where the time went.
"""
from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from edge.backends.base import Backend, Message
from edge.bank import EPISODIC, Memory, MemoryBank
from edge.bank.retrieval import STOPWORDS
from edge.errors import MemoryNotFoundError, ModelOutputError
from edge.generation import FACTS_FIRST_SHARE, RETIRED_K, STALE_UPDATES_FIRST, GenerationConfig, Setting
from edge.model_calls import adapter_for, shown_memories, to_messages
from edge.prompts import (
    CORE_MEMORY_CHARS,
    UNKNOWN,
    IdMap,
    Retirement,
    ShownMemory,
    answer_line,
    answer_messages,
    answer_schema,
    answer_spans,
    answer_supported,
    focus_memory,
    parse_answer_output,
    supporting,
)

CORE_LIMIT = 20
TOPIC_WORD_LINES = 3  # "topic-newest": a word in more of the kept lines than this links nothing


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
    # The answer is "unknown" or a span of a memory (or date) it was shown: it is grounded in the bank, which is
    # not the same as right (a span of the wrong memory is supported too).
    supported: bool = True
    # With extractive answers, every reply the schema allowed (`edge.prompts.answer_spans` of what was shown, "unknown"
    # among them): the answer is one of them, and the best of them is what a perfect chooser would have scored
    # (`edge.evaluation.scoring.best_offered`). [] when nothing was retrieved (no model call); None for free text.
    offered: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `edge ask --json` prints)."""
        return {
            "question": self.question, "answer": self.answer, "supported": self.supported,
            "memory_ids": self.memory_ids,
            "memories": [{"id": m.id, "tier": m.tier, "text": m.text, "event_time": m.event_time} for m in self.memories],
            "retrieved": [m.id for m in self.retrieved],
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "timings": {k: round(v, 4) for k, v in self.timings.items()}, "error": self.error,
            # Only how many: the spans of a long context run to hundreds of strings.
            "offered": None if self.offered is None else len(self.offered),
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


def core_lines(core: str) -> list[ShownMemory]:
    """The core block's lines as memories a reply may quote (`answer_spans`, `answer_supported`)."""
    return [ShownMemory(id=f"core{i}", tier="core", text=line) for i, line in enumerate(core.splitlines()) if line]


class AnswerAgent:
    def __init__(
        self,
        backend: Backend,
        *,
        generation: GenerationConfig | None = None,
        k: int | None = None,
        adapter: str | None = None,
        max_tokens: int | None = None,
        context_tokens: int | None = None,
        text_mode: str | None = None,
        answer_tokens: int | None = None,
        order: str | None = None,
    ) -> None:
        """`generation`: how questions are answered (a bundle's `Bundle.generation`; default `GenerationConfig()`).

        Its `answer_k` is how many memories are retrieved per question,
        `answer_tokens` the most tokens their lines may take and
        `answer_order` how they are ordered (`edge.generation.ANSWER_ORDERS`;
        "rank" unless a bundle names another); `k`, `answer_tokens`,
        `max_tokens`, `text_mode` and `order` override `answer_k`,
        `answer_tokens`, `answer_max_tokens`, `text_mode` and `answer_order`
        (a name not in `ANSWER_ORDERS` raises `InvalidInputError`). `adapter`
        names the LoRA adapter serving the Answer Agent (the bundle's
        `roles.answer.adapter`); None is the base model, and a name the
        backend has not loaded raises `BackendError` here.

        The prompt's instructions are the same for every question and their
        KV state is reused (`LlamaCppBackend`), so what a question costs is
        its memory lines: `answer_tokens` bounds that cost, and each memory
        is shown as its window around the question's words
        (`edge.prompts.focus`) so that many memories fit in it.
        """
        self.backend = backend
        self.adapter = adapter_for(backend, adapter)
        self.generation = (generation or GenerationConfig()).override(
            answer_k=k, answer_tokens=answer_tokens, answer_max_tokens=max_tokens, text_mode=text_mode,
            answer_order=order)
        self.context_tokens = context_tokens or backend.n_ctx

    k = Setting("answer_k", "Memories retrieved per question (`generation.answer_k`).")
    answer_tokens = Setting("answer_tokens", "The most tokens the memory lines may take (`generation.answer_tokens`).")
    max_tokens = Setting("answer_max_tokens", "The reply budget, in tokens (`generation.answer_max_tokens`).")
    text_mode = Setting("text_mode", '"extractive" or "free" (`generation.text_mode`).')
    order = Setting("answer_order", 'How the memories read are ordered (`generation.answer_order`, "rank" by default).')
    retired_values = Setting("retired_values", 'Whether a retired value may be the answer (`generation.retired_values`).')

    def answer(self, bank: MemoryBank, question: str, *, user: str | None = None, k: int | None = None) -> AnswerResult:
        """Retrieve memories (hybrid search) and answer from them: `retrieve`, then `answer_from`."""
        start = time.perf_counter()
        retrieved = self.retrieve(bank, question, user=user, k=k)
        core = core_block(bank, user)
        retired = self.retirements(bank, question, retrieved, user=user)
        retrieve_s = time.perf_counter() - start
        result = self.answer_from(question, retrieved, core=core, retired=retired)
        result.timings.update(retrieve_s=retrieve_s, total_s=time.perf_counter() - start)
        return result

    def context(self, bank: MemoryBank, question: str, *, user: str | None = None
                ) -> tuple[list[Memory], list[ShownMemory]]:
        """What `answer` shows the model for `question`: the memories that fit the budget, and their focused lines.

        The same retrieval, core block, token budget and focus windows as
        `answer`, without asking the model: training episodes and the
        ceiling of an extractive answer (the spans of these lines,
        `edge.prompts.answer_spans`) are built from it.
        """
        kept, _, _, shown = self.fit(question, self.retrieve(bank, question, user=user), core_block(bank, user))
        return kept, shown

    def retirements(self, bank: MemoryBank, question: str, memories: list[Memory], *, user: str | None = None
                    ) -> list[Retirement]:
        """The retired values `answer_from` withholds for `question` given what it reads (`memories`).

        Empty unless `retired_values` is "withheld" (`edge.generation.RETIRED_VALUES`); then `retirements`.
        """
        if self.retired_values != "withheld" or self.text_mode != "extractive":
            return []
        return retirements(bank, question, memories, user=user)

    def retrieve(self, bank: MemoryBank, question: str, *, user: str | None = None, k: int | None = None) -> list[Memory]:
        """What the Answer Agent reads: the top-k turns of the episodic log, then up to k//3 facts (in `order`).

        The turns are what plain retrieval over raw turns shows, so the
        evidence it finds is never crowded out; the facts come after them,
        best first, leaving out any whose source turns are all shown
        already, and are read when the token budget has room left
        (`fit`). Turns first because they hold more evidence per token than
        the untrained Manager's facts: on LoCoMo conv-26, giving facts
        15 % of a 300-token budget lowered evidence recall from 60.9 % to
        57.3 % (`bench/results/answer_context.json`). A bank without a log
        (facts only) gets its top-k facts.

        Orders other than "rank" (`edge.generation.ANSWER_ORDERS`) change
        this list: "updates-first" puts the newer versions of facts the
        question finds first, "facts-first" every current fact it finds
        (those whose turns are shown too), "stale-updates-first" (the
        default bundle's) the newer versions among the question's top
        `STALE_UPDATES_FIRST` facts whose older versions' turns are offered
        too (`stale_turns`), "superseding-turns" moves a turn
        that retired a fact before the turns that fact came from
        (`superseding_turns_first`); "newest-first" and "topic-newest"
        reorder only after the budget has picked (`fit`). None hides a turn
        of the log, and a superseded fact is never read here.
        """
        k = k or self.k
        order = self.order
        turns = offered_turns(bank, question, self.generation.answer_retrieval, user=user, k=k)
        shown = {t for m in turns for t in m.source_turns}
        room = max(2, k // 3) if turns else k
        first, facts = [], []
        for position, hit in enumerate(bank.search(question, k=room + len(turns), mode="hybrid", user=user,
                                                    scope="facts")):
            memory = hit.memory
            if memory.tier == "core":
                continue
            if order in ("facts-first", "current-first") or (order == "updates-first" and memory.metadata.get("supersedes")):
                first.append(memory)  # shown before the turns, even when its turns are shown too
            elif (order == "stale-updates-first" and position < STALE_UPDATES_FIRST
                  and stale_turns(bank, memory, user=user) & shown):
                first.append(memory)  # the turns offered hold a value it replaced: the newer one is read first
            elif memory.source_turns and set(memory.source_turns) <= shown:
                continue
            else:
                facts.append(memory)
            if len(first) + len(facts) == room:
                break
        if order == "superseding-turns":
            turns = superseding_turns_first(bank, question, turns, user=user, k=k)
        return first + turns + facts

    def answer_from(self, question: str, memories: list[Memory], *, core: str = "",
                    retired: list[Retirement] | tuple[Retirement, ...] = ()) -> AnswerResult:
        """Answer from given memories (in order; those whose lines no longer fit the token budget are left out).

        `retired`: values no extractive reply may say (`retirements`; `edge.prompts.answer_spans`).
        """
        start = time.perf_counter()
        if not memories and not core:
            return AnswerResult(question=question, answer=UNKNOWN, memory_ids=[], memories=[], retrieved=[],
                                timings={"fit_s": 0.0, "generate_s": 0.0, "total_s": time.perf_counter() - start},
                                offered=[] if self.text_mode == "extractive" else None)
        memories, messages, id_map, shown = self.fit(question, memories, core)
        # The core block is in the prompt, so its lines are offered too: a fact kept as core ("Ana is allergic
        # to penicillin") must be answerable as it would be as a semantic fact.
        readable = [*shown, *core_lines(core)]
        spans = answer_spans(readable, question, retired=retired) if self.text_mode == "extractive" else None
        # After a retraction the question found, "unknown" is what the record says: not held back by the margin.
        bias = self.generation.answer_bias if spans is not None and not any(r.retracted for r in retired) else None
        generate_start = time.perf_counter()
        try:
            completion = self.backend.complete(
                messages, schema=answer_schema(id_map.local_ids, spans=spans), max_tokens=self.max_tokens,
                temperature=self.generation.temperature, adapter=adapter_for(self.backend, self.adapter),
                choice_bias=bias,
            )
        except ModelOutputError as exc:  # a backend that checks the schema itself refused the reply
            return AnswerResult(question=question, answer=UNKNOWN, memory_ids=[], memories=[], retrieved=memories,
                                timings={"total_s": time.perf_counter() - start}, error=exc.message, offered=spans)
        parsed = parse_answer_output(completion.text, id_map.local_ids)
        # An extractive answer names no ids: the memories it used are those that hold it.
        used = parsed.relevant if spans is None else supporting(parsed.answer, shown)
        used_ids = [id_map.real(local) for local in used]
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
            supported=answer_supported(parsed.answer, readable),
            offered=spans,
        )

    def fit(self, question: str, memories: list[Memory], core: str = ""
            ) -> tuple[list[Memory], list[Message], IdMap, list[ShownMemory]]:
        """The memories whose focused lines fit `answer_tokens`, in order, and a prompt that fits the context.

        Returns (the memories kept, the prompt's messages, the map of their
        local ids, their lines as shown): what `answer_from` sends and what
        `context` gives training and the evaluation's ceiling.

        Memories are taken in order, each whose line still fits the budget
        (the first always is; a short one may fill the room a long one
        left); with order "facts-first" the facts before the first turn
        take at most `FACTS_FIRST_SHARE` of the budget; "newest-first" and
        "topic-newest" then reorder the turns kept (`reorder_turns`), so
        they show the memories "rank" shows. Should the whole prompt and
        the answer still not fit the context window, the last are dropped.
        """
        _, shown = shown_memories(memories)
        kept: list[Memory] = []
        used = 0
        facts_limit = self.answer_tokens * FACTS_FIRST_SHARE if self.order in ("facts-first", "current-first") else None
        for memory, line in zip(memories, shown):
            cost = self.backend.count_tokens(answer_line(line, question, text_mode=self.text_mode)) + 1
            limit = self.answer_tokens
            if facts_limit is not None and memory.tier != EPISODIC and not any(m.tier == EPISODIC for m in kept):
                limit = facts_limit  # the facts shown before the turns take at most their share
            if kept and used + cost > limit:
                continue
            kept.append(memory)
            used += cost
        if self.order in ("newest-first", "topic-newest", "current-first"):
            kept = reorder_turns(kept, question, "newest-first" if self.order == "newest-first" else "topic-newest")
        budget = self.context_tokens - self.max_tokens - 16
        while True:
            id_map, shown = shown_memories(kept)
            shown = [focus_memory(m, question) for m in shown]
            messages = to_messages(answer_messages(question, shown, core=core, text_mode=self.text_mode))
            size = sum(self.backend.count_tokens(m.content) + 4 for m in messages)
            if size <= budget or not kept:
                return kept, messages, id_map, shown
            overflow = size - budget
            drop = max(1, min(len(kept), overflow // 24))
            kept = kept[: len(kept) - drop]


def offered_turns(bank: MemoryBank, question: str, retrieval: str = "hybrid", *, user: str | None = None,
                  k: int = 20) -> list[Memory]:
    """The turns of the episodic log the Answer Agent is offered for `question`, best first (`RETRIEVALS`).

    "hybrid": the top-k of hybrid search, the question embedded without
    the names of the log's speakers (`without_speakers`). "replies" / "replies-N": each of
    the first k (N) followed by the turn the log kept after it
    (`MemoryBank.next_turns`), a turn never twice. The list may be longer
    than k; the token budget (`AnswerAgent.fit`) keeps its first lines.
    """
    turns = [h.memory for h in bank.search(question, k=k, mode="hybrid", user=user, scope="episodic",
                                           vector_text=without_speakers(question, bank.speakers(user=user)))]
    if not retrieval.startswith("replies"):
        return turns
    n = int(retrieval.rsplit("-", 1)[1]) if retrieval[-1].isdigit() else len(turns)
    after = bank.next_turns(turns[:n], user=user)
    out: dict[str, Memory] = {}
    for i, turn in enumerate(turns):
        out.setdefault(turn.id, turn)
        reply = after.get(turn.id) if i < n else None
        if reply is not None:
            out.setdefault(reply.id, reply)
    return list(out.values())


def without_speakers(question: str, speakers: Iterable[str]) -> str:
    """`question` as the embedder reads it: without the names the log gives its speakers ("Caroline's", "Jon").

    Nearly every question about a conversation names a speaker, and every
    turn of the log is embedded with its speaker's name before it
    (`MemoryBank.apply`), so the name pulls the question towards all of
    that speaker's turns and away from the few that answer it; the
    keyword side still matches it. On LoCoMo conv-26 embedding questions
    without the names raised the evidence within the Answer Agent's
    budget from 64.2 % to 72.5 %, and on 40 FriendsQA test scenes from
    93.3 % to 93.6 % (bench/bench_retrieval.py). Names match as written
    (case, whole words, Unicode NFC, outer spaces ignored: a speaker
    "May" leaves "may" alone), with a possessive "'s" or "'"; a name
    that is a function word ("me", the CLI's default speaker; "I") is
    never taken out, and a question left with nothing but function words
    ("Caroline and Melanie?") stays whole.
    """
    pattern = _names_pattern(frozenset(speakers))
    if pattern is None:
        return question
    left = " ".join(pattern.sub(" ", unicodedata.normalize("NFC", question)).split())
    return left if any(w not in STOPWORDS for w in re.findall(r"\w+", left.lower())) else question


@lru_cache(maxsize=16)
def _names_pattern(speakers: frozenset[str]) -> re.Pattern[str] | None:
    """One regex for a set of names, longest first (`MemoryBank.speakers` hands back the same set until it changes)."""
    names = {unicodedata.normalize("NFC", n.strip()) for n in speakers}
    names = sorted((n for n in names if n and n.lower() not in STOPWORDS), key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?:['\u2019]s?)?(?!\w)")


def stale_turns(bank: MemoryBank, fact: Memory, *, user: str | None = None, depth: int = 8) -> set[str]:
    """The turns the older versions of `fact` came from (its `supersedes` chain, newest first, at most `depth`).

    Empty for a fact that replaced nothing. One indexed lookup per version;
    a version no longer in the bank (purged) ends the chain.
    """
    turns: set[str] = set()
    older = fact.metadata.get("supersedes")
    while older and depth > 0:
        try:
            version = bank.get(str(older), user=user)
        except MemoryNotFoundError:
            break
        turns.update(version.source_turns)
        older, depth = version.metadata.get("supersedes"), depth - 1
    return turns


def retirements(bank: MemoryBank, question: str, memories: list[Memory], *, user: str | None = None,
                k: int = RETIRED_K) -> list[Retirement]:
    """What the Manager's supersession record retires for `question`: one `Retirement` per stale fact it finds.

    A fact counts when it is superseded (changed or retracted by a later
    turn, `Memory.superseded`), ranks among the question's top `k` facts
    (hybrid search, older versions included: Zep/Graphiti's invalidated
    edges, read at question time), and both the turn that retired it and a
    turn it came from are among `memories` (what the Answer Agent
    retrieved: the reader would see the old value beside the statement
    that ended it; a supersession whose turn is not offered withholds
    nothing, so a wrong one costs less). Its words are its stemmed
    content words less the question's and its speaker's name, and of
    those only the ones the retiring turn names when it names any (a fact
    "moved from Porto to Ghent for a bakery job" changed or retracted by
    "I left the bakery, I work at the library" withholds "bakery", not
    "Porto"); the newer words are those its current version adds (its
    `superseded_by` chain followed to the live fact; none when the chain
    ends in a retraction). `Retirement.retracted` (which lets "unknown"
    be said without the margin) only for a retraction of the question's
    best fact.
    A current version that restates it (`edge.grounding.restates`: most of
    its words, no "quit" or "anymore") retires nothing: the Manager may
    rewrite a fact a turn only repeats.
    A bank without a Manager (the log alone) has no record: [].
    """
    from edge.grounding import content_words, restates

    shown = {t for m in memories for t in m.source_turns}
    if not shown:
        return []
    asked = set(content_words(question))
    out: list[Retirement] = []
    hits = bank.search(question, k=k, mode="hybrid", user=user, scope="facts", include_superseded=True)
    for rank, hit in enumerate(hits):
        old = hit.memory
        if not old.superseded or old.superseded_turn not in shown or not set(old.source_turns) & shown:
            continue
        current = _current_version(bank, old, user=user)
        if current is not None and restates(old.text, current.text, speaker=old.speaker):
            continue  # "Just a reminder: I drive a Subaru" superseded nothing it did not say again
        said = set(content_words(old.text))
        words = said - asked - set(content_words(old.speaker or ""))
        # A turn that changes or retracts a fact names what it ends ("I left the bakery"): when it names some of
        # the old fact's words, only those are retired, so the rest of the fact ("moved from Porto to Ghent")
        # stays an answer. A turn that names none of them ("I drive a Jeep now") retires them all.
        words = (words & _turn_words(memories, old.superseded_turn)) or words
        newer = set(content_words(current.text)) - said if current is not None else set()
        if words:
            # "unknown" is what the record says only when the question's best fact was taken back: a retraction
            # further down the list (in a small bank, every fact is among the first three) is about another topic.
            out.append(Retirement(frozenset(words), frozenset(newer), retracted=current is None and rank == 0))
    return out


def _turn_words(memories: list[Memory], turn: str) -> set[str]:
    """The stemmed content words of the turn `turn` as `memories` hold it (its log entry, else a fact citing it)."""
    from edge.grounding import content_words

    holding = sorted((m for m in memories if turn in m.source_turns), key=lambda m: m.tier != EPISODIC)
    return set(content_words(holding[0].text)) if holding else set()


def _current_version(bank: MemoryBank, fact: Memory, *, user: str | None = None, depth: int = 8) -> Memory | None:
    """The live fact at the end of `fact`'s `superseded_by` chain; None when it ends in a retraction or a purge."""
    version = fact
    while version.superseded and depth > 0:
        if not version.superseded_by:
            return None
        try:
            version = bank.get(version.superseded_by, user=user)
        except MemoryNotFoundError:
            return None
        depth -= 1
    return None if version.superseded else version


def superseding_turns_first(bank: MemoryBank, question: str, turns: list[Memory], *, user: str | None = None,
                            k: int = 20) -> list[Memory]:
    """`turns` (top-k log turns, best first) with each turn that retired a fact moved before that fact's own turns.

    The Manager's supersession record says which turn changed what: the
    superseded facts the question finds (hybrid search over facts, older
    versions included, top `k`) each name the turns they came from and the
    turn that retired them (`Memory.superseded_turn`). When both are among
    `turns` and the retiring turn ranks below the first of the others, it
    is moved just before it, so the newer statement is read first. Only
    the order changes: the same turns, none added or left out.
    """
    position = {t: i for i, m in enumerate(turns) for t in m.source_turns}
    order = list(turns)
    for hit in bank.search(question, k=k, mode="hybrid", user=user, scope="facts", include_superseded=True):
        old = hit.memory
        if not old.superseded or old.superseded_turn not in position:
            continue
        newer = turns[position[old.superseded_turn]]
        sources = [turns[position[t]] for t in old.source_turns if t in position]
        sources = [m for m in sources if m is not newer]
        if not sources:
            continue
        first = min(order.index(m) for m in sources)
        at = order.index(newer)
        if at > first:
            order.insert(first, order.pop(at))
    return order


def _newness(memory: Memory) -> tuple[str, str]:
    """When a memory was said, then when it was stored: turns of one session share their time."""
    return (memory.event_time or "", memory.created_at)


def reorder_turns(kept: list[Memory], question: str, order: str) -> list[Memory]:
    """The log turns among `kept` (facts stay where they are) in `order`: "newest-first" or "topic-newest".

    "newest-first": newest said first (then newest stored: the turns of a
    session share one time). "topic-newest": rank order, except that before
    each turn come the newer kept turns whose shown window shares a content
    word with its window (`edge.grounding.content_words`), newest first: the
    later "I traded my Subaru for a Jeep." before the higher-ranked "I drive
    a Subaru." for "What car does Ingrid drive?". The question's own words
    link nothing (every matching turn holds them), nor does a word in more
    than `TOPIC_WORD_LINES` of the kept windows. The same memories either
    way; the order of one call depends only on `kept` and `question`.
    """
    slots = [i for i, m in enumerate(kept) if m.tier == EPISODIC]
    turns = [kept[i] for i in slots]
    if order == "newest-first":
        ordered = sorted(turns, key=_newness, reverse=True)
    else:
        from edge.grounding import content_words

        asked = set(content_words(question))
        _, shown = shown_memories(turns)
        words = [set(content_words(focus_memory(line, question).text)) - asked for line in shown]
        seen = Counter(w for ws in words for w in ws)
        words = [{w for w in ws if seen[w] <= TOPIC_WORD_LINES} for ws in words]
        ordered, placed = [], set()
        for i, turn in enumerate(turns):
            if i in placed:
                continue
            newer = [j for j in range(len(turns)) if j not in placed and j != i and words[i] & words[j]
                     and _newness(turns[j]) > _newness(turn)]
            for j in sorted(newer, key=lambda j: _newness(turns[j]), reverse=True):
                ordered.append(turns[j])
                placed.add(j)
            ordered.append(turn)
            placed.add(i)
    out = list(kept)
    for i, memory in zip(slots, ordered):
        out[i] = memory
    return out
