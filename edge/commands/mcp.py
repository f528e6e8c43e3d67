"""`edge mcp`: the memory bank and both agents as a Model Context Protocol server (stdio, or streamable HTTP)."""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import signal
import socket
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

from edge.commands import db_option, model_options, user_option
from edge.errors import InvalidInputError, require_extra

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from edge.mcp_service import MemoryService

DEFAULT_HTTP = "127.0.0.1:8765"
DEFAULT_TOKEN_ENV = "EDGE_MCP_TOKEN"
MIN_TOKEN_CHARS = 16
SHUTDOWN_GRACE_S = 5  # on SIGINT/SIGTERM, how long open HTTP connections (a client's event stream) may stay
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) from "HOST:PORT", "[IPv6]:PORT", "PORT" or "HOST" (port 8765); click's `BadParameter` otherwise.

    The host must be an IP address (each IPv4 number at most 255) or a
    host name; whether this machine has it is found when the port is bound.
    """
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
    if not valid_host(host):
        raise click.BadParameter(f"{host!r} is neither an IP address nor a host name (e.g. 127.0.0.1, 0.0.0.0, "
                                 "::1, localhost).", param_hint="--http")
    return host, int(port_text)


def valid_host(host: str) -> bool:
    """Whether `host` is an IP address, or a name a resolver could look up (digits-and-dots must be an IPv4 address)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if ":" in host or re.fullmatch(r"[\d.]+", host):
        return False  # "999.1.1.1", "1.2.3": an address that is not one
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost counts as reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """Whether `host` means every interface of this machine (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
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


def resolved(host: str, port: int) -> tuple:
    """The first `socket.getaddrinfo` entry for serving on (host, port); `InvalidInputError` when the name
    does not resolve (checked before the token, so a typo is not reported as a missing token)."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InvalidInputError(f"Cannot serve on {host!r}: the name does not resolve ({exc.strerror}).",
                                hint="Give an address of this machine: --http 127.0.0.1:PORT (this machine only) "
                                "or 0.0.0.0:PORT (every interface).") from exc


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), before any model loads; `InvalidInputError` saying why it cannot be.

    The server then serves on this very socket, so no other process can take
    the port between the check and the serving.
    """
    family, kind, proto, _, address = resolved(host, port)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInputError(f"Port {port} is in use (on {host}); pick another with --http HOST:PORT.",
                                    hint=f"e.g. --http {host if ':' not in host else f'[{host}]'}:{port + 1}; "
                                    f"`ss -ltnp 'sport = :{port}'` shows what holds it") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidInputError(f"Cannot serve on {host}: it is not an address of this machine.",
                                    hint="Give an address of this machine: --http 127.0.0.1:PORT (this machine only) "
                                    "or 0.0.0.0:PORT (every interface).") from exc
        if exc.errno == errno.EACCES:
            raise InvalidInputError(f"Port {port} needs privileges this process has not.",
                                    hint="Pick a port from 1024 up: --http HOST:PORT.") from exc
        raise InvalidInputError(f"Cannot listen on {host}:{port} ({exc.strerror}).",
                                hint="Pick another address or port: --http HOST:PORT.") from exc
    return sock


def urls(host: str, port: int) -> tuple[str, str | None]:
    """The URL a client gives, and for a server on every interface the one for a client on this machine."""
    def url(name: str) -> str:
        return f"http://{f'[{name}]' if ':' in name else name}:{port}/mcp"

    if not is_wildcard(host):
        return url(host), None
    return url(socket.gethostname()), url("::1" if ":" in host else "127.0.0.1")


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


def log_to_stderr() -> None:
    """edge's own server log (interrupted turns, unexpected errors with their tracebacks) as plain lines on stderr.

    Not through the SDK's log handler, which wraps each message into a
    table of 80 columns: a line per event is what a client's log viewer
    and grep read.
    """
    logger = logging.getLogger("edge.mcp")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edge mcp: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def stop_on_sigterm() -> None:
    """Make SIGTERM (how clients and service managers stop a server) end the process through `finally`.

    Without it Python dies on the spot (uvicorn re-raises the signal after
    its graceful shutdown), and the bank connections are left to the OS.
    """
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


# ----------------------------------------------------------------------------- stdio


class StdinFeed:
    """fd 0 turned into a pipe that edge fills from the real stdin, so that a signal can end the input at once.

    The SDK reads stdin line by line on a worker thread, which nothing can
    interrupt: Ctrl+C would wait for the client's next line or for stdin to
    close. Here the real stdin is read by the event loop (cancellable), and
    ending the feed closes the pipe: the SDK reads end-of-file and stops as
    it does when a client goes away. Used only for a pipe, terminal or
    socket (a regular file cannot be waited on, and ends by itself).
    """

    def __init__(self) -> None:
        self.source = os.dup(0)
        read_end, self.sink = os.pipe()
        os.set_blocking(self.sink, False)  # our own pipe: the real stdin's flags are left as they are
        os.dup2(read_end, 0)
        os.close(read_end)
        self.ended = False

    @staticmethod
    def usable() -> bool:
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)

    def end(self) -> None:
        """End the SDK's input (it reads end-of-file); idempotent."""
        if not self.ended:
            self.ended = True
            os.close(self.sink)

    def restore(self) -> None:
        """Point fd 0 at the real stdin again."""
        self.end()
        os.dup2(self.source, 0)
        os.close(self.source)

    async def pump(self) -> None:
        """Copy the real stdin into the pipe until either ends (or the task is cancelled), then end the feed."""
        import anyio

        try:
            while True:
                await anyio.wait_readable(self.source)
                data = os.read(self.source, 1 << 16)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(self.sink, view):]
                    except BlockingIOError:
                        await anyio.wait_writable(self.sink)
        except OSError:  # the SDK stopped reading (the pipe is broken), or stdin failed
            return
        finally:
            self.end()


def serve_stdio(server: "MCPServer", service: "MemoryService") -> int | None:
    """Serve over stdio until the client closes stdin or SIGINT/SIGTERM arrives; returns that signal, if any.

    On a signal the service stops (a turn under way stops before its facts
    are applied, and is kept pending), the input ends, and the SDK finishes
    as when a client goes away.
    """
    import anyio

    feed = StdinFeed() if StdinFeed.usable() else None
    stopped: list[int] = []

    async def run() -> None:
        async with anyio.create_task_group() as group:
            pumping = anyio.CancelScope()

            async def pump() -> None:
                with pumping:
                    await feed.pump()

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        stopped.append(signum)
                        service.stop()
                        if feed is None:
                            group.cancel_scope.cancel()
                        pumping.cancel()
                        return

            if feed is not None:
                group.start_soon(pump)
            group.start_soon(watch)
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    try:
        anyio.run(run)
    finally:
        if feed is not None:
            feed.restore()
    return stopped[0] if stopped else None


# ----------------------------------------------------------------------------- streamable HTTP


def serve_http(server: "MCPServer", service: "MemoryService", sock: socket.socket, host: str) -> None:
    """Serve streamable HTTP on `sock` (uvicorn, as the SDK's `run_streamable_http_async` does) until a signal.

    SIGINT/SIGTERM stop the service at once (a turn under way stops before
    its facts are applied), then uvicorn's graceful shutdown gets
    `SHUTDOWN_GRACE_S` for the open connections: an idle client's event
    stream would otherwise hold the server up for as long as it stays open.
    """
    import anyio
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            service.stop()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    anyio.run(lambda: Server(config).serve(sockets=[sock]))


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
    (the Answer Agent), update_memory, delete_memory, restore_memory, undo,
    history. Resources: memory://core, memory://history.

    Over stdio by default (the client starts `edge mcp`); `--http` serves
    streamable HTTP on loopback. Every change is recorded and undoable
    (`edge memory history`, `edge memory undo` see the same bank). Ctrl+C
    (or SIGTERM) stops the server; a turn under way is kept in the
    conversation log without its facts, for the Memory Manager to go over later.
    """
    address = parse_address(http) if http is not None else None
    if address:
        resolved(*address)
    token = bearer_token(address[0], token_env) if address else None
    require_extra("edge mcp", "mcp", "anyio", "mcp.server.mcpserver")
    from edge.commands.agent import open_agent
    from edge.mcp_server import build_server
    from edge.mcp_service import MemoryService

    sock = listening_socket(*address) if address else None  # a port in use is said now, not after the models load
    try:
        with stdout_to_stderr():
            agent = open_agent(source, db, user)
        try:
            service = MemoryService(agent, allow_users=allow_users)
        except BaseException:
            agent.close()
            raise
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    log_to_stderr()
    try:
        whose = "any user (--allow-users)" if allow_users else f"user {user!r}"
        if address is None or sock is None:
            click.echo(f"edge mcp: {whose} of {service.path.resolve()}, over stdio (Ctrl+C stops it)", err=True)
            stopped = serve_stdio(build_server(service), service)
            if stopped == signal.SIGINT:
                raise click.exceptions.Exit(130)
            return
        host, port = address
        url, local = urls(host, port)
        server = build_server(service, token=token, url=url)
        auth = f", bearer token from ${token_env}" if token else ""
        where = (f"listening on all interfaces ({host}, port {port}): {url} from other machines, {local} from "
                 "this one" if local else f"at {url}")
        click.echo(f"edge mcp: {whose} of {service.path.resolve()}, {where}{auth} (Ctrl+C stops it)", err=True)
        stop_on_sigterm()
        serve_http(server, service, sock, host)
    finally:
        service.close()
