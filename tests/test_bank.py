"""The memory bank on the real stack: a SQLite file, sqlite-vec, FTS5, MiniLM on onnxruntime."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bank_file import sql

from edge.bank import MAX_TEXT_CHARS, MIN_SIMILARITY, MemoryBank
from edge.embedder import HashEmbedder
from edge.errors import (
    BankError,
    CorruptBankError,
    EmbedderMismatchError,
    InvalidInputError,
    MemoryNotFoundError,
    NothingToUndoError,
)
from edge.operations import AddOp, DeleteOp, UpdateOp


@pytest.fixture
def bank(tmp_path: Path, minilm) -> MemoryBank:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="alice") as opened:
        yield opened


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def snapshot(bank: MemoryBank) -> tuple:
    return (
        sql(bank.path, "SELECT * FROM memories ORDER BY rowid"),
        sql(bank.path, "SELECT * FROM history ORDER BY seq"),
        sql(bank.path, "SELECT rowid, text FROM memory_fts ORDER BY rowid"),
        sql(bank.path, "SELECT rowid FROM memory_vec ORDER BY rowid"),
    )


# ----------------------------------------------------------------------------- basics


def test_memory_has_stable_id_owner_tier_times_and_sources(bank: MemoryBank) -> None:
    memory = bank.add(
        "Alice's sister Maya lives in Lisbon", tier="semantic", event_time="8 May 2023",
        source_turns=["D1:3"], metadata={"confidence": 0.9},
    )
    again = bank.get(memory.id)
    assert again == memory
    assert memory.id.startswith("m") and len(memory.id) == 9
    assert (memory.owner, memory.tier, memory.event_time) == ("alice", "semantic", "8 May 2023")
    assert memory.source_turns == ("D1:3",) and memory.metadata == {"confidence": 0.9}
    assert memory.created_at == memory.updated_at and memory.deleted_at is None


def test_memories_persist_across_processes(tmp_path: Path, minilm) -> None:
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, minilm, user="alice") as bank:
        bank.add("Alice plays the cello every Sunday")
    out = run_python(
        """
        import sys, json
        from edge.bank import MemoryBank
        bank = MemoryBank.open(sys.argv[1], user="alice")
        hits = bank.search("which instrument does she play", k=1)
        bank.add("Alice bought a new bow", actor="api")
        print(json.dumps([h.memory.text for h in hits]))
        """,
        str(db),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["Alice plays the cello every Sunday"]
    with MemoryBank.open(db, minilm, user="alice") as bank:
        assert [m.text for m in bank.list()] == ["Alice plays the cello every Sunday", "Alice bought a new bow"]


def test_search_modes_find_by_meaning_and_by_keyword(bank: MemoryBank) -> None:
    bank.add_many([
        "Alice adopted a golden retriever puppy named Biscuit",
        "Alice works as a nurse at the city hospital",
        "Alice's favourite food is spicy ramen",
        "Alice went hiking in the Alps last summer",
    ])
    vector = bank.search("does she have any pets?", mode="vector", k=1)
    assert vector[0].memory.text.startswith("Alice adopted a golden retriever")
    keyword = bank.search("ramen", mode="keyword", k=3)
    assert [h.memory.text for h in keyword] == ["Alice's favourite food is spicy ramen"]
    hybrid = bank.search("what is her job at the hospital", mode="hybrid", k=2)
    assert hybrid[0].memory.text == "Alice works as a nurse at the city hospital"
    assert len(bank.search("Alice", k=3)) == 3
    assert [h.rank for h in hybrid] == [1, 2]


def test_min_similarity_keeps_keyword_matches_and_close_hits_only(bank: MemoryBank) -> None:
    """The search box's filter (chat app and `edge memory search`): k nearest is not "matching"."""
    bank.add_many(["Alice adopted a cat named Luna", "Alice works as a nurse in Lisbon", "Alice likes green tea"])
    everything = bank.search("pets", k=10)
    assert len(everything) == 3  # without the filter, every memory is somewhere among the nearest
    by_meaning = bank.search("pets", k=10, min_similarity=MIN_SIMILARITY)
    assert [h.memory.text for h in by_meaning] == ["Alice adopted a cat named Luna"]
    by_keyword = bank.search("Lisbon", k=10, min_similarity=MIN_SIMILARITY)
    assert [h.memory.text for h in by_keyword] == ["Alice works as a nurse in Lisbon"]
    vector_only = bank.search("pets", k=10, mode="vector", min_similarity=MIN_SIMILARITY)
    assert [h.memory.text for h in vector_only] == ["Alice adopted a cat named Luna"]
    assert all(h.score >= MIN_SIMILARITY for h in vector_only)
    assert bank.search("quantum chromodynamics", k=10, min_similarity=MIN_SIMILARITY) == []


def test_keyword_search_accepts_any_text(bank: MemoryBank) -> None:
    bank.add("Alice said: \"NEAR\" OR AND * ^ are words too")
    assert bank.search('"NEAR" OR AND * ^ (', mode="keyword")
    assert bank.search("*** ???", mode="keyword") == []


def test_one_owner_never_sees_another_owners_memories(bank: MemoryBank) -> None:
    secret = bank.add("Bob's bank PIN is 4321", user="bob")
    bank.add("Alice's favourite colour is green")
    for mode in ("vector", "keyword", "hybrid"):
        hits = bank.search("bank PIN 4321", mode=mode, k=50)
        assert all(h.memory.owner == "alice" for h in hits), mode
    assert bank.search("bank PIN", user="bob", mode="keyword")[0].memory.id == secret.id
    assert [m.owner for m in bank.list()] == ["alice"]
    with pytest.raises(MemoryNotFoundError):
        bank.get(secret.id)
    with pytest.raises(MemoryNotFoundError):
        bank.update(secret.id, "Bob's PIN is 0000")
    with pytest.raises(MemoryNotFoundError):
        bank.delete(secret.id)
    assert bank.get(secret.id, user="bob").text == "Bob's bank PIN is 4321"


# ----------------------------------------------------------------------------- history and undo


def test_every_change_writes_history_with_before_after_actor_and_turn(bank: MemoryBank) -> None:
    memory = bank.add("Alice lives in Porto", actor="manager", turn="D1:1")
    bank.update(memory.id, "Alice lives in Lisbon", actor="user", turn="D2:4")
    bank.delete(memory.id, actor="api")
    rows = bank.history(memory.id)
    assert [(r.action, r.actor, r.turn) for r in rows] == [
        ("ADD", "manager", "D1:1"), ("UPDATE", "user", "D2:4"), ("DELETE", "api", None),
    ]
    assert rows[0].before is None and rows[0].after["text"] == "Alice lives in Porto"
    assert rows[1].before["text"] == "Alice lives in Porto" and rows[1].after["text"] == "Alice lives in Lisbon"
    assert rows[2].after["deleted_at"] is not None


def test_delete_is_soft_and_undoable(bank: MemoryBank) -> None:
    memory = bank.add("Alice is allergic to peanuts")
    bank.delete(memory.id)
    assert bank.search("peanut allergy", k=5) == []
    assert bank.list() == [] and bank.list(include_deleted=True)[0].id == memory.id
    undone = bank.undo()
    assert [u.action for u in undone] == ["UNDO"]
    assert bank.search("peanut allergy", k=1)[0].memory.id == memory.id
    assert bank.get(memory.id).deleted_at is None
    assert bank.check() == []


def test_undo_reverts_updates_and_adds_newest_first(bank: MemoryBank) -> None:
    first = bank.add("Alice drives a red car")
    bank.update(first.id, "Alice drives a blue car")
    second = bank.add("Alice has two cats")
    bank.undo(steps=2)
    assert bank.get(first.id).text == "Alice drives a red car"
    assert bank.get(second.id).deleted_at is not None
    assert bank.search("cats", mode="keyword") == []
    assert [h.undone_by is not None for h in bank.history(first.id)] == [False, True, False]
    bank.undo()
    assert bank.list() == []
    with pytest.raises(NothingToUndoError):
        bank.undo()


def test_undo_reverts_a_whole_apply_as_one_change(bank: MemoryBank) -> None:
    kept = bank.add("Alice speaks Portuguese")
    bank.apply([AddOp("Alice learns Japanese"), UpdateOp(kept.id, "Alice speaks Portuguese and Spanish")], turn="t9")
    bank.undo()
    assert [m.text for m in bank.list()] == ["Alice speaks Portuguese"]


def test_undo_only_touches_the_callers_own_changes(bank: MemoryBank) -> None:
    mine = bank.add("Alice likes jazz")
    bank.add("Bob likes techno", user="bob")
    bank.undo()
    assert bank.get(mine.id).deleted_at is not None
    assert bank.count(user="bob") == 1


# ----------------------------------------------------------------------------- validation keeps the bank as it was


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ("   \n ", "empty"), (b"bytes", "bytes"), ("x" * (MAX_TEXT_CHARS + 1), "at most"),
     ("PNG\x00\x01\x02 binary", "binary"), (42, "string")],
)
def test_bad_text_is_refused_and_nothing_changes(bank: MemoryBank, text, message: str) -> None:
    bank.add("Alice is a chemist")
    before = snapshot(bank)
    with pytest.raises(InvalidInputError, match=message):
        bank.add(text)
    assert snapshot(bank) == before


def test_an_apply_with_one_bad_op_applies_nothing(bank: MemoryBank) -> None:
    keep = bank.add("Alice was born in 1990")
    before = snapshot(bank)
    with pytest.raises(MemoryNotFoundError):
        bank.apply([AddOp("Alice has a brother"), UpdateOp(keep.id, "Alice was born in 1991"), DeleteOp("mnotthere")])
    assert snapshot(bank) == before


# ----------------------------------------------------------------------------- file-level guarantees


def test_embedder_of_another_dimension_is_refused(tmp_path: Path, minilm) -> None:
    db = tmp_path / "bank.db"
    MemoryBank.open(db, minilm).close()
    with pytest.raises(EmbedderMismatchError, match="384-d.*768-d"):
        MemoryBank.open(db, HashEmbedder(768))
    with pytest.raises(EmbedderMismatchError, match="all-MiniLM-L6-v2"):
        MemoryBank.open(db, HashEmbedder(384))


def test_schema_steps_are_recorded_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, HashEmbedder()) as bank:
        assert bank.schema_version() == ["m001_memories_and_history", "m002_search_indexes", "m003_binary_vectors",
                                         "m004_episodic_log_and_superseded_facts", "m005_turns_keyword_index",
                                         "m006_substring_index"]
        assert sql(db, "PRAGMA user_version") == [(6,)]
        assert sql(db, "PRAGMA journal_mode") == [("wal",)]
        sql(db, "INSERT INTO migrations VALUES ('m999_from_the_future', 'x')")
    with pytest.raises(BankError, match="newer edge"):
        MemoryBank.open(db, HashEmbedder())


def test_corrupted_file_gives_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(CorruptBankError, match="not a readable SQLite file"):
        MemoryBank.open(garbage, HashEmbedder())
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, HashEmbedder()) as bank:
        bank.add_many([f"memory number {i}" for i in range(50)])
    data = bytearray(db.read_bytes())
    data[0:16] = b"not sqlite at al"
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptBankError):
        MemoryBank.open(db, HashEmbedder())


def test_a_sqlite_file_of_another_program_is_not_taken_for_a_bank(tmp_path: Path) -> None:
    from edge.bank import db as sqlite

    other = tmp_path / "other.db"
    conn = sqlite.connect(other)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(CorruptBankError, match="not an edge memory bank"):
        MemoryBank.open(other, HashEmbedder())


def test_jsonl_round_trip_is_exact_with_history(tmp_path: Path, bank: MemoryBank, minilm) -> None:
    a = bank.add("Alice lives in Porto", tier="core", source_turns=["D1:1"], metadata={"k": [1, 2]})
    bank.update(a.id, "Alice lives in Lisbon — ünïcödé ok", turn="D2:1", actor="manager")
    b = bank.add("Alice visited Rome", tier="episodic", event_time="2023-05-08")
    bank.delete(b.id)
    bank.undo()
    bank.add("Bob's secret", user="bob")
    first = tmp_path / "first.jsonl"
    assert bank.export_jsonl(first, user=None) > 0
    with MemoryBank.open(tmp_path / "copy.db", minilm) as copy:
        assert copy.import_jsonl(first) == 3
        second = tmp_path / "second.jsonl"
        copy.export_jsonl(second, user=None)
        assert second.read_text() == first.read_text()
        assert copy.check() == []
        assert copy.search("where does she live", user="alice", k=1)[0].memory.id == a.id
        before = snapshot(copy)
        with pytest.raises(BankError, match="already in the bank"):
            copy.import_jsonl(first)
        assert snapshot(copy) == before


def test_import_of_a_malformed_file_changes_nothing(tmp_path: Path, bank: MemoryBank) -> None:
    bank.add("Alice is vegetarian")
    before = snapshot(bank)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "header", "format": "edge-memory-bank", "version": 1}\n{"kind": "memory", "oops": 1}\n')
    with pytest.raises(InvalidInputError):
        bank.import_jsonl(bad)
    bad.write_text("this is not json\n")
    with pytest.raises(InvalidInputError):
        bank.import_jsonl(bad)
    assert snapshot(bank) == before


# ----------------------------------------------------------------------------- crashes and concurrency

WRITER = """
import os, signal, sys
from edge.bank import MemoryBank
from edge.embedder import HashEmbedder
from edge.operations import AddOp
bank = MemoryBank.open(sys.argv[1], HashEmbedder(), user=sys.argv[2])
mode = sys.argv[3]
if mode == "die-inside":
    # Kill this process in the middle of a three-operation apply, after its second memory is written.
    original = bank.index.add
    calls = []
    def dying_add(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    bank.index.add = dying_add
    bank.apply([AddOp("first of three"), AddOp("second of three"), AddOp("third of three")])
else:
    count = int(mode)
    for i in range(count):
        bank.apply([AddOp(f"{sys.argv[2]} memory {i}"), AddOp(f"{sys.argv[2]} twin {i}")])
    print("done")
"""


def test_a_process_killed_mid_write_leaves_no_half_operation(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, HashEmbedder(), user="alice") as bank:
        bank.add("before the crash")
    out = run_python(WRITER, str(db), "alice", "die-inside")
    assert out.returncode == -signal.SIGKILL
    with MemoryBank.open(db, HashEmbedder(), user="alice") as bank:
        assert [m.text for m in bank.list()] == ["before the crash"]
        assert len(bank.history()) == 1
        assert bank.check() == []


def test_a_writer_killed_at_random_leaves_the_bank_consistent(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    MemoryBank.open(db, HashEmbedder()).close()
    for delay in (0.8, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "alice", "100000"], env=os.environ.copy())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with MemoryBank.open(db, HashEmbedder(), user="alice") as bank:
        assert bank.check() == []
        count = bank.count()
        assert count > 0 and count % 2 == 0, "the two ops of one apply land together"
        assert len(bank.history()) == count


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    MemoryBank.open(db, HashEmbedder()).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), user, "150"], env=os.environ.copy(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for user in ("alice", "bob")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with MemoryBank.open(db, HashEmbedder()) as bank:
        assert bank.count(user="alice") == 300 and bank.count(user="bob") == 300
        assert len(bank.history(user="alice")) == 300
        assert bank.check() == []


def test_an_empty_or_unprintable_owner_is_refused_by_every_call(bank: MemoryBank, tmp_path: Path) -> None:
    """An empty name once read as "this bank's user" in some calls and "every user" in others."""
    bank.add("Alice likes tea")
    bank.add("Bob likes coffee", user="bob")
    before = sql(bank.path, "SELECT * FROM memories ORDER BY rowid")
    for call in (lambda: bank.list(user=""), lambda: bank.add("x", user="  "), lambda: bank.history(user=""),
                 lambda: bank.search("tea", user=""), lambda: bank.undo(user=""),
                 lambda: bank.export_jsonl(tmp_path / "out.jsonl", user=""), lambda: list(bank.iter_memories(owner="")),
                 lambda: bank.add("x", user="bo\nb")):
        with pytest.raises(InvalidInputError):
            call()
    assert sql(bank.path, "SELECT * FROM memories ORDER BY rowid") == before
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(InvalidInputError, match="user name is empty"):
        MemoryBank.open(tmp_path / "other.db", HashEmbedder(), user="")
    assert not (tmp_path / "other.db").exists()
    assert [m.text for m in bank.list(user=" bob ")] == ["Bob likes coffee"]  # trimmed, as everywhere


def test_a_full_disk_is_said_as_such_and_the_bank_is_as_it_was(bank: MemoryBank) -> None:
    """SQLite rolls a transaction back itself when the disk is full; our ROLLBACK after it raised "cannot
    rollback - no transaction is active", which hid the cause. The file's page limit stands in for the disk."""
    bank.add("Alice likes tea")
    before = snapshot(bank)
    bank.pragma("max_page_count", bank.pragma("page_count"))
    with pytest.raises(BankError, match="the disk is full .*Nothing of this change was written") as raised:
        bank.add_many([f"Alice wrote note {i}: " + "word " * 700 for i in range(200)])
    assert "Free some disk space" in raised.value.hint and "no transaction is active" not in raised.value.message
    assert snapshot(bank) == before
    bank.pragma("max_page_count", 1073741823)  # space again: the bank takes writes as before
    bank.add("Alice likes coffee")
    assert bank.count() == 2


def test_an_invisible_character_inside_a_word_neither_hides_it_from_search_nor_makes_it_new(bank: MemoryBank) -> None:
    """A zero-width space or a soft hyphen inside "invoice" hid it from keyword search."""
    spaced = bank.add("Pay the in\u200bvoice from the plumber")
    hyphened = bank.add("Ana\u00adlyse the electricity bill")
    assert bank.get(spaced.id).text == "Pay the in\u200bvoice from the plumber"  # stored as typed
    assert [h.memory.id for h in bank.search("invoice", mode="keyword")] == [spaced.id]
    assert [h.memory.id for h in bank.search("analyse", mode="keyword")] == [hyphened.id]
    assert [h.memory.id for h in bank.search("in\u200bvoice", mode="keyword")] == [spaced.id]
    assert bank.search("plumber invoice", mode="hybrid")[0].memory.id == spaced.id


def test_a_bank_from_before_the_substring_index_gets_it_filled_when_opened(tmp_path: Path) -> None:
    """m006 indexes the texts already in the bank that the keyword tables cannot split, and only those."""
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, HashEmbedder(), user="ana") as bank:
        chinese = bank.add("我的妹妹住在里斯本").id
        bank.add("My sister lives in Lisbon")
        turn = bank.add("I write C++ for a living", tier="episodic", metadata={"speaker": "Ana"}).id
    sql(db, "DROP TABLE memory_tri")
    sql(db, "DELETE FROM migrations WHERE name = 'm006_substring_index'")
    with MemoryBank.open(db, HashEmbedder(), user="ana") as bank:
        assert [h.memory.id for h in bank.search("里斯本", mode="keyword")] == [chinese]
        assert [h.memory.id for h in bank.search("c++", mode="keyword")] == [turn]
        assert sql(db, "SELECT rowid, text FROM memory_tri ORDER BY rowid") == [
            (1, "我的妹妹住在里斯本"), (3, "Ana: I write C++ for a living")]
        assert bank.check() == []
