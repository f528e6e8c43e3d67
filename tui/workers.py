"""For code that runs in worker threads: hand results to the UI thread, and say what failed."""
from __future__ import annotations

from textual.app import App

from edge.errors import EdgeError


def call_in_ui(app: App, callback, *args, **kwargs) -> None:
    """Run `callback` on the UI thread and wait for it; once the app has quit there is nothing to update."""
    if not app.is_running:
        return
    try:
        app.call_from_thread(callback, *args, **kwargs)
    except RuntimeError:
        if app.is_running:
            raise


def describe_error(exc: BaseException) -> str:
    """A failure as one or two plain sentences (never a traceback)."""
    if isinstance(exc, EdgeError):
        return f"{exc.message}\n{exc.hint}" if exc.hint else exc.message
    return f"Unexpected error ({type(exc).__name__}): {exc}"
