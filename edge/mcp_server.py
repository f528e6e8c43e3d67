"""edge as a Model Context Protocol server: the memory bank and both agents as MCP tools (`edge mcp`).

Built on the official SDK (`mcp`, its `MCPServer` and `Tool`): each tool is a
typed function, so the SDK derives its JSON schema, validates the arguments
before the function runs (a wrong type never reaches edge) and returns the
result both as text and as structured content under the tool's output
schema. edge's tools (`EdgeTool`) refuse arguments their schema does not name
(`additionalProperties: false`) and say in a line per argument what is wrong
with a bad one. The tool names are the ones MCP memory servers share
(`add_memory`, `search_memories`, `list_memories`, `get_memory`,
`update_memory`, `delete_memory`), plus `restore_memory`, `ask`, `undo` and
`history`. What the tools do, for which user and under which lock, is
`edge.mcp_service.MemoryService`'s.

Errors: an `EdgeError` becomes an MCP tool error (`is_error`) with the
message and hint the CLI prints, the hints that name a CLI command naming the
tool instead, and no input quoted past 80 characters. Anything else the
service does not expect is a tool error that names the exception and says
whether the bank changed (the traceback goes to the server's log), never the
end of the server.

Cancelling: each call runs on a worker thread with a cancel event
(`in_worker`). When the SDK cancels the call (the client sent
`notifications/cancelled`, e.g. on its own timeout; the client went away; the
server is shutting down), the event is set, the Memory Manager stops before
its next model call without applying the turn's facts, and the call's task
waits for the thread to finish before the cancellation goes on, so nothing
is left writing to the bank behind the server's back.
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
from typing import TYPE_CHECKING, Annotated, Any, Callable, TypeVar

from pydantic import ConfigDict, Field, ValidationError

from edge import __version__
from edge.errors import EdgeError, MemoryNotFoundError, shorten
from edge.mcp_service import (
    MAX_RESULTS,
    Added,
    Answer,
    CallCancelledError,
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
    from mcp.server.mcpserver.tools import Tool

log = logging.getLogger("edge.mcp")
T = TypeVar("T")

HISTORY_RESOURCE_ROWS = 20
QUOTE_CHARS = 80  # the most characters of an input an error message quotes
MESSAGE_CHARS = 2000
CANCEL_WAIT_S = 60.0  # how long a cancelled call waits for its worker thread (the Manager stops within a model call)
INSTRUCTIONS = (
    "edge is the user's long-term memory, kept on this machine. Call add_memory with each thing the user tells "
    "you that is worth keeping (their words, as said); call ask or search_memories before answering a question "
    "about the user's past, people, plans or preferences. Every change is recorded and undo reverts the latest."
)
# Hints the bank gives for the command line, and what an MCP client does instead.
TOOL_HINTS = {"`edge memory list` shows ids.": "Call list_memories or search_memories for ids."}


# ----------------------------------------------------------------------------- errors as a client reads them


def mcp_hint(exc: EdgeError) -> str | None:
    """The hint of `exc` for an MCP client: what to call, where the CLI's hint names a command."""
    if isinstance(exc, MemoryNotFoundError) and "is deleted; restore it" in exc.message:
        return "Call restore_memory with its id first (or undo, if deleting it was the latest change)."
    if isinstance(exc, MemoryNotFoundError) and "already deleted" in exc.message:
        return "It is deleted already; restore_memory (or undo, if that was the latest change) brings it back."
    return TOOL_HINTS.get(exc.hint or "", exc.hint)


_LONG_QUOTES = [re.compile(r"'([^'\n]{%d,})'" % (QUOTE_CHARS + 1)), re.compile(r'"([^"\n]{%d,})"' % (QUOTE_CHARS + 1))]


def clipped(text: str) -> str:
    """`text` with every quoted piece longer than `QUOTE_CHARS` cut (a 100,000-character id is not echoed back)."""
    for pattern in _LONG_QUOTES:
        text = pattern.sub(lambda m: f"{m.group(0)[0]}{m.group(1)[:QUOTE_CHARS]}…{m.group(0)[0]}", text)
    return shorten(text, MESSAGE_CHARS)


def error_text(exc: EdgeError) -> str:
    """An `EdgeError` as a tool error's text: the message, then its hint on a line of its own."""
    hint = mcp_hint(exc)
    return clipped(f"{exc.message}\nhint: {hint}" if hint else exc.message)


async def in_worker(work: Callable[[threading.Event], T]) -> T:
    """`work(cancel)` on a worker thread; when the call is cancelled, set `cancel` and wait for `work` to end.

    A plain synchronous tool runs in a thread the SDK cannot stop: cancelled,
    its task waits for it anyway, and the turn commits a minute later. Here
    the thread is told (the Memory Manager reads the event between model
    calls), and the task waits for it (shielded, at most `CANCEL_WAIT_S`)
    before the cancellation goes on, so the server closes the bank only
    after its last write. A call cancelled before its thread started never
    runs.
    """
    import anyio
    import anyio.to_thread

    cancel = threading.Event()
    finished = threading.Event()
    state = threading.Lock()
    started = False

    def run() -> T:
        nonlocal started
        with state:
            if cancel.is_set():
                raise CallCancelledError()
            started = True
        try:
            return work(cancel)
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with state:
            cancel.set()
            running = started
        if running:
            with anyio.move_on_after(CANCEL_WAIT_S, shield=True):
                while not finished.is_set():
                    await anyio.sleep(0.02)
        raise


async def call(tool: str, work: Callable[[threading.Event], T]) -> T:
    """Run a tool's work (`in_worker`); its `EdgeError` as a tool error, anything else as one that names it."""
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        return await in_worker(work)
    except EdgeError as exc:
        raise ToolError(error_text(exc)) from exc
    except Exception as exc:
        log.exception("%s raised %s", tool, type(exc).__name__)
        raise ToolError(clipped(f"Unexpected {type(exc).__name__}: {exc}.\nhint: This is a bug in edge: please "
                                "report it with the traceback the server wrote to its log (stderr).")) from exc


# ----------------------------------------------------------------------------- arguments


def problem(error: Any, tool: str, arguments: list[str]) -> str:
    """One argument's validation error as a short sentence: "`limit` must be at least 1 (got 0)"."""
    name = ".".join(str(part) for part in error["loc"]) or "the arguments"
    kind, ctx = error["type"], error.get("ctx") or {}
    value = error.get("input")
    got = f" (got {shorten(repr(value), 40) if isinstance(value, str) else shorten(str(value), 40)})"
    if kind == "missing":
        return f"`{name}` is required"
    if kind == "extra_forbidden":
        return f"`{name}` is not an argument of {tool} (it takes {', '.join(arguments)})"
    if kind in ("string_type", "string_unicode"):
        return f"`{name}` must be a string{got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"`{name}` must be a whole number{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"`{name}` must be true or false{got}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"`{name}` must be at least {ctx.get('ge', ctx.get('gt'))}{got}"
    if kind in ("less_than_equal", "less_than"):
        return f"`{name}` must be at most {ctx.get('le', ctx.get('lt'))}{got}"
    if kind == "string_too_long":
        return f"`{name}` must be at most {ctx.get('max_length')} characters"
    if kind == "literal_error":
        return f"`{name}` must be one of {ctx.get('expected')}{got}"
    message = str(error.get("msg", "is not valid"))
    return f"`{name}`: {message[:1].lower()}{message[1:]}{got}"


def edge_tool(fn: Callable[..., Any], *, description: str, annotations: Any) -> "Tool":
    """`fn` as an SDK `Tool` that refuses undeclared arguments and words argument errors briefly (`EdgeTool`)."""
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
    from mcp.server.mcpserver.tools import Tool

    class EdgeTool(Tool):
        async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
            try:
                return await super().run(arguments, context, convert_result)
            except UnexpectedToolError:
                raise
            except ToolError as exc:
                if not isinstance(exc.__cause__, ValidationError):
                    raise
                names = list(self.parameters.get("properties", {}))
                problems = [problem(e, self.name, names) for e in exc.__cause__.errors(include_url=False)]
                raise ToolError(clipped(f"Error executing tool {self.name}: {'; '.join(problems)}.\nhint: the "
                                        "tool's input schema (tools/list) gives each argument and its type.")
                                ) from exc.__cause__

    tool = EdgeTool.from_function(fn, description=description, annotations=annotations, structured_output=True)
    # The SDK's argument model ignores names it does not declare ("teir": "core" would be dropped silently);
    # FuncMetadata reads `arg_model` at each call, and the published schema is `parameters`.
    loose = tool.fn_metadata.arg_model
    strict = type(loose.__name__, (loose,), {"model_config": ConfigDict(extra="forbid"),
                                             "__module__": loose.__module__})
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool


# ----------------------------------------------------------------------------- the server


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
IdArg = Annotated[str, Field(max_length=64, description=(
    "A memory id, as search_memories or list_memories return it (e.g. m1a2b3c4d)"))]
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
    from mcp.server.mcpserver.exceptions import ResourceError
    from mcp.types import ToolAnnotations

    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    adds = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    edits = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

    async def add_memory(
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
        return await call("add_memory", lambda cancel: service.add_memory(
            text, speaker=speaker, time=time, infer=infer, tier=tier, user=user, cancel=cancel))

    async def search_memories(
        query: Annotated[str, Field(description="A question or a few key words")],
        limit: LimitArg = 10, tier: TierArg = None, user: UserArg = None,
    ) -> SearchResults:
        return await call("search_memories", lambda _: service.search_memories(query, limit=limit, tier=tier,
                                                                               user=user))

    async def list_memories(tier: TierArg = None, limit: LimitArg = 50, user: UserArg = None) -> MemoryList:
        return await call("list_memories", lambda _: service.list_memories(tier=tier, limit=limit, user=user))

    async def get_memory(id: IdArg, user: UserArg = None) -> MemoryRecord:  # noqa: A002 - the name clients use
        return await call("get_memory", lambda _: service.get_memory(id, user=user))

    async def ask(question: Annotated[str, Field(description="The question, e.g. 'What is my cat called?'")],
                  user: UserArg = None) -> Answer:
        return await call("ask", lambda cancel: service.ask(question, user=user, cancel=cancel))

    async def update_memory(id: IdArg,  # noqa: A002
                            text: Annotated[str, Field(description="The new text (at most 4000 characters)")],
                            user: UserArg = None) -> MemoryRecord:
        return await call("update_memory", lambda cancel: service.update_memory(id, text, user=user, cancel=cancel))

    async def delete_memory(id: IdArg, user: UserArg = None) -> MemoryRecord:  # noqa: A002
        return await call("delete_memory", lambda cancel: service.delete_memory(id, user=user, cancel=cancel))

    async def restore_memory(id: IdArg, user: UserArg = None) -> MemoryRecord:  # noqa: A002
        return await call("restore_memory", lambda cancel: service.restore_memory(id, user=user, cancel=cancel))

    async def undo(steps: Annotated[int, Field(ge=1, le=MAX_RESULTS, description="How many changes to revert")] = 1,
                   user: UserArg = None) -> Undone:
        return await call("undo", lambda cancel: service.undo(steps, user=user, cancel=cancel))

    async def history(limit: LimitArg = 20, user: UserArg = None) -> History:
        return await call("history", lambda _: service.history(limit=limit, user=user))

    tools = [
        edge_tool(add_memory, annotations=adds, description=(
            "Remember something the user said: edge's Memory Manager keeps it in the conversation log and adds, "
            "updates or retires facts from it; infer=false stores the text as given. When the model cannot be "
            "reached the turn is still kept (pending: true): do not send it again.")),
        edge_tool(search_memories, annotations=reads, description=(
            "Find the user's memories about a query, by meaning and keywords; returns ids, texts, tiers, times and "
            "scores, best first.")),
        edge_tool(list_memories, annotations=reads, description=(
            "List the user's latest current memories (of one tier, or all), oldest first, with the total count.")),
        edge_tool(get_memory, annotations=reads, description=(
            "Read one memory by id: its text, tier, times, and whether it was deleted or superseded.")),
        edge_tool(ask, annotations=reads, description=(
            "Answer a question from the user's memories with edge's Answer Agent: the answer (or 'unknown'), the "
            "memories it came from, and whether it is supported by them.")),
        edge_tool(update_memory, annotations=edits, description=(
            "Replace the text of the memory with this id (recorded in history; undo reverts it).")),
        edge_tool(delete_memory, annotations=edits, description=(
            "Delete the memory with this id; it leaves search and lists, and undo or restore_memory brings it back.")),
        edge_tool(restore_memory, annotations=adds, description=(
            "Bring back a deleted or superseded memory by id (recorded in history; undo reverts it).")),
        edge_tool(undo, annotations=edits, description=(
            "Revert the user's latest change to memory (one tool call's, or one remembered turn's); the revert is "
            "itself recorded in history.")),
        edge_tool(history, annotations=reads, description=(
            "The user's latest changes to memory, oldest first: what changed, by whom (manager, api, user), from "
            "which turn, and what undo reverted.")),
    ]
    auth: dict[str, Any] = {}
    if token:
        auth = {"token_verifier": StaticToken(token),
                "auth": AuthSettings(issuer_url=url or "http://127.0.0.1", resource_server_url=None)}
    server: MCPServer = MCPServer("edge", title="edge memory", version=__version__, instructions=INSTRUCTIONS,
                                  log_level="WARNING", tools=tools, **auth)

    def resource(read: Callable[[], str]) -> str:
        try:
            return read()
        except EdgeError as exc:
            raise ResourceError(error_text(exc)) from exc

    @server.resource("memory://core", name="core-memory", mime_type="text/plain", description=(
        "The user's core memories: the few facts always in the agents' context, one a line."))
    def core_memory() -> str:
        return resource(service.core_block)

    @server.resource("memory://history", name="recent-history", mime_type="application/json", description=(
        f"The user's latest {HISTORY_RESOURCE_ROWS} changes to memory, as the history tool returns them."))
    def recent_history() -> str:
        return resource(lambda: service.history(limit=HISTORY_RESOURCE_ROWS).model_dump_json(indent=2))

    return server
