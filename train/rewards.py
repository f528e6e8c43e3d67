"""Reward functions, in TRL's signature: `fn(prompts, completions, **columns) -> list[float | None]`.

`completions` are what TRL passes: plain strings, or (for chat prompts) a
one-message list `[{"role": "assistant", "content": ...}]`. The other
arguments are dataset columns (see `edge.train.episodes`), one value per
completion. `None` means "not applicable" (TRL skips it).

Answer Agent (Memory-R1): exact match of the parsed answer against the gold
answer after SQuAD normalisation (`answer_em_reward`); token F1 is the
softer option (`answer_f1_reward`). The paper found an LLM-judge reward made
answers longer and F1 worse, so none is offered.

Memory Manager:
- `manager_format_reward`: `manager_format_score` of the parsed reply, which
  gives partial credit (prose around JSON, rejected operations);
- `ManagerOutcomeReward`: rebuild the bank as it was before the turn (an
  in-memory SQLite copy), apply the sampled operations exactly as the
  runtime Manager would, and score the answers a *frozen* reader gives to
  the episode's questions (EM). The reader is either the Answer Agent on a
  backend (`AgentReader`, Memory-R1's choice) or `CandidateReader`, a
  model-free reader for synthetic questions (see its docstring). With
  context "served" the rebuilt bank also holds the episodic log (every turn
  so far, this one included), so the reader answers from what the served
  Answer Agent is shown (log plus facts within its budget) and a reply earns
  only what its facts add over the log (Memory-R1's outcome reward, as the
  bundle serves it);
- `manager_compression_reward`: minus the number of memories added, so that
  turns with nothing new are left alone (Mem-alpha's compression term);
- `manager_op_match_reward` (synthetic data, optional): the reply's
  operations against the generator's gold ones, graded (`op_match_score`).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any, Callable, Protocol, Sequence

from edge.bank import MemoryBank
from edge.embedder import Embedder
from edge.errors import EdgeError
from edge.evaluation.scoring import exact_match, f1_score, multiset_f1
from edge.manager import log_entry_for, to_bank_ops, turn_reference
from edge.operations import AddOp
from edge.prompts import (DEFAULT_DELETE_CAP, TEXT_OPS, IdMap, ManagerParse, Turn, parse_answer_output,
                          parse_manager_output)

UNKNOWN = "unknown"


def completion_text(completion: Any) -> str:
    """The text of one TRL completion (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- Answer Agent


def answer_em_reward(prompts: list, completions: list, answer: list, shown_ids: list, **_: Any) -> list[float]:
    """1.0 when the parsed answer equals the gold one after normalisation, else 0.0."""
    return [
        exact_match(parse_answer_output(completion_text(c), _loads(ids)).answer, gold)
        for c, gold, ids in zip(completions, answer, shown_ids)
    ]


def answer_f1_reward(prompts: list, completions: list, answer: list, shown_ids: list, **_: Any) -> list[float]:
    """Token F1 of the parsed answer against the gold one."""
    return [
        f1_score(parse_answer_output(completion_text(c), _loads(ids)).answer, gold)
        for c, gold, ids in zip(completions, answer, shown_ids)
    ]


def answer_format_reward(prompts: list, completions: list, shown_ids: list, **_: Any) -> list[float]:
    """1.0 for a reply that parses as the Answer Agent's JSON, else 0.0."""
    return [float(parse_answer_output(completion_text(c), _loads(ids)).error is None)
            for c, ids in zip(completions, shown_ids)]


# --------------------------------------------------------------------------- Memory Manager: format and size


# Partial credit for a Manager reply that is not fully usable: a small model sampled freely writes no valid
# JSON at all, and a reward that is 0 for every completion gives GRPO no signal (frac_reward_zero_std 1.0, a
# loss of exactly 0).
FORMAT_BRACE_ONLY = 0.1  # no JSON object, but the reply opened one
FORMAT_NO_OPS_LIST = 0.25  # a JSON object without an "ops" list
FORMAT_OPS_LIST = 0.5  # an "ops" list; the other half is the share of its operations that are usable


def manager_format_score(text: str, parse: ManagerParse) -> float:
    """How well-formed a Manager reply is, in [0, 1]: 1.0 for JSON in the schema with every operation usable.

    `parse` is `parse_manager_output(text, ...)`.
    """
    if not parse.found_json:
        return FORMAT_BRACE_ONLY if "{" in text else 0.0
    if parse.proposed is None:
        return FORMAT_NO_OPS_LIST
    usable = 1 - len(parse.rejected) / (parse.proposed or 1)
    return FORMAT_OPS_LIST + (1 - FORMAT_OPS_LIST) * usable


def manager_format_reward(prompts: list, completions: list, shown_ids: list, **_: Any) -> list[float]:
    """Partial-credit format score of each Manager reply (1.0: valid, every operation usable)."""
    texts = [completion_text(c) for c in completions]
    return [manager_format_score(text, parse_manager_output(text, _loads(ids))) for text, ids in zip(texts, shown_ids)]


def manager_compression_reward(prompts: list, completions: list, shown_ids: list, **_: Any) -> list[float]:
    """Minus the number of memories each reply adds to the bank."""
    return [-float(sum(op.op == "ADD" for op in parse_manager_output(completion_text(c), _loads(ids)).ops))
            for c, ids in zip(completions, shown_ids)]


# --------------------------------------------------------------------------- Memory Manager: operations vs gold


def op_signature(ops: Sequence[Any]) -> Counter:
    """What operation accuracy compares: the multiset of (op, target id); NOOPs count as nothing."""
    out: Counter = Counter()
    for op in ops:
        name = op["op"] if isinstance(op, dict) else op.op
        target = op.get("id") if isinstance(op, dict) else op.id
        if name != "NOOP":
            out[(name, None if name == "ADD" else str(target))] += 1
    return out


def ops_match(parse: ManagerParse, gold_ops: Sequence[dict[str, Any]]) -> bool:
    """Whether a parsed reply does what the gold operations do: same kinds, same targets (texts not compared)."""
    return parse.ok and op_signature(parse.ops) == op_signature(gold_ops)


def op_match_score(parse: ManagerParse, gold_ops: Sequence[dict[str, Any]]) -> float:
    """1.0 for the gold operations, half credit for the right kinds on the wrong memories, 0 for other kinds.

    Graded because the exact match is too sparse to learn from: a sampled
    UPDATE of a change turn is rarely aimed at the right id, and scored 0 it
    teaches only that UPDATE is bad, so the policy falls back to ADD
    everywhere. Half of the score is the F1 of the operation kinds, half the
    F1 of (kind, target) pairs (a NOOP reply is the empty multiset).
    """
    if not parse.ok:
        return 0.0
    predicted, gold = op_signature(parse.ops), op_signature(gold_ops)
    if predicted == gold:
        return 1.0

    def kinds(signature: Counter) -> Counter:
        out: Counter = Counter()
        for (name, _), n in signature.items():
            out[name] += n
        return out

    return 0.5 * multiset_f1(kinds(predicted), kinds(gold)) + 0.5 * multiset_f1(predicted, gold)


def values_stated(parse: ManagerParse, gold_ops: Sequence[dict[str, Any]]) -> bool:
    """Whether every value the gold ADD/UPDATEs store appears in some added or updated text."""
    texts = " ".join((op.text or "").lower() for op in parse.ops if op.op in TEXT_OPS)
    return all(str(op["value"]).lower() in texts for op in gold_ops if op.get("value"))


def manager_op_match_reward(prompts: list, completions: list, shown_ids: list, gold_ops: list,
                            **_: Any) -> list[float | None]:
    """`op_match_score` of each reply against the gold operations (synthetic data only; None without gold)."""
    out: list[float | None] = []
    for c, ids, gold in zip(completions, shown_ids, gold_ops):
        gold = _loads(gold)
        out.append(None if gold is None else op_match_score(parse_manager_output(completion_text(c), _loads(ids)),
                                                            gold))
    return out


# --------------------------------------------------------------------------- readers


class Reader(Protocol):
    """Answers a question from a bank (frozen while the Manager trains)."""

    def __call__(self, bank: MemoryBank, question: dict[str, Any]) -> str: ...


class CandidateReader:
    """A model-free reader for questions that list their possible answers (synthetic data).

    It retrieves the top `k` memories for the question, takes from each the
    candidate answer it mentions last ("moved from Lisbon to Oslo" states
    Oslo), and answers with that value when all memories agree, "unknown"
    when none mentions one, and with every value found when they disagree
    (never the gold answer): a bank that holds a stale fact next to the new
    one does not answer the question. It reads what the bank states the way
    a perfect extractive reader would, so the Manager's reward measures the
    bank rather than a small model's reading errors, at no model cost.
    """

    def __init__(self, k: int = 60) -> None:
        self.k = k

    def __call__(self, bank: MemoryBank, question: dict[str, Any]) -> str:
        candidates = question.get("candidates")
        if not candidates:
            raise EdgeError("CandidateReader needs questions with candidate answers (synthetic data).",
                            hint="use reader = \"agent\" for LoCoMo")
        if bank.count() == 0:
            return UNKNOWN
        patterns = [(c, re.compile(rf"\b{re.escape(c.lower())}\b")) for c in candidates]
        found: set[str] = set()
        for hit in bank.search(question["question"], k=self.k):
            text = hit.memory.text.lower()
            positions = [(match.start(), c) for c, pattern in patterns for match in pattern.finditer(text)]
            if positions:
                found.add(max(positions)[1])
        if not found:
            return UNKNOWN
        return found.pop() if len(found) == 1 else " / ".join(sorted(found))


class AgentReader:
    """The frozen Answer Agent (`edge.answer.AnswerAgent`) on a backend: Memory-R1's reward reader.

    Built by `edge.train.recipe.build_reader` with the decoding settings of
    the bundle the Manager is trained for (`generation`), so it reads a
    bank the way the served Answer Agent will. Decoding is greedy, so an
    answer depends only on the question and the lines the agent shows
    (`AnswerAgent.fit`): replies of a GRPO group that leave those lines
    as they were share one model call (at most `cache` answers are kept).
    """

    def __init__(self, agent: Any, cache: int = 50_000) -> None:
        self.agent = agent
        self.cache = cache
        self.calls = 0  # answers not found in the cache (an agent shown nothing answers "unknown" without a model)
        self._answers: dict[tuple, str] = {}

    @property
    def generation(self) -> Any:
        """The reader's `edge.generation.GenerationConfig` (its Answer Agent's)."""
        return self.agent.generation

    def __call__(self, bank: MemoryBank, question: dict[str, Any]) -> str:
        from edge.answer import core_block

        text = question["question"]
        # `AnswerAgent.answer`'s steps, the retrieval done once for the key and the answer
        retrieved, core = self.agent.retrieve(bank, text), core_block(bank)
        retired = self.agent.retirements(bank, text, retrieved)
        key: tuple | None = None
        if not self.agent.generation.temperature:  # greedy
            _, _, _, shown = self.agent.fit(text, retrieved, core)
            # every field of every line shown, the core block and the values withheld, hashed: a key stays small
            withheld = sorted((sorted(r.words), sorted(r.newer), r.retracted) for r in retired)
            key = (text, hashlib.sha256(f"{shown!r}\x00{core}\x00{withheld!r}".encode()).hexdigest())
            if key in self._answers:
                return self._answers[key]
        answer = self.agent.answer_from(text, retrieved, core=core, retired=retired).answer
        self.calls += 1
        if key is not None:
            if len(self._answers) >= self.cache:
                self._answers.clear()
            self._answers[key] = answer
        return answer


# --------------------------------------------------------------------------- Memory Manager: outcome


class CachedEmbedder:
    """Wraps an embedder and remembers each text's vector: rebuilding a bank per completion stays cheap."""

    def __init__(self, inner: Embedder, limit: int = 200_000) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.limit = limit
        self._cache: dict[str, Any] = {}

    def embed(self, texts: list[str]):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            if len(self._cache) + len(missing) > self.limit:
                self._cache.clear()
            for text, vector in zip(missing, self.inner.embed(missing)):
                self._cache[text] = vector
        return np.stack([self._cache[t] for t in texts]) if texts else self.inner.embed([])


def rebuild_bank(bank_rows: Sequence[dict[str, Any]], embedder: Embedder, log: Sequence[Turn] = ()
                 ) -> tuple[MemoryBank, dict[str, str]]:
    """An in-memory bank holding `bank_rows` (an episode's memories, with their source turns and speaker) and,
    when given, `log` written to the episodic log as the runtime writes it (`edge.manager.log_entry_for`);
    returns it and key -> new id."""
    bank = MemoryBank.open(":memory:", embedder)
    try:
        if log:
            bank.apply([log_entry_for(turn) for turn in log])
        if bank_rows:
            applied = bank.apply([AddOp(m["text"], m["tier"], m.get("event_time"),
                                        tuple(m.get("source_turns") or ()), dict(m.get("metadata") or {}))
                                  for m in bank_rows])
            return bank, {m["key"]: a.memory_id for m, a in zip(bank_rows, applied)}
        return bank, {}
    except BaseException:
        bank.close()
        raise


def apply_reply(bank: MemoryBank, parse: ManagerParse, shown_real_ids: Sequence[str], turn: Turn) -> str | None:
    """Apply a parsed reply to `bank` as the runtime Manager does; the bank's refusal reason, if any.

    The operations come from `edge.manager.to_bank_ops`, the function the
    runtime `MemoryManager.process` calls: the same grounding, instruction,
    redundancy and topic checks, the same supersede-not-destroy UPDATE and
    DELETE, in one transaction recorded as the Manager's for this turn. So
    the facts this bank holds afterwards are those the served Manager would
    write for the same reply (`tests/test_generation_config.py` checks it).
    Unlike the runtime, this does not add the turn itself to the episodic
    log: `score_reply` has it there already when the reward's context is
    "served" (every reply of a group shares it), and leaves it out for
    "facts" (a reader could answer from it whatever the reply did); the
    topic check counts how often a word is said over the log the bank holds
    (none for "facts": every word in common counts, as it did).
    (A turn longer than `edge.manager.MANAGER_TURN_CHARS` reaches the served
    Manager in pieces; an episode holds it whole.)
    """
    id_map = IdMap(list(shown_real_ids))
    ops = to_bank_ops(parse, id_map, turn, [bank.get(i) for i in shown_real_ids], frequency=bank.turn_frequency)
    if not ops:
        return None
    try:
        bank.apply(ops, actor="manager", turn=turn_reference(turn))
    except EdgeError as exc:
        return exc.message
    return None


REWARD_CONTEXTS = ("facts", "served")


def score_reply(text: str, row: dict[str, Any], reader: Reader, embedder: Embedder,
                metric: Callable[[object, object], float] = exact_match, context: str = "facts"
                ) -> tuple[float | None, list[str]]:
    """Mean score of `reader`'s answers after applying reply `text` to the episode's bank; and the answers.

    `context` "facts": the bank holds the facts only, so the reader answers
    from what the reply kept; "served": the episode's log (`row["log"]`,
    every turn so far, this one included) is in the bank too, as the
    runtime keeps it, so what differs between replies is what their facts
    add to the log. Raises `ValueError` for another context.
    """
    if context not in REWARD_CONTEXTS:
        raise ValueError(f"context must be one of {REWARD_CONTEXTS}, not {context!r}")
    questions = _loads(row["questions"])
    if not questions:
        return None, []
    parse = parse_manager_output(text, _loads(row["shown_ids"]), delete_cap=DEFAULT_DELETE_CAP)  # as the runtime's
    log = [Turn(**t) for t in _loads(row.get("log") or "[]")] if context == "served" else ()
    if context == "served" and not log:  # the log holds at least the turn itself
        raise ValueError("context 'served' needs the episode's log (the row's 'log' column, from ManagerEpisode.row)")
    bank, keys = rebuild_bank(_loads(row["bank"]), embedder, log)
    try:
        if parse.ok:
            turn = Turn(**_loads(row["turn"]))
            apply_reply(bank, parse, [keys[k] for k in _loads(row["shown"])], turn)
        answers = [reader(bank, q) for q in questions]
    finally:
        bank.close()
    scores = [metric(a, q["answer"]) for a, q in zip(answers, questions)]
    return sum(scores) / len(scores), answers


class ManagerOutcomeReward:
    """Frozen-reader EM on the episode's questions after applying each sampled reply to a copy of the bank."""

    __name__ = "manager_outcome_reward"

    def __init__(self, reader: Reader, embedder: Embedder, metric: Callable[[object, object], float] = exact_match,
                 context: str = "facts"):
        if context not in REWARD_CONTEXTS:
            raise ValueError(f"context must be one of {REWARD_CONTEXTS}, not {context!r}")
        self.reader = reader
        self.embedder = CachedEmbedder(embedder)
        self.metric = metric
        self.context = context

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        keys = ("questions", "shown_ids", "bank", "shown", "turn") + (("log",) if self.context == "served" else ())
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            row = {k: columns[k][i] for k in keys}
            out.append(score_reply(completion_text(completion), row, self.reader, self.embedder, self.metric,
                                   self.context)[0])
        log_metric = columns.get("log_metric")
        gold = columns.get("gold_ops")
        if log_metric and gold and any(g not in (None, "null") for g in gold):
            matches = [
                ops_match(parse_manager_output(completion_text(c), _loads(ids)), _loads(g))
                for c, ids, g in zip(completions, columns["shown_ids"], gold) if _loads(g) is not None
            ]
            log_metric("op_accuracy", sum(matches) / len(matches))
        return out
