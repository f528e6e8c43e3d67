"""A model server that misbehaves: a web page on the model's port, a reply stream cut short, a slow answer.

Each is a real HTTP server on a local port (stdlib `http.server`), reached by
edge's real HTTP backend, with a real bank file and the default embedder.
Every unusable reply is a `BackendError` that keeps the turn: in the
episodic log, pending for the Manager.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.agent import Agent
from edge.bank import MemoryBank
from edge.cli import cli
from edge.errors import BackendError
from edge.model_source import server_bundle
from edge.prompts import FACT_TIERS

HTML = b"<!doctype html><html><head><title>Chat UI</title></head><body>Welcome</body></html>"


class MisbehavingServer:
    """Answers /v1/chat/completions as `mode` says: "html" (200, a web page), "cut" (an event stream that stops
    after one piece, with no finish_reason and no [DONE]) or "slow" (answers after `delay` seconds)."""

    def __init__(self, mode: str, delay: float = 3.0) -> None:
        self.mode, self.delay = mode, delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_page()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if outer.mode == "html" or self.path != "/v1/chat/completions":
                    self.send_page()
                elif outer.mode == "cut" and body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    event = {"choices": [{"delta": {"content": "Hello there, I"}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    self.close_connection = True  # the server goes away mid-reply
                else:
                    time.sleep(outer.delay if outer.mode == "slow" else 0)
                    data = json.dumps({"choices": [{"message": {"content": '{"ops": []}'},
                                                    "finish_reason": "stop"}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def send_page(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(HTML)))
                self.end_headers()
                self.wfile.write(HTML)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(request):
    mode, *delay = request.param
    running = MisbehavingServer(mode, *delay)
    yield running
    running.httpd.shutdown()


def logged_and_pending(db: Path) -> tuple[list[str], list[str], int]:
    with Agent(bundle=server_bundle("http://127.0.0.1:9", "m"), db=db) as agent:
        return ([m.text for m in agent.bank.list(tier=("episodic",))], [t.text for t in agent.pending()],
                agent.bank.count(tier=FACT_TIERS))


@pytest.mark.parametrize("server", [("html",)], indirect=True)
def test_a_web_page_on_the_models_port_is_a_backend_error_and_the_turn_is_kept(server, tmp_path, minilm):
    """A 200 with HTML made `ask` crash with JSONDecodeError and `remember` lose the turn."""
    db = tmp_path / "bank.db"
    out = CliRunner().invoke(cli, ["remember", "I moved to Porto.", "--server", server.url, "--model", "m",
                                   "--structured-output", "json_schema", "--db", str(db), "--json"])
    [turn] = json.loads(out.stdout)
    assert out.exit_code == 1 and turn["status"] == "failed", out.output
    assert "text/html" in turn["reason"] and "not JSON" in turn["reason"]
    assert logged_and_pending(db) == (["I moved to Porto."], ["I moved to Porto."], 0)
    with MemoryBank.open(db, minilm, user="me") as bank:
        bank.add("I live in Porto")
    out = CliRunner().invoke(cli, ["ask", "Where do I live?", "--server", server.url, "--model", "m",
                                   "--structured-output", "json_schema", "--db", str(db)])
    assert out.exit_code == 1 and isinstance(out.exception, BackendError), out.output  # `edge` prints it, no traceback
    assert "not JSON" in out.exception.message and "model server's address" in out.exception.hint


@pytest.mark.parametrize("server", [("cut",)], indirect=True)
def test_a_reply_stream_cut_short_is_an_error_not_a_complete_reply(server, tmp_path, minilm):
    """A stream that ended without finish_reason or [DONE] was taken as the whole reply ("Hello there, I")."""
    db = tmp_path / "bank.db"
    with Agent(bundle=server_bundle(server.url, "m", structured_output="json_schema"), db=db) as agent:
        pieces = []
        with pytest.raises(BackendError, match="ended before the reply was complete") as raised:
            for piece in agent.chat("I moved to Porto.", stream=True):
                pieces.append(piece)
        assert pieces == ["Hello there, I"]
        assert "kept" in (raised.value.hint or "")
        agent.close(wait=False)
    logged, pending, facts = logged_and_pending(db)
    assert logged == pending == ["I moved to Porto."] and facts == 0


@pytest.mark.parametrize("server", [("slow", 3.0)], indirect=True)
def test_a_slow_server_is_said_to_time_out_after_the_timeout_the_user_set(server, tmp_path, minilm):
    db = tmp_path / "bank.db"
    start = time.monotonic()
    out = CliRunner().invoke(cli, ["remember", "I moved to Porto.", "--server", server.url, "--model", "m",
                                   "--structured-output", "json_schema", "--timeout", "0.5", "--db", str(db),
                                   "--json"])
    [turn] = json.loads(out.stdout)
    assert time.monotonic() - start < 2.5  # not the fixed 120 s, nor the server's 3 s
    assert turn["status"] == "failed" and "timed out" in turn["reason"] and "0.5 s" in turn["reason"]
    assert logged_and_pending(db)[1] == ["I moved to Porto."]
    # Patient enough, the same server is fine.
    out = CliRunner().invoke(cli, ["remember", "I work at the library.", "--server", server.url, "--model", "m",
                                   "--structured-output", "json_schema", "--timeout", "30", "--db", str(db),
                                   "--json"])
    assert out.exit_code == 0 and [t["status"] for t in json.loads(out.stdout)] == ["done"], out.output
    assert logged_and_pending(db)[1] == []  # the kept turn was gone over first


@pytest.mark.parametrize("server", [("slow", 3.0)], indirect=True)
def test_the_timeout_is_a_setting_of_the_config(server, tmp_path, minilm, edge_home):
    for key, value in (("model.server", server.url), ("model.name", "m"), ("model.structured_output", "json_schema"),
                       ("model.timeout", "0.5")):
        assert CliRunner().invoke(cli, ["config", "set", key, value]).exit_code == 0
    refused = CliRunner().invoke(cli, ["config", "set", "model.timeout", "0"])
    assert refused.exit_code != 0 and "seconds above 0" in refused.output + str(refused.exception)
    out = CliRunner().invoke(cli, ["remember", "I moved to Porto.", "--db", str(tmp_path / "bank.db"), "--json"])
    [turn] = json.loads(out.stdout)
    assert turn["status"] == "failed" and "timed out" in turn["reason"] and "0.5 s" in turn["reason"]
