"""Replies decoded under a JSON schema on llama.cpp are JSON: what the grammar lets through, json.loads takes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.backends.base import parse_json
from edge.backends.gbnf import strict_json_strings
from edge.backends.llama_cpp import LlamaCppBackend
from edge.bank import clean_text
from edge.model_calls import to_messages
from edge.prompts import ShownMemory, Turn, manager_messages, manager_schema

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "conv-26.json"
SHOWN = [ShownMemory("0", "semantic", "Caroline is a counsellor."), ShownMemory("1", "semantic", "Melanie paints.")]
# The reply refused as "not JSON" in a LoCoMo run, up to the raw newline the grammar let through.
REPORTED_PREFIX = '{"ops": [{"op": "ADD", "tier": "semantic", "text": "Hi, I\'m Gina. How\'s your new job?</p>'


def allowed_after(backend: LlamaCppBackend, schema: dict, prefix: str) -> set[int]:
    """The tokens the backend's grammar for `schema` allows after `prefix`."""
    with backend.grammar_walk(schema) as walk:
        for token in backend.tokenize(prefix):
            walk.accept(token)
        return set(np.nonzero(walk.allowed())[0].tolist())


def test_the_grammar_refuses_raw_control_characters_inside_a_json_string(llama_backend) -> None:
    schema = manager_schema(["0", "1"])
    allowed = allowed_after(llama_backend, schema, REPORTED_PREFIX)
    pieces = {t: llama_backend.piece(t).decode("utf-8", errors="ignore") for t in allowed}
    raw_controls = sorted({c for text in pieces.values() for c in text if ord(c) < 0x20 or c == "\x7f"})
    assert raw_controls == []
    assert {"\\", "<", '"'} <= {text[:1] for text in pieces.values()}  # escapes, more text, and the end stay open
    for text in ("\\n", "é", "½", "\U0001FAE9", "\u4f60"):  # the newline escape, symbols, emoji, CJK: still text
        assert llama_backend.tokenize(text)[0] in allowed, text


def test_every_string_rule_of_the_converted_grammar_is_replaced() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 5},
                                               "c": {"type": "string", "pattern": "^x.*$"}}}
    original = json_schema_to_gbnf(json.dumps(schema))
    assert 'char ::= [^"\\\\] |' in original  # the converter's own rule, which lets raw newlines through
    strict = strict_json_strings(original)
    rules = dict(line.split(" ::= ", 1) for line in strict.splitlines() if " ::= " in line)
    assert rules["char"].startswith('[^"\\\\\\x00-\\x1F') and rules["dot"] == rules["char"]
    assert [name for name in rules if name not in ("char", "dot")] == [
        name for name in dict(line.split(" ::= ", 1) for line in original.splitlines() if " ::= " in line)
        if name not in ("char", "dot")
    ]


def test_control_tokens_that_do_not_end_generation_are_never_chosen_under_a_schema(llama_backend) -> None:
    eog, control = llama_backend.token_classes()
    masked = llama_backend.without_controls(np.zeros(llama_backend.vocab_size, dtype=np.float32))
    (im_start,) = llama_backend.tokenize("<|im_start|>", special=True)
    assert control[im_start] and masked[im_start] == -np.inf
    assert eog.any() and (masked[eog] == 0.0).all()  # the end of the reply stays possible
    assert np.isfinite(masked).sum() == llama_backend.vocab_size - (control & ~eog).sum()


def locomo_turns(limit: int, chars: int) -> list[Turn]:
    conversation = json.loads(LOCOMO.read_text())[0]["conversation"]
    turns = []
    for number in range(1, 100):
        session = conversation.get(f"session_{number}")
        if session is None:
            break
        when = conversation.get(f"session_{number}_date_time")
        turns += [Turn(t["speaker"], t["text"][:chars], when, t["dia_id"]) for t in session]
    return turns[:limit]


@pytest.mark.skipif(not LOCOMO.is_file(), reason="needs ../shared/data/locomo/conv-26.json")
@pytest.mark.parametrize("turns", [8, pytest.param(40, marks=pytest.mark.slow)])
def test_manager_replies_over_locomo_turns_always_parse_as_json(llama_backend, turns: int) -> None:
    """Greedy (the Manager's first attempt) on every turn, the retry temperature on every fourth."""
    schema = manager_schema([m.id for m in SHOWN])
    failures = []
    for index, turn in enumerate(locomo_turns(turns, chars=160)):
        messages = to_messages(manager_messages(turn, SHOWN))
        for temperature in (0.0, 0.7) if index % 4 == 0 else (0.0,):
            reply = llama_backend.complete(messages, schema=schema, max_tokens=512, temperature=temperature)
            try:
                assert reply.finish_reason == "stop", f"cut at {reply.completion_tokens} tokens"
                json.loads(reply.text)
                ops = parse_json(reply.text, schema)["ops"]  # type: ignore[index]
                for op in ops:
                    if "text" in op:
                        clean_text(op["text"])  # the bank takes every text the grammar let through
            except Exception as exc:  # noqa: BLE001 - collect every failing reply, then report them all
                failures.append(f"{turn.turn_id} t={temperature}: {exc}: {reply.text!r}")
    assert failures == []


def test_an_emoji_in_an_enum_comes_out_as_itself(llama_backend) -> None:
    """Characters beyond the BMP in enum values (a clause of the turn, a span) decode as written, not as U+FFFD."""
    from edge.backends.base import Message

    clauses = ["I am so tired \U0001FAE9 today", "the mango \U0001F96D was sweet", "caf\u00e9 in Gent"]
    for clause in clauses:
        # "type" beside "enum": not a ChoiceReply, whose shortcut would write the option out itself.
        schema = {"type": "object", "properties": {"text": {"type": "string", "enum": [clause]}},
                  "required": ["text"], "additionalProperties": False}
        reply = llama_backend.complete(
            [Message("system", "Copy the sentence the user gives into JSON."), Message("user", clause)],
            schema=schema, max_tokens=40)
        assert reply.completion_tokens > 3
        assert json.loads(reply.text) == {"text": clause}
        assert "\ufffd" not in reply.text


def test_a_server_asked_for_a_grammar_gets_the_in_process_one() -> None:
    """`--structured-output grammar` sends the grammar llama.cpp decodes under in process: JSON strings, whole emoji."""
    from edge.backends.http import constrain_request
    from edge.backends.gbnf import schema_gbnf

    schema = {"type": "object", "properties": {"text": {"enum": ["so tired \U0001FAE9"]}}, "required": ["text"]}
    body: dict = {}
    constrain_request(body, schema, "grammar")  # the request body edge posts (no server needed)
    assert body["grammar"] == schema_gbnf(json.dumps(schema))
    assert "\\U0001FAE9" in body["grammar"] and "\\ud83e" not in body["grammar"].lower()


def test_a_choice_reply_settles_once_one_option_fits() -> None:
    """The fixed start is the key and the options' common prefix; the reply is settled when one option fits."""
    from edge.backends.base import ChoiceReply
    from edge.prompts import answer_schema, manager_schema

    choice = ChoiceReply.of(answer_schema([], spans=["May 7", "May", 'the "blue" one', "unknown"]))
    assert choice is not None and choice.prefix == '{"answer": "'
    assert choice.settled(choice.prefix) is None
    assert choice.settled('{"answer": "th') == '{"answer": "the \\"blue\\" one"}'
    assert json.loads(choice.settled('{"answer": "th')) == {"answer": 'the "blue" one'}
    assert choice.settled('{"answer": "May') is None  # "May" and "May 7" both still fit
    assert choice.settled('{"answer": "May"') == '{"answer": "May"}'
    assert choice.settled('{"answer": "May ') == '{"answer": "May 7"}'
    assert ChoiceReply.of(answer_schema([], spans=["Ghent, Belgium", "Ghent"])).prefix == '{"answer": "Ghent'
    # Replies with more than one decision are decoded token by token.
    assert ChoiceReply.of(answer_schema(["1", "2"])) is None
    assert ChoiceReply.of(manager_schema(["1"], candidates=["I moved.", "Hi!"])) is None


def test_a_choice_is_decoded_until_one_option_fits(llama_backend) -> None:
    """On the real model: the reply is an option, written out once its first tokens rule out the others."""
    from edge.backends.base import Message

    options = ["The library on Korenmarkt opens at nine every weekday morning.",
               "My sister Ines is visiting in May and she is vegetarian.",
               "Porto was where I lived before I moved to Ghent for work."]
    schema = {"type": "object", "properties": {"answer": {"enum": options}}, "required": ["answer"]}
    messages = [Message("system", "Pick the sentence that answers the question."),
                Message("user", "Sentences:\n" + "\n".join(options) + "\nQuestion: Who is visiting in May?")]
    reply = llama_backend.complete(messages, schema=schema, max_tokens=60)
    assert reply.finish_reason == "stop"
    assert json.loads(reply.text)["answer"] in options
    assert reply.completion_tokens <= 3  # the options differ in their first word
    only = llama_backend.complete(messages, schema={**schema, "properties": {"answer": {"enum": [options[1]]}}})
    assert json.loads(only.text) == {"answer": options[1]}
    assert only.completion_tokens == 0 and llama_backend.last_prompt_eval_tokens == 0


def test_a_choice_reply_knows_where_its_options_begin() -> None:
    """`at_options` is the step where the next token picks an option, whatever JSON whitespace came before it."""
    from edge.backends.base import ChoiceReply
    from edge.prompts import answer_schema

    choice = ChoiceReply.of(answer_schema([], spans=["unknown", "violin", "the violin"]))
    assert choice.at_options('{"answer": "') and choice.at_options('{ "answer" :"')
    assert not choice.at_options('{"answer": "v') and not choice.at_options('')
    assert choice.option_rest("unknown") == 'unknown"'
    shared = ChoiceReply.of(answer_schema([], spans=["unknown", "unkempt hair"]))
    assert shared.prefix.endswith('"unk') and shared.at_options(shared.prefix)
    assert shared.option_rest("unknown") == 'nown"'


UNKNOWN_SHOWN = [("1", "Jon", "I like tea with honey in the morning."), ("2", "Gina", "My sister plays the violin.")]
UNKNOWN_ASKED = ["What instrument does Gina's brother play?", "Which city was Jon born in?",
                 "What is the name of Gina's dog?", "What does Jon drink in the morning?"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_choice_bias_holds_unknown_back_by_its_margin(llama_backend, fast: bool) -> None:
    """On the real model and the shipped Answer adapter: a question it answers "unknown" gets a span once
    "unknown" must win by a margin it does not reach, the same through the fast greedy path and llama.cpp's own
    sampler chain; a question it answers with a span is unchanged by any margin."""
    from edge.generation import GenerationConfig
    from edge.prompts import answer_messages, answer_schema, answer_spans

    shown = [ShownMemory(id=i, tier="episodic", text=text, speaker=who) for i, who, text in UNKNOWN_SHOWN]
    llama_backend.fast_grammar = fast
    try:
        def answer(question: str, margin: float) -> str:
            schema = answer_schema([], spans=answer_spans(shown, question))
            reply = llama_backend.complete(to_messages(answer_messages(question, shown)), schema=schema,
                                           max_tokens=40, adapter="answer",
                                           choice_bias=GenerationConfig(unknown_margin=margin).answer_bias)
            return json.loads(reply.text)["answer"]

        free = {q: answer(q, 0.0) for q in UNKNOWN_ASKED}
        held = {q: answer(q, 100.0) for q in UNKNOWN_ASKED}
        assert "unknown" in free.values(), free  # the adapter abstains on some of them
        for question in UNKNOWN_ASKED:
            if free[question] == "unknown":
                assert held[question] != "unknown" and held[question] in answer_spans(shown, question)
            else:
                assert held[question] == free[question]
    finally:
        llama_backend.fast_grammar = True
