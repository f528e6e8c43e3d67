"""Reading LoCoMo conversations (the published locomo10.json layout)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.locomo import ADVERSARIAL_ANSWER, CATEGORY_NAMES, LocomoFormatError, load_locomo, parse_locomo

CONV_26 = Path("/work/shared/data/locomo/conv-26.json")
needs_conv26 = pytest.mark.skipif(not CONV_26.is_file(), reason="conv-26.json is not on this machine")


@pytest.fixture(scope="module")
def conv26():
    return load_locomo(CONV_26)[0]


@needs_conv26
def test_conv26_has_its_published_counts(conv26) -> None:
    assert conv26.sample_id == "conv-26"
    assert (conv26.speaker_a, conv26.speaker_b) == ("Caroline", "Melanie")
    assert len(conv26.sessions) == 19
    assert conv26.turn_count == 419
    assert len(conv26.qa) == 199
    assert len(conv26.questions()) == 152
    assert len(conv26.questions(include_adversarial=True)) == 199


@needs_conv26
def test_sessions_are_in_time_order_and_dated(conv26) -> None:
    assert [s.index for s in conv26.sessions] == list(range(1, 20))
    assert conv26.sessions[0].date_time == "1:56 pm on 8 May, 2023"
    first = conv26.sessions[0].turns[0]
    assert (first.speaker, first.dia_id) == ("Caroline", "D1:1")
    ids = [t.dia_id for _, t in conv26.turns()]
    assert len(ids) == len(set(ids)) == 419


@needs_conv26
def test_answers_are_strings_even_when_the_file_has_numbers(conv26) -> None:
    assert all(isinstance(q.answer, str) and q.answer for q in conv26.qa)
    sunrise = conv26.qa[1]
    assert sunrise.question == "When did Melanie paint a sunrise?"
    assert sunrise.answer == "2022" and sunrise.category_name == "temporal"


@needs_conv26
def test_adversarial_questions_are_excluded_by_default(conv26) -> None:
    assert all(q.category != 5 for q in conv26.questions())
    adversarial = [q for q in conv26.qa if q.is_adversarial]
    assert len(adversarial) == 47
    assert all(q.adversarial_answer for q in adversarial)
    # Two carry an answer of their own ("No"); the rest expect LoCoMo's "not mentioned" reply.
    assert sum(q.answer == ADVERSARIAL_ANSWER for q in adversarial) == 45


@needs_conv26
def test_every_evidence_id_names_a_turn(conv26) -> None:
    ids = {t.dia_id for _, t in conv26.turns()}
    assert all(e in ids for q in conv26.qa for e in q.evidence)
    assert conv26.qa[37].evidence == ["D8:6", "D9:17"]  # written "D8:6; D9:17" in the file


@needs_conv26
def test_image_turns_keep_their_caption(conv26) -> None:
    with_caption = [t for _, t in conv26.turns() if t.blip_caption]
    assert with_caption and with_caption[0].blip_caption in with_caption[0].full_text


@needs_conv26
def test_first_sessions_keep_only_questions_answerable_from_them(conv26) -> None:
    short = conv26.first_sessions(4)
    assert len(short.sessions) == 4 and short.turn_count == 76
    assert len(short.questions()) == 35
    kept = {t.dia_id for _, t in short.turns()}
    assert all(q.evidence and set(q.evidence) <= kept for q in short.qa)
    assert short.qa[0].index == 0


def test_category_mapping_is_locomos_own() -> None:
    assert CATEGORY_NAMES == {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def _sample(**overrides):
    sample = {
        "sample_id": "s1",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bo",
            "session_2_date_time": "2:00 pm on 2 May, 2023",
            "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "Later."}],
            "session_1_date_time": "1:00 pm on 1 May, 2023",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hi."}],
            "session_3_date_time": "3:00 pm on 3 May, 2023",
        },
        "qa": [{"question": "Who?", "answer": 7, "evidence": ["D1:1"], "category": 4}],
    }
    sample.update(overrides)
    return sample


def test_sessions_are_sorted_and_dates_without_turns_are_skipped() -> None:
    conv = parse_locomo([_sample()])[0]
    assert [(s.index, s.date_time) for s in conv.sessions] == [
        (1, "1:00 pm on 1 May, 2023"), (2, "2:00 pm on 2 May, 2023")
    ]
    assert conv.qa[0].answer == "7"


def test_a_file_in_another_layout_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"dialogues": []}))
    with pytest.raises(LocomoFormatError, match="not in the LoCoMo layout.*sample_id"):
        load_locomo(path)
    path.write_text("not json")
    with pytest.raises(LocomoFormatError, match="not valid JSON"):
        load_locomo(path)
    with pytest.raises(LocomoFormatError, match="No LoCoMo file"):
        load_locomo(tmp_path / "missing.json")
    with pytest.raises(LocomoFormatError, match="category 9"):
        parse_locomo([_sample(qa=[{"question": "Q", "answer": "A", "evidence": [], "category": 9}])])
    bad_turns = _sample()
    bad_turns["conversation"]["session_1"] = [{"speaker": "Ann", "text": "no id"}]
    with pytest.raises(LocomoFormatError, match="dia_id"):
        parse_locomo([bad_turns])
