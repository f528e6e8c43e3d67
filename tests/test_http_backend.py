"""OpenAIHTTPBackend against a real llama_cpp.server serving the bundled model."""
from __future__ import annotations

import threading

import pytest
from conftest import free_port

from edge.backends import Message, load_backend, parse_json
from edge.backends.http import OpenAIHTTPBackend
from edge.errors import BackendError

pytest.importorskip("httpx")
pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture
def backend(server_url):
    with OpenAIHTTPBackend(f"{server_url}/v1", "smollm2") as client:
        yield client


def test_complete_over_http(backend):
    completion = backend.complete([Message("user", "What is the capital of France?")], max_tokens=24)
    assert completion.text.strip()
    assert completion.prompt_tokens > 10  # from the server's usage block
    assert 0 < completion.completion_tokens <= 24
    assert completion.finish_reason in ("stop", "length")


def test_stream_over_http(backend):
    stream = backend.stream([Message("user", "Name three fruits.")], max_tokens=30)
    assert stream.completion is None  # not before it ends
    pieces = list(stream)
    assert len(pieces) > 1
    assert stream.completion.text == "".join(pieces)
    assert stream.completion.finish_reason in ("stop", "length")


def test_cancel_over_http(backend):
    cancel = threading.Event()
    pieces = []
    stream = backend.stream([Message("user", "Tell me a long story.")], max_tokens=200, cancel=cancel)
    for piece in stream:
        pieces.append(piece)
        cancel.set()
    assert len(pieces) == 1
    assert stream.completion.finish_reason == "cancelled"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_schema_over_http(backend, temperature):
    for text in ("John is 31 years old.", "My grandmother Rosa turned 88 today."):
        messages = [Message("system", "Extract the person as JSON."), Message("user", text)]
        completion = backend.complete(messages, schema=SCHEMA, max_tokens=80, temperature=temperature)
        assert completion.finish_reason == "stop", completion.text
        parse_json(completion.text, SCHEMA)


def test_count_tokens_asks_the_server(backend):
    assert backend.count_tokens("hello world") == 2
    assert backend.token_count_exact


def test_unreachable_server_raises_backend_error():
    client = load_backend("http", base_url=f"http://127.0.0.1:{free_port()}", model="m", timeout=2)
    with pytest.raises(BackendError, match="Cannot reach") as err:
        client.complete([Message("user", "hi")])
    assert "llama_cpp.server" in err.value.hint
    with pytest.raises(BackendError, match="Cannot reach"):
        list(client.stream([Message("user", "hi")]))
    assert client.count_tokens("four bytes") == 3  # the documented estimate
    assert not client.token_count_exact
