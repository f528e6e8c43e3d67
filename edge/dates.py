"""Dates anchored to the turn's own time.

A memory is only as faithful as its dates. "Yesterday" written into the bank
as "yesterday" is wrong the next day, and a date guessed from the wall clock
or a default year is wrong for every replayed conversation (LoCoMo's sessions
are dated 2023). So every time here is resolved against the time of the turn
that said it, never against `datetime.now()`: giving mem0's extractor the real
session timestamp moved its LoCoMo temporal score from 11.6 to 53.5, and Zep
stores every fact with the time it was said.

- `parse_time` reads a turn's time (ISO, or LoCoMo's "1:56 pm on 8 May, 2023").
- `resolve_dates` finds the date expressions of a turn and resolves each one
  against the turn's time: "yesterday" said on 2 March 2025 is 2025-03-01.
- `human_date` writes an ISO date the way models are shown it ("8 May 2023",
  the form of LoCoMo's gold answers).

Finding dates favours precision over recall. Chat is full of words a generic
date search reads as dates ("may" the verb, "march" the verb, "second",
"now", "sun", bare numbers), so `dateparser.search.search_dates` is not used:
candidates come only from a fixed list of phrases (`_PHRASES`). Relative ones
are resolved by date arithmetic (dateutil's `relativedelta` for months) under
the rules in `resolve_dates`, absolute ones ("8 May 2023", "May 2023", "in
May") by the `dateparser` library.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Callable

from dateutil.relativedelta import relativedelta

from edge.errors import InvalidInputError, shorten

__all__ = ["DateMention", "GRANULARITIES", "human_date", "parse_time", "resolve_dates"]

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
GRANULARITIES = ("day", "week", "weekend", "month", "year")

# The years a turn's time may fall in. Every date a turn names is resolved against its time, at most 200 years
# away ("200 years ago"); Python's calendar ends at the years 1 and 9999, so a time near either end would resolve
# "yesterday" or "next May" to a date that does not exist.
MIN_YEAR, MAX_YEAR = 1000, 9000

_TIME_FORMATS_HINT = (
    'give an ISO time ("2025-03-02", "2025-03-02 14:05", "2025-03-02T14:05:00+00:00") '
    'or LoCoMo\'s session format ("1:56 pm on 8 May, 2023")'
)


# --------------------------------------------------------------------------- turn times


def parse_time(value: str | datetime | None) -> datetime | None:
    """The absolute time of a turn, as a naive datetime in the turn's own local time.

    Accepts a `datetime`, an ISO string ("2025-03-02", "2025-03-02 14:05",
    "2025-03-02T14:05:00+00:00", a trailing "Z") or LoCoMo's session format
    ("1:56 pm on 8 May, 2023", read with `dateparser`). A time with an offset
    keeps its clock reading and drops the offset: "yesterday" is relative to
    the speaker's own calendar day, not to UTC's. A date alone is midnight.
    `None` gives `None`. A date in numbers only is read when its order is
    certain ("13.03.2025", "03/13/2025": one number is over 12); "04.03.2025"
    is refused as ambiguous, and an impossible ISO date ("2025-13-01") as
    unreadable.

    Raises `InvalidInputError` for anything else, including text that names
    no year (a turn's time is never completed from the wall clock) and a
    time outside the years `MIN_YEAR`..`MAX_YEAR`.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value.replace(tzinfo=None)
    elif not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"Not a turn time: {shorten(repr(value))}.", hint=_TIME_FORMATS_HINT)
    else:
        _refuse_ambiguous(value.strip())
        parsed = _parse_text(value.strip())
        if parsed is None:
            raise InvalidInputError(f"Cannot read the turn time {shorten(repr(value))}.", hint=_TIME_FORMATS_HINT)
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise InvalidInputError(
            f"The turn time {shorten(repr(value if isinstance(value, str) else parsed.isoformat()))} is out of range: "
            f"the year {parsed.year} is not between {MIN_YEAR} and {MAX_YEAR}.",
            hint=f"give the time the turn was said, in a year from {MIN_YEAR} to {MAX_YEAR} "
            '(e.g. "2025-03-02 14:05")',
        )
    return parsed


# Words that say when, not what: never a topic two texts share (`edge.manager.shares_topic`).
RELATIVE_DATE_WORDS = (
    "yesterday", "today", "tonight", "tomorrow", "ago", "last", "next", "past", "previous", "coming", "this", "that",
    "day", "days", "week", "weeks", "weekend", "weekends", "fortnight", "month", "months", "year", "years",
    "morning", "afternoon", "evening", "night", "recently", "lately", "earlier", "later", "soon", "now", "before",
    "after", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "spring", "summer", "autumn", "fall", "winter",
)

_NUMERIC_DATE = re.compile(r"(?P<first>\d{1,2})[./-](?P<second>\d{1,2})[./-](?P<year>\d{4})\b")


def _refuse_ambiguous(text: str) -> None:
    """Refuse a numeric date whose day and month could be either way round ("04.03.2025").

    The rule, documented in `parse_time`: a date written all in numbers is
    read only when its order is certain, that is when one of the first two
    numbers is over 12 ("13.03.2025" and "03/13/2025" are both 13 March)
    or both are the same. ISO dates (year first) are always read; one that
    names an impossible month or day ("2025-13-01") is refused, never
    read another way.
    """
    match = _NUMERIC_DATE.match(text)
    if match and int(match["first"]) <= 12 and int(match["second"]) <= 12 and match["first"] != match["second"]:
        raise InvalidInputError(
            f"The turn time {shorten(repr(text))} is ambiguous: {match['first']} and {match['second']} could each be "
            "the day or the month.",
            hint=f'write it year first ("{match["year"]}-{int(match["second"]):02d}-{int(match["first"]):02d}" if '
            f'{match["first"]} is the day) or with the month\'s name '
            f'("{int(match["first"])} {calendar.month_name[int(match["second"])]} {match["year"]}")',
        )


@lru_cache(maxsize=1024)
def _parse_text(text: str) -> datetime | None:
    """Cached: every turn of a session carries the same stamp, and dateparser takes a few ms a call."""
    if re.match(r"\d{4}-\d{1,2}-\d{1,2}", text):  # ISO: read as ISO or not at all ("2025-13-01" is no date)
        parsed = _parse_iso(text)
    else:
        parsed = _parse_locomo(text) or _parse_absolute(text)
    return parsed.replace(tzinfo=None) if parsed else None


def _parse_absolute(text: str) -> datetime | None:
    """Any other absolute date with a day, a month and a year ("8 May 2023", "May 8, 2023 2:05 pm")."""
    if not re.search(r"\d{4}", text):
        return None  # no year written: never completed from a default
    parsed = _dateparser_parse(text, {"STRICT_PARSING": True, "REQUIRE_PARTS": ["day", "month", "year"]})
    if parsed is None or str(parsed.year) not in text:
        return None
    return parsed


def _parse_iso(text: str) -> datetime | None:
    if not re.match(r"\d{4}-\d{1,2}-\d{1,2}", text):
        return None
    padded = re.sub(r"^(\d{4})-(\d{1,2})-(\d{1,2})", lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", text)
    try:
        return datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", padded))
    except ValueError:
        return None


_LOCOMO_TIME = re.compile(
    r"(?P<hour>\d{1,2})[:.](?P<minute>\d{2})\s*(?P<half>[ap]\.?m\.?)\s+on\s+"
    r"(?P<day>\d{1,2})\s+(?P<month>[A-Za-z]+\.?),?\s+(?P<year>\d{4})",
    re.IGNORECASE,
)


def _parse_locomo(text: str) -> datetime | None:
    match = _LOCOMO_TIME.fullmatch(text)
    if match is None:
        return None
    parsed = _dateparser_parse(text, {"STRICT_PARSING": True, "REQUIRE_PARTS": ["day", "month", "year"]})
    if parsed is None or parsed.year != int(match["year"]) or parsed.day != int(match["day"]):
        return None
    return parsed


def _dateparser_parse(text: str, settings: dict[str, Any]) -> datetime | None:
    import dateparser  # imported here: it takes a moment, and only absolute dates need it

    # dateparser fills missing parts from RELATIVE_BASE, the wall clock by default; ours is fixed,
    # and callers reject any result whose year or day is not the text's own.
    settings = {"RETURN_AS_TIMEZONE_AWARE": False, "RELATIVE_BASE": _FIXED_BASE, **settings}
    return dateparser.parse(text, languages=["en"], settings=settings)


_FIXED_BASE = datetime(2000, 1, 1)


# --------------------------------------------------------------------------- mentions


@dataclass(frozen=True)
class DateMention:
    """A date expression found in a turn, resolved against the turn's time.

    `start`/`end` are character offsets into the turn (`text[start:end]`).
    `value` by `granularity`:
    - "day": the day, "YYYY-MM-DD";
    - "week": the Monday the week starts on, "YYYY-MM-DD" (weeks run Monday to Sunday);
    - "weekend": the Saturday the weekend starts on, "YYYY-MM-DD";
    - "month": "YYYY-MM";
    - "year": "YYYY".
    """

    text: str
    start: int
    end: int
    value: str
    granularity: str

    @property
    def human(self) -> str:
        """The resolved date as models are shown it: "1 March 2025", "the week of 24 February 2025"."""
        shown = human_date(self.value)
        if self.granularity == "week":
            return f"the week of {shown}"
        if self.granularity == "weekend":
            return f"the weekend of {shown}"
        return shown


_Resolved = tuple[str, str]  # (value, granularity)
_Resolver = Callable[["re.Match[str]", date], "_Resolved | None"]


def resolve_dates(text: str, at: datetime) -> list[DateMention]:
    """The date expressions in `text`, resolved against `at`, the time of the turn.

    Relative expressions, resolved with `dateutil.relativedelta`:
    - "today", "tonight", "this morning/afternoon/evening" -> that day;
      "yesterday", "last night" -> the day before; "tomorrow" -> the day
      after; "the day before yesterday" / "the day after tomorrow".
    - "last Friday" (also "this past Friday", "last Fri") -> the latest Friday
      before the turn's day; "this Friday" (or "this coming Friday") -> the
      first Friday on or after it; "next Friday" -> the first Friday after it.
      A bare "Friday" is not read: its tense decides past or future.
    - "last/this/next week" -> week granularity; "last/this/next weekend",
      "this past weekend", "this coming weekend" -> weekend granularity.
      Weeks run Monday to Sunday, so "last weekend" said on a Sunday is the
      weekend before the one in progress. "the week/weekend before last" ->
      two back.
    - "last/this/next month", "last/this/next year".
    "last/this/next" after a determiner or before "of" is not relative to the
    turn and is not read: "the last Friday of the month", "my last year at
    school", "last week of June" (only "June" is read).
    - "3 days ago", "two weeks ago", "a couple of weeks ago", "a fortnight
      ago" -> a day; "two weekends ago" -> a weekend; "N months ago" -> a
      month; "N years ago" -> a year.
    Absolute expressions, read with `dateparser` (month names must be
    capitalised, so "may" and "march" the verbs are never dates):
    - "8 May 2023", "May 8th, 2023", "the 2nd of May", "May 8" -> a day;
    - "May 2023", and a month name after "in", "since", "by", "of", "early",
      ... ("in May": the mention is "May", since "before May" names May too)
      -> a month; "last May" -> the latest May before the turn's month,
      "next May" -> the first May after it, "this May" -> the turn's year's;
    - a year after "in", "since", "during", ... ("in 2022") -> a year;
    - ISO dates ("2023-05-08", "2023-05").
    A day or month without a year takes the turn's year.

    Not read, on purpose: "on the 5th" (which month?), "the week before"
    and "the day before" (relative to something said earlier, not to the
    turn), seasons ("this summer"), vague counts ("a few weeks ago"),
    durations ("in two days" is as often "it took two days"), numeric dates
    ("5/8/2023": day or month first?). Known misreadings left in: a
    sentence opening "May 5 of us come?" and a count after a preposition
    ("in 2000 steps" reads as the year 2000).

    Mentions come in text order and never overlap (the longest wins). An
    expression that would fall outside the calendar (years 1 to 9999) is not
    read. Raises `InvalidInputError` when `at` is not a datetime.
    """
    if not isinstance(at, datetime):
        raise InvalidInputError(
            f"Dates are resolved against the turn's time; got {at!r}.",
            hint="pass the turn's time as a datetime (edge.dates.parse_time reads strings)",
        )
    day = at.date()
    found: list[DateMention] = []
    for pattern, resolver in _PHRASES:
        for match in pattern.finditer(text):
            try:
                resolved = resolver(match, day)
            except (OverflowError, ValueError):  # a date past the calendar's ends (year 1 or 9999): not a date
                continue
            if resolved is not None:
                start, end = match.span("date") if "date" in pattern.groupindex else match.span()
                found.append(DateMention(text[start:end], start, end, *resolved))
    return _without_overlaps(found)


def _without_overlaps(mentions: list[DateMention]) -> list[DateMention]:
    kept: list[DateMention] = []
    for mention in sorted(mentions, key=lambda m: (m.start, -(m.end - m.start))):
        if kept and mention.start < kept[-1].end:
            continue
        kept.append(mention)
    return kept


# --------------------------------------------------------------------------- relative resolvers


def _day(value: date) -> _Resolved:
    return value.isoformat(), "day"


def _week(monday: date) -> _Resolved:
    return monday.isoformat(), "week"


def _weekend(saturday: date) -> _Resolved:
    return saturday.isoformat(), "weekend"


def _month(value: date) -> _Resolved:
    return f"{value.year:04d}-{value.month:02d}", "month"


def _year(year: int) -> _Resolved:
    return f"{year:04d}", "year"


def _monday_of(value: date) -> date:
    return value - timedelta(days=value.weekday())


_DAY_OFFSETS = {
    "the day before yesterday": -2,
    "yesterday": -1,
    "last night": -1,
    "today": 0,
    "tonight": 0,
    "this morning": 0,
    "this afternoon": 0,
    "this evening": 0,
    "tomorrow": 1,
    "the day after tomorrow": 2,
}


def _resolve_day_word(match: re.Match[str], day: date) -> _Resolved:
    phrase = re.sub(r"\s+", " ", match.group(0).lower())
    return _day(day + timedelta(days=_DAY_OFFSETS[phrase]))


_WEEKDAY_NAMES = {
    "mon": 0, "monday": 0,
    "tue": 1, "tues": 1, "tuesday": 1,
    "wed": 2, "weds": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3,
    "fri": 4, "friday": 4,
    "saturday": 5,
    "sunday": 6,
}  # fmt: skip
# "sat" and "sun" are left out: "I last sat there", "the last sun of summer".


def _resolve_weekday(match: re.Match[str], day: date) -> _Resolved:
    which = re.sub(r"\s+", " ", match["which"].lower())
    weekday = _WEEKDAY_NAMES[match["weekday"].lower().rstrip(".")]
    if which in ("last", "this past"):
        back = (day.weekday() - weekday) % 7 or 7
        return _day(day - timedelta(days=back))
    ahead = (weekday - day.weekday()) % 7
    if which != "this" and ahead == 0:
        ahead = 7  # "next Friday" said on a Friday is a week on
    return _day(day + timedelta(days=ahead))


def _resolve_period(match: re.Match[str], day: date) -> _Resolved:
    """ "last/this/next week|weekend|month|year"; weeks run Monday to Sunday."""
    step = {"last": -1, "this": 0, "next": 1}[match["which"].lower()]
    unit = match["unit"].lower()
    if unit == "week":
        return _week(_monday_of(day) + timedelta(weeks=step))
    if unit == "weekend":
        return _weekend(_monday_of(day) + timedelta(weeks=step, days=5))
    if unit == "month":
        return _month(day + relativedelta(months=step))
    return _year(day.year + step)


def _resolve_near_weekend(match: re.Match[str], day: date) -> _Resolved:
    """ "this past weekend": the latest Saturday before today; "this coming weekend": the first from today on."""
    if match["which"].lower().endswith("past"):
        return _weekend(day - timedelta(days=(day.weekday() - 5) % 7 or 7))
    return _weekend(day + timedelta(days=(5 - day.weekday()) % 7))


def _resolve_before_last(match: re.Match[str], day: date) -> _Resolved:
    monday = _monday_of(day) - timedelta(weeks=2)
    return _week(monday) if match["unit"].lower() == "week" else _weekend(monday + timedelta(days=5))


_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "a couple of": 2, "a couple": 2, "couple of": 2,
}  # fmt: skip


def _resolve_ago(match: re.Match[str], day: date) -> _Resolved | None:
    count_text = re.sub(r"\s+", " ", match["count"].lower())
    count = int(count_text) if count_text.isdigit() else _NUMBER_WORDS[count_text]
    unit = match["unit"].lower()
    if unit.startswith("fortnight"):
        count, unit = count * 2, "week"
    unit = unit.rstrip("s")
    if count > 200:
        return None
    if unit == "day":
        return _day(day - timedelta(days=count))
    if unit == "week":
        return _day(day - timedelta(weeks=count))
    if unit == "weekend":
        return _weekend(_monday_of(day) - timedelta(weeks=count) + timedelta(days=5))
    if unit == "month":
        return _month(day - relativedelta(months=count))
    return _year(day.year - count)


# --------------------------------------------------------------------------- absolute resolvers


def _month_number(name: str) -> int:
    name = name.rstrip(".").lower()
    return next(i for i, month in enumerate(MONTHS, 1) if month.lower().startswith(name[:3]))


def _resolve_with_dateparser(match: re.Match[str], day: date) -> _Resolved | None:
    """An absolute date, read by `dateparser`; a missing year is the turn's year."""
    phrase = match.group(0)
    has_year = match.groupdict().get("year") is not None
    has_day = match.groupdict().get("day") is not None
    if not has_year:
        phrase = f"{phrase} {day.year}"
    parsed = _date_parser().get_date_data(phrase)
    when = parsed.date_obj
    if when is None or when.month != _month_number(match["month"]):
        return None
    if has_day and when.day != int(re.match(r"\d+", match["day"]).group(0)):  # type: ignore[union-attr]
        return None
    if has_day:
        return _day(when.date())
    return _month(when.date()) if parsed.period == "month" else _year(when.year)


@lru_cache(maxsize=1)
def _date_parser() -> Any:
    from dateparser.date import DateDataParser

    # Every phrase handed to it has a year, so the fixed RELATIVE_BASE is never read into a result.
    settings = {"RETURN_AS_TIMEZONE_AWARE": False, "PREFER_DAY_OF_MONTH": "first", "RELATIVE_BASE": _FIXED_BASE}
    return DateDataParser(languages=["en"], settings=settings)


def _resolve_named_month(match: re.Match[str], day: date) -> _Resolved:
    """ "last May": the latest May before the turn's month; "next May": the first after it; else the turn's year's."""
    month = _month_number(match["month"])
    which = (match.groupdict().get("which") or "").lower()
    year = day.year
    if which == "last" and month >= day.month:
        year -= 1
    elif which == "next" and month <= day.month:
        year += 1
    return f"{year:04d}-{month:02d}", "month"


def _resolve_year(match: re.Match[str], day: date) -> _Resolved:
    return _year(int(match["year"]))


def _resolve_iso(match: re.Match[str], day: date) -> _Resolved | None:
    try:
        if match["day"]:
            return _day(date(int(match["year"]), int(match["month"]), int(match["day"])))
        return _month(date(int(match["year"]), int(match["month"]), 1))
    except ValueError:
        return None


# --------------------------------------------------------------------------- the phrase list

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?)"
)
_FULL_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DAY_NUMBER = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]|20)\d{2}"
_WEEKDAY = (
    r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday"
    r"|mon|tues?|weds?|thurs|thur|thu|fri)"
)
_COUNT = (
    r"(?:\d{1,3}|a\s+couple\s+of|a\s+couple|couple\s+of|an?|one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty)"
)
_END = r"(?![\w-])(?!['’](?!s\b)\w)"  # a phrase ends at a word's end; "yesterday's" is fine
# "last/this/next" after a determiner is not relative to the turn: "the last Friday of the month",
# "my last year at school", "that next week".
_NOT_AFTER_DETERMINER = "".join(
    rf"(?<!\b{word}\s)" for word in ("the", "my", "his", "her", "its", "our", "your", "their", "that", "this")
)
_NOT_OF = r"(?!\s+of\b)"  # "last week of June" names a week of June
_NO_DIGIT_AFTER = r"(?![\d,.]?\d)"


def _ci(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w'’-]){pattern}{_END}", re.IGNORECASE)


def _cs(pattern: str) -> re.Pattern[str]:
    """Case-sensitive where month names are involved; the inline groups relax it for function words."""
    return re.compile(rf"(?<![\w'’-]){pattern}{_END}")


_PHRASES: tuple[tuple[re.Pattern[str], _Resolver], ...] = (
    (_ci(r"(?:the\s+day\s+before\s+yesterday|the\s+day\s+after\s+tomorrow|yesterday|last\s+night"
         r"|today|tonight|this\s+(?:morning|afternoon|evening)|tomorrow)"), _resolve_day_word),
    (_ci(rf"{_NOT_AFTER_DETERMINER}(?P<which>last|this\s+past|this\s+coming|this|next)\s+"
         rf"(?P<weekday>{_WEEKDAY}){_NOT_OF}"), _resolve_weekday),
    (_ci(rf"{_NOT_AFTER_DETERMINER}(?P<which>last|this|next)\s+(?P<unit>weekend|week|month|year){_NOT_OF}"),
     _resolve_period),
    (_ci(r"(?P<which>this\s+past|this\s+coming|the\s+coming)\s+weekend"), _resolve_near_weekend),
    (_ci(r"the\s+(?P<unit>weekend|week)\s+before\s+last"), _resolve_before_last),
    (_ci(rf"(?P<count>{_COUNT})\s+(?P<unit>days?|weeks?|weekends?|fortnights?|months?|years?)\s+ago"), _resolve_ago),
    # Absolute: a day with a month, with or without a year.
    (_cs(rf"(?:(?i:the)\s+)?(?P<day>{_DAY_NUMBER})(?:\s+(?i:of))?\s+(?P<month>{_MONTH})"
         rf"(?:,?\s+(?P<year>{_YEAR}))?{_NO_DIGIT_AFTER}"),
     _resolve_with_dateparser),
    (_cs(rf"(?P<month>{_MONTH})\s+(?P<day>{_DAY_NUMBER})(?:,?\s+(?P<year>{_YEAR}))?{_NO_DIGIT_AFTER}"),
     _resolve_with_dateparser),
    (_cs(rf"(?P<month>{_MONTH}),?\s+(?P<year>{_YEAR}){_NO_DIGIT_AFTER}"), _resolve_with_dateparser),
    # A full month name alone only after a word that makes it a date; the mention is the month
    # ("before May" names May), or the month with its "last/this/next".
    (_cs(rf"(?:(?i:in|since|by|until|till|during|of|from|before|after|early|late|through)\s+|(?i:mid)-?\s*)"
         rf"(?P<date>(?P<month>{_FULL_MONTH}))"), _resolve_named_month),
    (_cs(rf"{_NOT_AFTER_DETERMINER}(?P<date>(?P<which>(?i:last|this|next))\s+(?P<month>{_FULL_MONTH}))"),
     _resolve_named_month),
    (_ci(rf"(?:in|since|during|until|till|by|from|of|before|after)\s+"
         rf"(?P<date>(?P<year>{_YEAR})){_NO_DIGIT_AFTER}(?!\s*%)"),
     _resolve_year),
    (_ci(r"(?P<year>\d{4})-(?P<month>[01]\d)(?:-(?P<day>[0-3]\d)(?:T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?)?"), _resolve_iso),
)  # fmt: skip


# --------------------------------------------------------------------------- showing dates


def human_date(value: str) -> str:
    """An ISO date written the way models are shown it.

    "2023-05-08" -> "8 May 2023"; "2023-05" -> "May 2023"; "2023" -> "2023";
    a full ISO datetime ("2023-05-08T13:56:00") -> its date, "8 May 2023".
    English month names always, whatever the locale. Raises `ValueError`
    (as `date.fromisoformat` does) for anything that is not one of these
    forms: callers show such a stored value as it is.
    """
    text = value.strip() if isinstance(value, str) else ""
    if re.fullmatch(r"\d{4}", text):
        return text
    month_only = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if month_only and 1 <= int(month_only.group(2)) <= 12:
        return f"{MONTHS[int(month_only.group(2)) - 1]} {month_only.group(1)}"
    if re.match(r"\d{4}-\d{2}-\d{2}(?:$|[T ])", text):
        when = date.fromisoformat(text[:10])  # raises ValueError for "2023-02-30"
        return f"{when.day} {MONTHS[when.month - 1]} {when.year}"
    raise ValueError(f'Not an ISO date: {value!r}; expected "YYYY-MM-DD", "YYYY-MM", "YYYY" or an ISO datetime.')
