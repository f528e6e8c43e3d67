"""Snapshots of the chat app's screens at 80x24 and 120x36, in the dark and the light theme.

Scripted replies make them deterministic; the one measured number on screen
(tokens per second) is pinned before the snapshot is taken. Update them with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the report.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from edge.backends.scripted import ScriptedBackend
from edge.bundle import ADAPTER_ROLES
from edge.tui.app import DARK, LIGHT, EdgeChatApp
from edge.tui.chat_screen import ChatScreen
from edge.tui.service import ChatConfig
from edge.tui.status_bar import StatusBar

SIZES = {"80x24": (80, 24), "120x36": (120, 36)}
THEMES = {"dark": DARK, "light": LIGHT}
ADD = json.dumps({"ops": [
    {"op": "ADD", "tier": "semantic", "text": "Alice adopted a cat named Luna"},
    {"op": "ADD", "tier": "core", "text": "Alice is allergic to peanuts"},
]})


async def settle(pilot: Pilot) -> None:
    for _ in range(200):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        screen = pilot.app.screen
        if not (isinstance(screen, ChatScreen) and screen.generating) and not pilot.app.workers:
            return
        await pilot.pause(0.05)


async def steady_cursors(pilot: Pilot) -> None:
    """A blinking cursor is on or off depending on when the snapshot is taken: keep it on."""
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


def chat_app(default_bundle, tmp_path: Path) -> EdgeChatApp:
    backend = ScriptedBackend([
        "Congratulations! Luna is a lovely name. I will remember that, and your peanut allergy.",
        ADD, "Alice adopted Luna; allergic to peanuts.",
    ], adapters=ADAPTER_ROLES)
    return EdgeChatApp(ChatConfig(bundle=default_bundle, db=tmp_path / "bank.db", user="alice", backend=backend,
                                   text_mode="free"))


def after_a_turn(theme: str, *steps: tuple[str, ...]):
    """Take a turn with scripted replies, then press each step's keys and let the app settle."""

    async def run_before(pilot: Pilot) -> None:
        pilot.app.theme = theme
        await settle(pilot)
        pilot.app.service.agent.bank.add("Alice works as a nurse in Lisbon", actor="user")
        pilot.app.screen.query_one("#composer").focus()
        await pilot.press(*"I just adopted a cat named Luna. Also, I'm allergic to peanuts.", "enter")
        await settle(pilot)
        pilot.app.screen.query_one(StatusBar).tokens_per_second = 42.0
        for keys in steps:
            await pilot.press(*keys)
            await settle(pilot)
        await steady_cursors(pilot)

    return run_before


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES)
def test_chat_after_a_turn(snap_compare, default_bundle, tmp_path, size, theme):
    app = chat_app(default_bundle, tmp_path)
    try:
        assert snap_compare(app, terminal_size=SIZES[size], run_before=after_a_turn(THEMES[theme]))
    finally:
        app.service.close()


@pytest.mark.parametrize("theme", THEMES)
def test_help_screen(snap_compare, default_bundle, tmp_path, theme):
    app = chat_app(default_bundle, tmp_path)
    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=after_a_turn(THEMES[theme], ("f1",)))
    finally:
        app.service.close()


def test_memory_search_and_editor(snap_compare, default_bundle, tmp_path):
    app = chat_app(default_bundle, tmp_path)
    steps = (("ctrl+f", *"cat", "enter"), ("e",))
    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=after_a_turn(LIGHT, *steps))
    finally:
        app.service.close()


@pytest.mark.parametrize("theme", THEMES)
def test_startup_error(snap_compare, tmp_path, theme):
    app = EdgeChatApp(ChatConfig(bundle=Path("/nonexistent/edge-bundle"), db=tmp_path / "bank.db"))

    async def run_before(pilot: Pilot) -> None:
        pilot.app.theme = THEMES[theme]
        await settle(pilot)

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    finally:
        app.service.close()
