"""Any OpenAI-compatible chat server: llama-server, llama_cpp.server, Ollama, vLLM.

Requests go to `{root}/v1/chat/completions` (`base_url` may be given with or
without the trailing `/v1`). Streaming reads the server-sent events.

Schema-constrained output (`schema_format`, the `--structured-output` flag).
Servers accept a JSON schema in different ways:

    json_object   response_format={"type": "json_object", "schema": ...}    llama_cpp.server, llama-server
    json_schema   response_format={"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
                                                                             vLLM, LM Studio, OpenAI, llama-server
    grammar       "grammar": GBNF made from the schema                       llama-server, llama_cpp.server
    ollama        Ollama's own /api/chat with "format": schema               Ollama
    none          nothing: the prompt alone asks for JSON
    auto          found on the first schema call by asking the server what it is: /api/version answers on
                  Ollama, /props on llama-server, /extras/tokenize/count on llama_cpp.server; any other
                  server gets json_schema, the OpenAI form (`server_kind` says what was found)

A server that ignores the request returns free text, so the reply is always
checked against the schema and a mismatch raises ModelOutputError naming the
server and the format used (the Manager then retries once and makes the turn
a logged NOOP; see `edge.manager`).

Adapters. OpenAI-style servers expose a LoRA adapter as a model name of its
own (vLLM `--lora-modules manager=...`, an Ollama model per adapter), so
`adapters` maps our adapter names to the model names to request.

Token counting asks the server when it can — `/extras/tokenize/count`
(llama_cpp.server), then `/tokenize` (llama-server) — and otherwise
estimates one token per four bytes of UTF-8, which is the usual ratio for
English text with BPE vocabularies; the estimate is marked by
`token_count_exact = False`. Without a usage block in a streamed reply,
completion tokens are the number of content chunks and prompt tokens are
counted over the message texts alone (chat-template tokens are not seen).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from edge.backends.base import Backend, Completion, Message, check_messages, parse_json
from edge.errors import BackendError, ModelOutputError, require_extra

SCHEMA_FORMATS = ("auto", "json_object", "json_schema", "grammar", "ollama", "none")
DEFAULT_API_KEY_ENV = "EDGE_API_KEY"  # the variable a server's API key is read from, unless one is named
DEFAULT_TIMEOUT_S = 120.0  # how long to wait for a model server's answer (--timeout, config model.timeout)
PROBE_TIMEOUT_S = 5.0


def _import_httpx():
    return require_extra("The HTTP backend", "server", "httpx")


def constrain_request(body: dict, schema: dict, schema_format: str) -> None:
    """Add `schema` to a /v1/chat/completions request body the way `schema_format` says (`SCHEMA_FORMATS`)."""
    if schema_format == "json_schema":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema, "strict": True}}
    elif schema_format == "json_object":
        body["response_format"] = {"type": "json_object", "schema": schema}
    elif schema_format == "grammar":
        from edge.backends.gbnf import schema_gbnf

        body["grammar"] = schema_gbnf(json.dumps(schema))


class OpenAIHTTPBackend(Backend):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120,
        schema_format: str = "json_object",
        adapters: dict[str, str] | None = None,
        n_ctx: int | None = None,
    ) -> None:
        """Talk to the server at `base_url` asking for `model`.

        `schema_format` says how a JSON schema is sent (see the module
        docstring; "auto" asks the server on first use). `n_ctx` is the
        context the server gives the model, in tokens, when known: the
        Manager fits its prompt into it (default 4096). Nothing is sent
        until the first call, so a server that is not up yet is not an
        error here.
        """
        if schema_format not in SCHEMA_FORMATS:
            raise ValueError(f"schema_format must be one of {SCHEMA_FORMATS}, not {schema_format!r}")
        httpx = _import_httpx()
        self._httpx = httpx
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.model = model
        self.name = f"http:{model}@{self.root}"
        self.schema_format = schema_format
        self.server_kind: str | None = None  # set by detect(): "ollama", "llama-server", "llama_cpp.server", ...
        self.n_ctx = n_ctx or 4096
        self.adapter_models = dict(adapters or {})
        self.token_count_exact = True
        self._tokenizer_route: str | None = None  # found on first count_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = float(timeout)
        self._client = httpx.Client(base_url=self.root, headers=headers, timeout=timeout)

    # ------------------------------------------------------------ public API

    def complete(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        adapter: str | None = None,
        stop: list[str] | None = None,
        choice_bias: Mapping[str, float] | None = None,  # a server's logits are its own (`biases_choices`)
    ) -> Completion:
        start = time.perf_counter()
        body = self._body(messages, max_tokens, temperature, adapter, stop, stream=False)
        schema_format = self.detect() if schema is not None and self.schema_format == "auto" else self.schema_format
        if schema is not None and schema_format == "ollama":
            completion = self._complete_ollama(body, schema, start)
            self._check(completion, schema, schema_format)
            return completion
        if schema is not None:
            constrain_request(body, schema, schema_format)
        data = self._json(self._request("POST", "/v1/chat/completions", json=body))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"Unexpected reply from {self.root}: {str(data)[:200]}") from exc
        usage = data.get("usage") or {}
        completion = Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or self._count_messages(messages)),
            completion_tokens=int(usage.get("completion_tokens") or self.count_tokens(text)),
            seconds=time.perf_counter() - start,
            finish_reason=_finish(choice.get("finish_reason")),
        )
        if schema is not None:
            self._check(completion, schema, schema_format)
        return completion

    @property
    def headers(self) -> dict[str, str]:
        """The headers sent with every request (the API key's `Authorization` among them, read from its variable)."""
        return dict(self._client.headers)

    def models(self) -> list[str]:
        """The model names the server lists at /v1/models (empty when it lists none). BackendError when unreachable."""
        data = self._json(self._request("GET", "/v1/models"))
        try:
            return [str(m["id"]) for m in data.get("data") or [] if isinstance(m, dict) and "id" in m]
        except AttributeError:
            return []

    def detect(self) -> str:
        """The schema format this server takes ("auto" resolved by asking the server); remembered once found."""
        if self.schema_format != "auto":
            return self.schema_format
        kind, schema_format = "openai-compatible", "json_schema"
        for path, found, answer in (("/api/version", "ollama", "ollama"), ("/props", "llama-server", "json_object")):
            try:
                response = self._client.get(path, timeout=PROBE_TIMEOUT_S)
                if response.status_code == 200 and isinstance(response.json(), dict):
                    kind, schema_format = found, answer
                    break
            except self._httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            except (self._httpx.HTTPError, ValueError):
                continue
        else:
            if self._server_count("llama_cpp.server", "probe") is not None:
                kind, schema_format = "llama_cpp.server", "json_object"
        self.server_kind, self.schema_format = kind, schema_format
        return schema_format

    def _decode(self, messages: list[Message], *, schema: dict | None, max_tokens: int, temperature: float,
                adapter: str | None, stop: list[str] | None, cancel: threading.Event | None,
                done: Callable[[Completion], None]) -> Iterator[str]:
        """What `Backend.stream` iterates: the reply's pieces as the server sends them (`complete` asks whole)."""
        body = self._body(messages, max_tokens, temperature, adapter, stop, stream=True)
        return self._stream(messages, body, cancel, done)

    def count_tokens(self, text: str) -> int:
        routes = [self._tokenizer_route] if self._tokenizer_route else ["llama_cpp.server", "llama-server"]
        for route in routes:
            count = self._server_count(route, text)
            if count is not None:
                self._tokenizer_route = route
                return count
        self._tokenizer_route = "estimate"
        self.token_count_exact = False
        return math.ceil(len(text.encode("utf-8")) / 4)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------- internals

    def _stream(self, messages: list[Message], body: dict, cancel: threading.Event | None,
                done: Callable[[Completion], None]) -> Iterator[str]:
        httpx = self._httpx
        start = time.perf_counter()
        pieces: list[str] = []
        chunks, finish, usage = 0, "cut", {}  # "cut" until the server says the reply is complete
        try:
            with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                self._raise_for_status(response)
                for line in response.iter_lines():
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:") :].strip()
                    if payload == "[DONE]":
                        finish = "stop" if finish == "cut" else finish
                        break
                    event = json.loads(payload)
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            chunks += 1
                            pieces.append(piece)
                            yield piece
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
        except GeneratorExit:
            finish = "cancelled"
            raise
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        except json.JSONDecodeError as exc:
            raise BackendError(f"Unexpected event from {self.root}: {exc.doc[:200]!r}") from exc
        else:
            if finish == "cut":
                raise BackendError(
                    f"The reply stream from {self.root} ended before the reply was complete (no finish_reason "
                    f"and no [DONE] after {chunks} piece(s)).",
                    hint="the server stopped or the connection was cut; try again",
                )
        finally:
            done(Completion.since(start, "".join(pieces),
                                  int(usage.get("prompt_tokens") or self._count_messages(messages)),
                                  int(usage.get("completion_tokens") or chunks), finish))

    def _body(self, messages, max_tokens, temperature, adapter, stop, *, stream: bool) -> dict:
        check_messages(messages)
        model = self.model
        if adapter is not None:
            if adapter not in self.adapter_models:
                raise BackendError(
                    f"No model name is configured for the adapter {adapter!r}.",
                    hint="pass adapters={'manager': '<served model name>', ...} to OpenAIHTTPBackend",
                )
            model = self.adapter_models[adapter]
        body: dict = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    def _complete_ollama(self, body: dict, schema: dict, start: float) -> Completion:
        """One schema-constrained call on Ollama's own API (`format` takes a JSON schema since Ollama 0.5)."""
        options = {"temperature": body["temperature"], "num_predict": body["max_tokens"]}
        if body.get("stop"):
            options["stop"] = body["stop"]
        request = {"model": body["model"], "messages": body["messages"], "stream": False, "format": schema,
                   "options": options}
        data = self._json(self._request("POST", "/api/chat", json=request))
        try:
            text = data["message"].get("content") or ""
        except (KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"Unexpected reply from {self.root}/api/chat: {str(data)[:200]}") from exc
        completion = Completion(
            text=text, prompt_tokens=int(data.get("prompt_eval_count") or 0),
            completion_tokens=int(data.get("eval_count") or 0), seconds=time.perf_counter() - start,
            finish_reason=_finish(data.get("done_reason")),
        )
        return completion

    def _check(self, completion: Completion, schema: dict, schema_format: str) -> None:
        """Refuse a reply that does not follow the schema, saying which server and which format it ignored."""
        if completion.finish_reason != "stop":
            return  # cut off by max_tokens: the caller sees finish_reason "length"
        try:
            parse_json(completion.text, schema)
        except ModelOutputError as exc:
            raise ModelOutputError(
                f"{self.root} returned a reply that does not follow the JSON schema ({exc.message}); "
                f"structured output was asked as {schema_format!r}. Reply: {completion.text[:120]!r}",
                hint="the server may not support that form: choose another with --structured-output "
                "(json_object, json_schema, grammar, ollama)",
            ) from exc

    def _json(self, response) -> dict:
        """The reply's JSON object, or BackendError: a 200 with an HTML page (a web UI on the model's port) or
        any other body that is not a JSON object is no reply, and must not pass for one."""
        try:
            data = response.json()
        except ValueError as exc:  # json.JSONDecodeError, and a body that is not UTF-8
            kind = response.headers.get("content-type", "no content type")
            raise BackendError(
                f"{self.root}{response.request.url.path} answered HTTP {response.status_code} with {kind}, not "
                f"JSON: {response.text[:120]!r}",
                hint="is this the model server's address? A web UI often listens on a port of its own "
                "(check --server: llama-server serves /v1 on 8080, Ollama on 11434)",
            ) from exc
        if not isinstance(data, dict):
            raise BackendError(f"Unexpected reply from {self.root}: {str(data)[:200]}")
        return data

    def _request(self, method: str, path: str, **kwargs):
        try:
            response = self._client.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response) -> None:
        if response.status_code < 400:
            return
        detail = response.read().decode("utf-8", "replace")[:300]
        hint = "check the api_key" if response.status_code in (401, 403) else "check the model name and request"
        raise BackendError(f"{self.root} answered HTTP {response.status_code}: {detail}", hint=hint)

    def _unreachable(self, exc: Exception) -> BackendError:
        if isinstance(exc, self._httpx.TimeoutException):
            return BackendError(
                f"The model server at {self.root} timed out: no answer within {self.timeout:g} s "
                f"({type(exc).__name__}).",
                hint="a large model on a CPU can take longer: raise the limit with --timeout SECONDS "
                "(or `edge config set model.timeout SECONDS`)",
            )
        return BackendError(
            f"Cannot reach the model server at {self.root} ({type(exc).__name__}: {exc})",
            hint="start one, e.g. `python -m llama_cpp.server --model model.gguf --n_ctx 4096`, "
            "or check the URL where it was given (--server, --chat-server, --role, config.toml or the bundle)",
        )

    def _server_count(self, route: str, text: str) -> int | None:
        try:
            if route == "llama_cpp.server":
                response = self._client.post("/extras/tokenize/count", json={"input": text})
                return int(response.json()["count"]) if response.status_code == 200 else None
            if route == "llama-server":
                response = self._client.post("/tokenize", json={"content": text})
                return len(response.json()["tokens"]) if response.status_code == 200 else None
        except (self._httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        return None

    def _count_messages(self, messages: list[Message]) -> int:
        return sum(self.count_tokens(m.content) for m in messages)


def _finish(reason: str | None) -> str:
    return reason if reason in ("stop", "length") else "stop"


def api_key_from_env(name: str | None) -> str | None:
    """The API key from the environment variable `name` (default EDGE_API_KEY); None when unset."""
    return os.environ.get(name or DEFAULT_API_KEY_ENV) or None


def server_table(url: str, model: str, *, structured_output: str = "auto", api_key_env: str | None = None,
                 adapters: dict[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
    """A bundle's `server` table for `model` served at `url` (what `http_backend` reads): the API key is never
    in it, only the name of the environment variable holding it (default `DEFAULT_API_KEY_ENV`)."""
    return {"url": url, "model": model, "structured_output": structured_output,
            "api_key_env": api_key_env or DEFAULT_API_KEY_ENV, "adapters": adapters or {},
            "timeout_s": timeout or DEFAULT_TIMEOUT_S}


def http_backend(server: dict[str, Any], *, n_ctx: int | None = None) -> OpenAIHTTPBackend:
    """The backend for a bundle's `server` table (url, model, structured_output, api_key_env, adapters,
    timeout_s), its API key read from the environment now."""
    return OpenAIHTTPBackend(
        server["url"], server["model"], api_key=api_key_from_env(server.get("api_key_env")),
        schema_format=server.get("structured_output", "auto"), adapters=server.get("adapters") or None, n_ctx=n_ctx,
        timeout=float(server.get("timeout_s") or DEFAULT_TIMEOUT_S),
    )
