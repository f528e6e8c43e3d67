"""How a bundle's models are decoded: one `GenerationConfig`, read once from its manifest.

A bundle's `generation` table says how its models are served (the
repetition penalty, the reply budgets, how many memories the Answer Agent
reads, extractive or free text, the context window). The runtime
(`edge.Agent`, `Bundle.load_backend`, `MemoryManager`, `AnswerAgent`), the
training reward's frozen reader (`edge.train.recipe.build_reader`), the
export's parity checks (`edge.export.parity`) and `edge eval` all take their
settings from this one object, passed along, so a model is trained, checked
and evaluated with the settings it is served with, and no caller re-reads the
manifest with defaults of its own.

Manifest table (every key optional; a missing key takes the default below,
so manifests written before a key existed stay readable):

    repeat_penalty      float > 0    llama.cpp's penalty over the last 64 generated tokens (1.0: none)
    temperature         float >= 0   the Manager's first attempt and every Answer Agent call (0: greedy)
    retry_temperature   float >= 0   the Manager's second attempt after an unusable reply
    answer_k            int >= 1     memories the Answer Agent retrieves per question
    answer_tokens       int >= 1     the most tokens their lines take in its prompt (what decides `ask`'s
                                     latency: 280 keeps the 135M model within 1.5 s on 2 cores)
    manager_max_tokens  int >= 1     the Manager's reply budget, in tokens
    answer_max_tokens   int >= 1     the Answer Agent's reply budget, in tokens
    chat_temperature    float >= 0   `Agent.chat` replies
    chat_max_tokens     int >= 1     `Agent.chat` reply budget, in tokens
    text_mode           str          "extractive" (spans of what was said) or "free" (written, validated)
    n_ctx               int >= 256   the context window the models are loaded with, in tokens
    answer_order        str          how the Answer Agent orders what it reads (`ANSWER_ORDERS`; "rank"
                                     unless a bundle names another: the default bundle's is
                                     "stale-updates-first")
    answer_retrieval    str          which turns of the log the Answer Agent is offered (`RETRIEVALS`;
                                     "hybrid", the top-k of hybrid search, unless a bundle names another)
    unknown_margin      float >= 0   logits by which "unknown" must beat every span for an extractive
                                     answer to be "unknown" (an offset on its first token where the
                                     options begin, `Backend.complete(choice_bias=...)`; 0: none)
    retired_values      str          "offered" or "withheld": whether an extractive answer may be a value
                                     the Manager retired (the older version of a fact a later turn
                                     changed, or a retracted one: `RETIRED_VALUES`; "offered" unless a
                                     bundle names "withheld")
    consolidation       str          "none" or "extend": whether the Manager is offered EXTEND, growing a fact
                                     of the turn's speaker by one clause of the turn (`CONSOLIDATIONS`;
                                     "none" unless a bundle names it: the shipped Manager was not trained on it)

A bad value raises `BundleError` naming the bundle, the key and what it
accepts; an unknown key is refused too (a misspelt key would otherwise be
silently served with its default).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from edge.errors import BundleError, InvalidInputError
from edge.prompts import (ANSWER_CONTEXT_TOKENS, ANSWER_TOP_K, EXTEND, MANAGER_OPS, REPEAT_PENALTY, TEXT_MODES,
                          UNKNOWN)

# The reply budgets the agents have always used: three Manager operations of up to 120 characters with
# their JSON; an answer with its relevant ids.
MANAGER_MAX_TOKENS = 224
ANSWER_MAX_TOKENS = 96
RETRY_TEMPERATURE = 0.7
CHAT_TEMPERATURE = 0.3
CHAT_MAX_TOKENS = 256
N_CTX = 4096
MIN_N_CTX = 256  # below this not even the Manager's instructions fit

# How the Answer Agent orders the memories it reads (`edge.answer.AnswerAgent.retrieve` and `fit`):
#   rank               the top-k turns of the log by search rank, then facts their turns do not cover
#   updates-first      as rank, but the facts that replaced an older version come first, before every turn
#   facts-first        the current facts the question finds (those whose turns are shown too) come first, within
#                      a quarter of the token budget (`FACTS_FIRST_SHARE`), then the turns
#   superseding-turns  as rank, but a turn that retired a fact is moved before the turns that fact came from
#   newest-first       the same memories as rank (the budget picks them by rank), the turns shown newest first
#   topic-newest       the same memories as rank; a newer turn sharing a word (not the question's) with a
#                      turn ranked above it is shown before it
#   current-first      facts-first, then the turns as topic-newest orders them
#   stale-updates-first  as rank, but a fact that replaced an older version comes first when it is among the
#                      question's top `STALE_UPDATES_FIRST` facts and a turn its older version came from is
#                      offered too (the reader would see the stale value); the default bundle's order
# Every order shows the same kinds of memory (the log is never hidden; a superseded fact never appears).
ANSWER_ORDERS = ("rank", "updates-first", "facts-first", "superseding-turns", "newest-first", "topic-newest",
                 "current-first", "stale-updates-first")
FACTS_FIRST_SHARE = 0.25
STALE_UPDATES_FIRST = 2

# Which turns of the episodic log the Answer Agent is offered (`edge.answer.AnswerAgent.retrieve`), before the
# token budget keeps the first of them:
#   hybrid      the top-k turns of hybrid search (vector + bm25, reciprocal rank fusion), best first
#   replies     each of the top-k followed by the turn the log kept after it (`MemoryBank.next_turns`): the
#               answer to a question is often the reply to the turn that matched it
#   replies-N   the same for the best N turns only (replies-3, replies-5), then the rest of the top-k
# On conv-26 (280 tokens) replies-3 showed 65.8 % of the evidence against hybrid's 64.2 %, but the shipped
# Answer adapter's F1 did not follow (19.5 vs 20.4 on the log alone): hybrid stays the default
# (bench/results/retrieval.json).
RETRIEVALS = ("hybrid", "replies", "replies-3", "replies-5")

# Whether an extractive answer may be a value the Manager retired (`edge.answer.retirements`, `Retirement`):
#   offered   every span of what is shown is a reply, the old value of a changed fact too
#   withheld  a span saying only the value of a superseded or retracted fact the question finds (among its top
#             `RETIRED_K` facts, older versions included) is no reply when a turn it came from and the turn that
#             retired it are offered; the turns are still shown, a question about an earlier state is offered every
#             span, and after a retraction "unknown" is not held back by `unknown_margin`
RETIRED_VALUES = ("offered", "withheld")
RETIRED_K = 3

# Whether the Manager keeps consolidated facts (`edge.operations.consolidated_text`):
#   none    its operations are ADD, UPDATE, DELETE and NOOP (`MANAGER_OPS`): every fact is one clause of one turn
#   extend  EXTEND is offered too: one clause of the turn joins a fact its speaker said, the fact citing every turn
#           it draws on (mem0's merged memories; Memory-R1's UPDATE that adds to a memory)
CONSOLIDATIONS = ("none", "extend")

_INTS = ("answer_k", "answer_tokens", "manager_max_tokens", "answer_max_tokens", "chat_max_tokens", "n_ctx")
_FLOATS = ("repeat_penalty", "temperature", "retry_temperature", "chat_temperature", "unknown_margin")


# What each setting is, in a phrase (`edge config set generation.NAME`'s help; the table above has the ranges).
SETTING_HELP = {
    "repeat_penalty": "llama.cpp's repetition penalty over the last 64 generated tokens (1.0: none)",
    "temperature": "sampling temperature of the Manager's first attempt and of every answer (0: greedy)",
    "retry_temperature": "sampling temperature of the Manager's second attempt after an unusable reply",
    "answer_k": "memories the Answer Agent retrieves per question",
    "answer_tokens": "the most tokens the memories take in the Answer Agent's prompt",
    "manager_max_tokens": "the Manager's reply budget, in tokens",
    "answer_max_tokens": "the Answer Agent's reply budget, in tokens",
    "chat_temperature": "sampling temperature of chat replies",
    "chat_max_tokens": "the chat reply budget, in tokens",
    "text_mode": f"{' or '.join(TEXT_MODES)}: spans of what was said, or text the model writes",
    "n_ctx": "the context window the models are loaded with, in tokens",
    "answer_order": f"how the Answer Agent orders what it reads: {', '.join(ANSWER_ORDERS)}",
    "answer_retrieval": f"which turns of the log the Answer Agent is offered: {', '.join(RETRIEVALS)}",
    "unknown_margin": "logits by which \"unknown\" must beat every offered span to be the answer (0: none)",
    "retired_values": f"{' or '.join(RETIRED_VALUES)}: whether an answer may be a value a later turn changed or retracted",
    "consolidation": f"{' or '.join(CONSOLIDATIONS)}: whether the Manager may grow a fact by a later turn's clause",
}


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings of one bundle (see the module docstring for units and ranges).

    Built with `from_manifest` (a bundle's `generation` table) or directly;
    `override` returns a copy with some settings replaced (a user's
    `--answer-k`, an Agent's arguments). Construction validates every field
    and raises `InvalidInputError` (`BundleError` from `from_manifest`).
    """

    repeat_penalty: float = REPEAT_PENALTY
    temperature: float = 0.0
    retry_temperature: float = RETRY_TEMPERATURE
    answer_k: int = ANSWER_TOP_K
    answer_tokens: int = ANSWER_CONTEXT_TOKENS
    manager_max_tokens: int = MANAGER_MAX_TOKENS
    answer_max_tokens: int = ANSWER_MAX_TOKENS
    chat_temperature: float = CHAT_TEMPERATURE
    chat_max_tokens: int = CHAT_MAX_TOKENS
    text_mode: str = "extractive"
    n_ctx: int = N_CTX
    answer_order: str = "rank"
    answer_retrieval: str = "hybrid"
    unknown_margin: float = 0.0
    retired_values: str = "offered"
    consolidation: str = "none"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise InvalidInputError("Bad generation settings: " + "; ".join(problems) + ".", hint=_HINT)

    def problems(self) -> list[str]:
        """What is wrong with these settings, one phrase per field; empty when sound."""
        out = []
        for name in _INTS:
            value = getattr(self, name)
            low = MIN_N_CTX if name == "n_ctx" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                out.append(f"{name} must be a whole number >= {low}, not {value!r}")
        for name in _FLOATS:
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or (name == "repeat_penalty" and value <= 0):
                out.append(f"{name} must be a number {'> 0' if name == 'repeat_penalty' else '>= 0'}, not {value!r}")
        if self.text_mode not in TEXT_MODES:
            out.append(f"text_mode must be one of {', '.join(TEXT_MODES)}, not {self.text_mode!r}")
        if self.answer_order not in ANSWER_ORDERS:
            out.append(f"answer_order must be one of {', '.join(ANSWER_ORDERS)}, not {self.answer_order!r}")
        if self.answer_retrieval not in RETRIEVALS:
            out.append(f"answer_retrieval must be one of {', '.join(RETRIEVALS)}, not {self.answer_retrieval!r}")
        if self.retired_values not in RETIRED_VALUES:
            out.append(f"retired_values must be one of {', '.join(RETIRED_VALUES)}, not {self.retired_values!r}")
        if self.consolidation not in CONSOLIDATIONS:
            out.append(f"consolidation must be one of {', '.join(CONSOLIDATIONS)}, not {self.consolidation!r}")
        return out

    @classmethod
    def from_manifest(cls, table: Mapping[str, Any] | None, *, source: str = "the bundle") -> "GenerationConfig":
        """The settings a manifest's `generation` table names; missing keys take the defaults.

        Integral floats (20.0) are read as ints and ints as floats, as JSON
        and TOML writers differ there. Raises `BundleError` naming `source`
        for a table that is not an object, an unknown key or a bad value.
        """
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise BundleError(f"{source}: `generation` must be an object, not {type(table).__name__}.", hint=_HINT)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise BundleError(f"{source}: unknown generation setting(s) {', '.join(map(repr, unknown))}.",
                              hint=f"the settings are: {', '.join(f.name for f in fields(cls))}")
        values = {name: _coerce(name, value) for name, value in table.items()}
        try:
            return cls(**values)
        except InvalidInputError as exc:
            raise BundleError(f"{source}: {exc.message}", hint=exc.hint) from exc

    def override(self, **changes: Any) -> "GenerationConfig":
        """A copy with the given settings replaced; a value of None keeps the current one."""
        given = {k: _coerce(k, v) for k, v in changes.items() if v is not None}
        return replace(self, **given) if given else self

    @property
    def answer_bias(self) -> dict[str, float] | None:
        """The Answer Agent's `choice_bias` (`Backend.complete`): "unknown" held back by `unknown_margin`."""
        return {UNKNOWN: -self.unknown_margin} if self.unknown_margin else None

    @property
    def manager_ops(self) -> tuple[str, ...]:
        """The operations the Manager's grammar offers: `MANAGER_OPS`, and EXTEND with `consolidation = "extend"`."""
        return (*MANAGER_OPS, EXTEND) if self.consolidation == "extend" else MANAGER_OPS

    def to_manifest(self) -> dict[str, Any]:
        """Every setting as the `generation` table of a manifest (what `from_manifest` reads back)."""
        return asdict(self)


_HINT = ("fix the `generation` table of the bundle's bundle.json (or the override), e.g. \"repeat_penalty\": 1.2, "
         "\"answer_k\": 20, \"text_mode\": \"extractive\"; or rebuild the bundle")


def parse_setting(name: str, text: str) -> Any:
    """One setting from its text form (a command line's, a TOML file's): `"20"` -> 20 for answer_k.

    Raises `InvalidInputError` for an unknown name or a value the setting
    does not accept (the same checks as `GenerationConfig`'s).
    """
    if name not in SETTING_HELP:
        raise InvalidInputError(f"Unknown generation setting {name!r}.", hint=f"the settings: {', '.join(SETTING_HELP)}")
    try:
        value: Any = int(text) if name in _INTS else float(text) if name in _FLOATS else text
    except ValueError:
        kind = "a whole number" if name in _INTS else "a number"
        raise InvalidInputError(f"{name} must be {kind}, not {text!r}.", hint=SETTING_HELP[name]) from None
    try:
        GenerationConfig().override(**{name: value})
    except InvalidInputError as exc:  # one phrase: what this setting accepts
        raise InvalidInputError(exc.message.removeprefix("Bad generation settings: "), hint=SETTING_HELP[name]) from None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(name: str, value: Any) -> Any:
    """JSON's 20.0 as 20 for an int setting, 1 as 1.0 for a float one; anything else unchanged (then validated)."""
    if name in _INTS and isinstance(value, float) and value.is_integer():
        return int(value)
    if name in _FLOATS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class Setting:
    """An attribute of an agent that reads, and overrides, one field of the agent's `generation`.

    `MemoryManager.max_tokens`, `AnswerAgent.k` and the like: assigning one
    replaces the agent's `generation` with a copy (`override`), so the
    object the agent decodes with stays the one place its settings live.
    """

    def __init__(self, field: str, doc: str = "") -> None:
        self.field = field
        self.__doc__ = doc or f"`generation.{field}`"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.generation, self.field)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.generation = obj.generation.override(**{self.field: value})
