"""Decoding under the runtime's grammar in training: the llguidance processor, and the real 135M model sampled
through it. tests/test_constraint_equivalence.py checks the grammar is llama.cpp's, token for token."""
from __future__ import annotations

import json

import pytest

from edge.backends.base import parse_json
from edge.prompts import (
    MAX_MEMORY_TEXT_CHARS,
    MAX_OPS_PER_TURN,
    ShownMemory,
    Turn,
    answer_messages,
    answer_schema,
    manager_messages,
    manager_schema,
    parse_answer_output,
    parse_manager_output,
)
from edge.train.rewards import manager_format_score

pytest.importorskip("llguidance")


# --------------------------------------------------------------------------- the grammar, on a toy vocabulary


class ToyTokenizer:
    """Single characters plus multi-character pieces, like a BPE vocabulary, and one end token."""

    def __init__(self) -> None:
        chars = [chr(c) for c in range(32, 127)]
        pieces = ['{"', '"}', '"}]}', '", "', '": "', "ops", "op", "ADD", "UPDATE", "DELETE", "NOOP", "text",
                  "tier", "semantic", "Maya", " lives", " in", " Oslo", "0", "1", ' {"', "]}", '"]', "abc" * 20]
        self.pieces = ["<eos>"] + chars + [p for p in pieces if p not in chars]
        self.eos_token_id = 0
        self.bos_token_id = None
        self.all_special_ids = [0]
        self.added_tokens_decoder = {0: "<eos>"}

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text, add_special_tokens=False):
        return [self.pieces.index(ch) for ch in text]  # character by character

    def decode(self, ids, **_):
        return "".join(self.pieces[i] for i in ids)


@pytest.fixture(scope="module")
def toy():
    from edge.train.constrained import SchemaConstraint

    tokenizer = ToyTokenizer()
    return tokenizer, SchemaConstraint.for_tokenizer(tokenizer)


def test_the_grammar_is_the_runtimes_json_with_its_bounds(toy):
    tokenizer, constraint = toy
    schema = manager_schema(["0", "1", "2"])
    valid = [
        '{"ops": [{"op": "NOOP"}]}',
        '{"ops":[{"op":"NOOP"}]}',  # llama.cpp's grammar allows one optional space at each break
        '{ "ops" : [ { "op" : "NOOP"} ] } ',
        '{"ops": [{"op": "ADD", "tier": "semantic", "text": "Maya lives in Oslo."}]}',
        '{"ops": [{"op": "ADD", "tier": "semantic", "text": "She said \\"hi\\"\\n"}]}',
        '{"ops": [{"op": "UPDATE", "id": "2", "text": "x"}, {"op": "DELETE", "id": "0"}]}',
        '{"ops": [' + ", ".join(['{"op": "NOOP"}'] * MAX_OPS_PER_TURN) + "]}",
        '{"ops": [{"op": "ADD", "tier": "core", "text": "' + "x" * MAX_MEMORY_TEXT_CHARS + '"}]}',
    ]
    invalid = [
        '{"ops": []}',  # minItems 1
        '{"ops": [{"op": "UPDATE", "id": "3", "text": "x"}]}',  # an id that was not shown
        '{"ops": [{"op": "ADD", "tier": "semantic", "text": ""}]}',  # minLength 1
        '{"ops": [' + ", ".join(['{"op": "NOOP"}'] * (MAX_OPS_PER_TURN + 1)) + "]}",  # maxItems
        '{"ops": [{"op": "ADD", "tier": "core", "text": "' + "x" * (MAX_MEMORY_TEXT_CHARS + 1) + '"}]}',  # maxLength
        '{"ops": [{"op": "ADD", "tier": "private", "text": "x"}]}',  # not a tier
        '{"ops": [{"tier": "core", "op": "ADD", "text": "x"}]}',  # the schema's property order only
        '{"ops":  [{"op": "NOOP"}]}',  # two spaces
        '{"ops": [{"op": "NOOP"}]} trailing',
        '{"ops": [{"op": "NOOP"}]',  # cut off
    ]
    assert [t for t in valid if not constraint.accepts(schema, tokenizer.encode(t))] == []
    assert [t for t in invalid if constraint.accepts(schema, tokenizer.encode(t))] == []
    for text in valid:
        parse_json(text, schema)  # the runtime's own schema check agrees
    assert not constraint.accepts(manager_schema([]), tokenizer.encode('{"ops": [{"op": "DELETE", "id": "0"}]}'))
    answer = answer_schema([str(i) for i in range(12)])
    assert constraint.accepts(answer, tokenizer.encode('{"relevant": ["11", "3"], "answer": "unknown"}'))
    assert not constraint.accepts(answer, tokenizer.encode('{"relevant": ["12"], "answer": "Oslo"}'))


def test_the_lark_grammar_is_the_gbnf_with_bounded_repetitions_and_raw_characters():
    from edge.train.constrained import bounded_repetitions, raw_code_points, schema_lark

    assert bounded_repetitions('s ::= "\\"" char (char (char (char)?)?)? "\\""') == 's ::= "\\"" char char{0,3} "\\""'
    assert bounded_repetitions("s ::= (x (a (a)?)?)? b") == "s ::= (x a{0,2})? b"  # an outer group stays
    assert raw_code_points('t ::= "\\U0001FAE9 caf\\u00e9 \\\\U0001FAE9 \\u0022"') == \
        't ::= "\U0001FAE9 caf\u00e9 \\\\U0001FAE9 \\u0022"'  # an escaped backslash and a quote stay as they are
    lark = schema_lark(manager_schema(["0"], candidates=["so tired \U0001FAE9"]))
    assert "\U0001FAE9" in lark and "\\U" not in lark
    assert f"CHAR{{0,{MAX_MEMORY_TEXT_CHARS - 1}}}" in schema_lark(manager_schema(["0"]))


def _sample(constraint, schema, budget, seed, choice_temperature=1.0):
    import torch

    processor = constraint.processor([schema], choice_temperature=choice_temperature)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros((1, 3), dtype=torch.long)  # a "prompt" of three tokens
    for _ in range(budget):
        scores = processor(ids, torch.randn((1, constraint.vocab_size), generator=generator) * 3)
        token = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == 0:
            break
    processor(ids, torch.zeros((1, constraint.vocab_size)))  # let it see the last token
    assert not processor.invalid_rows
    return ids[0, 3:].tolist()


@pytest.mark.parametrize("budget", [16, 40, 200])
def test_random_logits_stay_in_the_grammar_and_end_only_when_complete(toy, budget):
    """Every token is one the grammar allows, a reply ends only once complete, and one that runs out of tokens is
    cut off where it is: nothing steers it closed (llama.cpp does not either: finish_reason "length")."""
    tokenizer, constraint = toy
    schema = manager_schema(["0", "1"])
    ended = cut = 0
    for seed in range(25):
        tokens = _sample(constraint, schema, budget, seed, choice_temperature=2.0)
        assert len(tokens) <= budget
        if tokens[-1] == 0:
            ended += 1
            text = tokenizer.decode(tokens[:-1])
            assert constraint.accepts(schema, tokens[:-1]), text
            parse_json(text, schema)
            assert manager_format_score(text, parse_manager_output(text, ["0", "1"])) >= 0.5
        else:
            cut += 1
            matcher = constraint.matcher(schema)
            assert matcher.consume_tokens(tokens), tokenizer.decode(tokens)  # a prefix of a reply
    if budget == 16:
        assert cut > 0  # short budgets cut replies off
    assert ended > 0 or budget < 40


def test_the_processor_marks_the_tokens_sampled_at_branch_points(toy):
    import torch

    tokenizer, constraint = toy
    schema = manager_schema(["0"])
    processor = constraint.processor([schema])
    reply = ['{"', "ops", '"', ":", " ", "[", '{"', "op", '": "', "NOOP", '"}', "]}"]
    ids = torch.zeros((1, 1), dtype=torch.long)
    for piece in reply + ["<eos>"]:
        processor(ids, torch.zeros((1, constraint.vocab_size)))
        ids = torch.cat([ids, torch.tensor([[tokenizer.pieces.index(piece)]])], dim=1)
    processor(ids, torch.zeros((1, constraint.vocab_size)))
    assert not processor.invalid_rows and processor.ended == {0}
    assert "".join(reply) == '{"ops": [{"op": "NOOP"}]}'
    flags = processor.choices[0]
    assert len(flags) == len(reply) + 1  # one flag per generated token, end token included
    assert flags[reply.index("NOOP")] is True  # the operation is a decision
    assert not any(flags[: reply.index("NOOP")])  # the fixed JSON before it (optional spaces included) is not


def test_exploration_flattens_value_choices_not_the_array_end(toy):
    import numpy as np
    import torch

    tokenizer, constraint = toy
    schema = manager_schema(["0", "1"])

    def branch(prefix: str) -> tuple[bool, bool]:
        matcher = constraint.matcher(schema)
        assert matcher.consume_tokens(tokenizer.encode(prefix))
        return constraint.branch(constraint.masks([matcher])[0])

    assert branch('{"ops": [{"op": "') == (True, True)  # ADD / UPDATE / DELETE / NOOP
    assert branch('{"ops": [{"op": "DELETE", "id": "') == (True, True)
    assert branch('{"ops": [{"op": "NOOP"}') == (True, False)  # ", " or "]": not explored
    assert branch('{"ops": [{"op": "ADD", "tier": "core", "text": "abc') == (False, False)  # free text
    assert branch('{"ops": [{"op": "NOOP"}]}') == (False, False)  # the end (or a space before it)

    processor = constraint.processor([schema], choice_temperature=4.0)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for token in tokenizer.encode('{"ops": [{"op": "'):
        processor(ids, torch.zeros((1, constraint.vocab_size)))
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    out = processor(ids, torch.ones((1, constraint.vocab_size)))  # a value choice: flattened
    allowed = torch.isfinite(out[0])
    assert {tokenizer.decode([t])[0] for t in allowed.nonzero()[:, 0].tolist()} == set("AUDN")
    assert np.allclose(out[0][allowed].numpy(), 0.25)


# --------------------------------------------------------------------------- with the real model


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from edge.train.base_model import load_base
    from edge.train.constrained import SchemaConstraint

    model, tokenizer, base = load_base("bundled")
    return model, tokenizer, SchemaConstraint.for_tokenizer(tokenizer, [tokenizer.eos_token_id])


def test_transformers_sees_the_prompt_llama_cpp_sees(smol):
    from edge.backends.base import Message
    from edge.backends.llama_cpp import LlamaCppBackend
    from edge.models import bundled_gguf_path
    from edge.train.base_model import render_chat

    _, tokenizer, _ = smol
    messages = manager_messages(Turn("Maya", "I moved to Oslo!", "1:56 pm on 8 May, 2023"),
                                [ShownMemory("0", "semantic", "Maya lives in Lisbon.")])
    text = render_chat(tokenizer, messages)
    with LlamaCppBackend(bundled_gguf_path(), n_ctx=1024) as backend:
        assert text == backend.render_prompt([Message(m["role"], m["content"]) for m in messages])
        ids = backend.tokenize(text, special=True)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == list(ids)
    assert tokenizer.eos_token == "<|im_end|>"  # the end of a chat turn, not <|im_start|> as the GGUF's tokenizer says


def test_sampled_replies_of_the_135m_model_are_always_schema_valid(smol):
    """Sampled at temperature 1 (as in rollouts), every reply that ends is JSON valid under its schema: rewards can
    differ. Replies without free text end well inside the budget; one the budget cuts off stays cut off (a prefix
    of a reply), as the runtime returns it."""
    from edge.train.base_model import render_chat
    from edge.train.constrained import constrained_generate

    model, tokenizer, constraint = smol
    shown = [ShownMemory("0", "semantic", "Maya lives in Lisbon."), ShownMemory("1", "semantic", "Maya has a cat.")]
    turn = Turn("Maya", "Big news: I moved from Lisbon to Oslo! So tired \U0001FAE9 now.", "8 May, 2023")
    prompt = render_chat(tokenizer, manager_messages(turn, shown))
    answer_prompt = render_chat(tokenizer, answer_messages("Where does Maya live?", shown))
    closed = [  # no free text: a reply must end, and parse
        (prompt, manager_schema(["0", "1"], candidates=["I moved from Lisbon to Oslo", "So tired \U0001FAE9 now"])),
        (answer_prompt, answer_schema(["0", "1"], spans=["Lisbon", "Oslo", "unknown"])),
    ]
    free = [(prompt, manager_schema(["0", "1"])), (answer_prompt, answer_schema(["0", "1"]))]
    cases = [c for c in closed for _ in range(2)] + free
    replies = constrained_generate(model, tokenizer, constraint, [p for p, _ in cases], [s for _, s in cases],
                                   max_new_tokens=40, temperature=1.0, seed=0, choice_temperature=3.0,
                                   batch_size=len(cases))
    ended = 0
    for reply, (_, schema) in zip(replies, cases):
        try:
            json.loads(reply)
        except ValueError:
            assert schema in [s for _, s in free], f"a reply without free text did not end: {reply!r}"
            ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            assert constraint.matcher(schema).consume_tokens(ids), reply  # cut off, yet a prefix of a reply
            continue
        ended += 1
        parse_json(reply, schema)
        if "ops" in schema["properties"]:
            parse = parse_manager_output(reply, ["0", "1"])
            assert parse.ok and manager_format_score(reply, parse) >= 0.5, reply
        else:
            assert parse_answer_output(reply, ["0", "1"]).error is None, reply
    assert ended >= 4

    cut = constrained_generate(model, tokenizer, constraint, [prompt], [manager_schema(["0", "1"])],
                               max_new_tokens=6)[0]
    ids = tokenizer(cut, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 6
    with pytest.raises(ValueError):
        json.loads(cut)  # six tokens cannot hold a reply, and it is not forced closed
    assert constraint.matcher(manager_schema(["0", "1"])).consume_tokens(ids)


def test_a_frozen_transformers_model_can_be_the_managers_reader(smol):
    """reader_model = "base": the Answer Agent runs on the transformers model, under the same constraint."""
    from edge.answer import AnswerAgent
    from edge.bank import MemoryBank
    from edge.embedder import HashEmbedder
    from edge.train.hf_backend import TransformersBackend
    from edge.train.rewards import AgentReader

    model, tokenizer, _ = smol
    backend = TransformersBackend(model, tokenizer)
    with MemoryBank.open(":memory:", HashEmbedder()) as bank:
        bank.add("Maya lives in Oslo.")
        bank.add("Maya has a pet cat.")
        agent = AnswerAgent(backend, k=5, max_tokens=24)
        answer = AgentReader(agent)(bank, {"question": "Which city does Maya live in?", "answer": "Oslo"})
        direct = agent.answer(bank, "Which city does Maya live in?")
    assert isinstance(answer, str) and answer
    assert 0 < direct.completion_tokens <= 24


def test_training_decodes_with_llama_cpps_repeat_penalty_window():
    import torch

    from edge.train.constrained import RepeatPenaltyProcessor

    scores = torch.tensor([[2.0, -2.0, 1.0, 3.0]])
    prompt = torch.tensor([[3, 0] * 5])
    penalty = RepeatPenaltyProcessor(1.25, last_n=2)
    assert penalty(prompt, scores.clone()).tolist() == scores.tolist()  # the prompt is never penalised
    context = torch.cat([prompt, torch.tensor([[3, 3, 0, 1]])], dim=1)  # reply: 3, 3, then 0, 1
    out = penalty(context, scores.clone())
    assert out[0].tolist() == pytest.approx([1.6, -2.5, 1.0, 3.0])  # 0 and 1 penalised; 3 is outside the window
    assert RepeatPenaltyProcessor(1.0)(context, scores).tolist() == scores.tolist()


def test_the_runtimes_repeat_penalty_is_the_one_training_decodes_with() -> None:
    """`edge.backends.penalty.repeat_penalised` (llama.cpp's fast path, onnxruntime-genai) against training's
    torch processor: the same logits after a reply with repeated tokens, longer than the 64-token window."""
    import numpy as np
    import torch

    from edge.backends.penalty import PENALTY_LAST_N, repeat_penalised
    from edge.train.constrained import RepeatPenaltyProcessor

    rng = np.random.default_rng(7)
    vocab, prompt = 300, rng.integers(0, 300, size=40)
    reply = np.concatenate([rng.integers(0, 300, size=90), [5, 5, 5, 17, 17]])
    scores = torch.from_numpy(rng.normal(0, 3, size=(1, vocab)).astype(np.float32))
    for penalty in (1.0, 1.2, 1.5):
        processor = RepeatPenaltyProcessor(penalty, last_n=PENALTY_LAST_N)
        processor(torch.from_numpy(prompt[None]), scores.clone())  # the first call fixes the prompt's length
        theirs = processor(torch.from_numpy(np.concatenate([prompt, reply])[None]), scores.clone())[0].numpy()
        ours = repeat_penalised(scores[0].numpy().copy(), reply[-PENALTY_LAST_N:].tolist(), penalty)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        changed = ours != scores[0].numpy()
        assert changed.any() == (penalty != 1.0) and set(np.nonzero(changed)[0]) <= set(reply[-PENALTY_LAST_N:])
