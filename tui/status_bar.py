"""One line at the bottom: what the app is doing, the model, its speed and the bank's size."""
from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class StatusBar(Static):
    state: reactive[str] = reactive("loading")
    model: reactive[str] = reactive("")
    bundle: reactive[str] = reactive("")
    tokens_per_second: reactive[float | None] = reactive(None)
    memories: reactive[int | None] = reactive(None)

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, **kwargs)

    def render(self) -> str:
        speed = f"{self.tokens_per_second:.1f} tok/s" if self.tokens_per_second else "– tok/s"
        if self.memories is None:
            size = "– memories"
        else:
            size = f"{self.memories} memor{'y' if self.memories == 1 else 'ies'}"
        parts = [f"● {self.state}", self.model, speed, size, f"bundle {self.bundle}"]
        return " " + " │ ".join(part for part in parts if part)

    def watch_state(self, state: str) -> None:
        self.set_class(state != "ready", "busy")
