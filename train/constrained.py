"""Decoding under the same JSON schemas the runtime gives llama.cpp.

At run time the Manager's and the Answer Agent's replies are decoded under a
grammar made from `edge.prompts.manager_schema` / `answer_schema`. Rollouts
for training must be decoded under the same constraint, or the model is
trained on outputs it will never produce when served (and, sampled freely,
the untrained 135M model writes no valid JSON at all: every reward is 0 and
so is the gradient).

`edge.train.json_automaton` turns those schemas into a character automaton
of the canonical JSON layout; this module runs it over a tokenizer's
vocabulary: a `LogitsProcessor` that, at each step, leaves only the tokens
whose whole text keeps the reply inside the language (string maxLength
included), and end-of-sequence only once the JSON is complete.

Allowed-token sets are computed once per automaton state by walking a trie
of the vocabulary and cached, so after the first few batches a step costs a
dictionary lookup per row. When the remaining token budget gets short, only
tokens that lead towards closing the JSON are allowed, so a reply is never
cut off mid-object.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edge.train.json_automaton import Grammar, compile_schema

# --------------------------------------------------------------------------- vocabulary


class Vocabulary:
    """Each token's text, a trie over those texts, and the ids that end a reply."""

    def __init__(self, tokenizer, eos_ids: Sequence[int] | None = None) -> None:
        size = len(tokenizer)
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        anchor = tokenizer.encode("a", add_special_tokens=False)[-1:]
        base = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
        texts = tokenizer.batch_decode(
            [anchor + [i] for i in range(size)], clean_up_tokenization_spaces=False, skip_special_tokens=False
        )
        self.texts: list[str | None] = []
        for i, text in enumerate(texts):
            piece = text[len(base) :] if text.startswith(base) else None
            ok = piece and i not in special and "\ufffd" not in piece
            self.texts.append(piece if ok else None)
        eos = list(eos_ids) if eos_ids is not None else []
        if not eos and tokenizer.eos_token_id is not None:
            eos = [tokenizer.eos_token_id]
        self.eos_ids = sorted(set(eos))
        self.size = size
        self.trie: dict = {}
        for i, piece in enumerate(self.texts):
            if piece is None:
                continue
            node = self.trie
            for ch in piece:
                node = node.setdefault(ch, {})
            node.setdefault(None, []).append(i)


@dataclass
class _Allowed:
    """The tokens allowed in one automaton state, with what each does."""

    ids: np.ndarray  # token ids that keep the reply valid
    dists: np.ndarray  # characters still needed after each of them
    heads: np.ndarray  # characters each adds to the string open in this state, before leaving it
    whole: np.ndarray  # True where the token stays inside that string
    tails: np.ndarray  # string characters at the token's end (the length of a string it leaves open)
    next_states: list[frozenset[int]]  # aligned with ids
    index: dict[int, int]  # token id -> position in ids
    accepting: bool
    choice: bool  # a branch point of the schema (see Grammar.is_choice)
    value_choice: bool  # a branch point between values (see Grammar.is_value_choice)
    limit: int | None  # maxLength of the string open in this state
    successors: list[frozenset[int]]  # the distinct states the tokens lead to
    successor_of: np.ndarray  # aligned with ids: index into successors
    token_dists: np.ndarray | None = None  # aligned with ids: fewest tokens to finish after each (lazy)


@dataclass
class SchemaConstraint:
    """Caches, per tokenizer, the automata of schemas and the allowed tokens of their states."""

    vocabulary: Vocabulary
    _grammars: dict[str, Grammar] = field(default_factory=dict)
    _allowed: dict[tuple[int, frozenset[int]], _Allowed] = field(default_factory=dict)
    _token_distance: dict[tuple[int, frozenset[int]], int] = field(default_factory=dict)

    @classmethod
    def for_tokenizer(cls, tokenizer, eos_ids: Sequence[int] | None = None) -> "SchemaConstraint":
        return cls(Vocabulary(tokenizer, eos_ids))

    def grammar(self, schema: dict[str, Any]) -> Grammar:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._grammars[key] = compile_schema(schema)
        return grammar

    def allowed(self, grammar: Grammar, state: frozenset[int]) -> _Allowed:
        key = (id(grammar), state)
        found = self._allowed.get(key)
        if found is not None:
            return found
        ids: list[int] = []
        dists: list[int] = []
        heads: list[int] = []
        whole: list[bool] = []
        tails: list[int] = []
        nexts: list[frozenset[int]] = []
        # (trie node, state, head, head still open, tail)
        stack = [(self.vocabulary.trie, state, 0, True, 0)]
        while stack:
            node, at, head, head_open, tail = stack.pop()
            for ch, child in node.items():
                if ch is None:
                    continue
                after = grammar.step(at, ch)
                if after is None:
                    continue
                safe = grammar.in_string(after)
                still = head_open and safe
                h, t = head + 1 if still else head, tail + 1 if safe else 0
                ending = child.get(None)
                if ending:
                    d = grammar.distance(after)
                    for token in ending:
                        ids.append(token)
                        dists.append(d)
                        heads.append(h)
                        whole.append(still)
                        tails.append(t)
                        nexts.append(after)
                stack.append((child, after, h, still, t))
        found = _Allowed(
            np.asarray(ids, dtype=np.int64), np.asarray(dists, dtype=np.int64), np.asarray(heads, dtype=np.int64),
            np.asarray(whole, dtype=bool), np.asarray(tails, dtype=np.int64), nexts,
            {token: i for i, token in enumerate(ids)}, grammar.accepts(state), grammar.is_choice(state),
            grammar.is_value_choice(state),
            grammar.string_limit(state), *_distinct(nexts),
        )
        self._allowed[key] = found
        return found

    def token_distance(self, grammar: Grammar, state: frozenset[int]) -> int:
        """The fewest tokens that complete the JSON from `state` (0: complete), by breadth-first search."""
        key = (id(grammar), state)
        found = self._token_distance.get(key)
        if found is not None:
            return found
        frontier, seen, depth = [state], {state}, 0
        while frontier and not any(grammar.accepts(s) for s in frontier):
            nxt = []
            for s in frontier:
                for after in self.allowed(grammar, s).successors:
                    if after not in seen:
                        seen.add(after)
                        nxt.append(after)
            frontier, depth = nxt, depth + 1
        self._token_distance[key] = depth
        return depth

    def token_dists(self, grammar: Grammar, allowed: _Allowed) -> np.ndarray:
        """For each allowed token: the fewest tokens that complete the JSON after it."""
        if allowed.token_dists is None:
            per_successor = np.asarray([self.token_distance(grammar, s) for s in allowed.successors], dtype=np.int64)
            allowed.token_dists = per_successor[allowed.successor_of] if len(per_successor) else per_successor
        return allowed.token_dists

    def processor(self, schemas: Sequence[dict[str, Any]], max_new_tokens: int, *,
                  choice_temperature: float = 1.0) -> "SchemaLogitsProcessor":
        """A fresh logits processor for one `generate` call: row i follows `schemas[i]`."""
        return SchemaLogitsProcessor(self, [self.grammar(s) for s in schemas], max_new_tokens,
                                     choice_temperature=choice_temperature)


def _distinct(states: list[frozenset[int]]) -> tuple[list[frozenset[int]], np.ndarray]:
    index: dict[frozenset[int], int] = {}
    positions = [index.setdefault(s, len(index)) for s in states]
    return list(index), np.asarray(positions, dtype=np.int64)


class SchemaLogitsProcessor:
    """Masks, row by row, every token that would leave the row's schema.

    Use one instance per `generate` call (it remembers where each row is).
    Rows whose JSON is complete may only end; rows that already ended are
    left alone (generate pads them).

    `choice_temperature` > 1 flattens the model's distribution where the
    schema branches between values only (which operation, which id, which
    tier), on top of the sampling temperature; free text and the choice to
    add one more operation are untouched (flattening that one fills replies
    with random extra operations, which then blame the good first one). Rollouts then try the operations a small model almost
    never picks on its own (the untrained 135M model puts ~99% on ADD), so
    a group holds different operations whose rewards can be compared. Keep
    it at 1.0 for evaluation and serving.
    """

    def __init__(self, constraint: SchemaConstraint, grammars: list[Grammar], max_new_tokens: int, *,
                 choice_temperature: float = 1.0) -> None:
        self.constraint = constraint
        self.choice_temperature = choice_temperature
        self.grammars = grammars
        self.max_new_tokens = max_new_tokens
        self.states: list[frozenset[int] | None] = [g.start for g in grammars]
        self.runs: list[int] = [0] * len(grammars)  # characters written in each row's open string
        self.choices: list[list[bool]] = [[] for _ in grammars]  # per row and token: sampled at a branch point?
        self.prompt_length: int | None = None
        self.invalid_rows: set[int] = set()

    def __call__(self, input_ids, scores):
        import torch

        rows = input_ids.shape[0]
        if rows != len(self.grammars):
            raise ValueError(f"{rows} rows are being generated but {len(self.grammars)} schemas were given")
        eos = self.constraint.vocabulary.eos_ids
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        else:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                state = self.states[row]
                if state is None:
                    continue
                if token in eos:
                    self.states[row] = None
                    continue
                allowed = self.constraint.allowed(self.grammars[row], state)
                i = allowed.index.get(token)
                if i is None:  # a token this processor did not allow (e.g. forced by another processor)
                    self.invalid_rows.add(row)
                    self.states[row] = None
                    continue
                self.states[row] = allowed.next_states[i]
                self.runs[row] = self.runs[row] + int(allowed.heads[i]) if allowed.whole[i] else int(allowed.tails[i])
        remaining = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)
        mask = torch.full_like(scores, float("-inf"))
        for row in range(rows):
            state = self.states[row]
            if state is None:
                mask[row] = 0.0
                continue
            allowed = self.constraint.allowed(self.grammars[row], state)
            self.choices[row].append(allowed.choice)
            keep = None
            if allowed.limit is not None and self.runs[row] + int(allowed.heads.max(initial=0)) > allowed.limit:
                keep = self.runs[row] + allowed.heads <= allowed.limit  # the string's maxLength
            if len(allowed.ids) and remaining - 2 < int(allowed.dists.max()):
                # Leave room to close the JSON and end. Characters left bound the tokens left, so the exact
                # token count is only looked up when the budget may be short.
                needed = self.constraint.token_dists(self.grammars[row], allowed)
                short = needed <= remaining - 2
                short = short if keep is None else keep & short
                if not short.any():  # too late for that bound: take the tokens that get closest
                    base = np.ones_like(short) if keep is None or not keep.any() else keep
                    short = base & (needed == needed[base].min())
                keep = short
            ids = allowed.ids if keep is None else allowed.ids[keep]
            if allowed.value_choice and self.choice_temperature != 1.0:
                scores[row] = scores[row] / self.choice_temperature
            if len(ids):
                mask[row, torch.from_numpy(ids).to(mask.device)] = 0.0
            if allowed.accepting or not len(ids):
                mask[row, eos] = 0.0
        return scores + mask


class RepeatPenaltyProcessor:
    """llama.cpp's repeat penalty, so rollouts and dev replies are decoded as the runtime decodes.

    Among the last `last_n` tokens of the reply (llama.cpp's default window
    of 64), positive logits are divided by `penalty` and negative ones
    multiplied. Only the reply's tokens count: the runtime's sampler sees
    the tokens it produced, not the prompt (transformers' own repetition
    penalty would cover the whole prompt, mostly memories the reply must be
    free to quote). One instance per `generate` call: the first call's
    length is taken as the prompt's.
    """

    def __init__(self, penalty: float, last_n: int = 64) -> None:
        self.penalty = penalty
        self.last_n = last_n
        self.prompt_length: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        window = input_ids[:, self.prompt_length:][:, -self.last_n:]
        if self.penalty == 1.0 or window.shape[1] == 0:
            return scores
        picked = torch.gather(scores, 1, window)
        picked = torch.where(picked > 0, picked / self.penalty, picked * self.penalty)
        return scores.scatter(1, window, picked)


def runtime_processors(constraint_processor):
    """The logits processors of a runtime-like decode: repeat penalty, then the JSON-schema mask."""
    from transformers import LogitsProcessorList

    from edge.prompts import REPEAT_PENALTY

    return LogitsProcessorList([RepeatPenaltyProcessor(REPEAT_PENALTY), constraint_processor])


def constrained_generate(model, tokenizer, constraint: SchemaConstraint, prompts: Sequence[str],
                         schemas: Sequence[dict[str, Any]], *, max_new_tokens: int = 96,
                         temperature: float = 0.0, batch_size: int = 8, seed: int | None = None,
                         choice_temperature: float = 1.0) -> list[str]:
    """Decode `prompts` (already chat-formatted text) under `schemas`; greedy when temperature is 0."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    eos = constraint.vocabulary.eos_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    outputs: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            processor = constraint.processor(schemas[start : start + batch_size], max_new_tokens,
                                             choice_temperature=choice_temperature if temperature > 0 else 1.0)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
                else {"do_sample": False}
            with torch.no_grad():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, logits_processor=runtime_processors(processor),
                    eos_token_id=eos, pad_token_id=pad, **sampling,
                )
            for row in out[:, enc["input_ids"].shape[1] :]:
                tokens = [t for t in row.tolist() if t not in eos and t != pad]
                outputs.append(tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    finally:
        tokenizer.padding_side = side
    return outputs
