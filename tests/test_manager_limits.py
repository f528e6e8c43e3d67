"""The Manager keeps working whatever the size of what it is given: long memories, long turns, small contexts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.backends.scripted import ScriptedBackend
from edge.bank import MemoryBank
from edge.manager import MANAGER_TURN_CHARS, MemoryManager
from edge.prompts import Turn

NOOP = json.dumps({"ops": [{"op": "NOOP"}]})


@pytest.fixture
def bank(tmp_path: Path, minilm) -> MemoryBank:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="ana") as opened:
        yield opened


def long_memory(i: int) -> str:
    sentence = f"Ana keeps fountain pen number {i} in a drawer with green ink, blue ink and spare nibs. "
    return (sentence * 60)[:3800]


def test_long_memories_do_not_lock_the_manager_out(bank: MemoryBank, llama_backend) -> None:
    for i in range(5):
        bank.add(long_memory(i))
    manager = MemoryManager(llama_backend, bank, adapter=None)
    for hour in (10, 11):
        result = manager.process(Turn("Ana", "I bought another fountain pen today, a green one.", f"2025-03-02 {hour}:00"))
        assert result.logged is not None, "the turn is kept"
        assert result.error is None or "tokens" not in result.error, result.error
    assert bank.count(tier="episodic") == 2
    kept = [m.text for m in bank.list(tier="semantic", include_superseded=True)][:5]
    assert kept == [long_memory(i).strip() for i in range(5)], "the long memories are kept word for word (current or superseded)"


def test_a_prompt_is_built_to_fit_a_small_context(bank: MemoryBank) -> None:
    for i in range(8):
        bank.add(f"Ana's pen number {i} writes in green ink and has a fine steel nib.")
    backend = ScriptedBackend([NOOP])
    backend.n_ctx = 420  # words stand for tokens in the scripted backend
    manager = MemoryManager(backend, bank, adapter=None)
    manager.process(Turn("Ana", "My green pen leaks ink.", "2025-03-02 10:00"))
    (call,) = backend.calls
    used = sum(backend.count_tokens(m.content) + 4 for m in call["messages"])
    assert used <= backend.n_ctx - manager.max_tokens - 16
    assert "[0]" in call["messages"][-1].content, "as many related facts as fit are still shown"


def test_a_long_turn_is_logged_whole_and_reaches_the_manager_in_pieces(bank: MemoryBank) -> None:
    sentence = "I spent the morning sorting my fountain pens by the colour of their ink. "
    turn = (sentence * 60)[:4004]
    backend = ScriptedBackend([NOOP] * 10)
    result = MemoryManager(backend, bank, adapter=None).process(Turn("Ana", turn, "2025-03-02 10:00"))
    assert bank.get(result.logged.memory_id).text == turn.strip(), "the episodic log holds the turn whole"
    assert 4 <= len(backend.calls) <= 6
    for call in backend.calls:
        shown = call["messages"][-1].content.split("<turn>", 1)[1].split("</turn>", 1)[0]
        assert len(shown) <= MANAGER_TURN_CHARS
