"""`edge mcp` as an MCP client sees it: a real `edge mcp` subprocess on the default bundle, driven by the SDK's
client over stdio and over streamable HTTP, on a real bank file read back with `MemoryBank`."""
from __future__ import annotations

import functools
import itertools
import os
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

from edge.bank import MemoryBank  # noqa: E402

TOOLS = {"add_memory", "search_memories", "list_memories", "get_memory", "ask", "update_memory", "delete_memory",
         "undo", "history"}
TURNS = ["I just adopted a cat named Luna.", "My sister Maya lives in Lisbon.", "I started learning the piano."]


def server_env(edge_home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "EDGE_MCP_TOKEN"}
    return {**env, "EDGE_HOME": str(edge_home), **extra}


def edge_mcp(default_bundle, db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "mcp", "--bundle", str(default_bundle.root), "--db", str(db), *args]


@asynccontextmanager
async def stdio_session(command: list[str], env: dict[str, str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (read, write):
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- stdio


def test_stdio_server_remembers_answers_edits_and_undoes(tmp_path: Path, edge_home: Path, default_bundle) -> None:
    db = tmp_path / "bank.db"

    async def scenario() -> None:
        async with stdio_session(edge_mcp(default_bundle, db, "--user", "alice"), server_env(edge_home)) as session:
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
                assert result["user"] == "alice" and result["inferred"] is True
                assert result["turn"]["text"] == turn and result["turn"]["speaker"] == "alice"
                logged = await call(session, "get_memory", id=result["logged"])
                assert logged["tier"] == "episodic" and logged["text"] == turn
                for change in result["applied"]:
                    assert change["after"]["source_turns"] == [result["turn"]["turn_id"]]

            found = await call(session, "search_memories", query="Where does Maya live?", limit=5)
            assert found["results"] and found["results"][0]["rank"] == 1
            assert added[1]["logged"] in [hit["id"] for hit in found["results"]]
            assert all(hit["owner"] == "alice" and hit["score"] > 0 for hit in found["results"])
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

            resources = {str(r.uri) for r in (await session.list_resources()).resources}
            assert resources == {"memory://core", "memory://history"}
            recent = (await session.read_resource("memory://history")).contents[0].text
            assert f'"memory_id": "{piano}"' in recent

    anyio.run(scenario)
    with MemoryBank.open(db, user="alice", create=False) as bank:  # the file holds it, for the CLI and the API alike
        maya = bank.list(tier="episodic")[1]
        assert maya.text == "My sister Maya moved to Porto."
        assert [e.actor for e in bank.history(maya.id)] == ["manager", "api"]


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
                ("add_memory", {"text": 123}, "valid string"),
                ("add_memory", {}, "text"),
                ("add_memory", {"text": "   "}, "The turn is empty."),
                ("add_memory", {"text": "", "infer": False}, "The memory text is empty."),
                ("add_memory", {"text": "a\x00b"}, "looks binary or wrongly decoded"),
                ("add_memory", {"text": "x" * 4001, "infer": False}, "at most 4000 are allowed"),
                ("add_memory", {"text": "word " * 20001}, "at most 100000 are allowed"),
                ("add_memory", {"text": "I moved.", "time": "garbage o'clock"}, "Cannot read the turn time"),
                ("add_memory", {"text": "Luna", "tier": "secret", "infer": False}, "tier"),
                ("add_memory", {"text": "Luna", "tier": "core"}, "`tier` is for a memory stored as given"),
                ("add_memory", {"text": "Luna", "speaker": "Ana", "infer": False}, "`speaker` is for a conversation"),
                ("add_memory", {"text": "Hi", "user": "bob"}, "This server serves user 'me' only"),
                ("update_memory", {"id": "m00000000", "text": "x"}, "No memory 'm00000000' for user 'me'."),
                ("update_memory", {"id": memory_id, "text": "\x07\x08"}, "not text"),
                ("delete_memory", {"id": 42}, "valid string"),
                ("get_memory", {"id": "m00000000"}, "No memory 'm00000000'"),
                ("search_memories", {"query": "cat", "limit": "many"}, "valid integer"),
                ("search_memories", {"query": "cat", "limit": 0}, "greater than or equal to 1"),
                ("search_memories", {"query": ""}, "The query is empty."),
                ("ask", {"question": "\x00"}, "not text"),
                ("undo", {"steps": 0}, "greater than or equal to 1"),
                ("no_such_tool", {}, "no_such_tool"),
            ]
            started = time.perf_counter()
            for tool, arguments, says in bad_calls:
                assert says in await refused(session, tool, **arguments), (tool, arguments)
            assert time.perf_counter() - started < 30  # refused before any model call
            hinted = await refused(session, "add_memory", text="x" * 4001, infer=False)
            assert "\nhint: Store a summary, or split it into several memories." in hinted
            assert bank_state(db) == before
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS  # the server is still there
            assert (await call(session, "get_memory", id=memory_id))["text"] == "Ana adopted a cat named Luna"

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


def test_http_server_serves_the_tools_to_a_client_with_the_token_only(tmp_path: Path, edge_home: Path,
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
                assert {t.name for t in (await session.list_tools()).tools} == TOOLS
                added = await call(session, "add_memory", text="I just adopted a cat named Luna.")
                assert added["logged"] and added["turn"]["speaker"] == "User"
                hits = await call(session, "search_memories", query="cat", tier="episodic")
                assert [h["id"] for h in hits["results"]] == [added["logged"]]
                assert "This server serves user 'me' only" in await refused(session, "list_memories", user="bob")
                assert (await call(session, "undo"))["undone"][0]["memory_id"] in {
                    added["logged"], *(c["memory_id"] for c in added["applied"])}
                assert (await call(session, "list_memories"))["total"] == 0

        anyio.run(scenario)
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "server.log").read_text()


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
