"""`edge memory import FILE --user NAME` gives NAME the memories; what the command says is what happened."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.bank import MemoryBank
from edge.bank.jsonl import import_for_user
from edge.cli import cli
from edge.errors import InvalidInputError


def edge(*args: str):
    return CliRunner().invoke(cli, list(args))


def listing(db: Path, user: str) -> list[dict]:
    out = edge("memory", "list", "--db", str(db), "--user", user, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.fixture
def ana_export(tmp_path: Path, minilm) -> Path:
    """An export of ana's memories: two live ones (one updated) and one deleted."""
    dump = tmp_path / "ana.jsonl"
    with MemoryBank.open(tmp_path / "ana.db", minilm, user="ana") as bank:
        locker = bank.add("The locker code is 4812", tier="core")
        bank.update(locker.id, "The locker code is 1288", actor="manager", turn='{"id": "D1:1"}')
        bank.add("Ana swims on Tuesdays")
        gone = bank.add("Ana's old phone number")
        bank.delete(gone.id)
        bank.export_jsonl(dump, user="ana")
    return dump


def test_import_for_a_named_user_gives_that_user_the_memories_as_one_undoable_change(tmp_path: Path, ana_export) -> None:
    db = tmp_path / "ben.db"
    out = edge("memory", "import", str(ana_export), "--db", str(db), "--user", "ben")
    assert out.exit_code == 0, out.output
    assert "imported 2 memories for user 'ben'" in out.output and "1 deleted memory left out" in out.output
    assert sorted(m["text"] for m in listing(db, "ben")) == ["Ana swims on Tuesdays", "The locker code is 1288"]
    assert listing(db, "ana") == []
    history = json.loads(edge("memory", "history", "--db", str(db), "--user", "ben", "--json").stdout)
    assert [(h["action"], h["actor"], h["owner"]) for h in history] == [("ADD", "import", "ben")] * 2
    assert all(h["after"]["owner"] == "ben" for h in history)
    found = json.loads(edge("memory", "search", "locker", "--mode", "keyword", "--db", str(db), "--user", "ben",
                            "--json").stdout)
    assert [h["text"] for h in found] == ["The locker code is 1288"]
    assert edge("memory", "undo", "--db", str(db), "--user", "ben").exit_code == 0
    assert listing(db, "ben") == []


def test_import_for_another_user_of_the_same_bank_copies_with_new_ids(tmp_path: Path, ana_export, minilm) -> None:
    db = tmp_path / "ana.db"  # the bank the export came from
    before = {m["id"]: m["text"] for m in listing(db, "ana")}
    out = edge("memory", "import", str(ana_export), "--db", str(db), "--user", "ben", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert (report["imported"], report["new_ids"], report["file_owner"]) == (2, 2, "ana")
    ben = {m["id"]: m["text"] for m in listing(db, "ben")}
    assert sorted(ben.values()) == sorted(before.values()) and not set(ben) & set(before)
    assert {m["id"]: m["text"] for m in listing(db, "ana")} == before
    with MemoryBank.open(db, minilm) as bank:
        assert bank.check() == []


def test_a_file_of_several_users_is_refused_for_one_user_and_nothing_changes(tmp_path: Path, minilm) -> None:
    dump = tmp_path / "all.jsonl"
    with MemoryBank.open(tmp_path / "a.db", minilm, user="ana") as bank:
        bank.add("Ana likes tea")
        bank.add("Bob likes coffee", user="bob")
        bank.export_jsonl(dump, user=None)
    db = tmp_path / "b.db"
    out = edge("memory", "import", str(dump), "--db", str(db), "--user", "ben")
    assert out.exit_code != 0 and "imported" not in out.output
    assert isinstance(out.exception, InvalidInputError) and "2 users" in out.exception.message
    with MemoryBank.open(db, minilm) as bank:
        assert bank.list(user="ben") == [] and bank.history(user="ben") == []
        with pytest.raises(InvalidInputError, match="would merge them"):
            import_for_user(bank, dump, "ben")


def test_import_without_user_restores_every_owner_as_written_and_says_whose(tmp_path: Path, ana_export) -> None:
    db = tmp_path / "restore.db"
    out = edge("memory", "import", str(ana_export), "--db", str(db))
    assert out.exit_code == 0, out.output
    assert "for 'ana'" in out.output and "history rows" in out.output
    assert len(listing(db, "ana")) == 2 and listing(db, "me") == []


def test_export_says_how_many_memories_it_wrote_and_refuses_all_users_with_a_user(tmp_path: Path, ana_export) -> None:
    db = str(tmp_path / "ana.db")
    mine = edge("memory", "export", str(tmp_path / "me.jsonl"), "--db", db)
    assert mine.exit_code == 0 and "wrote 0 memories" in mine.output and "has no memories" in mine.output
    both = edge("memory", "export", str(tmp_path / "x.jsonl"), "--db", db, "--all-users", "--user", "ana")
    assert both.exit_code == 2 and "--all-users" in both.output
    anas = edge("memory", "export", str(tmp_path / "ana2.jsonl"), "--db", db, "--user", "ana", "--json")
    assert json.loads(anas.stdout)["memories"] == 3 and json.loads(anas.stdout)["owners"] == ["ana"]
