"""Your own model on the real stack: a copied GGUF file with --model, a real server with --server.

The server is llama-cpp-python's (`python -m llama_cpp.server`) on the
bundled SmolLM2-135M, started by the tests; a server that answers prose where
JSON was asked is a tiny local HTTP server (it only has to be wrong).
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LocalServer
from edge.agent import Agent, pending_records
from edge.bank import MemoryBank
from edge.cli import cli
from edge.errors import BackendError
from edge.model_source import ModelChoice, server_bundle
from edge.models import bundled_gguf_path
from edge.prompts import FACT_TIERS

SCRIPT = [
    "Ana: I moved to Porto last week.",
    "Ana: My sister Rosa works as a nurse in Lisbon.",
    "Ana: I play the cello every Sunday.",
    "? Where does Ana live?",
    "? What does Rosa do?",
]


@pytest.fixture
def gguf_copy(tmp_path: Path) -> Path:
    target = tmp_path / "downloads" / "my-model-q4.gguf"
    target.parent.mkdir()
    shutil.copy(bundled_gguf_path(), target)
    return target


def write_script(tmp_path: Path) -> Path:
    path = tmp_path / "script.txt"
    path.write_text("\n".join(SCRIPT) + "\n", encoding="utf-8")
    return path


def run_json(*args: str) -> tuple[int, dict | list]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def counts(db: Path, user: str = "me") -> tuple[int, int]:
    """(facts, episodic log entries) live in the bank."""
    with MemoryBank.open(db, user=user) as bank:
        return bank.count(tier=FACT_TIERS), bank.count(tier=("episodic",))


# ----------------------------------------------------------------------------- a server that ignores the schema


class ProseServer:
    """An OpenAI-compatible (and Ollama-shaped) server that answers every request with prose."""

    PROSE = "Sure! I will remember that you moved to Porto. Anything else?"

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_error(404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                outer.requests.append((self.path, body))
                if self.path == "/v1/chat/completions":
                    reply = {"choices": [{"message": {"role": "assistant", "content": outer.PROSE},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 50, "completion_tokens": 12}}
                elif self.path == "/api/chat":
                    reply = {"message": {"role": "assistant", "content": outer.PROSE}, "done": True,
                             "done_reason": "stop", "prompt_eval_count": 50, "eval_count": 12}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def chat_requests(self) -> list[dict]:
        return [body for path, body in self.requests if path in ("/v1/chat/completions", "/api/chat")]


@pytest.fixture
def prose_server():
    server = ProseServer()
    yield server
    server.httpd.shutdown()


@pytest.mark.parametrize("structured_output, sent", [
    ("auto", "json_schema"),  # nothing answers the probes: the OpenAI form
    ("json_object", "json_object"),
    ("json_schema", "json_schema"),
    ("grammar", "grammar"),
    ("ollama", "format"),
])
def test_a_server_that_answers_prose_gets_one_retry_then_a_logged_noop(prose_server, tmp_path, minilm, caplog,
                                                                        structured_output, sent):
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, minilm) as bank:
        bank.add("Ana plays the cello.")
    caplog.set_level(logging.WARNING, logger="edge.manager")
    code, document = run_json("remember", "I moved to Porto last week.", "--server", prose_server.url,
                              "--model", "prose", "--structured-output", structured_output, "--db", str(db))
    turn = document[0]
    assert code == 0 and turn["status"] == "done" and turn["applied"] == []
    assert "no usable reply after 2 attempts" in turn["error"]
    assert "does not follow the JSON schema" in turn["error"]
    requests = prose_server.chat_requests()
    assert len(requests) == 2  # the first try and one retry, no more
    first = requests[0]
    if sent == "format":
        assert first["format"]["type"] == "object"
    elif sent == "grammar":
        assert "root ::=" in first["grammar"]
    else:
        assert first["response_format"]["type"] == sent
    assert any("is a NOOP" in r.getMessage() for r in caplog.records)
    # The facts are as they were; the turn itself is kept in the episodic log.
    with MemoryBank.open(db, user="me") as bank:
        assert [m.text for m in bank.list(tier=FACT_TIERS)] == ["Ana plays the cello."]
        assert [m.text for m in bank.list(tier=("episodic",))] == ["I moved to Porto last week."]


def test_an_unreachable_server_is_a_clear_error_and_the_turn_is_kept(tmp_path, minilm):
    from conftest import free_port

    db = tmp_path / "bank.db"
    code, document = run_json("remember", "I moved to Porto.", "--server", f"http://127.0.0.1:{free_port()}",
                              "--model", "m", "--db", str(db))
    assert code == 1 and document[0]["status"] == "failed"
    assert "Cannot reach the model server" in document[0]["reason"]
    assert counts(db) == (0, 1)
    with Agent(bundle=server_bundle("http://127.0.0.1:9", "m"), db=db) as agent:
        assert [t.text for t in agent.pending()] == ["I moved to Porto."]


# ----------------------------------------------------------------------------- a GGUF file


@pytest.mark.slow
def test_run_a_script_on_a_copied_gguf_file(tmp_path, gguf_copy, minilm):
    db = tmp_path / "bank.db"
    code, document = run_json("run", str(write_script(tmp_path)), "--model", str(gguf_copy), "--db", str(db))
    assert code == 0, document
    assert document["summary"] == {"done": 5, "refused": 0, "failed": 0, "skipped": 0}
    turns = [line["result"] for line in document["lines"] if line["kind"] == "turn"]
    answers = [line["result"] for line in document["lines"] if line["kind"] == "question"]
    assert all(t["error"] is None for t in turns)
    # An answer is never empty ("unknown" at worst): what shows the model read the bank is what it retrieved and
    # that the answer is grounded in it (extractive answers are spans of what was shown).
    assert all(a["error"] is None and a["retrieved"] and a["supported"] for a in answers)
    facts, logged = counts(db)
    assert logged == 3 and facts >= 1
    # The same bank answers with the default bundle: one embedder for every model.
    code, answer = run_json("ask", "Where does Ana live?", "--db", str(db))
    assert code == 0 and answer["retrieved"] and answer["supported"]


@pytest.mark.slow
def test_the_chat_app_on_a_copied_gguf_file(tmp_path, gguf_copy, minilm):
    from edge.tui.app import EdgeChatApp
    from edge.tui.conversation import Reply
    from edge.tui.service import ChatConfig
    from edge.tui.status_bar import StatusBar
    from test_tui import drive, send, settle

    db = tmp_path / "bank.db"
    app = EdgeChatApp(ChatConfig(source=ModelChoice.from_options(model=str(gguf_copy), config={}), db=db))

    async def scenario(pilot) -> None:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        assert "Q4_1" in status.model and status.bundle == "my-model-q4.gguf"
        await send(pilot, "I just adopted a cat named Luna.")
        await settle(pilot)
        reply = app.screen.query(Reply).last()
        assert reply.text.strip() and not reply.has_class("failed")

    drive(app, scenario, size=(120, 30))
    assert counts(db)[1] == 1


# ----------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_run_and_ask_through_a_real_server(tmp_path, llama_server, minilm):
    db = tmp_path / "bank.db"
    server = ["--server", llama_server.url, "--model", "smollm2", "--db", str(db)]
    code, document = run_json("run", str(write_script(tmp_path)), *server)
    assert code == 0, document
    assert document["summary"] == {"done": 5, "refused": 0, "failed": 0, "skipped": 0}
    assert counts(db)[1] == 3
    code, answer = run_json("ask", "Where does Ana live?", *server)
    assert code == 0 and answer["error"] is None and answer["retrieved"]
    code, answer = run_json("ask", "What instrument does Ana play?", *server, "--text-mode", "extractive")
    assert code == 0 and answer["error"] is None


@pytest.mark.slow
def test_bundles_for_a_gguf_file_and_a_server_verify_and_serve_an_agent(tmp_path, gguf_copy, llama_server, minilm):
    for name, source in (("file", ["--gguf", str(gguf_copy)]),
                         ("served", ["--server", llama_server.url, "--model", "smollm2"])):
        out = tmp_path / name
        created = CliRunner().invoke(cli, ["bundle", "create", *source, "--out", str(out)])
        assert created.exit_code == 0, created.output
        verified = CliRunner().invoke(cli, ["bundle", "verify", str(out), "--json"])
        assert json.loads(verified.stdout) == {"bundle": str(out), "ok": True, "problems": []}
        with Agent(bundle=out, db=tmp_path / f"{name}.db") as agent:
            turn = agent.remember("I moved to Porto last week.", wait=True).turns[0]
            assert turn.logged is not None and turn.error is None
            result = agent.ask("Where do I live?")
            # The model was asked over the stored turn and its reply parsed (an answer of "unknown" without a
            # model call would have no completion tokens).
            assert result.error is None and result.completion_tokens > 0, result.to_dict()
            assert any("Porto" in m.text for m in result.retrieved)


@pytest.mark.slow
def test_the_chat_app_through_a_real_server_survives_it_going_away(tmp_path, minilm):
    """The server is killed while a reply streams: a message in the app, the turn kept, gone over on return."""
    from edge.tui.app import EdgeChatApp
    from edge.tui.conversation import Reply
    from edge.tui.memory_panel import ChangeLog
    from edge.tui.service import ChatConfig
    from edge.tui.status_bar import StatusBar
    from test_tui import drive, send, settle

    server = LocalServer(tmp_path / "server.log").start()
    db = tmp_path / "bank.db"
    choice = ModelChoice.from_options(server=server.url, model="smollm2", config={})
    app = EdgeChatApp(ChatConfig(source=choice, db=db))

    async def scenario(pilot) -> None:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        assert status.model == f"smollm2 @ {server.url}"
        await send(pilot, "I play the cello every Sunday.")
        await settle(pilot)
        assert not app.screen.query(Reply).last().has_class("failed")

        await send(pilot, "Tell me a long story about my sister Rosa, a nurse in Lisbon.")
        deadline = time.monotonic() + 60
        while not app.screen.query(Reply).last().text and time.monotonic() < deadline:
            await pilot.pause(0.01)
        server.kill()  # mid-reply
        await settle(pilot)
        failed = app.screen.query(Reply).last()
        assert failed.has_class("failed") and "Cannot reach the model server" in failed.note
        errors = [n for n in app._notifications if n.severity == "error"]
        assert "kept in the conversation log" in errors[-1].message and "Traceback" not in errors[-1].message

        server.start()  # the same port: the server is back
        await send(pilot, "I also sing in a choir.")
        await settle(pilot)
        assert not app.screen.query(Reply).last().has_class("failed")
        notes = [str(line.render()) for line in app.screen.query_one(ChangeLog).children]
        assert any("earlier message" in line for line in notes), notes

    try:
        drive(app, scenario, size=(120, 30))
    finally:
        server.stop()
    with MemoryBank.open(db, user="me") as bank:
        logged = [m.text for m in bank.list(tier=("episodic",))]
        assert logged == ["I play the cello every Sunday.",
                          "Tell me a long story about my sister Rosa, a nurse in Lisbon.",
                          "I also sing in a choir."]  # each turn once: the one the server missed is not lost
        assert pending_records(bank) == []


@pytest.mark.slow
def test_a_server_killed_mid_turn_leaves_a_consistent_bank(tmp_path, minilm):
    server = LocalServer(tmp_path / "server.log").start()
    db = tmp_path / "bank.db"
    try:
        with Agent(bundle=server_bundle(server.url, "smollm2"), db=db) as agent:
            agent.remember("I moved to Porto last week.", wait=True)
            before = counts(db)
            history = len(agent.bank.history())
            stream = agent.chat("Tell me a long story about Porto and the river.", stream=True)
            with pytest.raises(BackendError) as err:
                for _ in stream:
                    server.kill()
            assert "Cannot reach the model server" in err.value.message
            assert "kept in the conversation log" in err.value.hint
            facts, logged = counts(db)
            assert (facts, logged) == (before[0], before[1] + 1)  # the turn kept, no fact half-written
            assert len(agent.bank.history()) == history + 1
            assert [t.text for t in agent.pending()] == ["Tell me a long story about Porto and the river."]

            with pytest.raises(BackendError):  # still away: the next turn is kept too
                agent.remember("I play the cello.", wait=True)
            assert len(agent.pending()) == 2 and counts(db)[1] == before[1] + 2

            server.start()
            agent.remember("I also sing in a choir.", wait=True)
            assert agent.pending() == []
            assert counts(db)[1] == before[1] + 3  # nothing logged twice
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("structured_output", ["auto", "json_object", "grammar"])
def test_structured_output_forms_a_real_llama_cpp_server_takes(llama_server, structured_output):
    from edge.backends import Message, parse_json
    from edge.backends.http import OpenAIHTTPBackend
    from edge.prompts import manager_schema

    schema = manager_schema(["0"], candidates=["Ana moved to Porto last week"])
    messages = [Message("system", "Answer with memory operations as JSON."),
                Message("user", "Ana: I moved to Porto last week.")]
    with OpenAIHTTPBackend(llama_server.url, "smollm2", schema_format=structured_output) as backend:
        completion = backend.complete(messages, schema=schema, max_tokens=120)
        assert completion.finish_reason == "stop"
        parse_json(completion.text, schema)
        if structured_output == "auto":
            assert (backend.server_kind, backend.schema_format) == ("llama_cpp.server", "json_object")
            assert backend.models() == ["smollm2"]
