"""`EdgeChatApp`: the terminal chat over `edge.Agent` (run by `edge chat`).

    from edge.tui.app import EdgeChatApp
    from edge.tui.service import ChatConfig
    run(ChatConfig(db="memory.db", user="alice"))      # or: EdgeChatApp(config).run(), then app.service.close()

Start-up (building the default bundle on first run, opening the bank,
loading the models) runs in a worker behind `LoadingScreen`; then the chat
screen replaces it, or `StartupErrorScreen` says what went wrong.
"""
from __future__ import annotations

import sys

from textual import work
from textual.app import App
from textual.binding import Binding

from edge.errors import EdgeError
from edge.tui.chat_screen import ChatScreen
from edge.tui.dialogs import HelpScreen
from edge.tui.service import ChatConfig, ChatService
from edge.tui.startup import LoadingScreen, StartupErrorScreen
from edge.tui.workers import call_in_ui, describe_error

DARK, LIGHT = "textual-dark", "textual-light"


class EdgeChatApp(App):
    CSS_PATH = "edge.tcss"
    TITLE = "edge"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "toggle_theme", "Theme", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, config: ChatConfig | None = None, *, service: ChatService | None = None) -> None:
        super().__init__()
        self.service = service or ChatService(config or ChatConfig())
        self._quitting = False

    def on_mount(self) -> None:
        self.push_screen(LoadingScreen())
        self.start()

    @work(thread=True, group="start")
    def start(self) -> None:
        screen = self.screen
        step = screen.step if isinstance(screen, LoadingScreen) else (lambda _: None)
        try:
            self.service.open(progress=lambda text: call_in_ui(self, step, text))
        except EdgeError as exc:  # shown on a screen of its own, never as a traceback
            call_in_ui(self, self.show_startup_error, exc.message, exc.hint)
        except Exception as exc:  # noqa: BLE001
            call_in_ui(self, self.show_startup_error, describe_error(exc), "This is a bug in edge; please report it.")
        else:
            call_in_ui(self, self.show_chat)

    def show_chat(self) -> None:
        self.switch_screen(ChatScreen(self.service))

    def show_startup_error(self, message: str, hint: str | None) -> None:
        self.switch_screen(StartupErrorScreen(message, hint))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def action_quit(self) -> None:
        """Quit; during a turn, stop the reply and let the Manager finish first (a second ctrl+q does not wait)."""
        if self.service.busy and not self._quitting:
            self._quitting = True
            self.service.cancel()
            self.notify("Stopping the reply; quitting once the memory update is done (ctrl+q again: now).")
            self.set_interval(0.1, self._exit_when_idle)
        else:
            self.exit()

    def _exit_when_idle(self) -> None:
        if not self.service.busy:
            self.exit()


def run(config: ChatConfig) -> None:
    """Run the chat app until the user quits, then release the models and the bank."""
    app = EdgeChatApp(config)
    try:
        app.run()
    finally:
        if app.service.busy:
            print("edge: finishing the current turn before exiting ...", file=sys.stderr)
        app.service.close()
