"""The memory panel: the user's memories, a search box, and the changes of the latest turn.

It only shows what it is given (`show_listing`, `show_changes`) and asks for
changes by posting messages; the screen carries them out through the service.
"""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from edge.bank import Memory
from edge.tui.service import Listing, OpView

SYMBOLS = {"ADD": "+", "UPDATE": "~", "DELETE": "-", "RESTORE": "+", "UNDO": "↶"}
TIER_MARKS = {"core": "★ ", "episodic": "◷ ", "semantic": ""}


class MemoryList(OptionList):
    """The memories shown in the panel; keys act on the highlighted one."""

    BINDINGS = [
        Binding("e", "edit", "Edit"),
        Binding("d,delete", "delete", "Delete"),
        Binding("n", "add", "New"),
        Binding("u", "undo", "Undo", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, **kwargs)
        self.memories: dict[str, Memory] = {}

    def show(self, memories: list[Memory]) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else None
        self.memories = {m.id: m for m in memories}
        self.set_options(Option(TIER_MARKS.get(m.tier, "") + m.text, id=m.id) for m in memories)
        if highlighted in self.memories:
            self.highlighted = self.get_option_index(highlighted)
        elif memories:
            self.highlighted = 0

    @property
    def current(self) -> Memory | None:
        option = self.highlighted_option
        return self.memories.get(option.id) if option and option.id else None

    def action_edit(self) -> None:
        if self.current:
            self.post_message(MemoryPanel.EditRequested(self.current))

    def action_delete(self) -> None:
        if self.current:
            self.post_message(MemoryPanel.DeleteRequested(self.current))

    def action_add(self) -> None:
        self.post_message(MemoryPanel.AddRequested())

    def action_undo(self) -> None:
        self.post_message(MemoryPanel.UndoRequested())

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_edit()


class ChangeLog(Vertical):
    """The operations applied by the latest turn (or by hand), one line each."""

    def show(self, changes: list[OpView], note: str | None = None) -> None:
        self.remove_children()
        lines = [self._line(change) for change in changes]
        if note:
            lines.append(Static(note, markup=False, classes="change note"))
        self.mount_all(lines)

    @staticmethod
    def _line(change: OpView) -> Static:
        text = f"{change.old_text} → {change.text}" if change.old_text else change.text
        who = "" if change.actor == "manager" else " (you)"
        line = f"{SYMBOLS.get(change.action, '·')} {change.label}{who}: {text}"
        css = change.label.replace("undo: ", "undo-").replace(" ", "-")
        return Static(line, markup=False, classes=f"change {css}")


class MemoryPanel(Vertical):
    """Everything the user sees of the memory bank."""

    class SearchChanged(Message):
        """The search text changed; `now` when the user pressed Enter (no need to wait for more typing)."""

        def __init__(self, query: str, now: bool = False) -> None:
            super().__init__()
            self.query = query
            self.now = now

    class EditRequested(Message):
        def __init__(self, memory: Memory) -> None:
            super().__init__()
            self.memory = memory

    class DeleteRequested(Message):
        def __init__(self, memory: Memory) -> None:
            super().__init__()
            self.memory = memory

    class AddRequested(Message):
        pass

    class UndoRequested(Message):
        pass

    def compose(self) -> ComposeResult:
        yield Label("Memories", id="memory-title")
        yield Input(placeholder="Search memories", id="search", compact=True)
        yield Static("", markup=False, id="memory-empty")
        yield MemoryList(id="memory-list")
        yield Label("Memory changes", id="changes-title")
        yield ChangeLog(id="changes")

    def on_mount(self) -> None:
        self.query_one(ChangeLog).show([], "Changes to memory appear here after each turn.")

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(Input.Submitted, "#search")
    def _search_done(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value, now=True))
        self.query_one(MemoryList).focus()

    def show_listing(self, listing: Listing, user: str) -> None:
        shown = len(listing.memories)
        if listing.query:
            title = f"Memories of {user}: {shown} found"
        elif shown < listing.total:
            title = f"Memories of {user}: newest {shown} of {listing.total}"
        else:
            title = f"Memories of {user} ({listing.total})"
        self.query_one("#memory-title", Label).update(title)
        self.query_one(MemoryList).show(listing.memories)
        empty = self.query_one("#memory-empty", Static)
        empty.display = not listing.memories
        if listing.query:
            empty.update(f"Nothing matches “{listing.query}”.")
        else:
            empty.update("No memories yet. Tell edge about yourself, or press n in this list to add one.")

    def show_changes(self, title: str, changes: list[OpView], note: str | None = None) -> None:
        self.query_one("#changes-title", Label).update(title)
        self.query_one(ChangeLog).show(changes, note)

    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    @property
    def search_text(self) -> str:
        return self.query_one("#search", Input).value
