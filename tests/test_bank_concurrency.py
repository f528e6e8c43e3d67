"""Processes racing on one bank file: a lock is waited out or reported as a lock, never as corruption."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.bank import MemoryBank
from edge.embedder import HashEmbedder
from edge.errors import BankLockedError, CorruptBankError

REPO = Path(__file__).resolve().parents[1]

# Holds SQLite's EXCLUSIVE lock on a file in rollback-journal mode, as a process does for the moment it
# switches a new file to WAL: another connection's switch then fails at once with SQLITE_BUSY, busy timeout
# or not. Here the moment lasts until stdin closes.
HOLD_EXCLUSIVE = """
import sys
from edge.bank import db
conn = db.connect(sys.argv[1])
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""

# Holds the write lock of an existing bank (WAL mode) until stdin closes.
HOLD_WRITE = """
import sys
from edge.bank import db
conn = db.connect(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (key, value) VALUES ('holder', 'x')")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def hold(code: str, path: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert holder.stdout.readline().strip() == "locked"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_new_bank_locked_by_another_process_is_reported_locked_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    holder = hold(HOLD_EXCLUSIVE, path)
    try:
        started = time.monotonic()
        with pytest.raises(BankLockedError) as locked:
            MemoryBank.open(path, HashEmbedder(), busy_timeout_ms=600)
        waited = time.monotonic() - started
    finally:
        release(holder)
    assert not isinstance(locked.value, CorruptBankError)
    assert "locked" in locked.value.message and "move it aside" not in (locked.value.hint or "")
    assert waited >= 0.5  # the busy moment was waited out for the whole timeout before giving up
    with MemoryBank.open(path, HashEmbedder()) as bank:  # once the other process is done, the bank is created
        bank.add("created after the lock was released")
        assert bank.check() == []


def test_a_lock_held_briefly_while_a_new_bank_is_created_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    holder = hold(HOLD_EXCLUSIVE, path)
    releaser = threading.Timer(0.4, release, args=(holder,))
    releaser.start()
    started = time.monotonic()
    try:
        with MemoryBank.open(path, HashEmbedder(), busy_timeout_ms=10_000) as bank:
            assert bank.count() == 0
    finally:
        releaser.join()
    assert time.monotonic() - started >= 0.3


def test_a_bank_whose_write_lock_stays_held_is_reported_locked(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with MemoryBank.open(path, HashEmbedder()) as bank:
        bank.add("an existing memory")
    holder = hold(HOLD_WRITE, path)
    try:
        # Opening a bank at this edge's schema writes nothing: reading goes on while another process writes.
        with MemoryBank.open(path, HashEmbedder(), busy_timeout_ms=300) as bank:
            assert [m.text for m in bank.list()] == ["an existing memory"]
            with pytest.raises(BankLockedError):
                bank.add("a change that must wait for the lock")
    finally:
        release(holder)
    with MemoryBank.open(path, HashEmbedder()) as bank:
        assert [m.text for m in bank.list()] == ["an existing memory"]


@pytest.mark.parametrize("damage", ["random bytes", "overwritten header"])
def test_a_really_corrupt_file_is_still_reported_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bank.db"
    if damage == "random bytes":
        path.write_bytes(os.urandom(8192))
    else:
        with MemoryBank.open(path, HashEmbedder()) as bank:
            bank.add_many([f"memory number {i}" for i in range(20)])
        data = bytearray(path.read_bytes())
        data[0:16] = b"not sqlite at al"
        path.write_bytes(bytes(data))
    started = time.monotonic()
    with pytest.raises(CorruptBankError, match="not a readable SQLite file") as corrupt:
        MemoryBank.open(path, HashEmbedder())
    assert "does not begin as one" in str(corrupt.value) and "--db" in corrupt.value.hint
    assert time.monotonic() - started < 5  # corruption is not retried as if it were a lock
    assert not isinstance(corrupt.value, BankLockedError)


@pytest.mark.slow
def test_four_processes_opening_and_writing_new_banks_at_once_never_fail(tmp_path: Path) -> None:
    out_file = tmp_path / "concurrency.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_concurrency.py"), "--processes", "4", "--opens", "50",
         "--banks", "25", "--out", str(out_file)],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )
    result = json.loads(out_file.read_text())
    assert result["failures"] == 0, result["failure_examples"]
    assert result["memories_in_banks"] == 200 and result["bank_problems"] == []
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_bank_open_while_another_connection_writes_still_checks_sound(tmp_path: Path) -> None:
    """`check` on a connection that has not read since another one wrote: the keyword indexes are sound, and
    are said to be (FTS5 caches its index structure per connection; the check must not judge a stale copy)."""
    from edge.operations import AddOp

    embedder = HashEmbedder(64)
    with MemoryBank.open(tmp_path / "bank.db", embedder, user="u") as first, \
            MemoryBank.open(tmp_path / "bank.db", embedder, user="u") as second:
        first.apply([AddOp("I like tea.", "semantic", None, (), {})], actor="user")
        assert first.check() == []
        second.apply([AddOp("I like green tea a lot.", "semantic", None, (), {})], actor="user")
        second.apply([AddOp("We met in Ghent.", "episodic", "2024-01-01T10:00", ("S:1",),
                            {"turn_id": "S:1", "speaker": "Ana"})], actor="import")
        assert first.check() == [], "a sound bank, read through a connection opened before the writes"
        assert second.check() == []
