"""`edge serve`: an OpenAI-compatible memory proxy in front of the user's own chat model (`edge.proxy`)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from edge.commands import db_option, model_options, user_option
from edge.commands.mcp import (
    bearer_token,
    listening_socket,
    log_to_stderr,
    parse_address,
    resolved,
    stdout_to_stderr,
    stop_on_sigterm,
)
from edge.errors import InvalidInputError, require_extra

DEFAULT_SERVE = "127.0.0.1:8766"
DEFAULT_KEY_ENV = "EDGE_SERVE_KEY"


@click.command(name="serve")
@click.option("--upstream", default=None, metavar="URL",
              help="The OpenAI-compatible chat server to answer with (llama-server, Ollama, LM Studio, vLLM), "
              "e.g. http://localhost:11434/v1. [default: the chat role's server (--chat-server, config.toml's "
              "roles.chat), else the bundle's own chat model, in process]")
@click.option("--upstream-model", default=None, metavar="NAME",
              help="The upstream model for requests that name none (or name 'edge').")
@click.option("--upstream-key-env", default=None, metavar="VAR",
              help="Environment variable holding the upstream's API key, when it wants one.")
@click.option("--http", "http", default=DEFAULT_SERVE, show_default=True, metavar="HOST:PORT",
              help=f"Where to listen. An address other machines can reach needs an API key in ${DEFAULT_KEY_ENV}.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True, metavar="VAR",
              help="Environment variable holding the API key clients must send (checked whenever it is set).")
@click.option("--memory-chars", type=click.IntRange(min=0), default=None, metavar="N",
              help="Most characters of memories added to each request's system message. [default: 1200]")
@model_options(chat=True)
@db_option
@user_option
def serve(upstream: str | None, upstream_model: str | None, upstream_key_env: str | None, http: str, key_env: str,
          memory_chars: int | None, source, db: Path | None, user: str) -> None:
    """Give any chat app a memory: an OpenAI-compatible endpoint in front of your own chat model.

    Point the app at http://HOST:PORT/v1. Each chat request's last user
    message is kept in the user's conversation log (the Memory Manager goes
    over it in the background), memories for it are added to the system
    message, and the request goes to --upstream; the reply comes back as
    the upstream wrote it, streamed or not. The user is the request's
    `user` field, the X-Edge-User header, or --user. The memory agents are
    the bundle's (--bundle / --model / --server / --role choose them, as for
    every command); the reply is the upstream's.

    \b
      edge serve --upstream http://localhost:11434/v1 --upstream-model qwen2.5:3b
      edge serve --chat-server http://localhost:11434 --chat-model qwen2.5:3b
      edge serve                      (the bundle's own chat model answers, in process)
    """
    uvicorn = require_extra("edge serve", "server", "uvicorn", "fastapi")
    anyio = require_extra("edge serve", "server", "anyio")
    from edge.commands.agent import open_agent
    from edge.local_chat import LocalChat
    from edge.backends.http import api_key_from_env
    from edge.proxy import MEMORY_CHARS, MemoryProxy, build_app

    host, port = parse_address(http)
    resolved(host, port)
    token = bearer_token(host, key_env)
    upstream_key = None
    if upstream_key_env:
        upstream_key = os.environ.get(upstream_key_env) or None
        if upstream_key is None:
            raise InvalidInputError(f"${upstream_key_env} is not set.", hint="export it, or leave out --upstream-key-env")
    sock = listening_socket(host, port)
    try:
        with stdout_to_stderr():
            agent = open_agent(source, db, user)
    except BaseException:
        sock.close()
        raise
    log_to_stderr()
    local = None
    if upstream is None:
        key = agent.bundle.role_model("chat")
        if agent.bundle.model_backend(key) == "http":  # the chat role's server is the upstream
            server = agent.bundle.model_server(key)
            upstream, upstream_model = server["url"], upstream_model or server["model"]
            upstream_key = upstream_key or api_key_from_env(server.get("api_key_env"))
        else:  # the bundle's own chat model answers, in process
            local = LocalChat(agent.chat_backend, model=upstream_model or agent.bundle.model_label("chat"),
                              adapter=agent.chat_adapter, max_tokens=agent.chat_max_tokens)
    proxy = MemoryProxy(agent, memory_chars=MEMORY_CHARS if memory_chars is None else memory_chars)
    try:
        app = build_app(proxy, upstream, upstream_model, token=token, upstream_key=upstream_key,
                        timeout=source.timeout or 120.0, local=local)
        auth = f", API key from ${key_env}" if token else ""
        answers = f"{local.model} in process" if local is not None else (
            f"{upstream} ({upstream_model})" if upstream_model else upstream)
        click.echo(f"edge serve: memory of {agent.bank.path.resolve()} (user {user!r} unless a request names one), "
                   f"answers from {answers}; OpenAI API at http://{host}:{port}/v1{auth} (Ctrl+C stops it)", err=True)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        stop_on_sigterm()
        anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        # The Managers go over the turns still pending before the bank closes (Ctrl+C again stops that: the
        # turns stay pending for the next start).
        proxy.close()
        agent.close()
        click.echo("edge serve: stopped", err=True)
