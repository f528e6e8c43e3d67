"""The bundle's own chat model as `edge serve`'s upstream: OpenAI chat completions from an in-process backend.

`edge serve` forwards chat requests to a model server; with none named
(no `--upstream`, and the chat role runs in process) the reply comes from the
chat role's backend itself, written as an OpenAI-compatible server writes it:
a `chat.completion` object, or `chat.completion.chunk` server-sent events
ending with `data: [DONE]` (the shapes of OpenAI's API reference, which the
`openai` client parses). Decoding is the chat role's, as `edge chat` decodes
(its adapter, the bundle's `chat_max_tokens` unless the request asks for
fewer tokens, greedy unless the request gives a temperature).
"""
from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from edge.backends.base import Backend, Message
from edge.errors import InvalidInputError
from edge.model_calls import adapter_for


def request_messages(messages: Any) -> list[Message]:
    """An OpenAI `messages` list as backend messages (text parts of a multi-part message joined).

    Raises `InvalidInputError` for a message the backends cannot take (a role other than system, user and
    assistant, or no text).
    """
    out = []
    for message in messages if isinstance(messages, list) else []:
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            what = "no content" if content is None else "content that is not text"
            raise InvalidInputError(f"A message the chat model cannot take: role {role!r} with {what}.",
                                    hint="send system, user and assistant messages with text content")
        out.append(Message(role, content))
    if not out:
        raise InvalidInputError("The request has no messages.", hint="send at least one user message")
    return out


class LocalChat:
    """Chat completions from `backend` (with `adapter`, None for the base model), named `model` to clients."""

    def __init__(self, backend: Backend, *, model: str, adapter: str | None, max_tokens: int) -> None:
        self.backend = backend
        self.model = model
        self.adapter = adapter
        self.max_tokens = max_tokens

    def _settings(self, body: dict[str, Any]) -> dict[str, Any]:
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        max_tokens = min(int(asked), self.max_tokens) if isinstance(asked, int) and asked > 0 else self.max_tokens
        temperature = body.get("temperature")
        return {"max_tokens": max_tokens, "adapter": adapter_for(self.backend, self.adapter),
                "temperature": float(temperature) if isinstance(temperature, (int, float)) else 0.0}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A `chat.completion` object for the request `body`. Raises `BackendError` when the model fails."""
        completion = self.backend.complete(request_messages(body.get("messages")), **self._settings(body))
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "finish_reason": "length" if completion.finish_reason == "length" else "stop"}],
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.prompt_tokens + completion.completion_tokens},
        }

    def chunks(self, body: dict[str, Any], cancel: threading.Event | None = None) -> Iterator[bytes]:
        """The reply as server-sent `chat.completion.chunk` events, then `data: [DONE]`.

        Iterate it in one thread (a local backend's stream holds the model
        until it ends); setting `cancel` ends it after the piece being
        decoded. Raises `BackendError` when the model fails.
        """
        messages = request_messages(body.get("messages"))
        settings = self._settings(body)
        ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": self.model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        pieces = self.backend.stream(messages, cancel=cancel, **settings)
        try:
            yield event({"role": "assistant"}, None)
            for piece in pieces:
                yield event({"content": piece}, None)
        finally:
            pieces.close()  # a client gone away: the model is free for the next request
        done = pieces.completion
        yield event({}, "length" if done is not None and done.finish_reason == "length" else "stop")
        yield b"data: [DONE]\n\n"


def pump(chunks: Iterator[bytes], cancel: threading.Event) -> "queue.Queue[bytes | Exception | None]":
    """Iterate `chunks` in a thread of its own, each chunk put on the returned queue, then None (or the error).

    The reader takes them at its pace from any thread; setting `cancel`
    (the client went away) ends the reply after the piece being decoded.
    """
    out: queue.Queue[bytes | Exception | None] = queue.Queue()

    def run() -> None:
        try:
            for chunk in chunks:
                out.put(chunk)
                if cancel.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - handed to the reader, who says it to the client
            out.put(exc)
        finally:
            out.put(None)

    threading.Thread(target=run, name="edge-serve-local-reply", daemon=True).start()
    return out
