"""Dates are resolved against the turn's own time, and only date phrases are read as dates."""

from __future__ import annotations

import ast
import inspect
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import edge.dates
from edge.dates import DateMention, human_date, parse_time, resolve_dates
from edge.errors import InvalidInputError

CONV_26 = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "conv-26.json"
needs_conv26 = pytest.mark.skipif(not CONV_26.is_file(), reason="conv-26.json is not on this machine")

SUNDAY = datetime(2025, 3, 2, 14, 5)  # Sunday 2 March 2025


def resolved(text: str, at: datetime = SUNDAY) -> list[tuple[str, str, str]]:
    return [(m.text, m.value, m.granularity) for m in resolve_dates(text, at)]


def conv26_turns() -> list[tuple[datetime, dict]]:
    conversation = json.loads(CONV_26.read_text())[0]["conversation"]
    turns = []
    for key, value in conversation.items():
        if key.startswith("session_") and isinstance(value, list):
            at = parse_time(conversation[f"{key}_date_time"])
            turns += [(at, turn) for turn in value]
    return turns


# --------------------------------------------------------------------------- parse_time


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("7:20 pm on 16 June, 2023", datetime(2023, 6, 16, 19, 20)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37)),
    ],
)
def test_parse_time_reads_locomo_session_times(value: str, expected: datetime) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-02", datetime(2025, 3, 2)),
        ("2025-03-02 14:05", datetime(2025, 3, 2, 14, 5)),
        ("2025-03-02T14:05:00", datetime(2025, 3, 2, 14, 5)),
        ("2025-03-02T14:05:00Z", datetime(2025, 3, 2, 14, 5)),
    ],
)
def test_parse_time_reads_iso_times_as_naive(value: str, expected: datetime) -> None:
    assert parse_time(value) == expected


def test_parse_time_keeps_the_clock_reading_of_a_time_with_an_offset() -> None:
    # 23:30 in New York is the next day in UTC; "yesterday" must follow the speaker's own day.
    assert parse_time("2025-03-02T23:30:00-05:00") == datetime(2025, 3, 2, 23, 30)
    aware = datetime(2025, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_time(aware) == datetime(2025, 3, 2, 23, 30)


def test_parse_time_of_none_is_none() -> None:
    assert parse_time(None) is None


@pytest.mark.parametrize(
    "value", ["yesterday", "tomorrow at 5", "8 May", "1:56 pm on 8 May", "soon", "", "   ", "2025-13-40"]
)
def test_parse_time_refuses_text_that_is_not_a_full_date(value: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_time(value)
    assert "1:56 pm on 8 May, 2023" in str(raised.value)  # the hint names the accepted formats


@pytest.mark.parametrize("value", ["0001-01-01", "0999-12-31 23:59", "9999-12-31 23:59", "9001-01-01",
                                   datetime(1, 1, 1)])
def test_a_turn_time_outside_the_years_1000_to_9000_is_refused(value) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_time(value)
    assert "is out of range" in raised.value.message and "1000 to 9000" in raised.value.hint
    assert parse_time("1000-01-01") == datetime(1000, 1, 1) and parse_time("9000-12-31") == datetime(9000, 12, 31)


@pytest.mark.parametrize("value", ["04.03.2025", "04/03/2025", "4-3-2025 10:00", "12.01.2024"])
def test_a_numeric_date_that_reads_either_way_round_is_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match="is ambiguous") as raised:
        parse_time(value)
    assert "year first" in raised.value.hint


@pytest.mark.parametrize("value, expected", [("13.03.2025", datetime(2025, 3, 13)), ("03/13/2025", datetime(2025, 3, 13)),
                                             ("05.05.2025", datetime(2025, 5, 5)), ("2025-3-4", datetime(2025, 3, 4))])
def test_a_numeric_date_whose_order_is_certain_is_read(value: str, expected: datetime) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize("value", ["2025-13-01T10:00", "2025-13-01", "2025-02-30", "2025-00-10"])
def test_an_impossible_iso_date_is_refused_not_read_another_way(value: str) -> None:
    """dateparser would read "2025-13-01" as 13 January: an ISO date is read as ISO or not at all."""
    with pytest.raises(InvalidInputError, match="Cannot read the turn time"):
        parse_time(value)


def test_a_date_past_the_calendars_end_is_not_read_rather_than_raised() -> None:
    assert resolved("See you tomorrow, the day after tomorrow and next week.", datetime(9999, 12, 31, 23, 59)) == []
    assert resolved("I went yesterday, last week.", datetime(1, 1, 1)) == []
    assert [m[0] for m in resolved("I went yesterday and tomorrow.", datetime(9999, 12, 31))] == ["yesterday"]


def test_an_unreadable_time_is_quoted_at_most_80_characters() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_time("9" * 100_000)
    assert raised.value.message == f"Cannot read the turn time '{'9' * 79}…."


def test_dates_never_read_the_wall_clock() -> None:
    tree = ast.parse(inspect.getsource(edge.dates))
    calls = {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & {"now", "today", "utcnow", "time"}


# --------------------------------------------------------------------------- relative dates


def test_yesterday_resolves_to_the_day_before_the_turn() -> None:
    assert resolved("I went to the market yesterday.") == [("yesterday", "2025-03-01", "day")]


def test_last_friday_said_on_a_sunday_is_two_days_before() -> None:
    assert resolved("Last Friday I baked bread.") == [("Last Friday", "2025-02-28", "day")]


def test_last_friday_said_on_a_friday_is_a_week_before() -> None:
    assert resolved("last Friday", datetime(2025, 2, 28)) == [("last Friday", "2025-02-21", "day")]


def test_next_month_is_the_month_after_the_turn() -> None:
    assert resolved("We go camping next month.") == [("next month", "2025-04", "month")]


def test_two_weeks_ago_is_fourteen_days_before_the_turn() -> None:
    assert resolved("I moved two weeks ago.") == [("two weeks ago", "2025-02-16", "day")]


@pytest.mark.parametrize(
    ("phrase", "value", "granularity"),
    [
        ("today", "2025-03-02", "day"),
        ("tonight", "2025-03-02", "day"),
        ("this morning", "2025-03-02", "day"),
        ("last night", "2025-03-01", "day"),
        ("tomorrow", "2025-03-03", "day"),
        ("the day before yesterday", "2025-02-28", "day"),
        ("this Saturday", "2025-03-08", "day"),
        ("next Friday", "2025-03-07", "day"),
        ("last Tues", "2025-02-25", "day"),
        ("3 days ago", "2025-02-27", "day"),
        ("a couple of weeks ago", "2025-02-16", "day"),
        ("a fortnight ago", "2025-02-16", "day"),
        ("last week", "2025-02-17", "week"),
        ("this week", "2025-02-24", "week"),
        ("next week", "2025-03-03", "week"),
        ("the week before last", "2025-02-10", "week"),
        ("last weekend", "2025-02-22", "weekend"),
        ("this weekend", "2025-03-01", "weekend"),
        ("this past weekend", "2025-03-01", "weekend"),
        ("two weekends ago", "2025-02-15", "weekend"),
        ("last month", "2025-02", "month"),
        ("three months ago", "2024-12", "month"),
        ("last year", "2024", "year"),
        ("next year", "2026", "year"),
        ("ten years ago", "2015", "year"),
    ],
)
def test_relative_phrases_resolve_against_the_turn(phrase: str, value: str, granularity: str) -> None:
    assert resolved(f"It was {phrase}, I think.") == [(phrase, value, granularity)]


def test_last_weekend_said_on_a_monday_is_the_weekend_just_gone() -> None:
    assert resolved("last weekend", datetime(2025, 3, 3)) == [("last weekend", "2025-03-01", "weekend")]


# --------------------------------------------------------------------------- absolute dates


@pytest.mark.parametrize(
    ("text", "mention", "value", "granularity"),
    [
        ("We met on 8 May 2023.", "8 May 2023", "2023-05-08", "day"),
        ("We met on May 8th, 2023.", "May 8th, 2023", "2023-05-08", "day"),
        ("We met on the 31st of December, 2024.", "the 31st of December, 2024", "2024-12-31", "day"),
        ("We met in May 2023.", "May 2023", "2023-05", "month"),
        ("We met on 2023-05-08.", "2023-05-08", "2023-05-08", "day"),
        ("She has painted since 2016.", "2016", "2016", "year"),
    ],
)
def test_absolute_dates_keep_their_own_year(text: str, mention: str, value: str, granularity: str) -> None:
    assert resolved(text) == [(mention, value, granularity)]


def test_a_day_or_month_without_a_year_takes_the_turn_year() -> None:
    assert resolved("My sister is visiting in May.") == [("May", "2025-05", "month")]
    assert resolved("The party is on the 2nd of May!") == [("the 2nd of May", "2025-05-02", "day")]
    assert resolved("See you Sept 5") == [("Sept 5", "2025-09-05", "day")]


def test_last_may_is_the_may_before_the_turn() -> None:
    assert resolved("We married last May.") == [("last May", "2024-05", "month")]
    assert resolved("We married last May.", datetime(2025, 7, 1)) == [("last May", "2025-05", "month")]


def test_a_mention_is_the_exact_span_of_the_turn() -> None:
    text = "Hi! Yesterday was long; next month is better."
    mentions = resolve_dates(text, SUNDAY)
    assert [text[m.start : m.end] for m in mentions] == [m.text for m in mentions] == ["Yesterday", "next month"]
    assert isinstance(mentions[0], DateMention)


def test_the_longest_phrase_wins_where_phrases_overlap() -> None:
    assert resolved("the day before yesterday") == [("the day before yesterday", "2025-02-28", "day")]


def test_mentions_are_shown_in_human_form() -> None:
    assert [m.human for m in resolve_dates("yesterday, last week, last weekend, next month", SUNDAY)] == [
        "1 March 2025",
        "the week of 17 February 2025",
        "the weekend of 22 February 2025",
        "April 2025",
    ]


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    "text",
    [
        "You may be right, we march on.",
        "May I ask you something?",
        "The sun was out, so we sat in the sun.",
        "I'll do it now, for the second time.",
        "Talk to you in a bit, I have 3 kids and 2 dogs.",
        "I last sat there a while ago.",
        "It was the last Friday of the month.",
        "That was my last year at school.",
        "Mon ami, the weekend was long.",
        "We went on Friday.",
        "It took two days.",
        "I saw it a few weeks ago.",
        "It happened the week before.",
        "See you on the 5th.",
        "We go camping this summer.",
        "Let's meet up at 5:30.",
    ],
)
def test_words_that_only_look_like_dates_are_not_dates(text: str) -> None:
    assert resolve_dates(text, SUNDAY) == []


def test_resolve_dates_needs_the_turn_time() -> None:
    with pytest.raises(InvalidInputError):
        resolve_dates("yesterday", None)  # type: ignore[arg-type]


@needs_conv26
def test_conv26_relative_dates_match_locomo_gold_answers() -> None:
    by_id = {turn["dia_id"]: (at, turn["text"]) for at, turn in conv26_turns()}
    gold = {  # dia_id: (phrase, LoCoMo's answer to the temporal question on that turn)
        "D1:3": ("yesterday", "7 May 2023"),
        "D1:14": ("last year", "2022"),
        "D2:7": ("next month", "June 2023"),
        "D5:4": ("yesterday", "2 July 2023"),
        "D5:13": ("this month", "July 2023"),
        "D7:1": ("two days ago", "10 July 2023"),
        "D8:2": ("Last Fri", "14 July 2023"),
        "D10:3": ("last Tues", "18 July 2023"),
        "D4:5": ("ten years ago", "2013"),
        "D17:8": ("Last month", "September 2023"),
        "D19:2": ("yesterday", "21 October 2023"),
    }
    for dia_id, (phrase, answer) in gold.items():
        at, text = by_id[dia_id]
        assert [(m.text, m.human) for m in resolve_dates(text, at)] == [(phrase, answer)], dia_id


@needs_conv26
def test_conv26_turns_yield_only_date_phrases() -> None:
    found = {m.text.lower() for at, turn in conv26_turns() for m in resolve_dates(turn["text"], at)}
    assert found == {
        "yesterday", "last year", "last saturday", "next month", "last week", "three years ago",
        "ten years ago", "last friday", "this month", "two days ago", "last fri", "last weekend",
        "two weekends ago", "last month", "last tues", "last night", "this week", "five years ago",
        "this past weekend",
    }  # fmt: skip


# --------------------------------------------------------------------------- human_date


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-05-08", "8 May 2023"),
        ("2023-05", "May 2023"),
        ("2023", "2023"),
        ("2023-05-08T13:56:00", "8 May 2023"),
        ("2023-05-08 13:56", "8 May 2023"),
        ("2025-03-01T00:00:00+00:00", "1 March 2025"),
    ],
)
def test_human_date_writes_dates_as_locomo_answers_do(value: str, expected: str) -> None:
    assert human_date(value) == expected


@pytest.mark.parametrize("value", ["8 May 2023", "2023-13", "2023-02-30", "", "yesterday"])
def test_human_date_refuses_what_is_not_an_iso_date(value: str) -> None:
    with pytest.raises(ValueError):
        human_date(value)
