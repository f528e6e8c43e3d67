"""OpenAIHTTPBackend against a real llama_cpp.server serving the bundled model."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edge.backends import Message, load_backend, parse_json
from edge.backends.http import OpenAIHTTPBackend
from edge.errors import BackendError
from edge.models import bundled_gguf_path

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    import httpx

    port = free_port()
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--n_threads", threads, "--n_threads_batch", threads],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited early:\n{log.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
    pieces = list(backend.stream([Message("user", "Name three fruits.")], max_tokens=30))
    assert len(pieces) > 1
    assert backend.last_completion.text == "".join(pieces)
    assert backend.last_completion.finish_reason in ("stop", "length")


def test_cancel_over_http(backend):
    cancel = threading.Event()
    pieces = []
    for piece in backend.stream([Message("user", "Tell me a long story.")], max_tokens=200, cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert len(pieces) == 1
    assert backend.last_completion.finish_reason == "cancelled"


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
