"""The Memory Manager: keeps every turn, and turns what it states into checked facts.

For each turn:
1. The turn itself is kept verbatim in the episodic log (speaker, absolute
   time, turn id, its relative dates resolved against that time).
2. The related facts are retrieved and shown to the model under local ids
   ("0", "1", ...); the model's reply is decoded under the JSON schema of
   `edge.prompts`. With extractive memory (the default bundle) a fact's text
   can only be one of the turn's clauses, so the model chooses what to keep.
3. Every operation is validated: ids it was shown, the delete cap, a text
   grounded in what was said (`edge.grounding`), no instruction-like text,
   no retiring of a fact the turn just repeated, no change to a fact another
   speaker said (`speaks_for`).
4. The log entry and what survives are applied in one bank transaction. An
   UPDATE or DELETE supersedes the old fact (kept, valid until this turn)
   instead of destroying it. An EXTEND (offered with
   `generation.consolidation = "extend"`) grows a fact of the turn's speaker
   by one clause of the turn: a consolidated fact citing every turn it
   draws on, whose earlier text is in history (undo restores it).
A reply that cannot be parsed is retried once; after that the turn is a
NOOP with the reason logged, and the turn is still kept. A model that fails
outright (a server gone away) leaves the turn kept and the error raised;
`edge.Agent` then has the Manager go over the turn once the model answers
again (`process(..., already_logged=True)`). So does a turn interrupted by
its `cancel` event (a call cancelled, a server stopping): the event is read
before each piece of the turn goes to the model and before the facts are
applied, and once it is set no fact of the turn is applied.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

from edge.backends.base import Backend, Message
from edge.bank import Memory, MemoryBank, searchable
from edge.errors import EdgeError, ModelOutputError, TurnInterruptedError
from edge.generation import GenerationConfig, Setting
from edge.model_calls import adapter_for, shown_memories, to_messages
from edge.operations import AddOp, AppliedOp, ExtendOp, Op, SupersedeOp, consolidated_text
from edge.prompts import (
    CONSOLIDATED_MAX_CHARS,
    DEFAULT_DELETE_CAP,
    EXTEND,
    IdMap,
    ManagerParse,
    ProposedOp,
    Turn,
    manager_messages,
    manager_schema,
    parse_manager_output,
    show_date,
)

log = logging.getLogger("edge.manager")

RELATED_K = 5  # facts shown to the Manager per turn: each costs prompt tokens, and only UPDATE/DELETE use them
SHOWN_TEXT_CHARS = 300  # a related fact longer than this is shown cut (user-added memories can be 4,000)
# A word the Manager's UPDATE or DELETE shares with its turn names their topic only when at most this many turns of
# the log say it (`shares_topic`).
RARE_TOPIC_TURNS = 5
MANAGER_TURN_CHARS = 1000  # a longer turn reaches the Manager in pieces of about this size (it is logged whole)


@dataclass
class TurnResult:
    """What the Manager did with one turn: the log entry, the fact operations applied and refused."""

    turn: Turn
    applied: list[AppliedOp] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    error: str | None = None
    raw: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    logged: AppliedOp | None = None  # the turn's entry in the episodic log

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `edge remember --json` and `edge run --json` print).

        `applied` holds each operation whole (seq, action, memory_id, before,
        after: the memory as dicts); `logged` is the id of the turn's entry in
        the episodic log; `seconds` is the wall time of the turn.
        """
        return {
            "turn": {"speaker": self.turn.speaker, "text": self.turn.text, "time": self.turn.time,
                     "turn_id": self.turn.turn_id},
            "logged": self.logged.memory_id if self.logged else None,
            "applied": [asdict(op) for op in self.applied],
            "rejected": [{"op": raw, "reason": reason} for raw, reason in self.rejected],
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def enum_safe(text: str) -> str:
    """A clause as a JSON-schema enum value every grammar converter accepts: double quotes become single ones.

    llama-cpp-python's schema-to-grammar converter (0.3.36) writes an enum
    value holding a double quote or a backslash as a GBNF literal llama.cpp
    cannot parse, so a turn quoting a title ("Charlotte's Web") would fail
    the Manager's call. Quotes carry no content word, so the fact stays
    grounded in the turn.
    """
    return " ".join(text.replace('"', "'").replace("\\", " ").replace("\u201c", "'").replace("\u201d", "'").split())


def turn_reference(turn: Turn) -> str:
    """How a turn is named in history: its id, speaker, time and the start of its text."""
    return json.dumps(
        {"id": turn.turn_id, "speaker": turn.speaker, "time": turn.time, "text": turn.text[:200]}, ensure_ascii=False
    )


def turn_time(turn: Turn) -> datetime | None:
    """The turn's own absolute time (None when it has none); every date in it is resolved against this."""
    from edge.dates import parse_time

    return parse_time(turn.time)


def stamp(at: datetime | None) -> str | None:
    return at.isoformat(timespec="minutes") if at else None


def resolved_dates(text: str, at: datetime | None) -> dict[str, str]:
    """The text's date expressions resolved against the turn's time: {"yesterday": "2025-03-01"}."""
    if at is None:
        return {}
    from edge.dates import resolve_dates

    return {m.text: m.value for m in resolve_dates(text, at)}


def log_entry(turn: Turn, at: datetime | None, dates: dict[str, str]) -> AddOp:
    """The turn as the episodic log keeps it: verbatim, with its speaker, time, id and resolved dates."""
    metadata: dict[str, Any] = {"speaker": turn.speaker, "turn_id": turn.turn_id}
    if dates:
        metadata["dates"] = dates
    return AddOp(turn.text, "episodic", stamp(at) or turn.time, (turn.turn_id,) if turn.turn_id else (), metadata)


def log_entry_for(turn: Turn) -> AddOp:
    """`log_entry` of `turn` at its own time, its relative dates resolved against that time (what `keep` writes)."""
    at = turn_time(turn)
    return log_entry(turn, at, resolved_dates(turn.text, at))


def manager_pieces(text: str, limit: int = MANAGER_TURN_CHARS) -> list[str]:
    """A long turn cut at sentence ends into pieces of at most about `limit` characters, for the Manager."""
    if len(text) <= limit:
        return [text]
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?\n])\s+", text):
        while len(sentence) > limit:  # one sentence longer than a piece: cut at a space
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].lstrip()
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def related_facts(bank: MemoryBank, turn: Turn, *, k: int = RELATED_K, user: str | None = None) -> list[Memory]:
    """The current facts the Manager is shown for `turn`: the `k` closest (hybrid search), core facts first.

    Training builds its Manager episodes with the same search, so a model
    is trained on the facts it will be shown.
    """
    hits = bank.search(f"{turn.speaker}: {turn.text[:MANAGER_TURN_CHARS]}", k=k, user=user, scope="facts")
    core = [h.memory for h in hits if h.memory.tier == "core"]
    return core + [h.memory for h in hits if h.memory.tier != "core"]


def extractive_candidates(turn: Turn) -> list[str]:
    """The texts an extractive fact of `turn` may have: its clauses (`edge.grounding.clauses`, "I" made the
    speaker), each once, as JSON-schema enum values (`enum_safe`), none that reads as an instruction."""
    from edge.grounding import clauses, looks_like_instruction

    return list(dict.fromkeys(enum_safe(c) for c in clauses(turn.text, turn.speaker) if not looks_like_instruction(c)))


class MemoryManager:
    def __init__(
        self,
        backend: Backend,
        bank: MemoryBank,
        *,
        generation: GenerationConfig | None = None,
        related_k: int = RELATED_K,
        delete_cap: int = DEFAULT_DELETE_CAP,
        adapter: str | None = None,
        max_tokens: int | None = None,
        text_mode: str | None = None,
    ) -> None:
        """`generation`: how replies are decoded (a bundle's `Bundle.generation`; default `GenerationConfig()`).

        `max_tokens` / `text_mode` override its `manager_max_tokens` /
        `text_mode`. `adapter` names the LoRA adapter serving the Manager
        (the bundle's `roles.manager.adapter`); None is the base model, and
        a name the backend has not loaded raises `BackendError` when asked.
        """
        self.backend = backend
        self.bank = bank
        self.related_k = related_k
        self.delete_cap = delete_cap
        self.adapter = adapter_for(backend, adapter)  # an adapter the backend lacks fails here, not mid-turn
        self.generation = (generation or GenerationConfig()).override(manager_max_tokens=max_tokens,
                                                                       text_mode=text_mode)

    max_tokens = Setting("manager_max_tokens", "The reply budget, in tokens (`generation.manager_max_tokens`).")
    text_mode = Setting("text_mode", '"extractive" or "free" (`generation.text_mode`).')



    def related(self, turn: Turn, user: str | None = None) -> list[Memory]:
        """Current facts the model should see for this turn (`related_facts`)."""
        return related_facts(self.bank, turn, k=self.related_k, user=user)

    def candidates(self, turn: Turn) -> list[str] | None:
        """The texts a fact may have: `extractive_candidates` with extractive memory, None (free text) otherwise."""
        return extractive_candidates(turn) if self.text_mode == "extractive" else None

    def prompt(self, turn: Turn, related: list[Memory]) -> tuple[IdMap, list[Message], list[Memory]]:
        """The Manager's prompt, built to fit the model's context: the lowest-ranked facts go first."""
        budget = int(self.backend.n_ctx) - self.max_tokens - 16
        kept = list(related)
        while True:
            id_map, shown = shown_memories(kept, max_chars=SHOWN_TEXT_CHARS)
            messages = to_messages(manager_messages(turn, shown, text_mode=self.text_mode,
                                                    ops=self.generation.manager_ops))
            size = sum(self.backend.count_tokens(m.content) + 4 for m in messages)
            if size <= budget or not kept:
                return id_map, messages, kept
            kept = kept[:-1]

    def propose(self, turn: Turn, related: list[Memory]) -> tuple[IdMap, ManagerParse, TurnResult]:
        """Ask the model for operations on `related`; parse and validate them (nothing is applied)."""
        result = TurnResult(turn=turn)
        id_map, messages, _ = self.prompt(turn, related)
        ops = self.generation.manager_ops
        schema = manager_schema(id_map.local_ids, candidates=self.candidates(turn), ops=ops)
        parse = ManagerParse(error="not asked")
        temperatures = (self.generation.temperature, self.generation.retry_temperature)
        for attempt, temperature in enumerate(temperatures, start=1):
            result.attempts = attempt
            try:
                completion = self.backend.complete(
                    messages, schema=schema, max_tokens=self.max_tokens, temperature=temperature,
                    adapter=adapter_for(self.backend, self.adapter),
                )
            except ModelOutputError as exc:  # a backend that checks the schema itself refused the reply
                parse = ManagerParse(error=exc.message)
                log.warning("manager reply unusable (attempt %d): %s", attempt, exc.message)
                continue
            result.raw = completion.text
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            parse = parse_manager_output(completion.text, id_map.local_ids, delete_cap=self.delete_cap, ops=ops)
            if parse.ok:
                break
            log.warning("manager reply unusable (attempt %d): %s: %r", attempt, parse.error, completion.text[:200])
        result.rejected = list(parse.rejected)
        for raw, reason in parse.rejected:
            log.warning("manager op rejected: %s: %r", reason, raw)
        return id_map, parse, result

    def keep(self, turn: Turn, *, user: str | None = None, meta: dict[str, str | None] | None = None) -> AppliedOp:
        """Keep the turn in the episodic log without asking the model (its model is unreachable, or the
        Manager goes over it behind the caller).

        The Manager goes over it later with `process(turn, already_logged=True)`.
        `meta`: bank meta written in the same transaction (`MemoryBank.apply`).
        """
        return self.bank.apply([log_entry_for(turn)], user=user or self.bank.user, actor="manager",
                               turn=turn_reference(turn), meta=meta)[0]

    def process(self, turn: Turn, *, user: str | None = None, already_logged: bool = False,
                cancel: threading.Event | None = None, meta: dict[str, str | None] | None = None) -> TurnResult:
        """Keep the turn in the episodic log and apply the facts the model took from it, in one transaction.

        `already_logged`: the turn is in the log already (kept by `keep` while
        the model was unreachable); only its facts are applied now.
        `cancel`: checked before each piece of the turn goes to the model (one
        model call, two when the reply is retried) and before the facts are
        applied; once set, the turn is kept in the log (unless it is there
        already), no fact of it is applied, and `TurnInterruptedError` is
        raised: a long turn stops within a piece, not after all of them.
        `meta`: bank meta written in the transaction that applies the turn
        (e.g. the turn no longer pending), never when the turn fails.
        """
        start = time.perf_counter()
        owner = user or self.bank.user
        if not turn.turn_id:
            turn = Turn(turn.speaker, turn.text, turn.time, "t" + secrets.token_hex(5))
        at = turn_time(turn)
        dates = resolved_dates(turn.text, at)
        entry = log_entry(turn, at, dates)
        logs = [] if already_logged else [entry]
        pieces = manager_pieces(turn.text)
        result = TurnResult(turn=turn)
        ops: list[Op] = []
        written: set[str] = set()  # the pieces are applied together: none may write what an earlier one wrote
        changed: set[str] = set()  # nor change a fact an earlier piece changed (each read the fact as it was)

        def frequency(word: str) -> int:
            """Turns of the log saying `word`, this one included (written with the facts when not logged yet)."""
            return self.bank.turn_frequency(word, user=owner) + len(logs)

        try:
            for piece in pieces:
                interrupted(cancel)
                part = Turn(turn.speaker, piece, turn.time, turn.turn_id)
                related = self.related(part, owner)
                id_map, parse, piece_result = self.propose(part, related)
                result.raw = piece_result.raw
                result.attempts += piece_result.attempts
                result.prompt_tokens += piece_result.prompt_tokens
                result.completion_tokens += piece_result.completion_tokens
                result.rejected += piece_result.rejected
                if not parse.ok:
                    result.error = f"no usable reply after {piece_result.attempts} attempts: {parse.error}"
                    log.warning("turn %s is a NOOP: %s", turn.turn_id, result.error)
                    continue
                ops += to_bank_ops(parse, id_map, part, related, rejected=result.rejected, written=written,
                                   changed=changed,
                                   frequency=frequency)
            interrupted(cancel)
        except (EdgeError, KeyboardInterrupt):
            # The model failed outright (e.g. a server that went away), or Ctrl-C stopped it: the turn itself
            # is still kept.
            if logs:
                result.logged = self.bank.apply(logs, user=owner, actor="manager", turn=turn_reference(turn))[0]
            raise
        turn_ref = turn_reference(turn)
        if not logs and not ops:
            self.bank.apply([], meta=meta)
            result.seconds = time.perf_counter() - start
            return result
        try:
            applied = self.bank.apply([*logs, *ops], user=owner, actor="manager", turn=turn_ref, meta=meta)
        except EdgeError as exc:
            if not ops:
                raise
            result.error = f"operations refused by the bank: {exc.message}"
            log.warning("turn %s: %s", turn.turn_id, result.error)
            applied = self.bank.apply(logs, user=owner, actor="manager", turn=turn_ref, meta=meta)
        if logs:
            result.logged, applied = applied[0], applied[1:]
        result.applied = applied
        result.seconds = time.perf_counter() - start
        return result

def interrupted(cancel: threading.Event | None) -> None:
    """Raise `TurnInterruptedError` when `cancel` is set (the Manager stops between the pieces of a turn)."""
    if cancel is not None and cancel.is_set():
        raise TurnInterruptedError(
            "The turn was interrupted before the Memory Manager applied its facts.",
            hint="It is kept in the conversation log; the Manager goes over it with the next turn remembered.",
        )


def to_bank_ops(
    parse: ManagerParse, id_map: IdMap, turn: Turn, related: list[Memory],
    *, rejected: list[tuple[dict[str, Any], str]] | None = None, written: set[str] | None = None,
    changed: set[str] | None = None,
    frequency: Callable[[str], int] | None = None,
) -> list[Op]:
    """The model's operations as bank operations, less those that fail a faithfulness check.

    The one place a parsed Manager reply becomes bank operations: the
    runtime Manager and the training reward both call it, so a reward
    scores the bank the served Manager would write. Refused operations are
    appended to `rejected` with their reason: a text not grounded in the
    turn (or the fact it replaces), instruction-like text, a fact already
    stored, an UPDATE that changes nothing, a DELETE of a fact the turn
    just repeated, any change of facts by a turn that reads as an
    instruction. A turn changes only facts its own speaker said, and no
    turn a core memory written by hand (`speaks_for`): an UPDATE of
    either is refused as a change and weighed as an ADD of its text, a
    DELETE of one is refused;
    an UPDATE or DELETE of a fact the turn does not speak of
    (`shares_topic`) is refused.
    An EXTEND's text is a clause of the turn (grounded in the turn alone)
    that joins its fact (`consolidated_text`): refused when the fact already
    says every word of it; weighed as an ADD of the clause when the fact is
    another speaker's, when the joined fact would pass
    `CONSOLIDATED_MAX_CHARS`, or when the clause has a date of its own
    ("yesterday": a consolidated fact keeps one date), or when the fact
    names no speaker (a user's: "I like green tea" is never grown by Maya's
    turn). It becomes an `ExtendOp`: the bank joins the clause to the fact
    as it is then, and the fact cites this turn too.
    UPDATE and DELETE become `SupersedeOp`s: the old fact is kept, valid
    until this turn. `written` holds the (normalised) texts
    already written for this turn and gains the ones kept: the pieces of a
    long turn share one. `changed` likewise holds the ids of the facts an
    earlier piece changed: each piece read the fact as it was before the
    turn, so a second change of it is refused (an EXTEND's clause is weighed
    as a fact of its own), where the bank would refuse the whole turn's facts
    or a second EXTEND would write over the first one's clause.
    """
    from edge.grounding import grounding, looks_like_instruction, restates

    rejected = rejected if rejected is not None else []
    at = turn_time(turn)
    by_id = {m.id: m for m in related}
    instruction = looks_like_instruction(turn.text)
    said_at = stamp(at) or turn.time
    dates = resolved_dates(turn.text, at)
    date_words = [*dates.values(), *(show_date(v) for v in dates.values()), *([show_date(said_at)] if said_at else [])]
    kept: list[Op] = []
    added = written if written is not None else set()
    changed = changed if changed is not None else set()
    for proposed in parse.ops:
        real_id = id_map.real(proposed.id or "")
        target = by_id.get(real_id or "") if proposed.op != "ADD" else None
        text = proposed.text
        if target is not None and not speaks_for(target, turn.speaker):
            owner = target.metadata.get("speaker")
            kept_as = "; its text is weighed as a new fact" if text is not None else ""
            why = (f"the turn is {turn.speaker}'s and cannot change a fact {owner} said" if owner else
                   "a core memory written by hand is changed only by hand (`edge memory update`)")
            rejected.append(({"op": proposed.op, "id": real_id, "text": text}, why + kept_as))
            if text is None:
                continue
            proposed, target = ProposedOp("ADD", text=text, tier="semantic"), None
        if proposed.op == EXTEND and target is not None and text is not None:
            apart = (_kept_apart(target, text, turn.speaker, at)
                     or ("an earlier piece of this turn changed the fact" if target.id in changed else None))
            if apart:
                rejected.append(({"op": EXTEND, "id": real_id, "text": text},
                                 f"{apart}; its text is weighed as a new fact"))
                proposed, target = ProposedOp("ADD", text=text, tier="semantic"), None
        # An UPDATE may keep words of the fact it rewrites; an EXTEND adds only what the turn said.
        sources = [turn.text] + ([target.text] if target and proposed.op == "UPDATE" else [])
        reason = None
        if proposed.op != "ADD" and target is None:
            reason = f"id {proposed.id!r} is not a fact that was shown"
        elif text is not None and "\ufffd" in text and not any("\ufffd" in source for source in sources):
            reason = "the text holds a character that was not said (U+FFFD, a broken decoding)"
        elif text is not None and instruction and looks_like_instruction(text):
            reason = "the text reads as an instruction, not as something that was said"
        elif text is not None and not (g := grounding(text, sources, speaker=turn.speaker, dates=date_words)).grounded:
            reason = f"the text is not grounded in the turn ({', '.join(g.missing) or 'no content word'})"
        elif proposed.op == "ADD" and _already_stored(text or "", related, at):
            reason = "the same fact is already stored"
        elif text is not None and _norm(text) in added:
            reason = "the same text is written twice in one turn"
        elif proposed.op != "ADD" and target is not None and target.id in changed:
            reason = "an earlier piece of this turn changed this fact"
        elif proposed.op != "ADD" and instruction:
            reason = "the turn reads as an instruction; it cannot change or retire facts"
        elif proposed.op == EXTEND and target is not None and grounding(text or "", [target.text],
                                                                        speaker=turn.speaker).grounded:
            reason = "the fact already says this"  # every word of the clause is one the fact (or a name) says
        elif proposed.op in ("UPDATE", "DELETE") and target is not None and not shares_topic(
                target.text, turn.text, turn.speaker, frequency=frequency):
            reason = ("the turn says nothing about this fact (no word in common besides the speaker's name and "
                      f"words said in more than {RARE_TOPIC_TURNS} turns)")
        elif proposed.op == "UPDATE" and target is not None and _norm(target.text) == _norm(text or ""):
            reason = "the update does not change the fact"
        elif proposed.op == "DELETE" and target is not None and restates(target.text, turn.text, speaker=turn.speaker):
            reason = "the turn repeats this fact; repeating a fact never retires it"
        if reason:
            # The id as the user knows it (the memory's), not the prompt's local "0"; an id never shown stays as said.
            rejected.append(({"op": proposed.op, "id": real_id or proposed.id, "text": text}, reason))
            log.info("manager op refused: %s", reason)
            continue
        kept.append(_bank_op(proposed.op, text, target, turn, at, said_at, tier=proposed.tier or "semantic"))
        if text is not None:
            added.add(_norm(text))
        if target is not None:
            changed.add(target.id)
    return kept


def _already_stored(text: str, related: list[Memory], at: datetime | None) -> bool:
    """Whether a shown fact says `text` about the same day: "I went to the dentist yesterday" said a week
    later is another visit, so a text whose dates are relative counts as stored only with the same date."""
    same = [m for m in related if _norm(m.text) == _norm(text)]
    if not same:
        return False
    dates = resolved_dates(text, at)
    if not dates:
        return True
    day = next(iter(dates.values()))[:10]
    return any((m.event_time or "")[:10] == day for m in same)


def _kept_apart(target: Memory, clause: str, speaker: str | None, at: datetime | None) -> str | None:
    """Why an EXTEND's clause is kept as a fact of its own instead of joining `target` (None: it joins)."""
    if not target.metadata.get("speaker"):
        return "the fact names no speaker (a user's or the API's): it is never grown by a turn"
    if resolved_dates(clause, at):
        return "the clause has a date of its own (a consolidated fact keeps one date)"
    if len(consolidated_text(target.text, clause, speaker)) > CONSOLIDATED_MAX_CHARS:
        return f"the fact would pass {CONSOLIDATED_MAX_CHARS} characters"
    return None


def gold_bank_op(name: str, text: str | None, target: Memory | None, turn: Turn) -> Op:
    """The bank operation the Manager's `name` (ADD, UPDATE, EXTEND, DELETE) on `target` becomes for `turn`, with
    no check: how training writes a gold operation so that its bank is the one a right reply would build."""
    at = turn_time(turn)
    return _bank_op(name, text, target, turn, at, stamp(at))


def _bank_op(name: str, text: str | None, target: Memory | None, turn: Turn, at: datetime | None,
             said_at: str | None, *, tier: str = "semantic") -> Op:
    if name == "DELETE":
        assert target is not None
        return SupersedeOp(target.id, None, said_at, turn.turn_id)
    fact_dates = resolved_dates(text or "", at)
    event_time = next(iter(fact_dates.values()), None) or said_at
    metadata: dict[str, Any] = {"speaker": turn.speaker, "said_at": said_at}
    if fact_dates:
        metadata["dates"] = fact_dates
    sources = (turn.turn_id,) if turn.turn_id else ()
    if name == EXTEND:  # joined to the fact as it is when applied; it keeps its date and speaker
        assert target is not None
        return ExtendOp(target.id, text or "", turn.speaker, sources)
    if name == "UPDATE":
        assert target is not None
        return SupersedeOp(target.id, text, said_at, turn.turn_id, event_time, sources, metadata)
    return AddOp(text or "", tier, event_time, sources, metadata)  # type: ignore[arg-type]


def speaks_for(fact: Memory, speaker: str | None) -> bool:
    """Whether a turn by `speaker` may change `fact`: a fact the Manager took from that speaker's own turns.

    A fact with no speaker (added by a user or the API) is anyone's to
    change, except a core memory written so: the user pinned it (`edge
    memory add --tier core`), and a small bank's rare-word topic check let
    "I adopted a dog named Pixel" retire "Tomas has a cat named Miso".
    Another person's reply is the commonest wrong change in a
    conversation between two people: on LoCoMo conv-26 the shipped Manager
    wrote 46 UPDATEs and 5 DELETEs, and most retired one speaker's fact for
    the other's answer ("Researching adoption agencies ..." replaced by
    Melanie's "That photo is stunning!"), hiding true facts from the reader.
    Names compare without case or outer spaces.
    """
    said_by = fact.metadata.get("speaker")
    if not said_by:
        return fact.tier != "core"
    if not speaker:
        return True
    return str(said_by).strip().casefold() == speaker.strip().casefold()


def shares_topic(fact: str, turn: str, speaker: str | None, *,
                 frequency: Callable[[str], int] | None = None) -> bool:
    """Whether a turn speaks of a fact at all: a content word in common, the speaker's name not counted.

    An UPDATE or DELETE of a fact the turn does not mention is the commonest
    way a small model destroys memory (it rewrites memory "0" whatever the
    turn says); this keeps its changes to the facts the turn is about.
    Words of time ("last week", "yesterday", "Monday": `RELATIVE_DATE_WORDS`)
    are no topic either: "I started at the bakery last week" says nothing
    about "Ana adopted Pip last week".

    With `frequency` (a word -> how many turns of the log hold it, this
    turn included: `MemoryBank.turn_frequency`) a word in common counts
    only when it is said in at most `RARE_TOPIC_TURNS` turns: "time", "love" or "great",
    said all through a long conversation, name no topic. On LoCoMo conv-26
    the shipped Manager's 51 supersessions shared only such words with their
    turn but for 10 ("Melanie just took the fam camping in the mountains"
    retired by "It was an awesome time!"), while the 61 of 12 held-out
    synthetic conversations, each naming what changed ("I traded my Subaru
    for a Jeep"), all kept one (counted over each bank's log as built).
    """
    from edge.grounding import content_pairs, content_words

    ignored = set(content_words(speaker or "")) | _time_words()
    common = (set(content_words(fact)) - ignored) & set(content_words(turn))
    if frequency is None or not common:
        return bool(common)
    said = {stem: word for word, stem in content_pairs(turn) if stem in common}
    return any(frequency(word) <= RARE_TOPIC_TURNS for word in said.values())


@lru_cache(maxsize=1)
def _time_words() -> frozenset[str]:
    from edge.dates import RELATIVE_DATE_WORDS
    from edge.grounding import content_words

    return frozenset(content_words(" ".join(RELATIVE_DATE_WORDS)))


def _norm(text: str) -> str:
    """A text as duplicate checks compare it: case, spacing and invisible characters ignored (`searchable`)."""
    return " ".join(searchable(text).lower().split())
