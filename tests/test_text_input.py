"""Text people really type: every script, new emoji, private-use characters; only what is not text is refused.

On the real stack: a SQLite file, sqlite-vec, FTS5 and MiniLM on onnxruntime,
and the `edge` command run as a process (argv decoded as the OS hands it over).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bank import MemoryBank, clean_text
from edge.errors import InvalidInputError

TIRED = "tired \U0001FAE9"  # U+1FAE9 FACE WITH BAGS UNDER EYES, Unicode 16 (2024): unassigned to older tables

SCRIPTS = {
    "arabic": "أختي مريم تعيش في لشبونة",
    "devanagari": "मेरी बहन माया लिस्बन में रहती है",
    "chinese": "我的妹妹住在里斯本",
    "japanese": "妹はリスボンに住んでいます",
    "cyrillic": "Моя сестра Майя живёт в Лиссабоне",
    "emoji_zwj": "Our family \U0001F469\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 went climbing \U0001F9D7\U0001F3FD\u200D\u2640\uFE0F",
    "flags_and_keycaps": "Flew \U0001F1F5\U0001F1F9 \u2192 \U0001F1EF\U0001F1F5, gate 7\uFE0F\u20E3",
    "private_use": "My company logo is \uE000 in our internal font",
    "unassigned": "A code point not yet assigned: \u0378 and a new one \U0001FAE9",
    "crlf_and_tabs": "line one\r\nline two\twith a tab",
}
# Words the keyword index finds in space-separated scripts.
KEYWORDS = {"arabic": "مريم", "cyrillic": "сестра", "emoji_zwj": "climbing", "private_use": "logo"}


def edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True,
                          encoding="utf-8", timeout=120, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


@pytest.fixture
def bank(tmp_path: Path, minilm) -> MemoryBank:
    with MemoryBank.open(tmp_path / "bank.db", minilm, user="ana") as opened:
        yield opened


# ----------------------------------------------------------------------------- what is text


@pytest.mark.parametrize("text", [*SCRIPTS.values(), TIRED, "\U0010FFFD plane-16 private use", "\u2028 line separator"])
def test_every_script_new_emoji_and_private_use_text_is_accepted(text: str) -> None:
    assert clean_text(text) == text.strip()
    assert clean_text(text, what="query") == text.strip()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nul \x00 inside", "U+0000"),
        ("escape \x1b[31m red", "U+001B"),
        ("delete \x7f char", "U+007F"),
        ("c1 control \x85 next-line", "U+0085"),
        ("lone surrogate \udcff from invalid UTF-8", "U+DCFF"),
        ("non-character \uffff", "U+FFFF"),
        ("plane non-character \U0001FFFE", "U+1FFFE"),
        ("arabic-block non-character \ufdd0", "U+FDD0"),
    ],
)
def test_only_what_is_not_text_is_refused_and_the_first_bad_character_is_named(text: str, code: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        clean_text(text)
    assert code in refused.value.message and "not text" in refused.value.message


@pytest.mark.parametrize("text", ["\u200b", "\u202e", "\u200b\u200c\u200d\u2060", " \ufeff ", "\u2066\u2069",
                                  "\u3164"])
def test_text_with_no_visible_character_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        clean_text(text)
    assert refused.value.message.startswith("The memory text has no visible character (only U+")
    assert clean_text(f"ok{text}") == f"ok{text}".strip()  # beside a visible character they are kept as written


def test_a_refused_query_is_told_about_queries_not_about_storing() -> None:
    with pytest.raises(InvalidInputError) as refused:
        clean_text("why \x00?", what="query")
    assert refused.value.message.startswith("The query ")
    assert "stored" not in (refused.value.hint or "") and "query" in (refused.value.hint or "")
    with pytest.raises(InvalidInputError) as too_long:
        clean_text("why " * 2000, what="query")
    assert "memories" not in (too_long.value.hint or "") and "shorter" in (too_long.value.hint or "")


# ----------------------------------------------------------------------------- the whole stack


def test_a_new_emoji_is_stored_from_the_command_line_and_found_by_keyword_and_by_meaning(tmp_path: Path) -> None:
    db = str(tmp_path / "bank.db")
    for text in (TIRED, "I repaired the bicycle chain", "Lunch was a bowl of ramen"):
        added = edge("memory", "add", text, "--db", db, "--json")
        assert added.returncode == 0, added.stderr
    assert json.loads(edge("memory", "list", "--db", db, "--json").stdout)[0]["text"] == TIRED
    by_keyword = json.loads(edge("memory", "search", "tired", "--mode", "keyword", "--db", db, "--json").stdout)
    assert [hit["text"] for hit in by_keyword] == [TIRED]
    by_meaning = edge("memory", "search", "Why am I so exhausted \U0001FAE9?", "--mode", "vector", "--db", db, "--json")
    assert by_meaning.returncode == 0, by_meaning.stderr
    assert json.loads(by_meaning.stdout)[0]["text"] == TIRED


def test_invalid_utf8_on_the_command_line_is_refused_as_not_text(tmp_path: Path) -> None:
    # The OS hands over bytes; Python carries an invalid byte as a lone surrogate (surrogateescape).
    out = subprocess.run([sys.executable, "-m", "edge.cli", "memory", "add", b"caf\xe9 au lait",
                          "--db", str(tmp_path / "bank.db")], capture_output=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 1
    assert b"not text" in out.stderr and b"Traceback" not in out.stderr


def test_every_script_round_trips_through_add_search_export_and_import(tmp_path: Path, bank: MemoryBank, minilm) -> None:
    ids = {name: bank.add(text).id for name, text in SCRIPTS.items()}
    for name, text in SCRIPTS.items():
        assert bank.get(ids[name]).text == text
        # The vectors are stored: the text itself is its own nearest memory.
        assert bank.search(text, mode="vector", k=1)[0].memory.id == ids[name], name
    for name, word in KEYWORDS.items():
        assert ids[name] in [h.memory.id for h in bank.search(word, mode="keyword")], name
    assert bank.search("Why am I so tired \U0001FAE9?", k=3)  # a query with a new emoji is searched, not refused
    dump = tmp_path / "dump.jsonl"
    bank.export_jsonl(dump)
    with MemoryBank.open(tmp_path / "copy.db", minilm, user="ana") as copy:
        copy.import_jsonl(dump)
        assert {m.id: m.text for m in copy.list()} == {ids[name]: text for name, text in SCRIPTS.items()}
        assert copy.check() == []
        for name, word in KEYWORDS.items():
            assert ids[name] in [h.memory.id for h in copy.search(word, mode="keyword")], name


def test_keyword_search_finds_a_word_inside_devanagari_and_cjk_text_and_a_name_like_cpp(bank: MemoryBank) -> None:
    """FTS5's unicode61 splits Devanagari words at vowel signs and keeps a CJK run without spaces as one token;
    "C++" became "c". The substring (trigram) index holds the texts it cannot split."""
    hindi = bank.add(SCRIPTS["devanagari"]).id
    chinese = bank.add(SCRIPTS["chinese"]).id
    cpp = bank.add("I write C++ at work and C# at home").id
    bank.add("I like the letter c and plain tea")
    assert hindi in [h.memory.id for h in bank.search("माया", mode="keyword")]
    assert chinese in [h.memory.id for h in bank.search("里斯本", mode="keyword")]
    assert [h.memory.id for h in bank.search("C++", mode="keyword")] == [cpp]
    assert [h.memory.id for h in bank.search("what about c#?", mode="keyword")][0] == cpp
    assert chinese == bank.search("里斯本", mode="hybrid")[0].memory.id
    # Deleted, it is found no more; restored, found again (the substring index follows every change).
    bank.delete(chinese)
    assert chinese not in [h.memory.id for h in bank.search("里斯本", mode="keyword")]
    bank.restore(chinese)
    assert chinese in [h.memory.id for h in bank.search("里斯本", mode="keyword")]
    assert bank.check() == []


def test_json_output_stays_utf8_when_an_argument_holds_bytes_that_are_not(tmp_path: Path, default_bundle) -> None:
    """`remember --json` refuses a turn of undecodable bytes and says so in JSON that `json.loads` reads."""
    junk = b"junk \x97\xff\xfe bytes"
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "remember", junk, "--json", "--db", str(tmp_path / "bank.db"),
         "--bundle", str(default_bundle.root)],
        capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    text = done.stdout.decode("utf-8")  # raises on invalid UTF-8
    document = json.loads(text)
    assert done.returncode == 1 and "not text" in json.dumps(document)
    assert "\\udc97" in text  # the undecodable byte, escaped


def test_an_overlong_text_gets_a_hint_for_what_was_being_done() -> None:
    """A question too long is told to ask a shorter one, a query to search with fewer words, a memory to be split."""
    hints = {}
    for what in ("question", "query", "memory text"):
        with pytest.raises(InvalidInputError) as refused:
            clean_text("word " * 50, what=what, max_chars=20)
        hints[what] = refused.value.hint
    assert hints["question"].startswith("Ask a shorter question")
    assert hints["query"].startswith("Search with a shorter text")
    assert hints["memory text"].startswith("Store a summary")
