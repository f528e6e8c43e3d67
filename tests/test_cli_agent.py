"""`edge ask` and `edge bundle verify` as a user runs them (`edge run`, `remember`: test_script.py;
`edge eval`: test_eval_end_to_end.py). A scripted model for exact outputs, the real one beside it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge.agent import Agent
from edge.backends.scripted import ScriptedBackend
from edge.bundle import ADAPTER_ROLES
from edge.cli import cli


@pytest.fixture
def scripted_answers(monkeypatch: pytest.MonkeyPatch, default_bundle, tmp_path: Path):
    """`edge ask` on the default bundle's embedder and a real bank, with the Answer Agent's replies queued here."""
    import edge.commands.agent as commands

    backend = ScriptedBackend(adapters=ADAPTER_ROLES)
    monkeypatch.setattr(commands, "open_agent", lambda bundle, db, user: Agent(
        bundle=default_bundle, db=db or tmp_path / "bank.db", user=user, backend=backend))
    return backend


def test_ask_prints_the_answer_and_with_json_the_memories_it_used(tmp_path: Path, scripted_answers) -> None:
    db = str(tmp_path / "bank.db")
    added = CliRunner().invoke(cli, ["memory", "add", "Ana adopted a cat named Luna", "--db", db, "-u", "ana", "--json"])
    memory_id = json.loads(added.stdout)["id"]
    scripted_answers.add(json.dumps({"answer": "Luna"}))
    out = CliRunner().invoke(cli, ["ask", "What is the name of Ana's cat?", "--db", db, "-u", "ana", "--show-memories"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == ["Luna", f"  - {memory_id} Ana adopted a cat named Luna"]

    scripted_answers.add(json.dumps({"answer": "Luna"}))
    out = CliRunner().invoke(cli, ["ask", "What is the name of Ana's cat?", "--db", db, "-u", "ana", "--json", "-k", "3"])
    document = json.loads(out.stdout)
    assert document["answer"] == "Luna" and document["supported"] is True
    assert document["memory_ids"] == [memory_id]
    assert [m["text"] for m in document["memories"]] == ["Ana adopted a cat named Luna"]
    assert document["error"] is None and document["prompt_tokens"] > 0


def test_ask_help_states_the_default_bundles_k() -> None:
    out = CliRunner().invoke(cli, ["ask", "--help"])
    from edge.bundle import DEFAULT_GENERATION

    assert f"{DEFAULT_GENERATION['answer_k']} for the default bundle" in " ".join(out.output.split())


def test_ask_answers_from_memory_on_the_default_bundle(tmp_path: Path, default_bundle) -> None:
    db = str(tmp_path / "bank.db")
    CliRunner().invoke(cli, ["memory", "add", "Ana adopted a cat named Luna", "--db", db, "-u", "ana"])
    out = CliRunner().invoke(cli, ["ask", "What is the name of Ana's cat?", "--json", "--bundle",
                                   str(default_bundle.root), "--db", db, "-u", "ana"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    # The untrained 135M model may not answer well; its answer is still a span of what it was shown, or "unknown".
    assert document["supported"] is True
    assert document["answer"] == "unknown" or document["answer"].lower() in "ana adopted a cat named luna"


def test_bundle_verify_passes_a_sound_bundle_and_names_what_is_wrong_with_a_tampered_one(
    tmp_path: Path, default_bundle
) -> None:
    out = CliRunner().invoke(cli, ["bundle", "verify", str(default_bundle.root), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report == {"bundle": str(default_bundle.root), "ok": True, "problems": []}

    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle.root, copy)
    with open(copy / "embedder" / "tokenizer.json", "r+b") as handle:
        handle.seek(100)
        handle.write(b"XX")
    (copy / "stray.txt").write_text("not in the manifest")
    out = CliRunner().invoke(cli, ["bundle", "verify", str(copy)])
    assert out.exit_code == 1
    assert "checksum mismatch for embedder/tokenizer.json" in out.output
    assert "file not in the manifest: stray.txt" in out.output
    assert f"{copy}: 2 problem(s)" in out.output


def test_a_rejected_operation_is_printed_as_a_person_reads_it() -> None:
    from edge.commands.agent import describe_op

    assert describe_op({"op": "UPDATE", "id": "m12", "text": "Maya lives in Oslo."}) == 'UPDATE m12 "Maya lives in Oslo."'
    assert describe_op({"op": "DELETE", "id": "m3"}) == "DELETE m3"
    assert describe_op({"op": "ADD", "text": "x"}) == 'ADD "x"'
    assert describe_op("not an object") == "not an object"


def test_ask_on_a_bank_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path, scripted_answers) -> None:
    """A mistyped --db answered "unknown" and left a new, empty bank behind."""
    typo = tmp_path / "bnak.db"
    from edge.errors import BankError, InvalidInputError

    out = CliRunner().invoke(cli, ["ask", "Where does Ana live?", "--db", str(typo)])
    assert isinstance(out.exception, BankError) and "No memory bank at" in out.exception.message
    assert "Check --db" in out.exception.hint and not typo.exists()
    empty = CliRunner().invoke(cli, ["ask", "   ", "--db", str(typo)])
    assert isinstance(empty.exception, InvalidInputError) and "The question is empty" in empty.exception.message
    assert empty.exception.hint and not typo.exists(), "the question is checked before anything is opened"


def test_a_refusal_the_pieces_of_a_long_turn_repeat_is_printed_once_with_its_count() -> None:
    """A 95 KB turn printed dozens of identical "rejected DELETE m89e6d30e" lines, one per piece."""
    from edge.commands.agent import describe_turn
    from edge.manager import TurnResult
    from edge.prompts import Turn

    refusal = ({"op": "DELETE", "id": "m89e6d30e"}, "an earlier piece of this turn changed the fact")
    other = ({"op": "ADD", "text": "Ana moved to Ghent"}, "already stored")
    lines = describe_turn(TurnResult(Turn("Ana", "..."), rejected=[refusal, other, refusal, refusal]))
    assert [click.unstyle(line) for line in lines] == [
        "  rejected DELETE m89e6d30e: an earlier piece of this turn changed the fact (x3)",
        '  rejected ADD "Ana moved to Ghent": already stored']
