"""A `Backend` over a transformers model, for frozen readers inside training.

The Manager's reward asks a frozen Answer Agent; on a GPU box the natural
one is the run's own base model, already loaded by transformers. This
backend runs it with the same chat template and the same schema constraint
as everything else in `edge.train` (greedy unless a temperature is given).
It is for training only: the runtime serves models through llama.cpp.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from edge.backends.base import Backend, Completion, Message, check_messages
from edge.errors import BackendError

from edge.train.base_model import render_chat
from edge.train.constrained import SchemaConstraint, constrained_generate


class TransformersBackend(Backend):
    def __init__(self, model, tokenizer, *, name: str = "transformers", n_ctx: int = 4096) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.n_ctx = n_ctx
        self.constraint = SchemaConstraint.for_tokenizer(tokenizer, [tokenizer.eos_token_id])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(self, messages: list[Message], *, schema: dict | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, adapter: str | None = None, stop: list[str] | None = None,
                 choice_bias: dict[str, float] | None = None) -> Completion:
        """Greedy (or sampled) under `schema`; `choice_bias` is not applied (`biases_choices` is False)."""
        check_messages(messages)
        if schema is None:
            raise BackendError("TransformersBackend only decodes under a JSON schema.")
        start = time.perf_counter()
        prompt = render_chat(self.tokenizer, [{"role": m.role, "content": m.content} for m in messages])
        text = constrained_generate(self.model, self.tokenizer, self.constraint, [prompt], [schema],
                                    max_new_tokens=max_tokens, temperature=temperature)[0]
        return Completion(
            text=text, prompt_tokens=self.count_tokens(prompt), completion_tokens=self.count_tokens(text),
            seconds=time.perf_counter() - start, finish_reason="stop",
        )

    def stream(self, messages: list[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               adapter: str | None = None, stop: list[str] | None = None,
               cancel: threading.Event | None = None) -> Iterator[str]:
        raise BackendError("TransformersBackend does not stream; it is a training-time reader.")
