"""A backend that answers from a queue of prepared replies.

For deterministic tests of everything above the model (CLI, chat app,
agent flow): it keeps the full Backend contract — stop strings, max_tokens,
streaming, cancellation, the Completion of each reply — but "tokens" are whitespace-
separated words. With a schema, a reply that is not JSON matching the schema
raises ModelOutputError, as a real constrained backend would never return it.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from edge.backends.base import Backend, Completion, Message, StopScanner, check_messages
from edge.errors import BackendError

_WORDS = re.compile(r"\S+\s*|\s+")


class ScriptedBackend(Backend):
    def __init__(self, replies: list[str] | None = None, *, check_schema: bool = True,
                 adapters: tuple[str, ...] | list[str] = ()) -> None:
        """`check_schema=False` plays a server that ignores JSON schemas (output passes unchecked).

        `adapters`: the LoRA adapter names it plays as loaded (its replies
        stand for the adapted model's), e.g. the default bundle's
        ("manager", "answer"); requests record which one was asked for.
        """
        self.name = "scripted"
        self.check_schema = check_schema
        self._adapters = list(adapters)
        self.replies: deque[str] = deque(replies or [])
        self.calls: list[dict] = []  # every request, for assertions in tests
        self.completions: list[Completion] = []  # every reply's statistics, in order

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def add(self, *replies: str) -> None:
        self.replies.extend(replies)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def checks_replies(self) -> bool:
        """Scripted replies are checked against the schema asked for when `check_schema` (`Backend.complete`)."""
        return self.check_schema

    def _decode(self, messages: list[Message], *, schema: dict | None, max_tokens: int, temperature: float,
                adapter: str | None, stop: list[str] | None, cancel: threading.Event | None,
                done: Callable[[Completion], None]) -> Iterator[str]:
        check_messages(messages)
        if not self.replies:
            raise BackendError(
                "The scripted backend has no replies left.",
                hint="queue one reply per model call: ScriptedBackend([...]) or .add(...)",
            )
        start = time.perf_counter()
        self.calls.append(
            {"messages": list(messages), "schema": schema, "max_tokens": max_tokens,
             "temperature": temperature, "adapter": adapter, "stop": stop}
        )
        reply = self.replies.popleft()
        scanner = StopScanner(stop)
        n_out, finish = 0, "stop"
        try:
            for word in _WORDS.findall(reply):
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if n_out >= max_tokens:
                    finish = "length"
                    break
                n_out += 1 if word.strip() else 0
                out, stopped = scanner.feed(word)
                if out:
                    yield out
                if stopped:
                    break
            if finish != "cancelled":
                tail = scanner.flush()
                if tail:
                    yield tail
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            completion = Completion.since(start, scanner.text, sum(self.count_tokens(m.content) for m in messages),
                                          n_out, finish)
            self.completions.append(completion)
            done(completion)
