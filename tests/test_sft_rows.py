"""The warm start learns the tokens served decoding decides: the grammar's branch points of the gold reply."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("llguidance")

from edge.embedder import HashEmbedder  # noqa: E402
from edge.train.episodes import gold_operation, synthetic_manager_episodes  # noqa: E402
from edge.train.synthetic import generate  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from edge.train.base_model import load_base

    return load_base("bundled")[1]


@pytest.fixture(scope="module")
def constraint(tokenizer):
    from edge.train.constrained import SchemaConstraint

    return SchemaConstraint.for_tokenizer(tokenizer)


@pytest.fixture(scope="module")
def episodes():
    return synthetic_manager_episodes(generate("dev", 2), HashEmbedder())


def _first(episodes, op: str):
    return next(e for e in episodes if gold_operation(e) == op)


def test_only_the_operation_id_and_clause_choice_are_labelled(tokenizer, constraint, episodes) -> None:
    from edge.train.base_model import render_chat
    from edge.train.sft import decision_rows

    change = next(e for e in episodes if gold_operation(e) == "UPDATE" and len(e.shown) > 1)  # the id is a choice
    [row] = decision_rows([change], tokenizer, constraint)
    prompt_length = len(tokenizer(render_chat(tokenizer, change.messages()), add_special_tokens=False)["input_ids"])
    assert row["input_ids"][prompt_length:] == (tokenizer(change.gold_reply(), add_special_tokens=False)["input_ids"]
                                                + [tokenizer.eos_token_id])
    assert all(label == -100 for label in row["labels"][:prompt_length])
    labelled = [(i, t) for i, t in enumerate(row["labels"]) if t != -100]
    assert all(row["input_ids"][i] == t for i, t in labelled)
    words = [tokenizer.decode([t]).strip() for _, t in labelled]
    gold = json.loads(change.gold_reply())["ops"][0]
    assert words[0] == "UPDATE"
    assert gold["id"] in words
    reply_tokens = len(row["input_ids"]) - prompt_length
    assert len(labelled) < reply_tokens / 3  # the JSON frame and the copied clause are the grammar's, not learned
    lone = next(e for e in episodes if gold_operation(e) == "UPDATE" and len(e.shown) == 1)
    [row] = decision_rows([lone], tokenizer, constraint)
    assert json.loads(lone.gold_reply())["ops"][0]["id"] not in [tokenizer.decode([t]).strip() for t in row["labels"]
                                                                 if t != -100]  # one fact shown: the grammar's id


def test_a_noop_is_labelled_at_its_operation_only(tokenizer, constraint, episodes) -> None:
    from edge.train.sft import decision_rows

    [row] = decision_rows([_first(episodes, "NOOP")], tokenizer, constraint)
    labelled = [tokenizer.decode([t]) for t in row["labels"] if t != -100]
    assert len(labelled) == 1 and "NOOPS".startswith(labelled[0].strip().strip('"'))


def test_a_reply_outside_the_grammar_is_an_error(tokenizer, constraint, episodes) -> None:
    change = _first(episodes, "UPDATE")
    bad = tokenizer('{"ops": [{"op": "MERGE"}]}', add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="refuses token"):
        constraint.choice_flags(change.schema(), bad)


def test_choices_need_the_constraint(tokenizer, episodes, tmp_path) -> None:
    from edge.train.sft import warm_start

    with pytest.raises(ValueError, match="constraint"):
        warm_start(None, tokenizer, episodes[:1], None, steps=1, learning_rate=1e-3, batch_size=1, seed=0,
                   out=tmp_path, use_cpu=True, loss_tokens="choices")
