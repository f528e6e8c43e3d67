"""Modal screens: the key bindings (help) and editing one memory's text."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

# (keys, what they do), by where they work. The screens' BINDINGS hold the same keys;
# tests/test_tui.py checks that every binding with a description is listed here.
HELP = {
    "Anywhere": [
        ("f1  ?", "this help (? when not typing)"),
        ("enter", "send the message"),
        ("escape", "cancel the reply being generated"),
        ("ctrl+z", "undo the latest change to memory"),
        ("ctrl+f", "search memories"),
        ("ctrl+o", "focus the memory list"),
        ("ctrl+l", "focus the message box"),
        ("f2", "switch between dark and light theme"),
        ("tab  shift+tab", "move between the message box, search and list"),
        ("ctrl+q", "quit"),
    ],
    "Memory list": [
        ("↑ ↓", "choose a memory"),
        ("e  enter", "edit it"),
        ("d  delete", "delete it (undoable)"),
        ("n", "add a memory by hand"),
        ("u", "undo the latest change"),
    ],
    "Memory panel": [
        ("+", "added by the Manager (or by you)"),
        ("~", "updated: old → new"),
        ("-", "deleted (kept in history: undo brings it back)"),
        ("↶", "undone"),
        ("★  ◷", "core memory, episodic (dated) memory"),
    ],
}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Label("edge chat: keys", classes="dialog-title")
            for section, rows in HELP.items():
                yield Label(section, classes="help-section")
                for keys, what in rows:
                    yield Static(f"{keys:<16}{what}", markup=False, classes="help-row")
            yield Label("Escape closes this help.", classes="dialog-hint")

    def on_click(self) -> None:
        self.dismiss()


class MemoryEditor(ModalScreen[str | None]):
    """Edit a memory's text (or write a new one); dismisses with the text, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, text: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="editor", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.text, placeholder="Memory text", id="memory-text")
            yield Label("Enter saves · Escape cancels", classes="dialog-hint")

    @on(Input.Submitted, "#memory-text")
    def _save(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        self.dismiss(text if text and text != self.text else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
