"""Search paths built for large banks: binary-code vector search with re-scoring, and bounded keyword ranking."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from bank_file import sql

from edge.bank import db as sqlite
from edge.bank import retrieval
from edge.bank import MemoryBank
from edge.embedder import HashEmbedder
from edge.errors import MemoryNotFoundError
from edge.operations import AddOp, DeleteOp, UpdateOp
from edge.bank.retrieval import (
    VECTOR_CODE,
    binary_codes,
    code_bits,
    fts_query,
    query_words,
    split_by_frequency,
)

PEOPLE = ["Maya", "Caroline", "Melanie", "Jon", "Priya", "Tomas", "Aiko", "Liam", "Fatima", "Sven", "Rosa", "Kwame"]
PLACES = ["Lisbon", "Kyoto", "the Alps", "Brooklyn", "the library", "Lake Tahoe", "Berlin", "the hospital", "Oaxaca"]
DOINGS = ["went hiking", "painted a sunrise", "ran a half marathon", "adopted a kitten", "started pottery classes",
          "visited the aquarium", "learned to surf", "baked bread", "volunteered at the shelter", "went kayaking"]
WHEN = ["on 7 May 2023", "last Friday", "in March 2022", "two weeks ago", "yesterday", "last winter", "on her birthday"]


def sentences(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = f"{rng.choice(PEOPLE)} {rng.choice(DOINGS)} in {rng.choice(PLACES)} {rng.choice(WHEN)}"
        if rng.random() < 0.5:
            text += f" with {rng.choice(PEOPLE)}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def index_rows(bank: MemoryBank) -> tuple[list, list, list]:
    return (
        sql(bank.path, "SELECT rowid, owner FROM memories WHERE deleted_at IS NULL ORDER BY rowid"),
        sql(bank.path, "SELECT rowid, owner FROM memory_vec ORDER BY rowid"),
        sql(bank.path, "SELECT rowid, owner FROM memory_bin ORDER BY rowid"),
    )


def assert_indexes_agree(bank: MemoryBank) -> None:
    live, vec, codes = index_rows(bank)
    assert live == vec == codes
    assert bank.check() == []


@pytest.fixture(scope="module")
def big_bank(tmp_path_factory: pytest.TempPathFactory):
    """3000 memories for alice and 500 for bob, hashed vectors (no model needed)."""
    path = tmp_path_factory.mktemp("scale") / "bank.db"
    with MemoryBank.open(path, HashEmbedder(), user="alice") as opened:
        texts = sentences(3500)
        opened.add_many(texts[:3000])
        opened.add_many(texts[3000:], user="bob")
        yield opened


# ----------------------------------------------------------------------------- binary codes


def test_binary_codes_are_deterministic_and_sized() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 384)).astype(np.float32)
    codes = binary_codes(vectors)
    assert codes.shape == (5, code_bits(384) // 8) == (5, 96)
    assert codes.dtype == np.uint8
    assert np.array_equal(codes, binary_codes(vectors.copy()))
    assert np.array_equal(binary_codes(vectors[2]), codes[2:3])
    # The first half is the sign of each component.
    assert np.array_equal(np.unpackbits(codes[0], bitorder="little")[:384], (vectors[0] > 0).astype(np.uint8))
    assert code_bits(10) == 24  # padded to whole bytes


def test_a_new_bank_records_its_code_scheme(tmp_path: Path) -> None:
    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder()) as bank:
        assert bank.meta()["vector_code"] == VECTOR_CODE
        assert "m003_binary_vectors" in bank.schema_version()
        assert bank.index.binary


# ----------------------------------------------------------------------------- quantised vs exact


def test_quantised_vector_search_matches_exact_search(big_bank: MemoryBank) -> None:
    queries = sentences(60, seed=99)
    top1 = overlap = 0.0
    for query in queries:
        vec = big_bank.embedder.embed([query])[0]
        fast = [r for r, _ in big_bank.index.nearest(vec, "alice", 10)]
        exact = [r for r, _ in big_bank.index.nearest(vec, "alice", 10, exact=True)]
        top1 += fast[0] == exact[0]
        overlap += len(set(fast) & set(exact)) / 10
    assert top1 / len(queries) >= 0.95
    assert overlap / len(queries) >= 0.9


def test_quantised_scores_are_cosine_similarities(big_bank: MemoryBank) -> None:
    vec = big_bank.embedder.embed(["Maya went hiking in the Alps"])[0]
    fast = dict(big_bank.index.nearest(vec, "alice", 5))
    exact = dict(big_bank.index.nearest(vec, "alice", 50, exact=True))
    for rowid, score in fast.items():
        assert score == pytest.approx(exact[rowid], abs=2e-3)
    assert list(fast.values()) == sorted(fast.values(), reverse=True)


def test_small_owner_is_searched_exactly(tmp_path: Path) -> None:
    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder(), user="alice") as bank:
        bank.add_many(sentences(40))
        bank.add_many(sentences(200, seed=8), user="bob")
        for query in sentences(10, seed=5):
            vec = bank.embedder.embed([query])[0]
            assert [r for r, _ in bank.index.nearest(vec, "alice", 10)] == [r for r, _ in bank.index.nearest(vec, "alice", 10, exact=True)]
            hits = bank.search(query, mode="vector", k=50)
            assert len(hits) == 40 and all(h.memory.owner == "alice" for h in hits)


def test_owner_filter_holds_on_the_binary_path(big_bank: MemoryBank) -> None:
    for mode in ("vector", "hybrid"):
        hits = big_bank.search("Maya went kayaking in Lisbon", mode=mode, k=100, user="bob")
        assert hits and all(h.memory.owner == "bob" for h in hits)


# ----------------------------------------------------------------------------- staying in sync


def test_codes_follow_update_delete_restore_and_undo(tmp_path: Path) -> None:
    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder(), user="alice") as bank:
        ids = bank.add_many(sentences(300))
        bank.add_many(sentences(50, seed=4), user="bob")
        assert_indexes_agree(bank)
        target = ids[17]
        text = bank.get(target).text

        def top(query: str) -> str:
            return bank.search(query, mode="vector", k=1)[0].memory.id

        assert top(text) == target
        bank.delete(target)
        assert_indexes_agree(bank)
        assert target not in {h.memory.id for h in bank.search(text, mode="vector", k=300)}
        bank.undo()
        assert_indexes_agree(bank)
        assert top(text) == target

        bank.update(target, "Zebulon repaired a harpsichord in Reykjavik")
        assert_indexes_agree(bank)
        assert top("Zebulon repaired a harpsichord in Reykjavik") == target
        bank.undo()
        assert_indexes_agree(bank)
        assert top(text) == target

        bank.apply([DeleteOp(ids[1]), DeleteOp(ids[2]), UpdateOp(ids[3], "Jon sold his bicycle"), AddOp("A new one")])
        assert_indexes_agree(bank)
        bank.restore(ids[1])
        assert_indexes_agree(bank)
        bank.undo(2)
        assert_indexes_agree(bank)
        # The row's vector and its float16 copy describe the same text.
        rowid = sql(bank.path, "SELECT rowid FROM memories WHERE id = ?", (target,))[0][0]
        full = np.frombuffer(sql(bank.path, "SELECT embedding FROM memory_vec WHERE rowid = ?", (rowid,))[0][0], np.float32)
        half = np.frombuffer(sql(bank.path, "SELECT half FROM memory_bin WHERE rowid = ?", (rowid,))[0][0], np.float16)
        assert np.allclose(full, half.astype(np.float32), atol=1e-3)


def test_a_failed_apply_leaves_no_code_behind(tmp_path: Path) -> None:
    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder(), user="alice") as bank:
        bank.add_many(sentences(20))
        with pytest.raises(MemoryNotFoundError):
            bank.apply([AddOp("fine text"), DeleteOp("m-no-such-id")])
        assert_indexes_agree(bank)


def test_check_reports_a_missing_code(tmp_path: Path) -> None:
    with MemoryBank.open(tmp_path / "bank.db", HashEmbedder(), user="alice") as bank:
        bank.add_many(sentences(20))
        sql(bank.path, "DELETE FROM memory_bin WHERE rowid = (SELECT MIN(rowid) FROM memory_bin)")
        assert any("binary codes" in p for p in bank.check())


def old_bank(path: Path, texts_by_owner: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bank as edge wrote it before binary codes (m001 + m002 only), rows written as that code wrote them."""
    from edge.bank import migrations

    embedder = HashEmbedder()
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        MemoryBank.open(path, embedder).close()
    conn = sqlite.connect(path)
    conn.execute("BEGIN")
    for owner, texts in texts_by_owner.items():
        for i, (text, vec) in enumerate(zip(texts, embedder.embed(texts))):
            memory_id = f"m{owner}{i}"
            cur = conn.execute(
                "INSERT INTO memories (id, owner, tier, text, created_at, updated_at) "
                "VALUES (?, ?, 'semantic', ?, '2024-01-01', '2024-01-01')", (memory_id, owner, text))
            conn.execute("INSERT INTO history (op_group, owner, memory_id, action, after, actor, at) "
                         "VALUES ('g', ?, ?, 'ADD', '{}', 'api', '2024-01-01')", (owner, memory_id))
            conn.execute("INSERT INTO memory_fts (rowid, text, owner) VALUES (?, ?, ?)", (cur.lastrowid, text, owner))
            conn.execute("INSERT INTO memory_vec (rowid, owner, embedding) VALUES (?, ?, ?)",
                         (cur.lastrowid, owner, np.asarray(vec, dtype=np.float32).tobytes()))
    conn.execute("COMMIT")
    conn.close()


def test_an_older_bank_is_migrated_when_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {"alice": sentences(500), "bob": sentences(80, seed=6)}
    old_bank(tmp_path / "old.db", texts, monkeypatch)
    with MemoryBank.open(tmp_path / "new.db", HashEmbedder(), user="alice") as fresh:
        for owner, owned in texts.items():
            fresh.add_many(owned, user=owner)
        expected = {q: [h.memory.text for h in fresh.search(q, mode="vector", k=5)] for q in sentences(8, seed=12)}
    with MemoryBank.open(tmp_path / "old.db", HashEmbedder(), user="alice") as bank:
        assert bank.schema_version()[-4:] == ["m003_binary_vectors", "m004_episodic_log_and_superseded_facts",
                                              "m005_turns_keyword_index", "m006_substring_index"]
        assert_indexes_agree(bank)
        assert bank.index.binary
        after = {q: [h.memory.text for h in bank.search(q, mode="vector", k=5)] for q in expected}
        assert after == expected
        assert bank.count() == 500 and bank.count(user="bob") == 80
        assert bank.search("Maya", mode="keyword", k=3, user="bob")


def test_a_bank_with_codes_of_another_scheme_searches_exactly(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    with MemoryBank.open(db, HashEmbedder(), user="alice") as bank:
        bank.add_many(sentences(100))
        sql(bank.path, "UPDATE meta SET value = 'some-other-scheme' WHERE key = 'vector_code'")
    with MemoryBank.open(db, HashEmbedder(), user="alice") as bank:
        assert not bank.index.binary
        vec = bank.embedder.embed(["Maya baked bread"])[0]
        assert bank.index.nearest(vec, "alice", 10) == bank.index.nearest(vec, "alice", 10, exact=True)


# ----------------------------------------------------------------------------- keyword search


def test_query_words_drop_stopwords_unless_nothing_else_is_left() -> None:
    assert query_words("When did Maya go hiking?") == ["maya", "go", "hiking"]
    assert query_words("What is it?") == ["what", "is", "it"]
    assert query_words("*** ???") == []
    assert fts_query("the ramen, THE ramen") == '"ramen"'
    assert fts_query("???") is None


def test_split_by_frequency_keeps_the_rarest_within_budget() -> None:
    counts = {"maya": 300, "hiking": 40, "went": 9000, "alps": 700}
    assert split_by_frequency(["maya", "hiking", "went", "alps"], counts, 1000) == (["hiking", "maya"], ["alps", "went"])
    assert split_by_frequency(["went"], counts, 10) == (["went"], [])
    assert split_by_frequency(["went", "alps"], counts, 100) == (["alps"], ["went"])


def exact_keyword(bank: MemoryBank, query: str, owner: str, k: int) -> list[int]:
    rows = sql(bank.path, "SELECT rowid FROM memory_fts WHERE memory_fts MATCH ? AND owner = ? ORDER BY rank LIMIT ?",
               (retrieval.fts_or(query_words(query)), owner, k))
    return [r[0] for r in rows]


def test_bounded_keyword_ranking_keeps_the_rare_word_hits_first(big_bank: MemoryBank, monkeypatch) -> None:
    # "Maya" is in ~1 in 12 memories, "hiking" in ~1 in 10; a tight budget forces the bounded path.
    monkeypatch.setattr(big_bank.index, "keyword_rank_budget", 150)
    big_bank.add("Maya went paragliding over Interlaken")
    hits = big_bank.index.keyword("did Maya go paragliding?", "alice", 20)
    assert len(hits) == 20
    first = big_bank.hits(hits[:1])[0].memory.text
    assert first == "Maya went paragliding over Interlaken"
    # The rest still mention Maya: the common word fills the list.
    assert all("maya" in h.memory.text.lower() for h in big_bank.hits(hits))


def test_keyword_ranking_is_exact_when_within_budget(big_bank: MemoryBank) -> None:
    for query in ("Priya kayaking", "Sven pottery Kyoto", "aquarium Oaxaca"):
        assert [r for r, _ in big_bank.index.keyword(query, "alice", 10)] == exact_keyword(big_bank, query, "alice", 10)


def test_keyword_search_with_only_common_words_is_bounded_and_owner_scoped(big_bank: MemoryBank, monkeypatch) -> None:
    monkeypatch.setattr(big_bank.index, "keyword_rank_budget", 100)
    hits = big_bank.search("in the", mode="keyword", k=10, user="bob")
    assert len(hits) == 10 and all(h.memory.owner == "bob" for h in hits)
    assert [h.rank for h in hits] == list(range(1, 11))
    assert big_bank.search("zzzqx", mode="keyword") == []


# ----------------------------------------------------------------------------- turns and facts apart


def test_facts_do_not_change_how_the_turn_log_is_ranked(tmp_path: Path) -> None:
    """A log searched in a bank full of facts ranks exactly as the same log alone (bm25 per table, m005)."""
    turns = sentences(300, seed=21)
    facts = sentences(900, seed=22)  # the same vocabulary, so shared statistics would move the turns' scores
    with MemoryBank.open(tmp_path / "alone.db", HashEmbedder(), user="alice") as alone, \
            MemoryBank.open(tmp_path / "mixed.db", HashEmbedder(), user="alice") as mixed:
        alone.add_many(turns, tier="episodic")
        mixed.add_many(turns, tier="episodic")
        mixed.add_many(facts)
        queries = sentences(20, seed=23)
        for mode in ("keyword", "hybrid"):
            for query in queries:
                want = [h.memory.text for h in alone.search(query, k=10, mode=mode, scope="episodic")]
                got = [h.memory.text for h in mixed.search(query, k=10, mode=mode, scope="episodic")]
                assert got == want, (mode, query)
                assert want
        # scope "all" reads both tables and still finds each kind
        hits = mixed.search(turns[0], k=10, mode="keyword")
        assert {h.memory.tier for h in hits} == {"episodic", "semantic"}
        assert_indexes_agree(mixed)


def test_a_bank_from_before_the_split_moves_its_turns_to_their_own_table(tmp_path: Path) -> None:
    path = tmp_path / "m004.db"
    with MemoryBank.open(path, HashEmbedder(), user="alice") as bank:
        bank.add_many(["Caroline went to the LGBTQ support group", "Melanie painted a sunrise"], tier="episodic")
        bank.add_many(["Caroline is a counselor"])
    # Rewrite the file as m004 left it: turns and facts in one keyword table, no m005 step.
    conn = sqlite.connect(path)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO memory_fts (rowid, text, owner, kind) SELECT rowid, text, owner, 'turn' FROM turn_fts")
    conn.execute("DROP TABLE turn_fts")
    conn.execute("DELETE FROM migrations WHERE name = 'm005_turns_keyword_index'")
    conn.execute("COMMIT")
    conn.close()
    assert sql(path, "SELECT count(*) FROM memory_fts WHERE kind = 'turn'") == [(2,)]
    with MemoryBank.open(path, HashEmbedder(), user="alice") as bank:
        assert bank.schema_version()[-2:] == ["m005_turns_keyword_index", "m006_substring_index"]
        assert sql(path, "SELECT text FROM turn_fts ORDER BY rowid") == [
            ("Caroline went to the LGBTQ support group",), ("Melanie painted a sunrise",)]
        assert sql(path, "SELECT text FROM memory_fts") == [("Caroline is a counselor",)]
        assert [h.memory.text for h in bank.search("Caroline", mode="keyword", scope="episodic")] == [
            "Caroline went to the LGBTQ support group"]
        assert bank.check() == []


def test_an_in_memory_bank_searches_turns_and_facts() -> None:
    with MemoryBank.open(":memory:", HashEmbedder(), user="alice") as bank:
        bank.add_many(["Maya baked bread on Sunday", "Liam fixed the bike"])
        bank.add_many(["Maya: I bake bread every Sunday"], tier="episodic")
        assert bank.search("Maya bread", k=1, scope="facts")[0].memory.text == "Maya baked bread on Sunday"
        assert bank.search("Maya bread", k=1, scope="episodic")[0].memory.text == "Maya: I bake bread every Sunday"
