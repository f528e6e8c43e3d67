"""The contract every language-model backend keeps.

A backend turns a list of chat messages into text. `complete` returns the
whole answer at once (optionally constrained to a JSON schema) as a
`Completion`; `stream` returns a `Stream`, which yields text pieces as they
are decoded and holds its `Completion` once it ends. Everything above this module (the
Manager, the Answer Agent, the CLI, the chat app) depends only on this file.

Also here: the small helpers backends share — stop-string scanning for
streams and a JSON-schema check for backends that cannot constrain decoding.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edge.errors import BackendError, ModelOutputError

MESSAGE_ROLES = ("system", "user", "assistant")  # a chat message's role; the agents' roles are edge.bundle.ROLES
# The chat template used when a model carries none (ChatML, as most small instruct models use).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FINISH_REASONS = ("stop", "length", "cancelled", "cut")  # cut: a stream that ended before the server said it was done


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of the call
    finish_reason: str  # "stop" | "length" | "cancelled" | "cut" (`FINISH_REASONS`)

    @classmethod
    def since(cls, start: float, text: str, prompt_tokens: int, completion_tokens: int,
              finish_reason: str) -> "Completion":
        """A reply's statistics, its `seconds` measured from `start` (a `time.perf_counter()` reading)."""
        return cls(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   seconds=time.perf_counter() - start, finish_reason=finish_reason)


class Backend(ABC):
    """One loaded language model (plus, optionally, named LoRA adapters)."""

    name: str = "backend"
    # The context window in tokens (prompt + reply). Callers fit their prompts to it; a backend that knows
    # its model's window (llama.cpp) sets its own, others (a server, scripted replies) keep this default.
    n_ctx: int = 4096

    @property
    def adapters(self) -> list[str]:
        """Names of the LoRA adapters loaded next to the model, which `adapter=` may name; none by default."""
        return []

    def render_prompt(self, messages: list[Message]) -> str:
        """The exact text the model reads for `messages` (its chat template applied).

        Raises `BackendError` for a backend that does not see the prompt
        text (a server applies its own template).
        """
        raise BackendError(f"The {self.name} backend does not expose the text of its prompts.")

    def complete(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        adapter: str | None = None,
        stop: list[str] | None = None,
        choice_bias: Mapping[str, float] | None = None,
        **options: Any,
    ) -> Completion:
        """Answer `messages`.

        With `schema`, decoding is constrained to JSON matching it: when
        finish_reason is "stop" the text parses and conforms (a reply cut off
        by max_tokens, finish_reason "length", may not). `adapter` names a
        LoRA adapter loaded into the backend; None is the base model.
        `choice_bias` maps options of a choice schema (`ChoiceReply`) to a
        logit offset added to the first token of each where the options
        begin: {"unknown": -2.0} makes "unknown" win only by 2 logits
        (`GenerationConfig.unknown_margin`). Backends that see no logits (a
        server) decode without it: `biases_choices` says which.
        `options` are a backend's own (llama.cpp: `ignore_eos`).

        Written once for every backend that decodes in steps: `_decode`
        runs to its end, and a reply the backend could not constrain
        (`checks_replies`) is checked against the schema here, raising
        `ModelOutputError`.
        """
        if choice_bias and self.biases_choices and schema is not None:
            options["choice_bias"] = dict(choice_bias)
        done: list[Completion] = []
        for _ in self._decode(messages, schema=schema, max_tokens=max_tokens, temperature=temperature,
                              adapter=adapter, stop=stop, cancel=None, done=done.append, **options):
            pass
        assert done, "a backend's _decode hands its Completion to `done` when it ends"
        completion = done[-1]
        if schema is not None and completion.finish_reason == "stop" and self.checks_replies:
            parse_json(completion.text, schema)
        return completion

    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        adapter: str | None = None,
        stop: list[str] | None = None,
        cancel: threading.Event | None = None,
        **options: Any,
    ) -> "Stream":
        """The reply's text pieces as they are decoded (a `Stream`: its `completion` once it has ended).

        Setting `cancel` stops the stream after the piece being decoded
        (finish_reason "cancelled"); so does closing it. A local backend
        serves one call at a time: an open stream holds the model until it
        ends or is closed.
        """
        return Stream(lambda done: self._decode(messages, schema=None, max_tokens=max_tokens, temperature=temperature,
                                                adapter=adapter, stop=stop, cancel=cancel, done=done, **options))

    def require_adapter(self, adapter: str | None) -> None:
        """Raise `BackendError` unless `adapter` is None (the base model) or one of `adapters`."""
        if adapter is not None and adapter not in self.adapters:
            raise BackendError(f"No LoRA adapter named {adapter!r} is loaded in {self.name}.",
                               hint=f"loaded adapters: {', '.join(self.adapters) or 'none'}")

    # Whether `complete` must check a reply against its schema: a backend that cannot constrain decoding says so.
    checks_replies: bool = False
    # Whether `complete`'s `choice_bias` reaches the logits (a backend that decodes them itself says so).
    biases_choices: bool = False

    def _decode(self, messages: list[Message], *, schema: dict | None, max_tokens: int, temperature: float,
                adapter: str | None, stop: list[str] | None, cancel: threading.Event | None,
                done: Callable[[Completion], None], **options: Any) -> Iterator[str]:
        """The one thing a backend that decodes in steps writes: yield the reply's text pieces, and hand its
        `Completion` to `done` when it ends (also when cancelled or closed). A backend that answers whole (a
        server) overrides `complete` too, and streams through this."""
        raise NotImplementedError(f"{type(self).__name__} decodes nothing by itself")

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes in this backend's tokenizer."""

    def close(self) -> None:
        """Free the model. The backend cannot be used afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Stream:
    """A reply being decoded: iterate it for its text pieces; `completion` holds its statistics once it ends.

    `completion` is None until the pieces run out, the stream is closed
    (finish_reason "cancelled") or it fails. Closing it (or leaving a
    `with` block) frees the model for the next call.
    """

    def __init__(self, start: Callable[[Callable[[Completion], None]], Iterator[str]]) -> None:
        self.completion: Completion | None = None
        self._pieces = start(self._finish)

    def _finish(self, completion: Completion) -> None:
        self.completion = completion

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_messages(messages: list[Message]) -> None:
    """Reject malformed message lists before they reach a model."""
    if not messages:
        raise ValueError("messages must not be empty")
    for message in messages:
        if message.role not in MESSAGE_ROLES:
            raise ValueError(f"unknown role {message.role!r}; use one of {', '.join(MESSAGE_ROLES)}")


class DecodeLock:
    """One decode at a time per model, and no thread waiting on itself.

    A stream holds the lock until it is exhausted or closed; a second call
    from the thread that holds an open stream would otherwise deadlock, so
    it raises BackendError instead. Other threads wait their turn.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._owner == threading.get_ident():
            raise BackendError(
                "This backend is still streaming an earlier reply in this thread.",
                hint="consume the stream to its end (or call .close() on it) before the next call",
            )
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None


class StopScanner:
    """Finds stop strings in streamed text without ever yielding part of one.

    `feed(piece)` returns the text that is safe to show now and whether a
    stop string was reached; text that might be the start of a stop string
    is held back until the next piece decides it.
    """

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in (stops or []) if s]
        self.text = ""  # everything accepted so far (never contains a stop string)
        self._pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            self.text += piece
            return piece, False
        buffer = self._pending + piece
        cut = min((i for i in (buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out = buffer[:cut]
            self.text += out
            self._pending = ""
            return out, True
        hold = self._partial_stop_length(buffer)
        out, self._pending = buffer[: len(buffer) - hold], buffer[len(buffer) - hold :]
        self.text += out
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        self.text += out
        return out

    def _partial_stop_length(self, buffer: str) -> int:
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest


class ChoiceReply:
    """A reply that picks one of a few strings: `{"<key>": <one of options>}` (the extractive answer).

    Greedy decoding under such a schema's grammar spends most of its steps
    on characters the grammar already decides: the opening `{"answer": "`,
    and the rest of an option once its first tokens rule out every other.
    `prefix` is the reply's fixed start (the key and the options' common
    prefix), evaluated with the prompt in one batch; `settled(text)` gives
    the whole reply as soon as `text` is consistent with one option only.
    The start is canonical JSON (`{"answer": "`, as `json.dumps` writes
    it): the grammar leaves the whitespace free and the model otherwise
    picks it, sometimes `{ "answer"`. A backend that decodes such a reply
    in steps of its own (llama.cpp here, the training rollouts) starts it
    with `prefix`; the reply parses to an option as before.
    """

    def __init__(self, key: str, options: list[str]) -> None:
        self.key, self.options = key, list(options)
        self.head = "{" + json.dumps(key, ensure_ascii=False) + ': "'
        # The options as the grammar spells them inside the quotes (JSON escapes, characters whole).
        self.spelled = [json.dumps(o, ensure_ascii=False)[1:-1] for o in options]
        self.prefix = self.head + os.path.commonprefix(self.spelled)
        # The reply up to where the options begin, with any JSON whitespace the grammar lets a model write
        # (`at_options`, checked at every decoding step of a biased choice).
        self._opening = re.compile(r"\s*\{\s*" + re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:\s*\""
                                   + re.escape(self.prefix[len(self.head):]))

    @classmethod
    def of(cls, schema: dict) -> ChoiceReply | None:
        properties = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(properties, dict) or len(properties) != 1:
            return None
        (key, value), = properties.items()
        if schema.get("required") != [key] or not isinstance(value, dict) or set(value) != {"enum"}:
            return None
        options = value["enum"]
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            return None
        return cls(key, options)

    def at_options(self, text: str) -> bool:
        """Whether `text` (the reply so far) is the opening and the options' common start, nothing more: the
        step where the next token chooses between options (any JSON whitespace the grammar let the model write)."""
        return self._opening.fullmatch(text) is not None

    def option_rest(self, option: str) -> str:
        """What follows the options' common start for `option` (its spelling and the closing quote): the text
        whose first token a `choice_bias` offsets."""
        spelled = json.dumps(option, ensure_ascii=False)[1:-1] + '"'
        return spelled[len(self.prefix) - len(self.head):]

    def first_token_offsets(self, bias: Mapping[str, float], tokenize: Callable[[str], list[int]]) -> dict[int, float]:
        """`bias` (option -> logit offset) as offsets of the first token of each option's rest (`option_rest`,
        tokenized by `tokenize`): what a backend adds where the options begin. Options not offered, and zero
        offsets, are left out; options sharing a first token add up."""
        offsets: dict[int, float] = {}
        for option, value in bias.items():
            if option not in self.options or not value:
                continue
            first = tokenize(self.option_rest(option))
            if first:
                offsets[first[0]] = offsets.get(first[0], 0.0) + float(value)
        return offsets

    def settled(self, text: str) -> str | None:
        """The whole reply once `text` (the reply so far, `prefix` included) fits one option only."""
        inside = text[len(self.head):]
        fitting = [s for s in self.spelled if (s + '"').startswith(inside) or inside.startswith(s + '"')]
        return self.head + fitting[0] + '"}' if len(fitting) == 1 else None


# ---------------------------------------------------------------- JSON checks

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def parse_json(text: str, schema: dict) -> object:
    """Parse `text` as JSON and check it against `schema`, or raise ModelOutputError.

    Covers the subset of JSON Schema that constrained decoding uses:
    type, properties, required, additionalProperties, items, enum, const,
    minItems/maxItems, minLength/maxLength, anyOf/oneOf. Backends that
    cannot constrain decoding use it to refuse invalid output instead of
    passing it on.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelOutputError(
            f"model output is not JSON ({exc.msg} at position {exc.pos})",
            hint="use a backend with constrained decoding, or raise max_tokens if the output was cut off",
        ) from exc
    problem = schema_violation(value, schema)
    if problem:
        raise ModelOutputError(f"model output does not match the schema: {problem}")
    return value


def schema_violation(value: object, schema: dict, path: str = "$") -> str | None:
    """The first way `value` breaks `schema`, or None when it conforms."""
    if "const" in schema and value != schema["const"]:
        return f"{path} must be {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path} must be one of {schema['enum']!r}"
    for key in ("anyOf", "oneOf"):
        if key in schema and all(schema_violation(value, s, path) for s in schema[key]):
            return f"{path} matches none of the {key} alternatives"
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return f"{path} must be of type {kind}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{path} must be at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path} must be at most {schema['maxLength']} characters"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                return f"{path} lacks required key {name!r}"
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problem = schema_violation(item, properties[name], f"{path}.{name}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{path} has unexpected key {name!r}"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path} needs at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path} allows at most {schema['maxItems']} items"
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problem = schema_violation(item, schema["items"], f"{path}[{i}]")
                if problem:
                    return problem
    return None


def _is_type(value: object, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected = _TYPES.get(kind)
    return expected is not None and isinstance(value, expected)
