"""Roles on different models: the chat reply from the user's own model, the memory agents the bundle's.

On the real stack: llama-cpp-python's OpenAI-compatible server on the bundled
model serves the chat role; the Memory Manager and the Answer Agent run in
process on the same weights with their trained LoRA adapters. The bundle is
written to disk with its per-model backends, verified by `edge bundle
verify`, opened by `edge.Agent` and by `edge chat` under Pilot.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from edge import config
from edge.agent import Agent
from edge.backends.http import OpenAIHTTPBackend
from edge.bundle import Bundle, write_manifest
from edge.errors import InvalidInputError
from edge.files import link_or_copy
from edge.model_source import ModelChoice, remember_choice
from edge.role_models import RoleModel, role_models, with_role_models

SERVED = "smollm2-served"


def on_disk(bundle: Bundle, folder: Path) -> Path:
    """`bundle` (held in memory) written as a bundle folder: the files linked, the manifest checksummed."""
    for path in bundle.root.rglob("*"):
        if path.is_file() and path.name != "manifest.json":
            target = folder / path.relative_to(bundle.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, target)
    write_manifest(folder, {k: v for k, v in bundle.manifest.items() if k != "files"})
    return folder


@pytest.fixture(scope="module")
def split_bundle(default_bundle, server_url, tmp_path_factory) -> Path:
    chosen = role_models(chat_server=server_url, chat_model=SERVED)
    return on_disk(with_role_models(default_bundle, chosen), tmp_path_factory.mktemp("split") / "bundle")


def verify(folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "edge.cli", "bundle", "verify", str(folder), "--json"],
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout)


def test_the_chat_role_on_a_server_beside_the_memory_agents_with_their_adapters(split_bundle, tmp_path) -> None:
    report = verify(split_bundle)
    assert report["ok"], report["problems"]
    shown = subprocess.run([sys.executable, "-m", "edge.cli", "bundle", "show", str(split_bundle)],
                           capture_output=True, text=True, timeout=120)
    assert f"chat     {SERVED} @ http" in shown.stdout and "(served, backend http)" in shown.stdout, shown.stdout
    bundle = Bundle.load(split_bundle)
    assert bundle.model_backend("chat-model") == "http" and bundle.model_backend("base") == "llama.cpp"
    local = bundle.model_label("manager")
    assert local.startswith("SmolLM2-135M-Instruct")
    served = {role: (bundle.model_label(role), bundle.role_adapter(role)) for role in ("chat", "manager", "answer")}
    assert served == {"chat": (f"{SERVED} @ {bundle.model_server('chat-model')['url']}", None),
                      "manager": (local, "manager"), "answer": (local, "answer")}

    with Agent(bundle=split_bundle, db=tmp_path / "bank.db", user="jon") as agent:
        assert isinstance(agent.chat_backend, OpenAIHTTPBackend)
        assert agent.answer_backend is agent.manager_backend and not isinstance(agent.answer_backend, OpenAIHTTPBackend)
        assert agent.answerer.adapter == "answer" and agent.manager.adapter == "manager"
        agent.remember(["I'm reading The Lean Startup these days."], wait=True)
        answer = agent.ask("What book is Jon reading?")
        assert "Lean Startup" in answer.answer  # the trained adapter, in process
        local_calls = agent.answer_backend.decodes
        chat = agent.chat("Recommend me one more book.", stream=True, remember=False)
        reply = "".join(chat)
        assert reply.strip() and chat.result.completion_tokens > 0
        assert agent.answer_backend.decodes == local_calls  # the reply never touched the local model


def test_verify_names_the_model_whose_server_does_not_answer(default_bundle, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    folder = on_disk(with_role_models(default_bundle, {"chat": RoleModel(server=dead, name="gone")}), tmp_path / "b")
    report = verify(folder)
    assert not report["ok"] and any(p.startswith("model 'chat-model': the server") for p in report["problems"])


def test_an_old_manifest_reads_as_before(default_bundle) -> None:
    assert "backend" not in default_bundle.manifest["models"]["base"]
    assert {default_bundle.model_backend(default_bundle.role_model(r)) for r in ("chat", "manager", "answer")} == {
        "llama.cpp"}
    quantization = default_bundle.manifest["models"]["base"]["quantization"]
    assert default_bundle.model_label("chat") == f"SmolLM2-135M-Instruct {quantization}"


def test_role_options_are_checked_and_remembered(tmp_path, edge_home, server_url) -> None:
    with pytest.raises(InvalidInputError, match="No role 'reply'"):
        role_models(roles=["reply=x.gguf"])
    with pytest.raises(InvalidInputError, match="names no model"):
        role_models(roles=[f"chat={server_url}"])
    with pytest.raises(InvalidInputError, match="Which model should"):
        role_models(chat_server=server_url)
    with pytest.raises(InvalidInputError, match="given twice"):
        role_models(roles=["chat=a.gguf"], chat_model="b.gguf")

    choice = ModelChoice.from_options(roles=role_models(roles=[f"chat=qwen2.5:3b@{server_url}"]), config={})
    assert choice.origin == "options" and remember_choice(choice) is not None  # what `edge chat` saves
    saved = config.load_config()
    assert saved == {"roles.chat": f"qwen2.5:3b@{server_url}"}
    again = ModelChoice.from_options(config=saved)  # the next `edge chat` with no options
    assert dict(again.roles) == {"chat": RoleModel(server=server_url, name="qwen2.5:3b")} and again.origin == "config"
    assert "chat on qwen2.5:3b @" in again.describe()
    bad = subprocess.run([sys.executable, "-m", "edge.cli", "config", "set", "roles.answer", "nothing-here"],
                         capture_output=True, text=True, env={**os.environ, "EDGE_HOME": str(edge_home)}, timeout=60)
    assert bad.returncode != 0 and "neither a .gguf file nor NAME@URL" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "edge.cli", "config", "set", "roles.answer", "nofile.gguf"],
                             capture_output=True, text=True, env={**os.environ, "EDGE_HOME": str(edge_home)},
                             timeout=60)
    assert missing.returncode != 0 and "there is no file" in missing.stderr and ".." not in missing.stderr


def test_edge_chat_names_both_models_and_replies_from_the_server(split_bundle, tmp_path) -> None:
    from edge.tui.app import EdgeChatApp
    from edge.tui.chat_screen import ChatScreen
    from edge.tui.conversation import Reply
    from edge.tui.service import ChatConfig
    from edge.tui.status_bar import StatusBar

    app = EdgeChatApp(ChatConfig(bundle=split_bundle, db=tmp_path / "bank.db", user="jon"))

    async def main() -> None:
        async with app.run_test(size=(140, 24)) as pilot:
            for _ in range(600):  # until the models are loaded: the status bar names them
                await pilot.pause(0.1)
                if (isinstance(app.screen, ChatScreen) and not app.workers
                        and app.screen.query_one(StatusBar).model):
                    break
            status = app.screen.query_one(StatusBar)
            assert status.model.startswith(f"chat {SERVED} @ http://127.0.0.1")
            assert status.model.endswith(f"memory {Bundle.load(split_bundle).model_label('answer')}")
            app.screen.query_one("#composer").focus()
            await pilot.press(*"Hello there")
            await pilot.press("enter")
            for _ in range(1200):
                await pilot.pause(0.1)
                if not app.screen.generating and not app.workers:
                    break
            reply = app.screen.query(Reply).last()
            assert reply.text.strip() and not reply.has_class("failed")

    try:
        asyncio.run(main())
    finally:
        app.service.close()
