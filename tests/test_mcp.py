"""`edge mcp` as an MCP client sees it: a real `edge mcp` subprocess on the default bundle, driven by the SDK's
client over stdio and over streamable HTTP, on a real bank file read back with `MemoryBank`."""
from __future__ import annotations

import functools
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import httpx
import pytest

pytest.importorskip("mcp", reason="needs the 'mcp' extra")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from edge.agent import pending_records  # noqa: E402
from edge.bank import MemoryBank  # noqa: E402
from edge.errors import InvalidInputError  # noqa: E402

TOOLS = {"add_memory", "search_memories", "list_memories", "get_memory", "ask", "update_memory", "delete_memory",
         "restore_memory", "undo", "history"}
BIG_TURN = ("I visited Lisbon with my sister Maya last summer and we ate pastel de nata every morning. " * 500)[:40000]
TURNS = ["I just adopted a cat named Luna.", "My sister Maya lives in Lisbon.", "I started learning the piano."]


def server_env(edge_home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "EDGE_MCP_TOKEN"}
    return {**env, "EDGE_HOME": str(edge_home), **extra}


def edge_mcp(default_bundle, db: Path, *args: str) -> list[str]:
    """`edge mcp` on the default bundle, or with `default_bundle=None` on the model `args` name."""
    bundle = ["--bundle", str(default_bundle.root)] if default_bundle is not None else []
    return [sys.executable, "-m", "edge.cli", "mcp", *bundle, "--db", str(db), *args]


@asynccontextmanager
async def stdio_session(command: list[str], env: dict[str, str], log: Path | None = None
                        ) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with open(log or os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=120) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=120) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured result; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}({arguments}) failed: {result.content}"
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The text of a tool error; fails the test when the call succeeds."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) was not refused: {result.structured_content}"
    return result.content[0].text


def bank_state(db: Path) -> tuple:
    """Every memory (deleted and superseded ones too) and every history row of every user, read from the file."""
    with MemoryBank.open(db, create=False) as bank:
        return [m.to_dict() for m in bank.iter_memories()], [e.to_dict() for e in bank.iter_history()]


def default_sigint() -> None:
    """In a server child: SIGINT handled as a terminal's Ctrl+C is (a background shell running the tests ignores
    it, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_model() -> list[str]:
    """Model options naming a model server nobody listens on (the turns still get the default embedder)."""
    return ["--server", f"http://127.0.0.1:{free_port()}", "--model", "m"]


def start_http(command: list[str], env: dict[str, str], port: int, log: Path, **popen: Any) -> subprocess.Popen:
    """`edge mcp --http` as a subprocess, returned once it listens (its output in `log`)."""
    popen.setdefault("preexec_fn", default_sigint)  # SIGINT as a terminal sends it, even under a background shell
    server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            assert time.monotonic() < deadline, "edge mcp --http did not listen within 90 s"
            time.sleep(0.2)


def facts_and_turns(db: Path) -> tuple[int, int, list[str]]:
    """(current facts, episodic turns, the pending turns' texts) of the bank file, for every user."""
    with MemoryBank.open(db, create=False) as bank:
        memories = [m for m in bank.iter_memories() if m.deleted_at is None]
        pending = [record for _, record in pending_records(bank)]
    return (sum(m.tier != "episodic" for m in memories), sum(m.tier == "episodic" for m in memories),
            [p["text"] for p in pending])


# ----------------------------------------------------------------------------- stdio


async def remember_answer_edit_undo(session: ClientSession, user: str, speaker: str) -> None:
    """The whole round of the issue's client: list the tools, add three turns, search, ask (supported, citing the
    stored turn), update, delete, undo, restore, history, resources; the same over stdio and over HTTP."""
    listed = (await session.list_tools()).tools
    assert {t.name for t in listed} == TOOLS
    for tool in listed:
        assert tool.description and "\n" not in tool.description
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None
    add_schema = next(t for t in listed if t.name == "add_memory").input_schema
    assert add_schema["required"] == ["text"]
    assert {"speaker", "time", "infer", "user"} <= set(add_schema["properties"])

    added = [await call(session, "add_memory", text=text) for text in TURNS]
    for turn, result in zip(TURNS, added, strict=True):
        assert result["user"] == user and result["inferred"] is True
        assert result["turn"]["text"] == turn and result["turn"]["speaker"] == speaker
        logged = await call(session, "get_memory", id=result["logged"])
        assert logged["tier"] == "episodic" and logged["text"] == turn
        for change in result["applied"]:
            assert change["after"]["source_turns"] == [result["turn"]["turn_id"]]

    found = await call(session, "search_memories", query="Where does Maya live?", limit=5)
    assert found["results"] and found["results"][0]["rank"] == 1
    assert added[1]["logged"] in [hit["id"] for hit in found["results"]]
    assert all(hit["owner"] == user and hit["score"] > 0 for hit in found["results"])
    episodic = await call(session, "list_memories", tier="episodic")
    assert [m["text"] for m in episodic["memories"]] == TURNS and episodic["total"] == 3

    answer = await call(session, "ask", question="What is my cat called?")
    assert answer["answer"] == "Luna" and answer["supported"] is True
    from_cat_turn = {added[0]["logged"], *(c["memory_id"] for c in added[0]["applied"])}
    assert set(answer["memory_ids"]) & from_cat_turn, answer

    maya = added[1]["logged"]
    updated = await call(session, "update_memory", id=maya, text="My sister Maya moved to Porto.")
    assert updated["id"] == maya and updated["text"] == "My sister Maya moved to Porto."
    assert maya in [h["id"] for h in (await call(session, "search_memories", query="Porto"))["results"]]

    piano = added[2]["logged"]
    deleted = await call(session, "delete_memory", id=piano)
    assert deleted["deleted_at"] is not None
    stale = await refused(session, "update_memory", id=piano, text="I gave up the piano.")
    assert "is deleted; restore it before updating it.\nhint: Call restore_memory with its id first" in stale
    assert piano not in [h["id"] for h in (await call(session, "search_memories", query="piano"))["results"]]
    undone = await call(session, "undo")
    assert [(c["action"], c["memory_id"]) for c in undone["undone"]] == [("UNDO", piano)]
    assert (await call(session, "get_memory", id=piano))["deleted_at"] is None
    assert piano in [h["id"] for h in (await call(session, "search_memories", query="piano"))["results"]]

    entries = (await call(session, "history", limit=3))["entries"]
    assert [(e["action"], e["memory_id"], e["actor"]) for e in entries] == [
        ("UPDATE", maya, "api"), ("DELETE", piano, "api"), ("UNDO", piano, "api")]
    assert entries[1]["undone_by"] == entries[2]["seq"] and entries[2]["reverts"] == entries[1]["seq"]
    assert entries[0]["before_text"] == TURNS[1] and entries[0]["text"] == "My sister Maya moved to Porto."

    await call(session, "delete_memory", id=piano)
    restored = await call(session, "restore_memory", id=piano)
    assert restored["id"] == piano and restored["deleted_at"] is None
    entries = (await call(session, "history", limit=2))["entries"]
    assert [(e["action"], e["memory_id"], e["actor"]) for e in entries] == [
        ("DELETE", piano, "api"), ("RESTORE", piano, "api")]

    resources = {str(r.uri) for r in (await session.list_resources()).resources}
    assert resources == {"memory://core", "memory://history"}
    recent = (await session.read_resource("memory://history")).contents[0].text
    assert f'"memory_id": "{piano}"' in recent


def memories_in_the_file(db: Path, user: str) -> None:
    """What the calls changed is in the bank file, for the CLI and the API alike."""
    with MemoryBank.open(db, user=user, create=False) as bank:
        maya = bank.list(tier="episodic")[1]
        assert maya.text == "My sister Maya moved to Porto."
        assert [e.actor for e in bank.history(maya.id)] == ["manager", "api"]


def test_stdio_server_remembers_answers_edits_and_undoes(tmp_path: Path, edge_home: Path, default_bundle) -> None:
    db = tmp_path / "bank.db"

    async def scenario() -> None:
        async with stdio_session(edge_mcp(default_bundle, db, "--user", "alice"), server_env(edge_home)) as session:
            await remember_answer_edit_undo(session, "alice", speaker="alice")

    anyio.run(scenario)
    memories_in_the_file(db, "alice")


def test_a_call_never_sees_another_users_memories(tmp_path: Path, edge_home: Path, default_bundle) -> None:
    db = tmp_path / "bank.db"

    async def scenario() -> None:
        command = edge_mcp(default_bundle, db, "--user", "alice", "--allow-users")
        async with stdio_session(command, server_env(edge_home)) as session:
            mine = await call(session, "add_memory", text="Alice's locker code is 1234", infer=False)
            theirs = await call(session, "add_memory", text="Bob's locker code is 4512", infer=False, user="bob")
            bob_id = theirs["applied"][0]["memory_id"]
            assert theirs["user"] == "bob" and theirs["applied"][0]["after"]["owner"] == "bob"

            found = await call(session, "search_memories", query="locker code 4512 Bob", limit=20)
            assert [h["id"] for h in found["results"]] == [mine["applied"][0]["memory_id"]]
            assert bob_id not in [m["id"] for m in (await call(session, "list_memories"))["memories"]]
            before = bank_state(db)
            for tool, arguments in [("get_memory", {"id": bob_id}), ("delete_memory", {"id": bob_id}),
                                    ("update_memory", {"id": bob_id, "text": "Bob's locker code is 0000"})]:
                text = await refused(session, tool, **arguments)
                assert f"No memory '{bob_id}' for user 'alice'." in text and "hint:" in text
            assert bank_state(db) == before
            answer = await call(session, "ask", question="What is Bob's locker code?")
            assert bob_id not in answer["memory_ids"] and "4512" not in answer["answer"]

            for name, says in [("bo\nb", "The user name holds a line break"),
                               ("\u200b\u200b", "The user name has no visible character"),
                               ("\u202ebob", "The user name holds an invisible format character (U+202E"),
                               ("b\u200bob", "invisible format character (U+200B"),
                               ("", "The user name is empty.")]:
                assert says in await refused(session, "list_memories", user=name), name
            assert bank_state(db) == before

            as_bob = await call(session, "search_memories", query="locker code", user="bob")
            assert [h["id"] for h in as_bob["results"]] == [bob_id]
            assert (await call(session, "undo", user="bob"))["undone"][0]["memory_id"] == bob_id
            assert (await call(session, "get_memory", id=mine["applied"][0]["memory_id"]))["deleted_at"] is None

    anyio.run(scenario)


def test_a_malformed_call_is_refused_and_leaves_the_bank_as_it_was(tmp_path: Path, edge_home: Path,
                                                                    default_bundle) -> None:
    db = tmp_path / "bank.db"

    async def scenario() -> None:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home)) as session:
            kept = await call(session, "add_memory", text="Ana adopted a cat named Luna", infer=False)
            memory_id = kept["applied"][0]["memory_id"]
            before = bank_state(db)
            bad_calls: list[tuple[str, dict[str, Any], str]] = [
                ("add_memory", {"text": 123}, "`text` must be a string (got 123)"),
                ("add_memory", {}, "`text` is required"),
                ("add_memory", {"text": "Luna", "infer": False, "teir": "core"},
                 "`teir` is not an argument of add_memory (it takes text, speaker, time, infer, tier, user)"),
                ("add_memory", {"text": "   "}, "The turn is empty."),
                ("add_memory", {"text": "", "infer": False}, "The memory text is empty."),
                ("add_memory", {"text": "a\x00b"}, "looks binary or wrongly decoded"),
                ("add_memory", {"text": "\u200b\u200b"}, "The turn has no visible character (only U+200B)."),
                ("add_memory", {"text": "\u202e", "infer": False}, "The memory text has no visible character"),
                ("add_memory", {"text": "Hi", "speaker": "\u200b"}, "The speaker has no visible character"),
                ("add_memory", {"text": "Hi", "speaker": "Ana\nBob"}, "The speaker holds a line break"),
                ("add_memory", {"text": "x" * 4001, "infer": False}, "at most 4000 are allowed"),
                ("add_memory", {"text": "word " * 20001}, "at most 100000 are allowed"),
                ("add_memory", {"text": "I moved.", "time": "garbage o'clock"}, "Cannot read the turn time"),
                ("add_memory", {"text": "Luna", "infer": False, "time": "yesterday"}, "Cannot read the turn time"),
                ("add_memory", {"text": "Luna", "infer": False, "time": "2025-13-45"}, "Cannot read the turn time"),
                ("add_memory", {"text": "I went to the dentist yesterday.", "time": "0001-01-01"},
                 "The turn time '0001-01-01' is out of range"),
                ("add_memory", {"text": "See you tomorrow.", "time": "9999-12-31 23:59"}, "is out of range"),
                ("add_memory", {"text": "Luna", "tier": "secret", "infer": False}, "`tier` must be one of"),
                ("add_memory", {"text": "Luna", "tier": "core"}, "`tier` is for a memory stored as given"),
                ("add_memory", {"text": "Luna", "speaker": "Ana", "infer": False}, "`speaker` is for a conversation"),
                ("add_memory", {"text": "Hi", "user": "bob"}, "This server serves user 'me' only"),
                ("update_memory", {"id": "m00000000", "text": "x"},
                 "No memory 'm00000000' for user 'me'.\nhint: Call list_memories or search_memories for ids."),
                ("update_memory", {"id": memory_id, "text": "\x07\x08"}, "not text"),
                ("update_memory", {"id": memory_id, "text": "\u200b"}, "has no visible character"),
                ("restore_memory", {"id": memory_id}, "is current; there is nothing to restore"),
                ("delete_memory", {"id": 42}, "`id` must be a string (got 42)"),
                ("get_memory", {"id": "m00000000"}, "No memory 'm00000000'"),
                ("search_memories", {"query": "cat", "limit": "many"}, "`limit` must be a whole number (got 'many')"),
                ("search_memories", {"query": "cat", "limit": 0}, "`limit` must be at least 1 (got 0)"),
                ("search_memories", {"query": ""}, "The query is empty."),
                ("ask", {"question": "\x00"}, "not text"),
                ("undo", {"steps": 0}, "`steps` must be at least 1"),
                ("no_such_tool", {}, "no_such_tool"),
            ]
            started = time.perf_counter()
            for tool, arguments, says in bad_calls:
                assert says in await refused(session, tool, **arguments), (tool, arguments)
            assert time.perf_counter() - started < 30  # refused before any model call
            hinted = await refused(session, "add_memory", text="x" * 4001, infer=False)
            assert "\nhint: Store a summary, or split it into several memories." in hinted
            for tool, arguments, says in [  # a 100,000-character input is not echoed back
                ("get_memory", {"id": "m" * 100_000}, "`id` must be at most 64 characters"),
                ("add_memory", {"text": "I moved.", "time": "9" * 100_000}, "Cannot read the turn time '999"),
                ("list_memories", {"user": "b" * 100_000}, "The user name is 100000 characters"),
                ("search_memories", {"query": "cat", "tier": "t" * 100_000}, "`tier` must be one of"),
            ]:
                text = await refused(session, tool, **arguments)
                assert says in text and len(text) < 600, (tool, text[:300])
            assert bank_state(db) == before
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS  # the server is still there
            assert (await call(session, "get_memory", id=memory_id))["text"] == "Ana adopted a cat named Luna"
            for given, stored in [("1:56 pm on 8 May, 2023", "2023-05-08T13:56"), ("2023-05-08", "2023-05-08")]:
                dated = await call(session, "add_memory", text="Ana's party", infer=False, time=given)
                assert dated["applied"][0]["after"]["event_time"] == stored  # read as a turn's time is

    anyio.run(scenario)


def test_reads_run_beside_a_change_and_changes_run_one_at_a_time(tmp_path: Path, edge_home: Path,
                                                                  default_bundle) -> None:
    db = tmp_path / "bank.db"
    done: dict[str, float] = {}
    took: dict[str, float] = {}

    async def scenario() -> None:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home)) as session:
            await call(session, "add_memory", text="Ana adopted a cat named Luna", infer=False)

            async def timed(name: str, tool: str, **arguments: Any) -> None:
                result = await call(session, tool, **arguments)
                done[name] = time.perf_counter()
                took[name] = result.get("seconds", 0.0)

            async with anyio.create_task_group() as group:
                for name, text in (("turn 1", "I moved to Porto last week."), ("turn 2", "My brother Leo sings.")):
                    group.start_soon(functools.partial(timed, name, "add_memory", text=text))
                await anyio.sleep(0.3)
                group.start_soon(functools.partial(timed, "list", "list_memories"))
                group.start_soon(functools.partial(timed, "search", "search_memories", query="cat"))

    anyio.run(scenario)
    first, second = sorted(["turn 1", "turn 2"], key=done.get)
    assert max(done["list"], done["search"]) < done[first]  # the reads did not wait for a turn
    assert done[second] - done[first] >= 0.9 * took[second]  # the second turn ran only after the first
    with MemoryBank.open(db, create=False) as bank:
        groups = [entry.op_group for entry in bank.history()]
        assert len(bank.list(tier="episodic")) == 2
    assert len(set(groups)) == 3 and [g for g, _ in itertools.groupby(groups)] == list(dict.fromkeys(groups))


# ----------------------------------------------------------------------------- streamable HTTP


def test_http_server_serves_the_whole_round_to_a_client_with_the_token_only(tmp_path: Path, edge_home: Path,
                                                                       default_bundle) -> None:
    db = tmp_path / "bank.db"
    token = "a-test-token-of-some-length"
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(edge_mcp(default_bundle, db, "--http", f"127.0.0.1:{port}"),
                              env=server_env(edge_home, EDGE_MCP_TOKEN=token), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "edge mcp --http did not listen within 90 s"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"
        hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            assert httpx.post(url, json=hello, headers=headers, timeout=10).status_code == 401

        async def scenario() -> None:
            async with http_session(url, token) as session:
                await remember_answer_edit_undo(session, "me", speaker="User")  # the default user speaks as "User"
                assert "This server serves user 'me' only" in await refused(session, "list_memories", user="bob")

        anyio.run(scenario)
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "server.log").read_text()
    memories_in_the_file(db, "me")


def test_http_on_an_address_other_machines_reach_needs_a_token(tmp_path: Path, edge_home: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "edge.cli", "mcp", "--http", "0.0.0.0:8765", "--db",
                          str(tmp_path / "bank.db")], env=server_env(edge_home), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "--http 0.0.0.0 can be reached from other machines, and $EDGE_MCP_TOKEN holds no bearer token." in run.stderr
    assert "hint: export EDGE_MCP_TOKEN=" in run.stderr
    assert not (tmp_path / "bank.db").exists()


def test_http_addresses_are_read_as_host_and_port() -> None:
    import click

    from edge.commands.mcp import is_loopback, parse_address

    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address("9000") == ("127.0.0.1", 9000)
    assert parse_address("0.0.0.0") == ("0.0.0.0", 8765)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address("localhost:9000") == ("localhost", 9000)
    for bad in ("host:port", "127.0.0.1:70000", ":9000", "[::1]x"):
        with pytest.raises(click.BadParameter, match="is not HOST:PORT"):
            parse_address(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost.local")


# ----------------------------------------------------------------------------- a turn is never lost, nor kept twice


def test_a_turn_the_model_cannot_take_is_kept_once_and_reported_pending(tmp_path: Path, edge_home: Path,
                                                                       minilm) -> None:
    """An unreachable model is not a tool error (a client would send the turn again): the turn is in the log,
    pending for the Manager, and the result says so, as `edge remember` does."""
    db = tmp_path / "bank.db"
    model = unreachable_model()

    async def scenario() -> None:
        async with stdio_session(edge_mcp(None, db, "--user", "alice", *model), server_env(edge_home)) as session:
            first = await call(session, "add_memory", text="I just adopted a cat named Luna.")
            assert first["pending"] is True and first["applied"] == [] and first["logged"]
            assert "Cannot reach the model server" in first["error"]
            assert "kept in the conversation log" in first["note"] and "Do not send it again" in first["note"]
            logged = await call(session, "get_memory", id=first["logged"])
            assert logged["tier"] == "episodic" and logged["text"] == "I just adopted a cat named Luna."
            second = await call(session, "add_memory", text="My sister Maya lives in Lisbon.")
            assert second["pending"] is True and second["logged"] != first["logged"]

    anyio.run(scenario)
    assert facts_and_turns(db) == (0, 2, ["I just adopted a cat named Luna.", "My sister Maya lives in Lisbon."])
    said = subprocess.run([sys.executable, "-m", "edge.cli", "remember", "I play the cello.", "--db", str(db),
                           "--user", "alice", *model], env=server_env(edge_home), capture_output=True, text=True,
                          timeout=120)
    assert said.returncode == 1
    assert "Cannot reach the model server" in said.stdout and "kept in the conversation log" in said.stdout
    assert facts_and_turns(db)[1] == 3


def test_a_cancelled_turn_stops_before_its_facts_and_frees_the_lock(tmp_path: Path, edge_home: Path,
                                                                   default_bundle) -> None:
    """A client that gives up on a long turn (its timeout sends notifications/cancelled): the Manager stops at its
    next model call, the turn is kept pending without a fact, and the next change does not wait for the turn."""
    db = tmp_path / "bank.db"
    log = tmp_path / "server.log"
    timings: dict[str, float] = {}

    async def scenario() -> None:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home), log=log) as session:
            started = time.perf_counter()
            with pytest.raises(Exception, match="timed out"):
                await session.call_tool("add_memory", {"text": BIG_TURN}, read_timeout_seconds=3)
            quick = await call(session, "add_memory", text="Ana adopted a cat named Luna", infer=False)
            timings["next change"] = time.perf_counter() - started
            assert quick["applied"][0]["after"]["text"] == "Ana adopted a cat named Luna"
            await anyio.sleep(3)  # nothing of the turn commits later either

    anyio.run(scenario)
    assert timings["next change"] < 20, timings  # all 40 pieces of the turn would take minutes
    assert facts_and_turns(db) == (1, 1, [BIG_TURN])  # the fact added as given; the turn once, pending
    with MemoryBank.open(db, create=False) as bank:
        assert [(e.action, e.actor) for e in bank.history(user="me")] == [("ADD", "manager"), ("ADD", "api")]
    text = log.read_text()
    assert "add_memory interrupted (the call was cancelled, or its client went away)" in " ".join(text.split())


def test_a_signal_stops_a_server_mid_turn_without_the_turns_facts(tmp_path: Path, edge_home: Path,
                                                                 default_bundle) -> None:
    """SIGINT to an HTTP server during a long turn and SIGINT to an idle stdio server whose client keeps stdin open:
    both stop within seconds (not after the turn's minute of model calls), with the bank closed and consistent."""
    db = tmp_path / "bank.db"
    port = free_port()
    server = start_http(edge_mcp(default_bundle, db, "--http", f"127.0.0.1:{port}"), server_env(edge_home), port,
                        tmp_path / "http.log")
    url = f"http://127.0.0.1:{port}/mcp"
    stopped: dict[str, float] = {}

    async def scenario() -> None:
        async with http_session(url, None) as session:
            async def interrupt() -> None:
                await anyio.sleep(4)
                stopped["at"] = time.monotonic()
                server.send_signal(signal.SIGINT)

            async with anyio.create_task_group() as group:
                group.start_soon(interrupt)
                with pytest.raises(Exception):  # noqa: B017 - the server goes away: no answer, however worded
                    await session.call_tool("add_memory", {"text": BIG_TURN})

    try:
        try:
            anyio.run(scenario)
        except Exception:  # noqa: BLE001 - closing the session may fail too: the server is gone
            pass
        code = server.wait(timeout=30)
    finally:
        server.kill()
    assert code == 130 and time.monotonic() - stopped["at"] < 15, (tmp_path / "http.log").read_text()
    assert "interrupted (the server is stopping)" in " ".join((tmp_path / "http.log").read_text().split())
    assert facts_and_turns(db) == (0, 1, [BIG_TURN])

    idle = subprocess.Popen(edge_mcp(default_bundle, db), env=server_env(edge_home), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=default_sigint)
    try:
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
        idle.stdin.write((json.dumps(hello) + "\n").encode())
        idle.stdin.flush()
        assert b'"result"' in idle.stdout.readline()
        idle.send_signal(signal.SIGINT)  # stdin stays open: the server must not wait for it
        assert idle.wait(timeout=15) == 130
    finally:
        idle.kill()
    assert facts_and_turns(db) == (0, 1, [BIG_TURN])


# ----------------------------------------------------------------------------- many users, a damaged bank


def test_many_users_keep_a_bounded_number_of_bank_connections(tmp_path: Path, edge_home: Path, minilm) -> None:
    """--allow-users under a 64-descriptor limit: 60 users' turns (each needs the user's own Memory Manager) and
    60 refused undos (which need none) leave the server up, its open files bounded."""
    db = tmp_path / "bank.db"
    port = free_port()

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    server = start_http(edge_mcp(None, db, "--allow-users", "--http", f"127.0.0.1:{port}", *unreachable_model()),
                        server_env(edge_home), port, tmp_path / "server.log", preexec_fn=low_limit)
    descriptors = Path(f"/proc/{server.pid}/fd")
    counts: list[int] = []

    async def scenario() -> None:
        async with http_session(f"http://127.0.0.1:{port}/mcp", None) as session:
            counts.append(len(list(descriptors.iterdir())))
            for i in range(60):
                assert "Nothing to undo for user" in await refused(session, "undo", user=f"reader{i}")
            counts.append(len(list(descriptors.iterdir())))
            for i in range(60):
                added = await call(session, "add_memory", text=f"My locker is number {i}.", user=f"user{i}")
                assert added["user"] == f"user{i}" and added["pending"] is True
            counts.append(len(list(descriptors.iterdir())))
            assert (await call(session, "list_memories", user="user0"))["total"] == 1

    try:
        anyio.run(scenario)
        assert server.poll() is None
    finally:
        server.terminate()
        code = server.wait(timeout=30)
    assert code == 0, (tmp_path / "server.log").read_text()
    assert counts[1] <= counts[0] + 3, counts  # a refused call opened nothing (60 users would be 120 files)
    assert counts[2] - counts[0] <= 8 * 3 + 2, counts  # at most 8 other users' connections (a file and its WAL)
    assert facts_and_turns(db)[1] == 60


def test_a_damaged_bank_is_reported_as_the_banks_own_corruption_error(tmp_path: Path, edge_home: Path,
                                                                      default_bundle) -> None:
    from bank_file import sql

    db = tmp_path / "bank.db"

    async def add_some() -> str:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home)) as session:
            await call(session, "add_memory", text="Ana adopted a cat named Luna", infer=False)
            return (await call(session, "add_memory", text="Ana plays the cello", infer=False))["applied"][0][
                "memory_id"]

    cello = anyio.run(add_some)
    # A memory row whose JSON no longer reads: not a SQLite error, nothing edge expects.
    sql(db, "UPDATE memories SET metadata = '{not json' WHERE id = ?", (cello,))
    log = tmp_path / "server.log"

    async def unexpected() -> None:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home), log=log) as session:
            read = await refused(session, "get_memory", id=cello)
            assert "Unexpected JSONDecodeError" in read and "Nothing was changed (a read)." in read
            before = bank_state_without(db, cello)
            change = await refused(session, "update_memory", id=cello, text="Ana plays the viola")
            assert "Unexpected JSONDecodeError" in change and "The bank was left unchanged." in change
            assert "hint: This is a bug in edge: please report it" in change
            assert bank_state_without(db, cello) == before

    anyio.run(unexpected)
    assert "Traceback" in log.read_text() and "JSONDecodeError" in log.read_text()

    pages = dict(sql(db, "SELECT name, rootpage FROM sqlite_master WHERE type = 'table'"))
    page_size = sql(db, "PRAGMA page_size")[0][0]
    sql(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    with db.open("r+b") as file:  # the tables' first pages overwritten: "database disk image is malformed"
        for table in ("memories", "history"):
            file.seek((pages[table] - 1) * page_size)
            file.write(b"\xa5" * page_size)

    async def corrupt() -> None:
        async with stdio_session(edge_mcp(default_bundle, db), server_env(edge_home)) as session:
            for tool, arguments in [("list_memories", {}), ("search_memories", {"query": "cat"}),
                                    ("history", {}), ("add_memory", {"text": "I have a new bike.", "infer": False}),
                                    ("add_memory", {"text": "I have a new bike."}), ("ask", {"question": "Cat?"}),
                                    ("undo", {})]:
                text = await refused(session, tool, **arguments)
                assert f"{db} is not a readable SQLite file (database disk image is malformed)." in text, (tool, text)
                assert "hint: `edge memory check" in text and "edge memory export" in text, (tool, text)

    anyio.run(corrupt)


def bank_state_without(db: Path, memory_id: str) -> list:
    """The history rows of the bank (its memory rows cannot all be read once one is damaged)."""
    from bank_file import sql

    return sql(db, "SELECT * FROM history ORDER BY seq") + sql(db, "SELECT id, text, updated_at FROM memories")


# ----------------------------------------------------------------------------- starting


def test_a_bad_start_is_refused_before_any_model_loads(tmp_path: Path, edge_home: Path) -> None:
    db = tmp_path / "bank.db"

    def start(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge.cli", "mcp", "--db", str(db), *args],
                              env=server_env(edge_home, **env), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    bad = start("--http", "999.1.1.1:8000", EDGE_MCP_TOKEN="a-test-token-of-some-length")
    assert bad.returncode == 2 and "'999.1.1.1' is neither an IP address nor a host name" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = start("--http", "no-such-host.invalid:8000")  # no token: the name is what is wrong, and said first
    assert typo.returncode == 1 and "Cannot serve on 'no-such-host.invalid': the name does not resolve" in typo.stderr
    assert "bearer token" not in typo.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = start("--http", f"127.0.0.1:{port}")
    assert busy.returncode == 1, busy.stderr
    assert f"Port {port} is in use (on 127.0.0.1); pick another with --http HOST:PORT." in busy.stderr
    # --user is checked as every command checks it (`edge.commands.checked_user`): a usage error, exit 2.
    for name, says in [("", "the user name is empty"), (" ", "the user name is empty"),
                       ("al\nice", "holds a line break"), ("\u202eecila", "invisible format character (U+202E"),
                       ("x" * 101, "is 101 characters; at most 100")]:
        run = start("--user", name)
        assert run.returncode == 2 and says in run.stderr and "Traceback" not in run.stderr, (name, run.stderr)
    assert not db.exists()  # every refusal came before the bank (and the models) were opened


def test_a_server_on_every_interface_prints_urls_a_client_can_use() -> None:
    from edge.commands.mcp import urls

    assert urls("127.0.0.1", 8765) == ("http://127.0.0.1:8765/mcp", None)
    assert urls("0.0.0.0", 8765) == (f"http://{socket.gethostname()}:8765/mcp", "http://127.0.0.1:8765/mcp")
    assert urls("::", 9000) == (f"http://{socket.gethostname()}:9000/mcp", "http://[::1]:9000/mcp")


def test_user_names_follow_one_rule_for_the_cli_and_the_tools() -> None:
    from edge.bank import clean_name
    from edge.mcp_service import checked_name

    assert clean_name("  alice ") == "alice" == checked_name(" alice", "user name")
    assert clean_name("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # an emoji's joiners are part of it
    for name in ["a\nb", "a\tb", "\u200b", "a\u200bb", "\u202ebob", "\u2066bob", "", "x" * 101]:
        with pytest.raises(InvalidInputError):
            clean_name(name)
