"""The conversation pane: the messages so far, the reply being streamed, and the box to type in."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Static


class ChatMessage(Vertical):
    """One message: who said it, and what (shown as plain text, never as markup)."""

    def __init__(self, role: str, text: str = "", *, classes: str = "") -> None:
        super().__init__(classes=f"message {classes}".strip())
        self.role = role
        self.text = text

    def compose(self) -> ComposeResult:
        yield Label(self.role, classes="role")
        yield Static(self.text, markup=False, classes="body")


class Reply(ChatMessage):
    """The assistant's reply, filled piece by piece as the model streams it."""

    def __init__(self) -> None:
        super().__init__("edge", "", classes="reply pending")
        self.note = ""

    def compose(self) -> ComposeResult:
        yield Label(self.role, classes="role")
        yield Static("…", markup=False, classes="body")
        yield Static("", markup=False, classes="note")

    def append(self, piece: str) -> None:
        if not self.text:
            piece = piece.lstrip()
        self.text += piece
        self.remove_class("pending")
        self.query_one(".body", Static).update(self.text or "…")

    def finish(self, note: str = "", *, failed: bool = False) -> None:
        """End the reply; `note` (e.g. "cancelled") is shown under it."""
        self.remove_class("pending")
        if not self.text:
            self.query_one(".body", Static).update("(no reply)" if not failed else "")
        if failed:
            self.add_class("failed")
        self.note = note
        label = self.query_one(".note", Static)
        label.update(note)
        label.display = bool(note)


class Conversation(VerticalScroll):
    """The messages of this session, kept scrolled to the newest one."""

    def on_mount(self) -> None:
        self.anchor()

    def add_user(self, text: str) -> ChatMessage:
        message = ChatMessage("you", text, classes="user")
        self.mount(message)
        return message

    def start_reply(self) -> Reply:
        reply = Reply()
        self.mount(reply)
        self.anchor()
        return reply


class ChatPane(Vertical):
    """The conversation and the message box; posts `ChatPane.Submitted` when the user sends a message."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def compose(self) -> ComposeResult:
        yield Conversation(id="conversation")
        yield Input(placeholder="Message edge (Enter sends)", id="composer")

    @on(Input.Submitted, "#composer")
    def _send(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if text:
            event.input.clear()
            self.post_message(self.Submitted(text))

    @property
    def conversation(self) -> Conversation:
        return self.query_one(Conversation)
