"""edge as a Model Context Protocol server: the memory bank and both agents as MCP tools (`edge mcp`).

Built on the official SDK (`mcp`, its `MCPServer`): each tool is a typed
function, so the SDK derives its JSON schema, validates the arguments before
the function runs (a wrong type never reaches edge) and returns the result
both as text and as structured content under the tool's output schema. The
tool names are the ones MCP memory servers share (`add_memory`,
`search_memories`, `list_memories`, `get_memory`, `update_memory`,
`delete_memory`), plus `ask`, `undo` and `history`. What the tools do, for
which user and under which lock, is `edge.mcp_service.MemoryService`'s; an
`EdgeError` it raises becomes an MCP tool error (`is_error`) with the message
and hint the CLI prints, and a crash is the SDK's generic tool error, never
the end of the server.
"""
from __future__ import annotations

import hmac
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Iterator

from pydantic import Field

from edge import __version__
from edge.errors import EdgeError
from edge.mcp_service import (
    MAX_RESULTS,
    Added,
    Answer,
    History,
    MemoryList,
    MemoryRecord,
    MemoryService,
    SearchResults,
    Undone,
)
from edge.operations import Tier

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.mcpserver import MCPServer

HISTORY_RESOURCE_ROWS = 20
INSTRUCTIONS = (
    "edge is the user's long-term memory, kept on this machine. Call add_memory with each thing the user tells "
    "you that is worth keeping (their words, as said); call ask or search_memories before answering a question "
    "about the user's past, people, plans or preferences. Every change is recorded and undo reverts the latest."
)


@contextmanager
def tool_errors() -> Iterator[None]:
    """An `EdgeError` as the MCP tool error a client shows: the CLI's message, then its hint on a line of its own."""
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        yield
    except EdgeError as exc:
        raise ToolError(f"{exc.message}\nhint: {exc.hint}" if exc.hint else exc.message) from exc


class StaticToken:
    """The SDK's `TokenVerifier` for one shared bearer token (from an environment variable).

    Compared in constant time, so the time a wrong guess takes says nothing about the token.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> "AccessToken | None":
        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="bearer", client_id="edge-mcp-client", scopes=[])
        return None


UserArg = Annotated[str | None, Field(
    description="Whose memories; only on a server started with --allow-users (default: the server's user)")]
IdArg = Annotated[str, Field(description="A memory id, as search_memories or list_memories return it (e.g. m1a2b3c4d)")]
LimitArg = Annotated[int, Field(ge=1, le=MAX_RESULTS, description="How many to return")]
TierArg = Annotated[Tier | None, Field(
    description="core (always in context), semantic (facts) or episodic (the conversation log, verbatim); "
    "default: all")]


def build_server(service: MemoryService, *, token: str | None = None, url: str | None = None) -> "MCPServer":
    """The MCP server over `service`: its tools and resources; with `token`, HTTP clients must send it as a bearer.

    `url` is the server's own address (needed by the SDK's auth settings,
    which are OAuth's; edge publishes no OAuth metadata).
    """
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    auth: dict[str, Any] = {}
    if token:
        auth = {"token_verifier": StaticToken(token),
                "auth": AuthSettings(issuer_url=url or "http://127.0.0.1", resource_server_url=None)}
    server: MCPServer = MCPServer("edge", title="edge memory", version=__version__, instructions=INSTRUCTIONS,
                                  log_level="WARNING", **auth)
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    adds = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    edits = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

    @server.tool(annotations=adds, description=(
        "Remember something the user said: edge's Memory Manager keeps it in the conversation log and adds, updates "
        "or retires facts from it; infer=false stores the text as given."))
    def add_memory(
        text: Annotated[str, Field(description="What was said, in the speaker's words (with infer=false: the memory "
                                               "itself, at most 4000 characters)")],
        speaker: Annotated[str | None, Field(description="Who said it (default: the user)")] = None,
        time: Annotated[str | None, Field(description="When it was said, e.g. '2025-03-02 14:05' or '1:56 pm on 8 May, "
                                                      "2023'; 'yesterday' in the text is resolved against it "
                                                      "(default: now). With infer=false: the event's time")] = None,
        infer: Annotated[bool, Field(description="true: the Memory Manager decides what to keep; false: store the "
                                                 "text as given")] = True,
        tier: Annotated[Tier | None, Field(description="With infer=false only: core, semantic (default) or "
                                                       "episodic")] = None,
        user: UserArg = None,
    ) -> Added:
        with tool_errors():
            return service.add_memory(text, speaker=speaker, time=time, infer=infer, tier=tier, user=user)

    @server.tool(annotations=reads, description=(
        "Find the user's memories about a query, by meaning and keywords; returns ids, texts, tiers, times and "
        "scores, best first."))
    def search_memories(
        query: Annotated[str, Field(description="A question or a few key words")],
        limit: LimitArg = 10, tier: TierArg = None, user: UserArg = None,
    ) -> SearchResults:
        with tool_errors():
            return service.search_memories(query, limit=limit, tier=tier, user=user)

    @server.tool(annotations=reads, description=(
        "List the user's latest current memories (of one tier, or all), oldest first, with the total count."))
    def list_memories(tier: TierArg = None, limit: LimitArg = 50, user: UserArg = None) -> MemoryList:
        with tool_errors():
            return service.list_memories(tier=tier, limit=limit, user=user)

    @server.tool(annotations=reads, description=(
        "Read one memory by id: its text, tier, times, and whether it was deleted or superseded."))
    def get_memory(id: IdArg, user: UserArg = None) -> MemoryRecord:  # noqa: A002 - the name clients use
        with tool_errors():
            return service.get_memory(id, user=user)

    @server.tool(annotations=reads, description=(
        "Answer a question from the user's memories with edge's Answer Agent: the answer (or 'unknown'), the "
        "memories it came from, and whether it is supported by them."))
    def ask(question: Annotated[str, Field(description="The question, e.g. 'What is my cat called?'")],
            user: UserArg = None) -> Answer:
        with tool_errors():
            return service.ask(question, user=user)

    @server.tool(annotations=edits, description=(
        "Replace the text of the memory with this id (recorded in history; undo reverts it)."))
    def update_memory(id: IdArg,  # noqa: A002
                      text: Annotated[str, Field(description="The new text (at most 4000 characters)")],
                      user: UserArg = None) -> MemoryRecord:
        with tool_errors():
            return service.update_memory(id, text, user=user)

    @server.tool(annotations=edits, description=(
        "Delete the memory with this id; it leaves search and lists, and undo brings it back."))
    def delete_memory(id: IdArg, user: UserArg = None) -> MemoryRecord:  # noqa: A002
        with tool_errors():
            return service.delete_memory(id, user=user)

    @server.tool(annotations=edits, description=(
        "Revert the user's latest change to memory (one tool call's, or one remembered turn's); the revert is "
        "itself recorded in history."))
    def undo(steps: Annotated[int, Field(ge=1, le=MAX_RESULTS, description="How many changes to revert")] = 1,
             user: UserArg = None) -> Undone:
        with tool_errors():
            return service.undo(steps, user=user)

    @server.tool(annotations=reads, description=(
        "The user's latest changes to memory, oldest first: what changed, by whom (manager, api, user), from which "
        "turn, and what undo reverted."))
    def history(limit: LimitArg = 20, user: UserArg = None) -> History:
        with tool_errors():
            return service.history(limit=limit, user=user)

    @server.resource("memory://core", name="core-memory", mime_type="text/plain", description=(
        "The user's core memories: the few facts always in the agents' context, one a line."))
    def core_memory() -> str:
        return service.core_block()

    @server.resource("memory://history", name="recent-history", mime_type="application/json", description=(
        f"The user's latest {HISTORY_RESOURCE_ROWS} changes to memory, as the history tool returns them."))
    def recent_history() -> str:
        return service.history(limit=HISTORY_RESOURCE_ROWS).model_dump_json(indent=2)

    return server
