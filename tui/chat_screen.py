"""The main screen: conversation on the left, memory on the right, status at the bottom.

The screen turns the widgets' messages into service calls. Every call runs in
a thread worker (a model turn takes seconds, an embedding a few milliseconds;
neither may freeze the screen) and comes back through `call_from_thread`.
"""
from __future__ import annotations

import threading
import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer
from textual.worker import get_current_worker

from edge.errors import NothingToUndoError
from edge.tui.conversation import ChatPane, Reply
from edge.tui.dialogs import MemoryEditor
from edge.tui.memory_panel import MemoryList, MemoryPanel
from edge.tui.service import BusyError, ChatService, OpView, TurnOutcome
from edge.tui.status_bar import StatusBar
from edge.tui.workers import call_in_ui, describe_error

SEARCH_DELAY_S = 0.25
STREAM_REFRESH_S = 0.05


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel reply"),
        Binding("ctrl+z", "undo", "Undo"),
        Binding("ctrl+f", "search", "Search"),
        Binding("ctrl+o", "focus_memories", "Memories", show=False),
        Binding("ctrl+l", "focus_composer", "Message box", show=False),
    ]

    generating: reactive[bool] = reactive(False)

    def __init__(self, service: ChatService) -> None:
        super().__init__()
        self.service = service
        self._cancel: threading.Event | None = None
        self._search_timer: Timer | None = None
        self.turns = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ChatPane(id="chat")
            yield MemoryPanel(id="memory")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        info = self.service.info()
        status = self.query_one(StatusBar)
        status.model, status.bundle, status.memories = info.model, info.bundle, info.memories
        status.state = "ready"
        self.query_one("#composer").focus()
        self.refresh_memories()

    @property
    def panel(self) -> MemoryPanel:
        return self.query_one(MemoryPanel)

    # ------------------------------------------------------------------ a turn

    @on(ChatPane.Submitted)
    def send(self, event: ChatPane.Submitted) -> None:
        if self.generating:
            self.notify("A reply is still being generated; Escape cancels it.", severity="warning")
            return
        conversation = self.query_one(ChatPane).conversation
        conversation.add_user(event.text)
        reply = conversation.start_reply()
        self._cancel = threading.Event()
        self.generating = True
        self.run_turn(event.text, reply, self._cancel)

    @work(thread=True, group="turn")
    def run_turn(self, message: str, reply: Reply, cancel: threading.Event) -> None:
        try:
            stream = self.service.reply(message, cancel)
            pending, shown_at = "", 0.0
            for piece in stream:
                pending += piece
                if time.monotonic() - shown_at >= STREAM_REFRESH_S:  # a few repaints a second, not one a token
                    self._to_ui(reply.append, pending)
                    pending, shown_at = "", time.monotonic()
            if pending:
                self._to_ui(reply.append, pending)
            assert stream.outcome is not None
            self._to_ui(self.turn_done, reply, stream.outcome)
        except Exception as exc:  # noqa: BLE001 - any failure is shown, never raised into the UI
            self._to_ui(self.turn_failed, reply, exc)

    def _to_ui(self, callback, *args, **kwargs) -> None:
        call_in_ui(self.app, callback, *args, **kwargs)

    def watch_generating(self, generating: bool) -> None:
        self.query_one(StatusBar).state = "reply + memory …" if generating else "ready"

    def turn_done(self, reply: Reply, outcome: TurnOutcome) -> None:
        self.generating = False
        self.turns += 1
        reply.finish("cancelled" if outcome.cancelled else "")
        if outcome.tokens_per_second:
            self.query_one(StatusBar).tokens_per_second = outcome.tokens_per_second
        self.panel.show_changes(f"Turn {self.turns}: memory changes", outcome.ops, outcome.note)
        self.refresh_memories()

    def turn_failed(self, reply: Reply, exc: BaseException) -> None:
        self.generating = False
        message = describe_error(exc)
        reply.finish(f"failed: {message}", failed=True)
        self.notify(message, title="The reply failed", severity="error", timeout=10)
        self.refresh_memories()

    def action_cancel(self) -> None:
        if self.generating and self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self.query_one(StatusBar).state = "cancelling …"

    # ------------------------------------------------------------------ the memory panel

    @on(MemoryPanel.SearchChanged)
    def _search_changed(self, event: MemoryPanel.SearchChanged) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        if event.now:
            self.refresh_memories()
        else:  # wait for a pause in typing
            self._search_timer = self.set_timer(SEARCH_DELAY_S, self.refresh_memories)

    def refresh_memories(self) -> None:
        self.load_memories(self.panel.search_text)

    @work(thread=True, exclusive=True, group="memories")
    def load_memories(self, query: str) -> None:
        try:
            listing = self.service.memories(query)
            info = self.service.info()
            if get_current_worker().is_cancelled:  # a newer search replaced this one
                return
        except Exception as exc:  # noqa: BLE001
            self._to_ui(self.notify, describe_error(exc), title="Memories", severity="error")
            return
        self._to_ui(self._show_listing, listing, info.user)

    def _show_listing(self, listing, user: str) -> None:
        self.panel.show_listing(listing, user)
        self.query_one(StatusBar).memories = listing.total

    @on(MemoryPanel.EditRequested)
    def _edit(self, event: MemoryPanel.EditRequested) -> None:
        memory = event.memory

        def save(text: str | None) -> None:
            if text:
                self.change_memory("edit", memory.id, text)

        self.app.push_screen(MemoryEditor("Edit memory", memory.text), save)

    @on(MemoryPanel.AddRequested)
    def _add(self) -> None:
        def save(text: str | None) -> None:
            if text:
                self.change_memory("add", None, text)

        self.app.push_screen(MemoryEditor("New memory"), save)

    @on(MemoryPanel.DeleteRequested)
    def _delete(self, event: MemoryPanel.DeleteRequested) -> None:
        self.change_memory("delete", event.memory.id, None)

    @on(MemoryPanel.UndoRequested)
    def action_undo(self) -> None:
        self.change_memory("undo", None, None)

    @work(thread=True, group="change")
    def change_memory(self, what: str, memory_id: str | None, text: str | None) -> None:
        try:
            if what == "add":
                changes = self.service.add(text or "")
            elif what == "edit":
                changes = self.service.edit(memory_id or "", text or "")
            elif what == "delete":
                changes = self.service.delete(memory_id or "")
            else:
                changes = self.service.undo()
        except NothingToUndoError:
            self._to_ui(self.notify, "Nothing to undo.", severity="warning")
            return
        except BusyError as exc:
            self._to_ui(self.notify, describe_error(exc), title="Memory not changed", severity="warning")
            return
        except Exception as exc:  # noqa: BLE001
            self._to_ui(self.notify, describe_error(exc), title="Memory not changed", severity="error")
            return
        self._to_ui(self._changed, what, changes)

    def _changed(self, what: str, changes: list[OpView]) -> None:
        self.panel.show_changes("Your change" if what != "undo" else "Undone", changes)
        if what == "delete":
            self.notify("Memory deleted; ctrl+z brings it back.")
        self.refresh_memories()

    # ------------------------------------------------------------------ focus

    def action_search(self) -> None:
        self.panel.focus_search()

    def action_focus_memories(self) -> None:
        self.query_one(MemoryList).focus()

    def action_focus_composer(self) -> None:
        self.query_one("#composer").focus()
