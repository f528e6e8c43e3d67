"""Replies decoded under a JSON schema on llama.cpp are JSON: what the grammar lets through, json.loads takes."""
from __future__ import annotations

import ctypes
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
    llm, lib = backend._llm, backend._lib
    grammar = backend._grammar(schema)
    sampler = lib.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode(), grammar._root.encode())
    try:
        for token in llm.tokenize(prefix.encode(), add_bos=False, special=False):
            lib.llama_sampler_accept(sampler, token)
        n_vocab = llm.n_vocab()
        data = (lib.llama_token_data * n_vocab)()
        view = np.ctypeslib.as_array(data)
        view["id"], view["logit"] = np.arange(n_vocab), 0.0
        array = lib.llama_token_data_array(data, n_vocab, -1, False)
        lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return set(np.nonzero(np.isfinite(np.ctypeslib.as_array(data)["logit"]))[0].tolist())
    finally:
        lib.llama_sampler_free(sampler)


def test_the_grammar_refuses_raw_control_characters_inside_a_json_string(llama_backend) -> None:
    schema = manager_schema(["0", "1"])
    allowed = allowed_after(llama_backend, schema, REPORTED_PREFIX)
    pieces = {t: llama_backend._piece(t).decode("utf-8", errors="ignore") for t in allowed}
    raw_controls = sorted({c for text in pieces.values() for c in text if ord(c) < 0x20 or c == "\x7f"})
    assert raw_controls == []
    assert {"\\", "<", '"'} <= {text[:1] for text in pieces.values()}  # escapes, more text, and the end stay open
    tokenize = llama_backend._llm.tokenize
    for text in ("\\n", "é", "½", "\U0001FAE9", "\u4f60"):  # the newline escape, symbols, emoji, CJK: still text
        assert tokenize(text.encode(), add_bos=False, special=False)[0] in allowed, text


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
    llm, lib = llama_backend._llm, llama_backend._lib
    vocab = llm._model.vocab
    logits = np.zeros(llm.n_vocab(), dtype=np.float32)
    masked = llama_backend._without_controls(None, logits.copy())
    im_start = llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]
    eos = llm._model.token_eos()
    assert lib.llama_vocab_is_control(vocab, im_start) and masked[im_start] == -np.inf
    assert masked[eos] == 0.0  # the end of the reply stays possible
    assert np.isfinite(masked).sum() == llm.n_vocab() - len(llama_backend._controls())


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
    from edge.backends.http import OpenAIHTTPBackend
    from edge.backends.gbnf import schema_gbnf

    schema = {"type": "object", "properties": {"text": {"enum": ["so tired \U0001FAE9"]}}, "required": ["text"]}
    body: dict = {}
    OpenAIHTTPBackend._constrain(None, body, schema, "grammar")  # the request body edge posts (no server needed)
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
