"""`edge serve` as a chat app meets it: a real `edge serve` process, driven by the `openai` client.

The upstream is a real local HTTP server that answers as an OpenAI-compatible
chat server does and records what it was sent (so a test can read the system
message edge wrote), or llama-cpp-python's own server on the bundled model.
The bank is a real SQLite file, the Memory Manager the default bundle's.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port

from edge.agent import pending_records
from edge.bank import MemoryBank

openai = pytest.importorskip("openai")

REPLY = "Noted! Anything else?"


class RecordingUpstream:
    """An OpenAI-compatible chat server that answers REPLY (streamed in three pieces when asked) and keeps every
    request it was sent. `cut`: a stream stops after its first piece, the server gone away mid-reply."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.cut = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_json({"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if not body.get("stream"):
                    self.send_json({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": REPLY}}]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = ["Noted! ", "Anything ", "else?"]
                for i, piece in enumerate(pieces):
                    last = i == len(pieces) - 1
                    event = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model"),
                             "choices": [{"index": 0, "delta": {"content": piece},
                                          "finish_reason": "stop" if last else None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    if outer.cut:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def send_json(self, document: dict) -> None:
                data = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def system_of(self, request: dict) -> str:
        first = request["messages"][0]
        return first["content"] if first["role"] == "system" else ""


@pytest.fixture
def upstream():
    running = RecordingUpstream()
    yield running
    running.httpd.shutdown()


def start_serve(default_bundle, db: Path, upstream_url: str | None, edge_home: Path, log: Path, *extra: str
                ) -> tuple[subprocess.Popen, str]:
    """`edge serve` in front of `upstream_url` (None: `extra` names the upstream, e.g. with --chat-server)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "EDGE_SERVE_KEY"}, "EDGE_HOME": str(edge_home)}
    upstream = ["--upstream", upstream_url, "--upstream-model", "upstream-model"] if upstream_url else []
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "serve", *upstream, "--http", f"127.0.0.1:{port}",
                                "--bundle", str(default_bundle.root), "--db", str(db), "--user", "ana", *extra],
                               env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            assert time.monotonic() < deadline, "edge serve did not listen within 90 s"
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def logged(db: Path, user: str) -> list[str]:
    with MemoryBank.open(db, create=False, user=user) as bank:
        return [m.text for m in bank.list(tier=("episodic",))]


def test_a_fact_said_in_one_request_shapes_the_system_message_of_the_next(default_bundle, tmp_path, edge_home,
                                                                          upstream):
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, upstream.url, edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused")
        said = client.chat.completions.create(model="edge", messages=[
            {"role": "system", "content": "You are a kind assistant."},
            {"role": "user", "content": "I just adopted a cat named Luna."}])
        assert said.choices[0].message.content == REPLY  # the upstream's reply, unchanged
        assert upstream.requests[0]["model"] == "upstream-model"
        assert upstream.system_of(upstream.requests[0]) == "You are a kind assistant."  # nothing remembered yet
        assert logged(db, "ana") == ["I just adopted a cat named Luna."]  # kept at once

        stream = client.chat.completions.create(model="edge", stream=True, messages=[
            {"role": "user", "content": "What is my cat called?"}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == REPLY
        system = upstream.system_of(upstream.requests[1])
        assert "What you remember about the user" in system and '"I just adopted a cat named Luna."' in system

        other = client.chat.completions.create(model="edge", user="bob", messages=[
            {"role": "user", "content": "What is my cat called?"}])
        assert other.choices[0].message.content == REPLY
        assert "Luna" not in json.dumps(upstream.requests[2])  # bob never sees ana's memories
        assert logged(db, "bob") == ["What is my cat called?"] and "Luna" not in " ".join(logged(db, "bob"))
        assert [m.id for m in client.models.list().data] == ["upstream-model"]
    finally:
        stop(process)
    with MemoryBank.open(db, create=False, user="ana") as bank:
        assert pending_records(bank) == []  # the Manager went over every turn before the server stopped
        assert bank.check() == []


def test_serve_answers_from_the_chat_role_server_when_no_upstream_is_given(default_bundle, tmp_path, edge_home,
                                                                          upstream):
    """`edge serve --chat-server URL --chat-model NAME`: the reply from the chat role's server, the memory agents
    the bundle's."""
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, None, edge_home, tmp_path / "serve.log",
                               "--chat-server", upstream.url, "--chat-model", "upstream-model")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused")
        said = client.chat.completions.create(model="edge", messages=[
            {"role": "user", "content": "I just adopted a cat named Luna."}])
        assert said.choices[0].message.content == REPLY and upstream.requests[0]["model"] == "upstream-model"
        assert logged(db, "ana") == ["I just adopted a cat named Luna."]
    finally:
        stop(process)


def test_serve_answers_from_the_bundles_own_chat_model_when_no_server_is_named(default_bundle, tmp_path,
                                                                              edge_home) -> None:
    """No --upstream and the chat role in process: the bundled model answers, as an OpenAI server would, streamed
    and not, and each user message is kept as with an upstream."""
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, None, edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", timeout=120)
        [listed] = client.models.list().data
        assert listed.id.startswith("SmolLM2-135M-Instruct")
        said = client.chat.completions.create(model="edge", max_tokens=24, messages=[
            {"role": "user", "content": "I just adopted a cat named Luna."}])
        assert said.choices[0].message.content.strip() and said.choices[0].finish_reason in ("stop", "length")
        assert said.usage.completion_tokens > 0
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="edge", stream=True, max_tokens=24, messages=[{"role": "user", "content": "What is my cat called?"}])]
        assert len([p for p in pieces if p]) > 1  # streamed in pieces, not one block
        with pytest.raises(openai.BadRequestError, match="cannot take") as refused:
            client.chat.completions.create(model="edge", messages=[{"role": "user", "content": None}])
        assert "failed" not in str(refused.value)  # a bad request is said as one, not as the model failing
        assert logged(db, "ana") == ["I just adopted a cat named Luna.", "What is my cat called?"]
    finally:
        stop(process)


def test_the_upstream_going_away_mid_stream_is_an_error_and_the_turn_is_kept(default_bundle, tmp_path, edge_home,
                                                                             upstream):
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, upstream.url, edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        upstream.cut = True
        pieces = []
        with pytest.raises(openai.APIError, match="cut short"):
            for chunk in client.chat.completions.create(model="edge", stream=True, messages=[
                    {"role": "user", "content": "My sister Maya lives in Lisbon."}]):
                pieces.append(chunk.choices[0].delta.content or "")
        assert pieces == ["Noted! "]
        assert logged(db, "ana") == ["My sister Maya lives in Lisbon."]
        upstream.httpd.shutdown()
        upstream.httpd.server_close()
        with pytest.raises(openai.APIError, match="cannot be reached"):
            client.chat.completions.create(model="edge", messages=[{"role": "user", "content": "I work as a nurse."}])
        assert logged(db, "ana") == ["My sister Maya lives in Lisbon.", "I work as a nurse."]  # kept all the same
    finally:
        stop(process)


def test_eight_requests_at_once_all_complete_and_the_bank_stays_consistent(default_bundle, tmp_path, edge_home,
                                                                           upstream):
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, upstream.url, edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", timeout=120)

        def one(i: int) -> str:
            reply = client.chat.completions.create(model="edge", user=f"user{i % 4}", stream=bool(i % 2), messages=[
                {"role": "user", "content": f"I have {i + 2} plants on my balcony."}])
            if i % 2:
                return "".join(chunk.choices[0].delta.content or "" for chunk in reply)
            return reply.choices[0].message.content

        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(one, range(8)))
        assert replies == [REPLY] * 8
    finally:
        stop(process)
    for user in range(4):
        assert sorted(logged(db, f"user{user}")) == sorted(f"I have {i + 2} plants on my balcony."
                                                           for i in range(8) if i % 4 == user)
    with MemoryBank.open(db, create=False) as bank:
        assert bank.check() == [] and pending_records(bank) == []


def test_a_bad_request_gets_an_openai_error(default_bundle, tmp_path, edge_home, upstream):
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, upstream.url, edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="line break"):
            client.chat.completions.create(model="edge", user="an\na", messages=[{"role": "user", "content": "hi"}])
        assert upstream.requests == []
    finally:
        stop(process)


def test_edge_serve_in_front_of_llama_cpp_server_on_the_bundled_model(default_bundle, tmp_path, edge_home,
                                                                        server_url):
    """The whole path with real processes: openai client -> edge serve -> llama-cpp-python's server."""
    db = tmp_path / "bank.db"
    process, url = start_serve(default_bundle, db, f"{server_url}/v1", edge_home, tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", timeout=120)
        first = client.chat.completions.create(model="edge", max_tokens=24, messages=[
            {"role": "user", "content": "I just adopted a cat named Luna."}])
        assert first.choices[0].message.content.strip() and first.choices[0].finish_reason in ("stop", "length")
        streamed = client.chat.completions.create(model="edge", max_tokens=24, stream=True, messages=[
            {"role": "user", "content": "What is my cat called?"}])
        pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]
        assert "".join(pieces).strip()
        assert logged(db, "ana") == ["I just adopted a cat named Luna.", "What is my cat called?"]
    finally:
        stop(process)
    with MemoryBank.open(db, create=False, user="ana") as bank:
        assert pending_records(bank) == [] and bank.check() == []
