"""Every prompt edge sends to a model, and the schemas of what comes back.

This module is the one source of truth: the runtime agents, training,
export checks and evaluation all import it. `PROMPT_VERSION` is written
into every bundle and every trained adapter; change it whenever a prompt
or a schema changes, since a model is only good at the prompts it was
trained on.

Models never see real memory ids: memories are shown as "0", "1", ... and
the model's references are mapped back (`IdMap`). Small models invent
long ids otherwise, and a constrained decoder can then only pick ids that
were shown.

The prompts live one module per agent (`common`: what every prompt shares,
`manager`, `answer`, `chat`); this package is their one face, and every
name is imported from here.
"""
from __future__ import annotations

from edge.prompts.common import (  # noqa: F401 - the package face
    ANSWER_CONTEXT_TOKENS,
    ANSWER_TOP_K,
    ANSWER_WINDOW_WORDS,
    CHAT_CONTEXT_CHARS,
    CHAT_CORE_CHARS,
    CORE_MEMORY_CHARS,
    DEFAULT_DELETE_CAP,
    EXTRACTIVE_MAX_OPS,
    FACT_TIERS,
    FLAGGED_NOTE,
    IdMap,
    MAX_ANSWER_SPAN_WORDS,
    MAX_MEMORY_TEXT_CHARS,
    MAX_OPS_PER_TURN,
    OP_NAMES,
    PROMPT_VERSION,
    READABLE_PROMPT_VERSIONS,
    REPEAT_PENALTY,
    ShownMemory,
    TEXT_MODES,
    TIERS,
    Turn,
    WORKING_STATE_CHARS,
    flagged,
    memory_line,
    quoted_note,
    show_date,
)
from edge.prompts.manager import (  # noqa: F401 - the package face
    MANAGER_FREE_TEXT,
    MANAGER_SYSTEM,
    ManagerParse,
    ProposedOp,
    manager_messages,
    manager_schema,
    parse_manager_output,
)
from edge.prompts.answer import (  # noqa: F401 - the package face
    ANSWER_SYSTEM,
    ANSWER_SYSTEM_EXTRACTIVE,
    AnswerParse,
    ELLIPSIS,
    UNKNOWN,
    answer_line,
    answer_messages,
    answer_schema,
    answer_spans,
    answer_supported,
    focus,
    focus_memory,
    parse_answer_output,
    supporting,
)
from edge.prompts.chat import (  # noqa: F401 - the package face
    CHAT_SYSTEM,
    STATE_SYSTEM,
    chat_context,
    chat_messages,
    clip_state,
    pack_chat_memories,
    state_messages,
)

__all__ = [
    "ANSWER_CONTEXT_TOKENS",
    "ANSWER_SYSTEM",
    "ANSWER_SYSTEM_EXTRACTIVE",
    "ANSWER_TOP_K",
    "ANSWER_WINDOW_WORDS",
    "AnswerParse",
    "CHAT_CONTEXT_CHARS",
    "CHAT_CORE_CHARS",
    "CHAT_SYSTEM",
    "CORE_MEMORY_CHARS",
    "DEFAULT_DELETE_CAP",
    "ELLIPSIS",
    "EXTRACTIVE_MAX_OPS",
    "FACT_TIERS",
    "FLAGGED_NOTE",
    "IdMap",
    "MANAGER_FREE_TEXT",
    "MANAGER_SYSTEM",
    "MAX_ANSWER_SPAN_WORDS",
    "MAX_MEMORY_TEXT_CHARS",
    "MAX_OPS_PER_TURN",
    "ManagerParse",
    "OP_NAMES",
    "PROMPT_VERSION",
    "ProposedOp",
    "READABLE_PROMPT_VERSIONS",
    "REPEAT_PENALTY",
    "STATE_SYSTEM",
    "ShownMemory",
    "TEXT_MODES",
    "TIERS",
    "Turn",
    "UNKNOWN",
    "WORKING_STATE_CHARS",
    "answer_line",
    "answer_messages",
    "answer_schema",
    "answer_spans",
    "answer_supported",
    "chat_context",
    "chat_messages",
    "clip_state",
    "flagged",
    "focus",
    "focus_memory",
    "manager_messages",
    "manager_schema",
    "memory_line",
    "pack_chat_memories",
    "parse_answer_output",
    "parse_manager_output",
    "quoted_note",
    "show_date",
    "state_messages",
    "supporting",
]
