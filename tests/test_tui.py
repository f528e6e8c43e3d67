"""The chat app (`edge chat`), driven with Textual's Pilot.

The first test runs the real app on the bundled model (SmolLM2-135M via
llama.cpp); the others use scripted replies where a flow must be exact
(what the panel shows, cancelling, failures).
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from textual.pilot import Pilot

from edge.backends.scripted import ScriptedBackend
from edge.bundle import ADAPTER_ROLES
from edge.bank import MemoryBank
from edge.tui.app import EdgeChatApp
from edge.tui.chat_screen import ChatScreen
from edge.tui.conversation import Reply
from edge.tui.dialogs import HELP, HelpScreen, MemoryEditor
from edge.tui.memory_panel import ChangeLog, MemoryList
from edge.tui.service import ChatConfig, ChatService, OpView
from edge.tui.startup import LoadingScreen, StartupErrorScreen
from edge.tui.status_bar import StatusBar

LUNA = "I just adopted a cat named Luna."
ADD_LUNA = json.dumps({"ops": [{"op": "ADD", "tier": "semantic", "text": "Alice adopted a cat named Luna"}]})
NOOP = json.dumps({"ops": [{"op": "NOOP"}]})


# ----------------------------------------------------------------------------- helpers


def drive(app: EdgeChatApp, scenario, size: tuple[int, int] = (80, 24)) -> None:
    """Run `scenario(pilot)` against the app, then release its models and bank."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    try:
        asyncio.run(main())
    finally:
        app.service.close()


async def settle(pilot: Pilot, timeout: float = 120.0) -> None:
    """Wait until no turn is running and every worker (start-up, memory listing) is done."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        screen = pilot.app.screen
        if not (isinstance(screen, ChatScreen) and screen.generating) and not pilot.app.workers:
            return
        assert time.monotonic() < deadline, "the app did not settle"
        await pilot.pause(0.05)


async def send(pilot: Pilot, text: str) -> None:
    pilot.app.screen.query_one("#composer").focus()
    await pilot.press(*text)
    await pilot.press("enter")
    await pilot.pause()


def shown_memories(app: EdgeChatApp) -> list[str]:
    return [m.text for m in app.screen.query_one(MemoryList).memories.values()]


def change_lines(app: EdgeChatApp) -> list[str]:
    return [str(line.render()) for line in app.screen.query_one(ChangeLog).children]


def scripted(default_bundle, tmp_path: Path, replies: list[str], backend: ScriptedBackend | None = None) -> EdgeChatApp:
    backend = backend or ScriptedBackend(replies, adapters=ADAPTER_ROLES)
    return EdgeChatApp(ChatConfig(bundle=default_bundle, db=tmp_path / "bank.db", user="alice", backend=backend,
                                   text_mode="free"))


class SlowBackend(ScriptedBackend):
    """Scripted replies streamed at a readable pace, so a test can cancel one half-way."""

    def _decode(self, messages, **kwargs):
        for piece in super()._decode(messages, **kwargs):
            time.sleep(0.02)
            yield piece


# ----------------------------------------------------------------------------- the real model


def test_real_model_streams_a_reply_remembers_it_and_the_panel_finds_and_undoes_it(default_bundle, tmp_path,
                                                                                   monkeypatch):
    db = tmp_path / "bank.db"
    app = EdgeChatApp(ChatConfig(bundle=default_bundle.root, db=db, user="alice"))
    lengths: list[int] = []
    # Record the reply's length at every update the screen makes: a streamed reply grows in several steps
    # (sampling from the test loop alone can miss them on a busy machine).
    real_append = Reply.append

    def recording_append(self, piece: str) -> None:
        real_append(self, piece)
        lengths.append(len(self.text))

    monkeypatch.setattr(Reply, "append", recording_append)

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        assert isinstance(app.screen, ChatScreen)
        status = app.screen.query_one(StatusBar)
        assert "SmolLM2-135M-Instruct" in status.model and status.memories == 0
        await send(pilot, LUNA)
        while app.screen.generating:
            await pilot.pause(0.02)
        await settle(pilot)
        reply = app.screen.query(Reply).last()
        assert reply.text.strip() and not reply.has_class("failed")
        assert len(set(lengths)) > 1, "the reply arrived in one piece, not streamed"
        assert status.tokens_per_second and status.tokens_per_second > 0

        with MemoryBank.open(db, user="alice") as bank:
            added = [h for h in bank.history() if h.action == "ADD" and h.after["tier"] != "episodic"]
        if added:  # the Manager's operation is shown in the panel
            memory_text = added[0].after["text"]
            assert any(line.startswith("+ added: ") and memory_text in line for line in change_lines(app))
        else:  # the model proposed nothing for this turn: say so, then add by hand from the panel
            assert any("remember" in line for line in change_lines(app))
            memory_text = "Alice adopted a cat named Luna"
            app.screen.query_one(MemoryList).focus()
            await pilot.press("n")
            await pilot.press(*memory_text, "enter")
            await settle(pilot)
        assert memory_text in shown_memories(app)
        assert status.memories >= 1

        # search finds it by its own words
        await pilot.press("ctrl+f")
        await pilot.press(*" ".join(memory_text.split()[:3]))
        await pilot.pause(0.4)
        await settle(pilot)
        assert memory_text in shown_memories(app)
        assert "found" in str(app.screen.query_one("#memory-title").render())

        # undo (ctrl+z) removes it, as an operation in history by the user
        await pilot.press("ctrl+z")
        await settle(pilot)
        assert memory_text not in shown_memories(app)
        assert any(line.startswith("↶ undo: removed (you)") for line in change_lines(app))

    drive(app, scenario, size=(100, 30))
    with MemoryBank.open(db, user="alice") as bank:
        assert bank.count(tier=("semantic", "core")) == 0
        assert bank.history()[-1].action == "UNDO" and bank.history()[-1].actor == "user"


# ----------------------------------------------------------------------------- scripted replies


def test_a_turn_shows_the_reply_and_the_managers_operations(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, ["Congratulations on adopting Luna!", ADD_LUNA, "Alice has a cat, Luna."])

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, LUNA)
        await settle(pilot)
        assert app.screen.query(Reply).last().text == "Congratulations on adopting Luna!"
        assert change_lines(app) == ["+ added: Alice adopted a cat named Luna"]
        assert shown_memories(app) == ["Alice adopted a cat named Luna"]
        assert app.screen.query_one(StatusBar).memories == 1
        assert app.screen.query_one(StatusBar).state == "ready"

    drive(app, scenario)


def test_a_turn_with_nothing_to_remember_says_so(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, ["Hello!", NOOP, "Greeted."])

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, "hi")
        await settle(pilot)
        assert change_lines(app) == ["nothing new to remember"]

    drive(app, scenario)


def test_edit_delete_and_undo_from_the_panel_are_user_operations_in_history(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, [])

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        bank = app.service.agent.bank
        tea = bank.add("Alice likes tea")
        app.screen.refresh_memories()
        await settle(pilot)
        await pilot.press("ctrl+o")  # the memory list
        await pilot.press("e")
        assert isinstance(app.screen, MemoryEditor)
        await pilot.press("ctrl+u", *"Alice likes green tea", "enter")
        await settle(pilot)
        assert bank.get(tea.id).text == "Alice likes green tea"
        assert change_lines(app) == ["~ updated (you): Alice likes tea → Alice likes green tea"]

        await pilot.press("d")
        await settle(pilot)
        assert shown_memories(app) == [] and bank.count() == 0
        assert change_lines(app) == ["- deleted (you): Alice likes green tea"]
        assert "No memories yet" in str(app.screen.query_one("#memory-empty").render())

        await pilot.press("u")
        await settle(pilot)
        assert shown_memories(app) == ["Alice likes green tea"]
        assert change_lines(app) == ["↶ undo: restored (you): Alice likes green tea"]
        actions = [(h.action, h.actor) for h in bank.history(tea.id)]
        assert actions == [("ADD", "api"), ("UPDATE", "user"), ("DELETE", "user"), ("UNDO", "user")]

        await pilot.press("n", *"Alice is 34", "enter")
        await settle(pilot)
        assert shown_memories(app) == ["Alice is 34", "Alice likes green tea"]

    drive(app, scenario)


def test_search_box_filters_by_meaning_and_keywords(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, [])

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        app.service.agent.bank.add_many(["Alice adopted a cat named Luna", "Alice works as a nurse in Lisbon",
                                         "Alice likes green tea"])
        await pilot.press("ctrl+f", *"pets")
        await pilot.pause(0.4)
        await settle(pilot)
        assert shown_memories(app) == ["Alice adopted a cat named Luna"]
        await pilot.press("ctrl+u", *"Lisbon")
        await pilot.pause(0.4)
        await settle(pilot)
        assert shown_memories(app) == ["Alice works as a nurse in Lisbon"]
        await pilot.press("ctrl+u")
        await pilot.pause(0.4)
        await settle(pilot)
        assert len(shown_memories(app)) == 3

    drive(app, scenario)


def test_escape_cancels_the_reply_being_generated(default_bundle, tmp_path):
    long_reply = " ".join(f"word{i}" for i in range(200))
    backend = SlowBackend([long_reply, NOOP], adapters=ADAPTER_ROLES)
    app = scripted(default_bundle, tmp_path, [], backend)

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, "tell me a long story")
        while not app.screen.query(Reply).last().text:
            await pilot.pause(0.02)
        await pilot.press("escape")
        await settle(pilot)
        reply = app.screen.query(Reply).last()
        assert reply.note == "cancelled"
        assert 0 < len(reply.text.split()) < 200
        assert backend.calls and backend.completions[-1].finish_reason != "cancelled"  # the Manager still ran
        assert len(backend.calls) == 2  # reply + Manager; no working-state update after a cancel
        assert app.screen.query_one(StatusBar).state == "ready"

    drive(app, scenario)


def test_quitting_during_a_reply_stops_it_and_keeps_the_memory_update(default_bundle, tmp_path):
    backend = SlowBackend([" ".join(["word"] * 200), ADD_LUNA], adapters=ADAPTER_ROLES)
    app = scripted(default_bundle, tmp_path, [], backend)

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, LUNA)
        while not app.screen.query(Reply).last().text:
            await pilot.pause(0.02)
        await pilot.press("ctrl+q")
        deadline = time.monotonic() + 30
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not app.is_running

    drive(app, scenario)
    assert backend.completions[-1].finish_reason == "stop" and len(backend.calls) == 2
    with MemoryBank.open(tmp_path / "bank.db", user="alice") as bank:
        assert [m.text for m in bank.list(tier=("semantic", "core"))] == ["Alice adopted a cat named Luna"]


def test_a_model_failure_is_a_message_and_the_chat_goes_on(default_bundle, tmp_path):
    backend = ScriptedBackend([], adapters=ADAPTER_ROLES)  # no replies queued: the backend raises BackendError
    app = scripted(default_bundle, tmp_path, [], backend)

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, "hello?")
        await settle(pilot)
        reply = app.screen.query(Reply).last()
        assert reply.has_class("failed") and "no replies left" in reply.note
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "no replies left" in errors[-1].message and "Traceback" not in errors[-1].message
        assert "kept in the conversation log" in errors[-1].message
        # The model answers again: the reply, then the Manager goes over the message it missed and the new one.
        backend.add("Now I can answer.", NOOP, NOOP, "state")
        await send(pilot, "hello again")
        await settle(pilot)
        assert app.screen.query(Reply).last().text == "Now I can answer."
        assert app.service.agent.pending() == []

    drive(app, scenario)


def test_the_bank_cannot_be_changed_while_a_reply_is_generated(default_bundle, tmp_path):
    backend = SlowBackend([" ".join(["word"] * 60), NOOP, "state"], adapters=ADAPTER_ROLES)
    app = scripted(default_bundle, tmp_path, [], backend)

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await send(pilot, "go on")
        await pilot.press("ctrl+z")
        await pilot.pause(0.1)
        warnings = [n.message for n in app._notifications if n.severity == "warning"]
        assert any("while a reply is being generated" in w for w in warnings)
        await settle(pilot)

    drive(app, scenario)


# ----------------------------------------------------------------------------- start-up


def test_first_run_builds_the_default_bundle_with_progress(edge_home, default_bundle, tmp_path):
    app = EdgeChatApp(ChatConfig(db=tmp_path / "bank.db", backend=ScriptedBackend([], adapters=ADAPTER_ROLES)))

    async def scenario(pilot: Pilot) -> None:
        loading = app.screen
        assert isinstance(loading, LoadingScreen)
        await settle(pilot)
        lines = loading.lines
        assert any("First run: building the default bundle" in line for line in lines)
        assert any(line.startswith("[1/3]") for line in lines) and any(line.startswith("Ready") for line in lines)
        assert isinstance(app.screen, ChatScreen)

    drive(app, scenario)
    assert (edge_home / "bundles" / "default" / "bundle.json").is_file()


def test_a_missing_bundle_is_explained_not_a_traceback(tmp_path):
    app = EdgeChatApp(ChatConfig(bundle=tmp_path / "no-such-bundle", db=tmp_path / "bank.db"))

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        assert isinstance(app.screen, StartupErrorScreen)
        assert "No bundle folder" in app.screen.message and "edge bundle build-default" in app.screen.hint
        await pilot.press("q")

    drive(app, scenario)


def test_a_model_that_fails_to_load_is_explained(default_bundle, tmp_path):
    broken = tmp_path / "broken-bundle"
    broken.mkdir()
    shutil.copy(default_bundle.root / "bundle.json", broken / "bundle.json")
    shutil.copytree(default_bundle.root / "embedder", broken / "embedder")
    if (default_bundle.root / "adapters").is_dir():
        shutil.copytree(default_bundle.root / "adapters", broken / "adapters")
    size = (default_bundle.root / "model.gguf").stat().st_size
    with open(broken / "model.gguf", "wb") as handle:  # right size, not a GGUF
        handle.write(b"NOPE")
        handle.truncate(size)
    app = EdgeChatApp(ChatConfig(bundle=broken, db=tmp_path / "bank.db"))

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        assert isinstance(app.screen, StartupErrorScreen)
        assert "Not a GGUF model file" in app.screen.message

    drive(app, scenario)


def test_a_bank_locked_by_another_process_is_explained(default_bundle, tmp_path, minilm):
    db = tmp_path / "bank.db"
    MemoryBank.open(db, minilm).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        app = EdgeChatApp(ChatConfig(bundle=default_bundle, db=db, backend=ScriptedBackend([], adapters=ADAPTER_ROLES)))

        async def scenario(pilot: Pilot) -> None:
            await settle(pilot)
            assert isinstance(app.screen, StartupErrorScreen)
            assert "locked by another process" in app.screen.message

        drive(app, scenario)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- help and keys


def test_help_lists_every_key_binding(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, [])
    listed = " ".join(keys for rows in HELP.values() for keys, _ in rows)
    for owner in (EdgeChatApp, ChatScreen, MemoryList):
        for binding in owner.BINDINGS:
            for key in binding.key.split(","):
                key = {"question_mark": "?"}.get(key, key)
                assert key in listed.split(), f"{owner.__name__}: {key} is not in the help screen"

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("?")  # typed into the message box, not a shortcut there
        assert app.screen.query_one("#composer").value == "?"
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        app.screen.query_one(MemoryList).focus()
        await pilot.press("?")
        assert isinstance(app.screen, HelpScreen)

    drive(app, scenario)


def test_f2_switches_between_dark_and_light(default_bundle, tmp_path):
    app = scripted(default_bundle, tmp_path, [])

    async def scenario(pilot: Pilot) -> None:
        await settle(pilot)
        assert app.current_theme.dark
        await pilot.press("f2")
        assert not app.current_theme.dark
        await pilot.press("f2")
        assert app.current_theme.dark

    drive(app, scenario)


# ----------------------------------------------------------------------------- the service and the command, without a screen


def test_service_describes_undo_of_each_kind_of_change(default_bundle, tmp_path):
    service = ChatService(ChatConfig(bundle=default_bundle, db=tmp_path / "bank.db", backend=ScriptedBackend([], adapters=ADAPTER_ROLES)))
    service.open()
    try:
        [added] = service.add("Alice likes tea")
        assert added == OpView("ADD", "added", added.memory_id, "Alice likes tea", None, "user")
        service.edit(added.memory_id, "Alice likes coffee")
        assert [(op.label, op.old_text, op.text) for op in service.undo()] == [
            ("undo: reverted", "Alice likes coffee", "Alice likes tea")]
        service.delete(added.memory_id)
        assert [op.label for op in service.undo()] == ["undo: restored"]
        assert [op.label for op in service.undo()] == ["undo: removed"]
        assert service.memories().memories == []
    finally:
        service.close()


def test_chat_command_help_names_its_options():
    from edge.cli import cli

    result = CliRunner().invoke(cli, ["chat", "--help"])
    assert result.exit_code == 0
    for option in ("--bundle", "--db", "--user", "escape", "F1"):
        assert option in result.output
