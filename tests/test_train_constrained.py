"""Decoding under the runtime's JSON schemas: the automaton, and the real 135M model sampled through it."""
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
from edge.train.json_automaton import compile_schema
from edge.train.rewards import manager_format_score


def test_manager_automaton_accepts_the_schema_language_only():
    grammar = compile_schema(manager_schema(["0", "1", "2"]))
    valid = [
        '{"ops": [{"op": "NOOP"}]}',
        '{"ops": [{"op": "ADD", "tier": "semantic", "text": "Maya lives in Oslo."}]}',
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
        '{"ops": [{"op": "NOOP"}]} trailing',
    ]
    assert all(grammar.matches(t) for t in valid)
    assert not any(grammar.matches(t) for t in invalid)
    for text in valid:
        parse_json(text, manager_schema(["0", "1", "2"]))  # the runtime's own schema check agrees


def test_without_shown_memories_only_add_and_noop_exist():
    grammar = compile_schema(manager_schema([]))
    assert grammar.matches('{"ops": [{"op": "NOOP"}]}')
    assert not grammar.matches('{"ops": [{"op": "DELETE", "id": "0"}]}')


def test_answer_automaton():
    grammar = compile_schema(answer_schema([str(i) for i in range(12)]))
    assert grammar.matches('{"relevant": [], "answer": "Oslo"}')
    assert grammar.matches('{"relevant": ["11", "3"], "answer": "unknown"}')
    assert not grammar.matches('{"relevant": ["12"], "answer": "Oslo"}')
    assert not grammar.matches('{"answer": "Oslo", "relevant": []}')  # one canonical layout: the prompt's order
    assert compile_schema(answer_schema([])).matches('{"relevant": [], "answer": "x"}')


def test_distance_counts_characters_left_to_close():
    grammar = compile_schema(manager_schema(["0"]))
    state = grammar.walk('{"ops": [{"op": "ADD", "tier": "semantic", "text": "abc')
    assert grammar.distance(state) == len('"}]}')
    assert grammar.is_choice(grammar.walk('{"ops": [{"op": "'))  # ADD / UPDATE / DELETE / NOOP
    assert not grammar.is_choice(state)  # free text


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
        ids = backend._llm.tokenize(text.encode(), add_bos=False, special=True)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == list(ids)
    assert tokenizer.eos_token == "<|im_end|>"  # the end of a chat turn, not <|im_start|> as the GGUF's tokenizer says


def test_sampled_replies_of_the_135m_model_are_always_schema_valid(smol):
    """Sampled at temperature 1 (as in rollouts), with a tight budget, every reply parses: rewards can differ."""
    from edge.train.base_model import render_chat
    from edge.train.constrained import constrained_generate

    model, tokenizer, constraint = smol
    shown = [ShownMemory("0", "semantic", "Maya lives in Lisbon."), ShownMemory("1", "semantic", "Maya has a cat.")]
    messages = manager_messages(Turn("Maya", "Big news: I moved from Lisbon to Oslo!", "8 May, 2023"), shown)
    schema = manager_schema(["0", "1"])
    prompt = render_chat(tokenizer, messages)
    replies = constrained_generate(model, tokenizer, constraint, [prompt] * 3, [schema] * 3, max_new_tokens=40,
                                   temperature=1.0, seed=0, choice_temperature=3.0)
    for reply in replies:
        parse_json(reply, schema)
        parse = parse_manager_output(reply, ["0", "1"])
        assert parse.ok and manager_format_score(reply, parse) >= 0.5, reply
    greedy = constrained_generate(model, tokenizer, constraint, [prompt], [schema], max_new_tokens=16)[0]
    parse_json(greedy, schema)  # cut short by the budget, the JSON is still closed
    assert len(tokenizer(greedy, add_special_tokens=False)["input_ids"]) <= 16

    answer_prompt = render_chat(tokenizer, answer_messages("Where does Maya live?", shown))
    a_schema = answer_schema(["0", "1"])
    for reply in constrained_generate(model, tokenizer, constraint, [answer_prompt] * 2, [a_schema] * 2,
                                      max_new_tokens=24, temperature=1.0, seed=1):
        parse_json(reply, a_schema)
        assert parse_answer_output(reply, ["0", "1"]).error is None
    assert json.loads(greedy)["ops"]


# --------------------------------------------------------------------------- the processor, on a toy vocabulary


class ToyTokenizer:
    """Single characters plus multi-character pieces, like a BPE vocabulary, and one end token."""

    def __init__(self) -> None:
        chars = [chr(c) for c in range(32, 127)]
        pieces = ['{"', '"}', '"}]}', '", "', '": "', "ops", "op", "ADD", "UPDATE", "DELETE", "NOOP", "text",
                  "tier", "semantic", "Maya", " lives", " in", " Oslo", "0", "1", ' {"', "]}", '"]', "abc" * 20]
        self.tokens = ["<eos>"] + chars + pieces
        self.eos_token_id = 0
        self.all_special_ids = [0]
        self.added_tokens_decoder = {0: "<eos>"}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text, add_special_tokens=False):
        return [self.tokens.index(text)]

    def decode(self, ids, **_):
        return "".join(self.tokens[i] for i in ids)

    def batch_decode(self, rows, **_):
        return [self.decode(r) for r in rows]


def _sample(constraint, schema, budget, seed, choice_temperature=1.0):
    import torch

    processor = constraint.processor([schema], budget, choice_temperature=choice_temperature)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros((1, 3), dtype=torch.long)  # a "prompt" of three tokens
    size = len(constraint.vocabulary.texts)
    for _ in range(budget):
        scores = processor(ids, torch.randn((1, size), generator=generator) * 3)
        token = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == 0:
            break
    return constraint.vocabulary, ids[0, 3:].tolist()


@pytest.mark.parametrize("budget", [16, 24, 40, 200])
def test_random_logits_still_give_schema_valid_replies_within_the_budget(budget):
    pytest.importorskip("torch")
    from edge.train.constrained import SchemaConstraint

    constraint = SchemaConstraint.for_tokenizer(ToyTokenizer())
    schema = manager_schema(["0", "1"])
    grammar = constraint.grammar(schema)
    for seed in range(25):
        vocabulary, tokens = _sample(constraint, schema, budget, seed, choice_temperature=2.0)
        assert tokens[-1] == 0 and len(tokens) <= budget, "the reply must end (EOS) inside the budget"
        text = "".join(vocabulary.texts[t] for t in tokens[:-1])
        assert grammar.matches(text), text
        parse_json(text, schema)
        assert manager_format_score(text, parse_manager_output(text, ["0", "1"])) >= 0.5


def test_the_processor_marks_the_tokens_sampled_at_branch_points():
    pytest.importorskip("torch")
    import torch

    from edge.train.constrained import SchemaConstraint

    constraint = SchemaConstraint.for_tokenizer(ToyTokenizer())
    vocab = constraint.vocabulary
    schema = manager_schema(["0"])
    processor = constraint.processor([schema], 40)
    reply = ['{"', "ops", '"', ":", " ", "[", '{"', "op", '": "', "NOOP", '"}', "]}"]
    ids = torch.zeros((1, 1), dtype=torch.long)
    for piece in reply + ["<eos>"]:
        processor(ids, torch.zeros((1, len(vocab.texts))))
        ids = torch.cat([ids, torch.tensor([[vocab.texts.index(piece) if piece != "<eos>" else 0]])], dim=1)
    assert not processor.invalid_rows
    assert "".join(reply) == '{"ops": [{"op": "NOOP"}]}'
    flags = processor.choices[0]
    assert len(flags) == len(reply) + 1  # one flag per generated token, end token included
    assert flags[reply.index("NOOP")] is True  # the operation is a decision
    assert not any(flags[: reply.index("NOOP")])  # the fixed JSON before it is not


def test_exploration_flattens_value_choices_not_the_array_end():
    grammar = compile_schema(manager_schema(["0", "1"]))
    assert grammar.is_value_choice(grammar.walk('{"ops": [{"op": "'))
    assert grammar.is_value_choice(grammar.walk('{"ops": [{"op": "DELETE", "id": "'))
    after_op = grammar.walk('{"ops": [{"op": "NOOP"}')
    assert grammar.is_choice(after_op) and not grammar.is_value_choice(after_op)  # ", " or "]": not explored


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
    assert isinstance(answer, str) and answer
    assert backend.last_completion is not None and backend.last_completion.completion_tokens <= 24


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
