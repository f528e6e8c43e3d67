"""Decoding under the grammar the runtime gives llama.cpp, with llguidance.

At run time the Manager's and the Answer Agent's replies are decoded by
llama.cpp under the GBNF grammar `edge.backends.gbnf.schema_gbnf` makes
from `edge.prompts.manager_schema` / `answer_schema`. Rollouts for training
must be decoded under the same constraint, or the model is trained on
outputs it will never produce when served (and, sampled freely, the
untrained 135M model writes no valid JSON at all: every reward is 0 and so
is the gradient).

This module compiles that very GBNF text with llguidance
(https://github.com/guidance-ai/llguidance, the Rust engine llama.cpp itself
can be built with) and masks a transformers model's logits with it, token by
token: one grammar, two decoders. A reply that runs out of tokens is cut
off, as llama.cpp cuts it off (finish_reason "length"); nothing here steers
it towards closing the JSON early.

Why llguidance (compared in issue 16):
- llguidance 1.9.1: one 3 MB abi3 wheel with no dependencies; reads GBNF
  through its own `gbnf_to_lark` converter; computes a 49k-token mask in
  tens of microseconds, with a numpy bitmask API applied here as a
  transformers logits processor. Its converter trips on two things
  llama-cpp-python's JSON-schema converter writes (`raw_code_points`,
  `bounded_repetitions` rewrite them into equivalent GBNF first), and it
  is told not to force canonical tokens (`schema_lark`). Its own
  JSON-schema compiler is not used: that would be a second translation of
  the schema, not llama.cpp's grammar.
- xgrammar 0.2.9: reads GBNF too (`Grammar.from_ebnf`), but on Linux
  x86_64 its wheel requires triton (a GPU kernel compiler) and
  apache-tvm-ffi, pulled into a CPU training install.
- outlines 1.3: JSON schemas through outlines-core's regex automaton (its
  own JSON layout, not the GBNF text), CFGs through llguidance anyway; it
  pulls jsonschema, genson and more.
- lm-format-enforcer 0.11: its own character-level JSON-schema parser, no
  GBNF: a second implementation of the language, the problem this module
  had.
tests/test_constraint_equivalence.py checks, token by token over a corpus
of replies, that llguidance allows exactly the tokens llama.cpp's grammar
sampler allows.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

# --------------------------------------------------------------------------- GBNF -> llguidance

_ESCAPE = re.compile(r"\\(U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|.)", re.DOTALL)
_NESTED_OPTIONAL = re.compile(r"\(([\w-]+)((?: \(\1)*)((?:\)\?)+)")
_KEEP_ESCAPED = set('"\\[]^-/')


def raw_code_points(gbnf: str) -> str:
    """`gbnf` with its `\\uXXXX` / `\\UXXXXXXXX` escapes written as the characters themselves.

    gbnf_to_lark copies them with their leading zeros stripped (`\\U1FAE9`),
    which llguidance's Lark reader refuses. Control characters, surrogates
    and GBNF's own syntax characters stay escaped. GBNF has backslashes only
    in escapes, so matching escape by escape never splits one.
    """
    def raw(match: re.Match) -> str:
        body = match.group(1)
        if body[0] not in "uU" or len(body) == 1:
            return match.group(0)
        ch = chr(int(body[1:], 16))
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000 or ch in _KEEP_ESCAPED:
            return match.group(0)
        return ch

    return _ESCAPE.sub(raw, gbnf)


def bounded_repetitions(gbnf: str) -> str:
    """`gbnf` with `x (x (x)?)?` written `x{0,3}`.

    llama-cpp-python's converter writes a string's maxLength as optional
    groups nested maxLength deep, which llguidance's Lark reader refuses as
    "too deeply nested"; `(x x{0,k})?` is `x{0,k+1}`.
    """
    def fold(match: re.Match) -> str:
        name, chain, closers = match.groups()
        depth = chain.count(" (") + 1
        extra = closers.count(")?") - depth
        if extra < 0:  # not the whole nest: leave it as it is
            return match.group(0)
        return f"{name}{{0,{depth}}}" + ")?" * extra

    return _NESTED_OPTIONAL.sub(fold, gbnf)


def schema_lark(schema: dict[str, Any]) -> str:
    """The grammar llama.cpp decodes `schema` under (`schema_gbnf`), in llguidance's Lark syntax."""
    from llguidance.gbnf_to_lark import gbnf_to_lark

    from edge.backends.gbnf import schema_gbnf

    gbnf = schema_gbnf(json.dumps(schema))  # key order matters: the grammar emits properties in schema order
    # no_forcing: where the grammar leaves one way to go on (`ops": [`), llguidance would allow only the canonical
    # tokenization of that text; llama.cpp lets the model write it in any tokens, and so must rollouts.
    return '%llguidance {"no_forcing": true}\n' + gbnf_to_lark(bounded_repetitions(raw_code_points(gbnf)))


# --------------------------------------------------------------------------- the constraint


class _TokenList:
    """What llguidance's TokenizerWrapper reads, for a tokenizer that is not a transformers fast one."""

    def __init__(self, tokenizer) -> None:
        size = len(tokenizer)
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        self.tokens = [b"" if i in special else tokenizer.decode([i]).encode("utf-8") for i in range(size)]
        self.special_token_ids = sorted(special)
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        self._tokenizer = tokenizer

    def __call__(self, text):
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        return list(self._tokenizer.encode(text, add_special_tokens=False))


_WHITESPACE = np.frombuffer(b" \t\n\r", dtype=np.uint8)
_STRUCTURE = np.frombuffer(b",]}[{:", dtype=np.uint8)
# A free JSON string may go on with any printable ASCII character (a quote ends it, a backslash escapes).
_STRING_CHARS = np.asarray([c for c in range(0x20, 0x7F) if c not in (0x22, 0x5C)], dtype=np.int64)


class SchemaConstraint:
    """A tokenizer for llguidance, and the compiled grammars of schemas (a bounded cache)."""

    def __init__(self, ll_tokenizer, eos_ids: Sequence[int], vocab_size: int, cache_size: int = 512) -> None:
        self.ll_tokenizer = ll_tokenizer
        self.eos_ids = sorted(set(eos_ids))
        self.vocab_size = vocab_size
        self.cache_size = cache_size
        self._matchers: OrderedDict[str, Any] = OrderedDict()
        self._executor = None
        # Each token's first byte (-1: a special token or an empty one), for telling branch points apart.
        first = np.full(vocab_size, -1, dtype=np.int16)
        for i in range(vocab_size):
            if i in self.eos_ids or ll_tokenizer.is_special_token(i):
                continue
            piece = ll_tokenizer.decode_bytes([i])
            if piece:
                first[i] = piece[0]
        self.first_byte = first

    @classmethod
    def for_tokenizer(cls, tokenizer, eos_ids: Sequence[int] | None = None) -> "SchemaConstraint":
        """For a transformers tokenizer; `eos_ids` end a reply (default: the tokenizer's eos)."""
        import llguidance

        eos = list(eos_ids) if eos_ids else [tokenizer.eos_token_id]
        size = len(tokenizer)
        try:
            from transformers import PreTrainedTokenizerFast
        except ImportError:  # pragma: no cover - transformers comes with the train extra
            PreTrainedTokenizerFast = ()  # type: ignore[assignment]
        if isinstance(tokenizer, PreTrainedTokenizerFast):
            import llguidance.hf

            ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=size, eos_token=eos)
        else:
            from llguidance import TokenizerWrapper

            ll_tokenizer = llguidance.LLTokenizer(TokenizerWrapper(_TokenList(tokenizer)), n_vocab=size,
                                                  eos_token=eos)
        return cls(ll_tokenizer, eos, size)

    def matcher(self, schema: dict[str, Any]):
        """A fresh llguidance matcher of the runtime's grammar for `schema`, at the start of a reply."""
        import llguidance

        key = json.dumps(schema)
        template = self._matchers.get(key)
        if template is None:
            try:
                lark = schema_lark(schema)
            except Exception as exc:  # the converters raise bare Exceptions
                raise ValueError(f"This JSON schema's grammar cannot be read by llguidance: {exc}") from exc
            template = llguidance.LLMatcher(self.ll_tokenizer, lark, log_level=0)
            if template.is_error():
                raise ValueError(f"llguidance cannot compile the grammar of this schema: {template.get_error()}")
            self._matchers[key] = template
            while len(self._matchers) > self.cache_size:
                self._matchers.popitem(last=False)
        else:
            self._matchers.move_to_end(key)
        return template.deep_copy()

    def accepts(self, schema: dict[str, Any], token_ids: Sequence[int]) -> bool:
        """Whether `token_ids` are a whole reply under `schema` (one that may end there)."""
        matcher = self.matcher(schema)
        return matcher.validate_tokens(list(token_ids)) == len(token_ids) and matcher.consume_tokens(
            list(token_ids)) and matcher.is_accepting()

    def choice_flags(self, schema: dict[str, Any], token_ids: Sequence[int]) -> list[bool]:
        """For each of a reply's tokens, whether it is taken at a branch point (`branch`) of `schema`'s grammar.

        These are the tokens served decoding decides (which operation, id,
        clause); every other one the grammar forces. Raises `ValueError`
        when the grammar refuses a token (the reply is not one the runtime
        could produce).
        """
        matcher = self.matcher(schema)
        flags = []
        for position, token in enumerate(token_ids):
            if matcher.is_stopped():
                raise ValueError(f"the reply goes on after the grammar ended it (token {position})")
            flags.append(self.branch(self.masks([matcher])[0])[0])
            if not matcher.consume_token(token):
                raise ValueError(f"the grammar refuses token {position} ({token}) of the reply")
        return flags

    def masks(self, matchers: Sequence[Any]) -> np.ndarray:
        """The tokens each matcher allows next, as a (rows, vocab) boolean array."""
        import llguidance
        import llguidance.numpy as llnp

        bitmask = llnp.allocate_token_bitmask(len(matchers), self.vocab_size)
        if self._executor is None:
            self._executor = llguidance.LLExecutor()
        llnp.fill_next_token_bitmask_par(self._executor, [(m, i) for i, m in enumerate(matchers)], bitmask)
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
        return bits[:, : self.vocab_size].astype(bool)

    def branch(self, allowed: np.ndarray) -> tuple[bool, bool]:
        """(choice, value_choice) of a position, from the tokens allowed there.

        A choice: the next character (layout whitespace aside) can be one of
        several fixed ones: an operation, an id, a tier, a clause, one more
        item or the end of the list; not free text, not a forced
        continuation. A value choice: one between quoted values, not between
        "one more item" and the end of a list.
        """
        present = np.zeros(256, dtype=bool)
        firsts = self.first_byte[allowed]
        present[firsts[firsts >= 0]] = True
        if present[_STRING_CHARS].all():  # free text
            return False, False
        present[_WHITESPACE] = False
        if present.sum() < 2:
            return False, False
        return True, not present[_STRUCTURE].any()

    def processor(self, schemas: Sequence[dict[str, Any]], *,
                  choice_temperature: float = 1.0) -> "SchemaLogitsProcessor":
        """A fresh logits processor for one `generate` call: row i follows `schemas[i]`."""
        return SchemaLogitsProcessor(self, [self.matcher(s) for s in schemas], choice_temperature=choice_temperature)


class SchemaLogitsProcessor:
    """Masks, row by row, every token the runtime's grammar for the row's schema does not allow.

    Use one instance per `generate` call (it remembers where each row is).
    End-of-sequence is allowed once the reply is complete; rows that already
    ended are left alone (generate pads them). A row that reaches
    max_new_tokens is cut where it is, as llama.cpp cuts it.

    `choices[row]` flags each generated token (end token included) sampled
    at a branch point (`SchemaConstraint.branch`). `choice_temperature` > 1
    flattens the model's distribution where the schema branches between
    values only (which operation, which id, which tier), on top of the
    sampling temperature; free text and the choice to add one more
    operation are untouched (flattening that one fills replies with random
    extra operations, which then blame the good first one). Rollouts then
    try the operations a small model almost never picks on its own (the
    untrained 135M model puts ~99% on ADD), so a group holds different
    operations whose rewards can be compared. Keep it at 1.0 for evaluation
    and serving.
    """

    def __init__(self, constraint: SchemaConstraint, matchers: list[Any], *, choice_temperature: float = 1.0) -> None:
        self.constraint = constraint
        self.choice_temperature = choice_temperature
        self.matchers: list[Any | None] = list(matchers)  # None once a row has ended (or left the grammar)
        self.choices: list[list[bool]] = [[] for _ in matchers]
        self.ended: set[int] = set()  # rows that sampled an end token
        self.invalid_rows: set[int] = set()  # rows given a token the grammar refused (forced by another processor)
        self.prompt_length: int | None = None

    def __call__(self, input_ids, scores):
        import torch

        rows = input_ids.shape[0]
        if rows != len(self.matchers):
            raise ValueError(f"{rows} rows are being generated but {len(self.matchers)} schemas were given")
        eos = self.constraint.eos_ids
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        else:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                matcher = self.matchers[row]
                if matcher is None:
                    continue
                if token in eos:
                    self.ended.add(row)
                    self.matchers[row] = None
                elif not matcher.consume_token(token):
                    self.invalid_rows.add(row)
                    self.matchers[row] = None
        live = [row for row in range(rows) if self.matchers[row] is not None]
        if not live:
            return scores
        vocab = min(self.constraint.vocab_size, scores.shape[1])  # models may pad their output layer
        allowed = np.ones((rows, scores.shape[1]), dtype=bool)
        masks = self.constraint.masks([self.matchers[row] for row in live])
        divide = np.ones(rows, dtype=np.float32)
        for mask, row in zip(masks, live):
            if not mask.any():  # cannot happen with a sound grammar; end the row rather than sample from nothing
                mask = np.zeros_like(mask)
                mask[eos] = True
            choice, value_choice = self.constraint.branch(mask)
            self.choices[row].append(choice)
            if value_choice:
                divide[row] = self.choice_temperature
            allowed[row, :vocab] = mask[:vocab]
            allowed[row, vocab:] = False
        if self.choice_temperature != 1.0 and (divide != 1.0).any():
            scores = scores / torch.from_numpy(divide).to(scores.device, scores.dtype)[:, None]
        return scores.masked_fill(~torch.from_numpy(allowed).to(scores.device), float("-inf"))


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
    """The logits processors of a runtime-like decode: repeat penalty, then the grammar's mask."""
    from transformers import LogitsProcessorList

    from edge.prompts import REPEAT_PENALTY

    return LogitsProcessorList([RepeatPenaltyProcessor(REPEAT_PENALTY), constraint_processor])


def constrained_generate(model, tokenizer, constraint: SchemaConstraint, prompts: Sequence[str],
                         schemas: Sequence[dict[str, Any]], *, max_new_tokens: int = 96,
                         temperature: float = 0.0, batch_size: int = 8, seed: int | None = None,
                         choice_temperature: float = 1.0) -> list[str]:
    """Decode `prompts` (already chat-formatted text) under `schemas`; greedy when temperature is 0.

    A reply still open after `max_new_tokens` comes back cut off, as the
    runtime returns it (finish_reason "length").
    """
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    eos = constraint.eos_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    outputs: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            processor = constraint.processor(schemas[start : start + batch_size],
                                             choice_temperature=choice_temperature if temperature > 0 else 1.0)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
                else {"do_sample": False}
            with torch.no_grad():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, logits_processor=runtime_processors(processor),
                    eos_token_id=eos, pad_token_id=pad, **sampling,
                )
            for row in out[:, enc["input_ids"].shape[1] :]:
                tokens = []
                for t in row.tolist():
                    if t in eos:
                        break
                    tokens.append(t)
                outputs.append(tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    finally:
        tokenizer.padding_side = side
    return outputs
