"""What the bank stores and returns: memories, search hits, history rows, and the rules for their text.

Plain values, no database: `Memory`, `SearchHit` and `HistoryEntry` are
what every caller of the bank sees; `clean_text` is the one check every
text passes before it is stored or searched for, `clean_name` the one every
user and speaker name passes.
"""
from __future__ import annotations

import json
import secrets
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Sequence

from edge.errors import InvalidInputError

MAX_TEXT_CHARS = 4000
MAX_NAME_CHARS = 100  # a user or speaker name
# A turn of the episodic log is kept whole (the Manager sees it in pieces); this only stops runaway input.
MAX_TURN_CHARS = 100_000
EPISODIC = "episodic"
SearchMode = Literal["vector", "keyword", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("vector", "keyword", "hybrid")
# What a search reads: "facts" (core + semantic), "episodic" (the turn log) or both.
SearchScope = Literal["all", "facts", "episodic"]
SCOPES: tuple[str, ...] = ("all", "facts", "episodic")


@dataclass(frozen=True)
class Memory:
    id: str
    owner: str
    tier: str
    text: str
    created_at: str
    updated_at: str
    event_time: str | None = None
    source_turns: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted_at: str | None = None
    valid_until: str | None = None  # a superseded fact: when the turn that replaced it was said
    superseded_by: str | None = None  # ... the id of its newer version (None: retracted)
    superseded_turn: str | None = None  # ... and the id of that turn

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source_turns"] = list(self.source_turns)
        return data

    @property
    def superseded(self) -> bool:
        return self.valid_until is not None

    @property
    def speaker(self) -> str | None:
        """Who said it: the speaker of an episodic turn (None for facts)."""
        value = self.metadata.get("speaker")
        return str(value) if value else None

    def search_text(self) -> str:
        """What the keyword and vector indexes hold: a turn with its speaker's name, a fact as it is."""
        text = f"{self.speaker}: {self.text}" if self.tier == EPISODIC and self.speaker else self.text
        return searchable(text)

    @property
    def kind(self) -> str:
        """The search tables' kind of row: "turn" (episodic log), "fact", or "old" (superseded fact)."""
        if self.tier == EPISODIC:
            return "turn"
        return "old" if self.superseded else "fact"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Memory":
        return cls(**{**data, "source_turns": tuple(data.get("source_turns") or ())})


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float  # cosine similarity (vector), -bm25 (keyword) or fused RRF score (hybrid); higher is better
    rank: int  # 1 for the best hit


HISTORY_ACTIONS = ("ADD", "UPDATE", "DELETE", "RESTORE", "UNDO")  # the history table's CHECK allows these


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    op_group: str
    owner: str
    memory_id: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    turn: str | None
    at: str
    reverts: int | None
    undone_by: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HistoryEntry":
        """An entry as `to_dict` (and a JSONL export) wrote it; raises TypeError for a malformed one."""
        return cls(**data)


def now() -> str:
    """The current time as the bank stamps it: ISO 8601 in UTC, to the microsecond."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_id() -> str:
    """A fresh memory id ("m" and 8 hex digits); the caller makes sure the bank does not hold it yet."""
    return "m" + secrets.token_hex(4)


def text_limit(tier: str) -> int:
    """The longest text a memory of `tier` may hold, in characters."""
    return MAX_TURN_CHARS if tier == EPISODIC else MAX_TEXT_CHARS


def clean_text(text: object, *, what: str = "memory text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """Reject what is not text: non-strings, empty, binary or mis-decoded, or huge text.

    "Not text" is decided by code point, never by Python's Unicode tables:
    those are older than what people type (an emoji of Unicode 16 is
    "unassigned" to Python 3.11's Unicode 14), so unassigned and private-use characters
    pass. Refused: C0 and C1 control characters other than newline, tab and
    carriage return (binary data), lone surrogates (how Python carries
    invalid UTF-8 from argv or a file), and the non-characters U+FDD0..U+FDEF
    and U+xFFFE/U+xFFFF, which Unicode never assigns.
    """
    if isinstance(text, (bytes, bytearray)):
        raise InvalidInputError(f"The {what} is bytes, not text.", hint="Decode it to a str first.")
    if not isinstance(text, str):
        raise InvalidInputError(f"The {what} must be a string, not {type(text).__name__}.")
    stripped = text.strip()
    if not stripped:
        raise InvalidInputError(f"The {what} is empty.", hint=f"Give the {what} as text with at least one "
                                "non-blank character (quote it in a shell: \"...\").")
    if len(stripped) > max_chars:
        raise InvalidInputError(
            f"The {what} is {len(stripped)} characters; at most {max_chars} are allowed.",
            hint={"query": "Search with a shorter text: a question or a few key words.",
                  "question": "Ask a shorter question: what you want to know, in a sentence."}.get(
                what, "Store a summary, or split it into several memories."),
        )

    def not_text(c: str) -> bool:
        return (
            (c < " " and c not in "\n\t\r") or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff"
            or "\ufdd0" <= c <= "\ufdef" or ord(c) & 0xFFFE == 0xFFFE
        )

    bad = [(i, c) for i, c in enumerate(stripped) if not_text(c)]
    if bad:
        position, char = bad[0]
        raise InvalidInputError(
            f"The {what} holds {len(bad)} {'characters that are' if len(bad) > 1 else 'character that is'} not text "
            f"(the first is U+{ord(char):04X} at position {position + 1}); it looks binary or wrongly decoded.",
            hint=f"Remove the control characters from the {what}; text from a file must be read as UTF-8.",
        )
    if all(map(invisible, stripped)):
        shown = " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(stripped[:20]))
        raise InvalidInputError(
            f"The {what} has no visible character (only {shown}).",
            hint=f"Write the {what} in letters, digits or symbols: zero-width spaces and direction marks alone "
            "show nothing.",
        )
    return stripped


# Letters that render as nothing (Hangul fillers); the other invisible characters are told by category.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def invisible(char: str) -> bool:
    """Whether `char` shows nothing by itself: a space or line break, a format character (zero-width space and
    joiners, direction marks and overrides, the BOM), a control character, or a blank filler letter.

    By category, which is stable for assigned characters; one Python's tables
    do not know yet (a new emoji) is "unassigned" and counts as visible.
    """
    return unicodedata.category(char) in ("Zs", "Zl", "Zp", "Cf", "Cc") or char in _BLANK_LETTERS


def searchable(text: str) -> str:
    """`text` as search and duplicate checks read it: without the format characters that show nothing inside a
    word (zero-width space, soft hyphen, joiners outside an emoji, direction marks and overrides, the BOM).

    The stored text stays as typed; "in\u200bvoice" then matches "invoice",
    and "Ana\u00adlyse" is the same fact as "Analyse".
    """
    if not any(unicodedata.category(c) == "Cf" for c in text):
        return text
    return "".join(c for i, c in enumerate(text) if unicodedata.category(c) != "Cf" or _joins_emoji(text, i))


def _joins_emoji(text: str, index: int) -> bool:
    """Whether text[index] is a zero-width joiner inside an emoji sequence (a family, a flag), not between letters."""
    if text[index] != "\u200d" or not 0 < index < len(text) - 1:
        return False
    before, after = unicodedata.category(text[index - 1]), unicodedata.category(text[index + 1])
    return before in ("So", "Mn", "Sk", "Cn") and after in ("So", "Cn")


def clean_name(name: object, *, what: str = "user name") -> str:
    """A user or speaker name as stored (stripped), or `InvalidInputError`: the one rule for names everywhere.

    A name is text (`clean_text`) of at most `MAX_NAME_CHARS` characters, on
    one line, with a visible character and no invisible format character
    (zero-width space, a joiner outside an emoji, direction mark or override, BOM): "alice"
    with a zero-width space inside, or written backwards under U+202E, would
    look like another user's name and be a different owner.
    """
    if isinstance(name, str) and len(name.strip()) > MAX_NAME_CHARS:
        raise InvalidInputError(f"The {what} is {len(name.strip())} characters; at most {MAX_NAME_CHARS} are allowed.",
                                hint=f"Give a name as the {what}, not a sentence.")
    cleaned = clean_text(name, what=what, max_chars=MAX_NAME_CHARS)
    for position, char in enumerate(cleaned, start=1):
        category = unicodedata.category(char)
        if char in "\n\r\t" or category in ("Zl", "Zp"):
            raise InvalidInputError(f"The {what} holds a line break or tab (position {position}); a name is one line.",
                                    hint=f"Give the {what} on one line.")
        if category == "Cf" and not _joins_emoji(cleaned, position - 1):
            raise InvalidInputError(
                f"The {what} holds an invisible format character (U+{ord(char):04X} at position {position}).",
                hint=f"Type the {what} without zero-width or text-direction characters: with them, two names that "
                "look the same are different users.",
            )
    return cleaned


# ----------------------------------------------------------------------------- rows of the `memories` and `history` tables

MEMORY_COLUMNS = (
    "id, owner, tier, text, created_at, updated_at, event_time, source_turns, metadata, deleted_at, "
    "valid_until, superseded_by, superseded_turn"
)
HISTORY_COLUMNS = "seq, op_group, owner, memory_id, action, before, after, actor, turn, at, reverts, undone_by"


def memory_row(memory: Memory) -> tuple[Any, ...]:
    """`memory` as the values of MEMORY_COLUMNS."""
    return (
        memory.id, memory.owner, memory.tier, memory.text, memory.created_at, memory.updated_at,
        memory.event_time, json.dumps(list(memory.source_turns)), json.dumps(memory.metadata),
        memory.deleted_at, memory.valid_until, memory.superseded_by, memory.superseded_turn,
    )


def memory_from_row(row: Sequence[Any]) -> Memory:
    """A `Memory` from the values of MEMORY_COLUMNS."""
    return Memory(
        id=row[0], owner=row[1], tier=row[2], text=row[3], created_at=row[4], updated_at=row[5],
        event_time=row[6], source_turns=tuple(json.loads(row[7])), metadata=json.loads(row[8]),
        deleted_at=row[9], valid_until=row[10], superseded_by=row[11], superseded_turn=row[12],
    )


def history_from_row(row: Sequence[Any]) -> HistoryEntry:
    """A `HistoryEntry` from the values of HISTORY_COLUMNS."""
    return HistoryEntry(
        seq=row[0], op_group=row[1], owner=row[2], memory_id=row[3], action=row[4],
        before=json.loads(row[5]) if row[5] else None, after=json.loads(row[6]) if row[6] else None,
        actor=row[7], turn=row[8], at=row[9], reverts=row[10], undone_by=row[11],
    )
