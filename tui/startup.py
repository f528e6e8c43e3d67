"""What shows before the chat: progress while the bundle is built and the models load, or why they could not."""
from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Label, ProgressBar, RichLog, Static


class LoadingScreen(Screen):
    """Steps of the start-up as they happen; anything printed meanwhile (e.g. the embedder build) goes here too."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []  # every step, kept after the screen is gone

    def compose(self) -> ComposeResult:
        with Vertical(id="loading", classes="dialog"):
            yield Label("edge: starting", classes="dialog-title")
            yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="loading-bar")
            yield RichLog(id="loading-log", wrap=True, min_width=20, markup=False, highlight=False)
            yield Label("ctrl+q quits", classes="dialog-hint")

    def on_mount(self) -> None:
        self.app.begin_capture_print(self)
        log = self.query_one(RichLog)
        for line in self.lines:  # steps reported before the screen was up
            log.write(line)

    def on_unmount(self) -> None:
        self.app.end_capture_print(self)

    def step(self, text: str) -> None:
        self.lines.append(text)
        if self.is_mounted:
            self.query_one(RichLog).write(text)

    def on_print(self, event: events.Print) -> None:
        # Progress bars redraw with carriage returns; keep their latest state, one line each.
        for line in event.text.replace("\r", "\n").splitlines():
            if line.strip():
                self.step(line.rstrip())


class StartupErrorScreen(Screen):
    """A start-up failure, said plainly with what to do about it."""

    BINDINGS = [Binding("q,escape,enter", "app.quit", "Quit")]

    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__()
        self.message = message
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="startup-error", classes="dialog"):
            yield Label("edge could not start", classes="dialog-title")
            yield Static(self.message, markup=False, id="error-message")
            if self.hint:
                yield Static(f"What to do: {self.hint}", markup=False, id="error-hint")
            yield Label("Press q to quit.", classes="dialog-hint")
