"""`edge mcp`: the memory bank and both agents as a Model Context Protocol server (stdio, or streamable HTTP)."""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from edge.commands import db_option, model_options, user_option
from edge.errors import InvalidInputError, MissingExtraError

DEFAULT_HTTP = "127.0.0.1:8765"
DEFAULT_TOKEN_ENV = "EDGE_MCP_TOKEN"
MIN_TOKEN_CHARS = 16


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) from "HOST:PORT", "[IPv6]:PORT", "PORT" or "HOST" (port 8765); click's `BadParameter` otherwise."""
    default_port = int(DEFAULT_HTTP.rpartition(":")[2])
    text = text.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else str(default_port) if not rest else "?"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:  # a bare IPv6 address
        host, port_text = text, str(default_port)
    else:
        host, port_text = text, str(default_port)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8765, 0.0.0.0:8765, [::1]:8765).",
                                 param_hint="--http")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost counts as reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(host: str, token_env: str) -> str | None:
    """The token HTTP clients must send: $`token_env` when set (on any address); required off loopback.

    Raises `InvalidInputError` for a non-loopback address without a token and
    for a token short enough to guess.
    """
    token = os.environ.get(token_env, "").strip() or None
    if token is None and not is_loopback(host):
        raise InvalidInputError(
            f"--http {host} can be reached from other machines, and ${token_env} holds no bearer token.",
            hint=f"export {token_env}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') and give "
            "clients the header 'Authorization: Bearer <token>'; or serve on 127.0.0.1",
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InvalidInputError(f"${token_env} holds a token of {len(token)} characters; at least "
                                f"{MIN_TOKEN_CHARS} are needed.",
                                hint="python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one")
    return token


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr while the models load.

    Over stdio, stdout is the protocol's wire: a line llama.cpp or a
    first-run build prints there would reach the client as a broken
    message. While serving, the SDK diverts fd 1 itself.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def stop_on_sigterm() -> None:
    """Make SIGTERM (how clients and service managers stop a server) end the process through `finally`.

    Without it Python dies on the spot (uvicorn re-raises the signal after
    its graceful shutdown), and the bank connections are left to the OS.
    """
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


@click.command(name="mcp")
@click.option("--http", "http", default=None, is_flag=False, flag_value=DEFAULT_HTTP, metavar="[HOST:PORT]",
              help=f"Serve over streamable HTTP at http://HOST:PORT/mcp instead of stdio. [default: {DEFAULT_HTTP}] "
              f"An address other machines can reach needs a bearer token in ${DEFAULT_TOKEN_ENV}.")
@click.option("--allow-users", is_flag=True,
              help="Let a tool call name another user of the bank (its `user` argument); otherwise only --user.")
@click.option("--token-env", default=DEFAULT_TOKEN_ENV, show_default=True, metavar="VAR",
              help="Environment variable holding the bearer token HTTP clients must send (checked whenever it is set).")
@model_options()
@db_option
@user_option
def mcp(http: str | None, allow_users: bool, token_env: str, source, db: Path | None, user: str) -> None:
    """Serve the memory bank and both agents to MCP clients (desktop assistants, editors, agent frameworks).

    \b
    Tools: add_memory (a turn through the Memory Manager, or infer=false to
    store text as given), search_memories, list_memories, get_memory, ask
    (the Answer Agent), update_memory, delete_memory, undo, history.
    Resources: memory://core, memory://history.

    Over stdio by default (the client starts `edge mcp`); `--http` serves
    streamable HTTP on loopback. Every change is recorded and undoable
    (`edge memory history`, `edge memory undo` see the same bank).
    """
    address = parse_address(http) if http is not None else None
    token = bearer_token(address[0], token_env) if address else None
    try:
        import anyio
        from mcp.server.mcpserver import MCPServer  # noqa: F401 - the SDK is there
    except ImportError as exc:
        raise MissingExtraError("edge mcp", "mcp") from exc
    from edge.commands.agent import open_agent
    from edge.mcp_server import build_server
    from edge.mcp_service import MemoryService

    with stdout_to_stderr():
        agent = open_agent(source, db, user)
    try:
        service = MemoryService(agent, allow_users=allow_users)
    except BaseException:
        agent.close()
        raise
    stop_on_sigterm()
    try:
        whose = "any user (--allow-users)" if allow_users else f"user {user!r}"
        if address is None:
            click.echo(f"edge mcp: {whose} of {service.path.resolve()}, over stdio", err=True)
            anyio.run(build_server(service).run_stdio_async)
            return
        host, port = address
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        server = build_server(service, token=token, url=url)
        auth = f", bearer token from ${token_env}" if token else ""
        click.echo(f"edge mcp: {whose} of {service.path.resolve()}, at {url}/mcp{auth}", err=True)
        anyio.run(lambda: server.run_streamable_http_async(host=host, port=port))
    finally:
        service.close()
