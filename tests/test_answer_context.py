"""The Answer Agent's context: many memories, each shown as its window around the question, within a token budget.

`edge.prompts.focus` is pure text work and is tested directly; the budget
is tested on a real bank with the real bundled model's tokenizer, since a
budget is only as good as the token counts it is checked with.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.answer import AnswerAgent
from edge.bank import MemoryBank
from edge.operations import AddOp
from edge.prompts import (
    ELLIPSIS,
    ShownMemory,
    answer_messages,
    answer_spans,
    answer_supported,
    focus,
    focus_memory,
)

LONG_TURN = (
    "Hey Mel! Good to see you again, it has been a while. Yesterday I went to an LGBTQ support group "
    "and it was so powerful. The stories people shared were inspiring and I felt accepted, and it made "
    "me think about my own journey and how far I have come since I moved here from Sweden four years ago."
)


def test_a_short_text_is_shown_whole() -> None:
    assert focus("I moved to Ghent.", "Where does Tomas live?", max_words=20) == "I moved to Ghent."


def test_a_long_text_is_shown_as_the_window_around_the_question_words() -> None:
    shown = focus(LONG_TURN, "When did Caroline go to the LGBTQ support group?", max_words=12)
    assert "LGBTQ support group" in shown
    assert shown.startswith(ELLIPSIS) and shown.endswith(ELLIPSIS), "cut words are marked on both sides"
    assert len(shown.split()) == 12
    assert shown.strip(ELLIPSIS) in LONG_TURN, "the window is the memory's own words, in order"


def test_another_question_shows_another_window_of_the_same_memory() -> None:
    shown = focus(LONG_TURN, "Where did Caroline move from?", max_words=12)
    assert "Sweden" in shown and "LGBTQ" not in shown
    assert shown.startswith(ELLIPSIS)


def test_a_text_that_does_not_match_keeps_its_start() -> None:
    shown = focus(LONG_TURN, "What is the capital of Peru?", max_words=8)
    assert shown == " ".join(LONG_TURN.split()[:8]) + ELLIPSIS


def test_focus_is_idempotent_and_spans_and_prompt_agree() -> None:
    question = "When did Caroline go to the LGBTQ support group?"
    memory = ShownMemory("0", "episodic", LONG_TURN, "2023-05-08T13:56", speaker="Caroline",
                         dates=(("Yesterday", "2023-05-07"), ("four years ago", "2019-05-08")))
    once = focus_memory(memory, question)
    assert once.text != LONG_TURN and focus_memory(once, question) == once
    assert once.dates == (("Yesterday", "2023-05-07"),), "only the dates resolved inside the window are shown"
    prompt = answer_messages(question, [once])[1]["content"]
    assert once.text in prompt and "Sweden" not in prompt
    spans = answer_spans([memory], question)
    assert "powerful" in spans and "Sweden" not in spans, "an answer can only be what was shown"
    assert "7 May 2023" in spans, "a time question can be answered with a date resolved in the window"
    assert "LGBTQ support group" not in spans, "a span that only repeats the question is no answer"
    assert all(answer_supported(span, [once]) for span in spans)


def test_no_question_leaves_a_memory_whole() -> None:
    memory = ShownMemory("0", "episodic", LONG_TURN)
    assert focus_memory(memory, "") is memory


@pytest.mark.slow
def test_many_long_turns_fit_the_token_budget_in_rank_order(
    tmp_path: Path, minilm, llama_backend
) -> None:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="caro") as bank:
        ops = [AddOp(f"Day {i}: {LONG_TURN}", "episodic", f"2023-05-{i + 1:02d}T10:00", (f"D1:{i}",))
               for i in range(30)]
        bank.apply(ops, actor="import")
        whole = AnswerAgent(llama_backend, k=30, adapter=None, answer_tokens=100_000)
        focused = AnswerAgent(llama_backend, k=30, adapter=None, answer_tokens=400)
        question = "When did Caroline go to the LGBTQ support group?"
        retrieved = focused.retrieve(bank, question)
        memories, messages, _, shown = focused.fit(question, retrieved, "")
        lines = messages[1].content.split("\n")
        memory_lines = [line for line in lines if line.startswith("[")]
        used = sum(llama_backend.count_tokens(line) + 1 for line in memory_lines)
        assert used <= 400
        assert memories[0] == retrieved[0], "the best-ranked memory is always shown"
        positions = [retrieved.index(m) for m in memories]
        assert positions == sorted(positions), "memories keep their rank order"
        assert len(memories) >= 10, "windows let many memories into the budget"
        assert all("LGBTQ support group" in m.text for m in shown)
        full_memories, *_ = whole.fit(question, retrieved, "")
        assert len(full_memories) == 30
        result = focused.answer(bank, question)
        assert result.supported
        assert len(result.retrieved) == len(memories)


@pytest.mark.slow
def test_turns_come_before_facts_and_facts_fill_the_room_left(tmp_path: Path, minilm, llama_backend) -> None:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="tomas") as bank:
        bank.apply([AddOp("Tomas: I quit the bakery, I now work at the city library.", "episodic",
                          "2025-03-09T18:30", ("D1:3",))], actor="import")
        bank.apply([AddOp("Tomas works at the city library", "semantic", "2025-03-09T18:30", ("D1:3",)),
                    AddOp("Tomas's sister Ines is vegetarian", "semantic", "2025-03-02T10:01", ("D1:2",))],
                   actor="manager")
        agent = AnswerAgent(llama_backend, k=6, adapter=None)
        retrieved = agent.retrieve(bank, "Where does Tomas work now?")
        assert [m.tier for m in retrieved] == ["episodic", "semantic"], "a fact whose turn is shown is left out"
        assert retrieved[1].text == "Tomas's sister Ines is vegetarian"
        memories, *_ = agent.fit("Where does Tomas work now?", retrieved, "")
        assert memories == retrieved, "a short fact fits the room the turns left"


def test_a_logged_turn_reads_as_long_as_the_same_raw_turn() -> None:
    """The speaker's name counts in the window, so the log fits as many turns in a budget as raw turns do."""
    from edge.prompts import answer_line

    text = ("I went to a LGBTQ support group yesterday and it was so powerful, the stories moved me and "
            "I left feeling that I could finally be myself with people who understand")
    question = "What did Caroline feel after the support group?"
    logged = ShownMemory("0", "episodic", text, None, speaker="Caroline")
    raw = ShownMemory("0", "episodic", f"Caroline: {text}", None)
    logged_line = answer_line(logged, question, text_mode="extractive")
    raw_line = answer_line(raw, question, text_mode="extractive")
    assert len(logged_line.split()) == len(raw_line.split()) <= 16 + 2  # 16 words and the two "…"
    assert logged_line.startswith("Caroline: ")


def _log(bank: MemoryBank, user: str, turns: list[tuple[str, str, str]]) -> None:
    from edge.manager import log_entry_for
    from edge.prompts import Turn

    bank.apply([log_entry_for(Turn(speaker, text, "2023-05-08 10:00", turn_id)) for turn_id, speaker, text in turns],
               user=user)


def test_the_turn_after_each_is_the_next_of_its_owner_still_in_the_log(tmp_path: Path) -> None:
    """`next_turns` follows the log's order per owner: another user's turns in between, a deleted turn and a
    fact are skipped; the last turn has none."""
    from edge.embedder import HashEmbedder

    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder()) as bank:
        _log(bank, "alice", [("a1", "Alice", "Did you ever find a new flooring guy?")])
        _log(bank, "bob", [("b1", "Bob", "Unrelated words of another user.")])
        _log(bank, "alice", [("a2", "Jon", "Yes, he is putting in Marley flooring next week."),
                             ("a3", "Alice", "Nice, my sister plays the violin."),
                             ("a4", "Jon", "Cool.")])
        bank.apply([AddOp("Jon is getting Marley flooring", "semantic", None, ("a2",))], user="alice")
        log = {m.source_turns[0]: m for m in bank.list(user="alice", tier="episodic")}
        fact = bank.list(user="alice", tier="semantic")[0]
        bank.delete(log["a3"].id, user="alice")
        after = bank.next_turns([log["a1"], log["a2"], log["a4"], fact], user="alice")
        assert {log[t].id: m.source_turns[0] for t, m in (("a1", after[log["a1"].id]), ("a2", after[log["a2"].id]))} \
            == {log["a1"].id: "a2", log["a2"].id: "a4"}
        assert log["a4"].id not in after and fact.id not in after


def test_replies_follow_the_turns_that_matched_and_hybrid_is_the_default(tmp_path: Path) -> None:
    """"replies-1": the best turn is followed by the one the log kept after it (the answer to a question about
    the flooring is in the reply); "hybrid" (the default) offers the top-k as search ranks them."""
    from edge.answer import offered_turns
    from edge.embedder import HashEmbedder
    from edge.generation import GenerationConfig

    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder()) as bank:
        _log(bank, "alice", [("a1", "Alice", "Did you ever find someone for the flooring?"),
                             ("a2", "Jon", "Yes, Marley, next week."),
                             ("a3", "Alice", "My sister plays the violin.")])
        question = "Who did Alice find for the flooring?"
        ranked = [m.source_turns[0] for m in offered_turns(bank, question, user="alice", k=1)]
        replies = [m.source_turns[0] for m in offered_turns(bank, question, "replies-1", user="alice", k=1)]
    assert ranked == ["a1"] and replies == ["a1", "a2"]
    assert GenerationConfig().answer_retrieval == "hybrid"


def test_a_question_is_embedded_without_the_names_of_the_logs_speakers() -> None:
    from edge.answer import without_speakers

    speakers = {"Caroline", "Melanie", "May", "Jon Smith", "Jon"}
    assert without_speakers("What did Caroline's mom give Melanie?", speakers) == "What did mom give ?"
    assert without_speakers("Where did Jon Smith go?", speakers) == "Where did go?", "the longest name first"
    assert without_speakers("What may May do?", speakers) == "What may do?", "names match as written"
    assert without_speakers("Caroline?", speakers) == "Caroline?", "a question of names alone stays whole"
    assert without_speakers("What did Carolines say?", speakers) == "What did Carolines say?", "whole words only"
    assert without_speakers("What did Caroline say?", set()) == "What did Caroline say?"
    assert without_speakers("Caroline and Melanie?", speakers) == "Caroline and Melanie?", \
        "nothing but function words would be left"
    assert without_speakers("Where is James' car?", {"James"}) == "Where is car?"
    assert without_speakers("What did Zo\u00eb paint?", {" Zoe\u0308 "}) == "What did paint?", "NFC, outer spaces"
    assert without_speakers("Remind me what tea I like", {"me", "I"}) == "Remind me what tea I like", \
        "a function word is never a name to take out (the CLI's default speaker is the user's id, \"me\")"


def test_the_logs_speakers_follow_this_and_other_connections_writes(tmp_path: Path) -> None:
    """`speakers` is kept between calls, yet a turn kept here or by another process, a delete and a restore are seen."""
    from edge.embedder import HashEmbedder

    path = tmp_path / "bank.db"
    with MemoryBank.open(path, HashEmbedder(), user="alice") as bank, \
            MemoryBank.open(path, HashEmbedder(), user="alice") as other:
        assert bank.speakers() == frozenset()
        _log(bank, "alice", [("a1", "Alice", "Hi Jon."), ("a2", "Jon", "Hi!")])
        _log(bank, "bob", [("b1", "Bob", "Another user's turn.")])
        assert bank.speakers() == {"Alice", "Jon"} and bank.speakers(user="bob") == {"Bob"}
        _log(bank, "alice", [("a3", "Maya", "I joined the call.")])  # this connection: added to the kept set
        assert bank.speakers() == {"Alice", "Jon", "Maya"}
        _log(other, "alice", [("a4", "Kim", "Me too.")])  # another connection: the file changed, read again
        assert bank.speakers() == {"Alice", "Jon", "Maya", "Kim"}
        kim = next(m for m in bank.list(tier="episodic") if m.metadata["speaker"] == "Kim")
        bank.delete(kim.id)
        assert "Kim" not in bank.speakers()
        bank.restore(kim.id)
        assert "Kim" in bank.speakers()


@pytest.mark.slow
def test_the_answer_is_found_when_the_question_names_a_speaker(tmp_path: Path, minilm) -> None:
    """Embedded with the name, "What is Caroline looking into?" ranks her goodbyes above her answer (every turn of
    hers is embedded as "Caroline: ..."); without it, the turn about adoption agencies comes first."""
    from edge.answer import offered_turns

    turns = [("Caroline", "Hey Melanie! How are you doing today?"),
             ("Melanie", "Hi Caroline! I'm great, the kids kept me busy all weekend."),
             ("Caroline", "That sounds lovely. I have been so busy too, you know how it is."),
             ("Melanie", "Caroline, you always have so much going on!"),
             ("Caroline", "Ha, true. Lately I've been looking into adoption agencies, I want to give a kid a home."),
             ("Melanie", "That's wonderful! I took the kids camping at the lake last month."),
             ("Caroline", "Thanks Melanie, it means a lot to hear that from you."),
             ("Melanie", "Of course Caroline, you deserve all the best."),
             ("Caroline", "Talk soon! Bye for now."),
             ("Melanie", "Bye Caroline, take care!")]
    question = "What is Caroline looking into?"
    with MemoryBank.open(tmp_path / "bank.db", minilm) as bank:
        _log(bank, bank.user, [(f"D1:{i}", speaker, text) for i, (speaker, text) in enumerate(turns, start=1)])
        whole = [h.memory.source_turns[0] for h in bank.search(question, k=3, mode="hybrid", scope="episodic")]
        offered = [m.source_turns[0] for m in offered_turns(bank, question, k=3)]
    assert whole[0] != "D1:5", "with the name embedded, another of Caroline's turns ranks first"
    assert offered[0] == "D1:5"
