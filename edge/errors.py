"""Errors meant for users. Each says what went wrong and what to do next."""
from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """Base of every error edge raises on purpose; the CLI prints these without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class BankError(EdgeError):
    """The memory bank cannot be opened or used as asked."""


class CorruptBankError(BankError):
    """The file is not a readable edge memory bank."""


class BankLockedError(BankError):
    """Another process holds the bank's write lock for longer than we wait."""


class EmbedderMismatchError(BankError):
    """The bank was built with a different embedder than the one offered."""


class MemoryNotFoundError(BankError):
    """No memory with that id for that owner."""


class InvalidInputError(EdgeError):
    """Text or arguments that cannot be stored (empty, binary, too large)."""


class ReadOnlyBankError(BankError):
    """The bank's file or folder cannot be written: it can be read, not changed."""


class NothingToUndoError(BankError):
    """The history holds no operation that can be undone."""


class TurnInterruptedError(EdgeError):
    """A turn was interrupted (its call cancelled, its server stopping) before the Manager applied its facts."""


class BundleError(EdgeError):
    """A bundle is missing, incomplete, corrupted or does not match the bank."""


class BackendError(EdgeError):
    """A language-model backend failed to load or to answer."""


class ModelOutputError(EdgeError):
    """A model's output could not be parsed into the expected schema."""


class MissingExtraError(EdgeError):
    """An optional dependency group is needed for this command."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra, which is not installed.",
            hint=f"pip install 'edge-memory[{extra}]'  (or run `make setup` from a checkout)",
        )


def require_extra(what: str, extra: str, *modules: str) -> Any:
    """Import `modules` (dotted names) and return the first; `MissingExtraError(what, extra)` when one is missing.

    The one way a command or backend says which optional dependency group
    (`pip install 'edge-memory[extra]'`) it needs.
    """
    import importlib

    try:
        loaded = [importlib.import_module(name) for name in modules]
    except ImportError as exc:
        raise MissingExtraError(what, extra) from exc
    return loaded[0]


def shorten(text: object, limit: int = 80) -> str:
    """`text` as an error message may quote it: its first `limit` characters, then "…" when there were more.

    A message echoes what it refuses so a user sees what went wrong; a
    100,000-character turn or id echoed whole would bury the message.
    """
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + "…"
