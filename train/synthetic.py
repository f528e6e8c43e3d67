"""Seeded synthetic conversations for training and measuring the Memory Manager.

One person talks over a few dated sessions. Facts about them are introduced,
changed ("I moved to Oslo"), retracted ("our cat passed away"), repeated
("as I said, I'm a nurse") and mixed with small talk. Every turn carries its
gold operations on the person's gold memory bank, so operation accuracy can
be measured, and questions whose gold answer is the *latest* state of a fact
("unknown" once it was retracted), so downstream answers can be scored.

Everything is a pure function of the seed. Splits are seed ranges that never
overlap (`SPLITS`), so a test conversation is never trained on.

    from edge.train.synthetic import generate
    conversations = generate("train", 200)
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

UNKNOWN = "unknown"

SPLITS: dict[str, range] = {
    "train": range(0, 1_000_000),
    "dev": range(1_000_000, 1_100_000),
    "test": range(1_100_000, 1_200_000),
}

# Turn kinds and the operation each one calls for.
KINDS = ("intro", "change", "retract", "repeat", "chat")
KIND_OP = {"intro": "ADD", "change": "UPDATE", "retract": "DELETE", "repeat": "NOOP", "chat": "NOOP"}


@dataclass(frozen=True)
class Slot:
    """One kind of fact about a person: its values, how it is said, stored and asked."""

    name: str
    values: tuple[str, ...]
    memory: str  # "{name} lives in {value}."
    question: str  # "Where does {name} live?"
    intro: tuple[str, ...]  # first-person sentences with {value}
    change: tuple[str, ...]  # with {old} and {value}
    retract: tuple[str, ...] = ()  # with {old}; empty: the fact cannot be retracted


SLOTS: tuple[Slot, ...] = (
    Slot(
        "city",
        ("Lisbon", "Oslo", "Denver", "Nairobi", "Kyoto", "Porto", "Calgary", "Lyon", "Austin", "Tallinn", "Perth",
         "Valencia"),
        "{name} lives in {value}.",
        "Which city does {name} live in?",
        ("I live in {value}.", "Home for me is {value} these days.", "I've been living in {value} for a while now."),
        ("Big news: I moved from {old} to {value}!", "We left {old} and now live in {value}.",
         "I don't live in {old} anymore, I moved to {value}."),
    ),
    Slot(
        "job",
        ("nurse", "teacher", "chef", "pilot", "architect", "plumber", "librarian", "dentist", "journalist",
         "electrician", "pharmacist", "carpenter"),
        "{name} works as a {value}.",
        "What is {name}'s job?",
        ("I work as a {value}.", "I'm a {value} by profession.", "My job? I'm a {value}."),
        ("I quit being a {old} and now I work as a {value}.", "I changed careers: no longer a {old}, now a {value}.",
         "After years as a {old} I retrained as a {value}."),
        ("I quit my job as a {old} and I'm not working at the moment.", "I'm no longer a {old}; I stopped working."),
    ),
    Slot(
        "pet",
        ("dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish", "ferret", "lizard", "pony"),
        "{name} has a pet {value}.",
        "What pet does {name} have?",
        ("I have a pet {value}.", "My {value} keeps me company at home.", "We just adopted a {value}!"),
        ("We rehomed our {old} and adopted a {value}.", "Our {old} went to my sister; now we have a {value}."),
        ("Sadly our {old} passed away, so no pets now.", "We gave our {old} to a friend; we have no pet anymore."),
    ),
    Slot(
        "hobby",
        ("painting", "chess", "surfing", "knitting", "climbing", "pottery", "birdwatching", "fencing", "baking",
         "archery", "gardening", "rowing"),
        "{name} enjoys {value}.",
        "Which hobby does {name} enjoy?",
        ("In my free time I do {value}.", "I really enjoy {value}.", "My favourite hobby is {value}."),
        ("I got bored of {old}; {value} is my new hobby.", "I stopped {old} and took up {value} instead."),
        ("I gave up {old} completely.", "I don't do {old} anymore, no time for hobbies."),
    ),
    Slot(
        "instrument",
        ("guitar", "piano", "violin", "cello", "drums", "flute", "trumpet", "harp", "saxophone", "ukulele"),
        "{name} plays the {value}.",
        "Which instrument does {name} play?",
        ("I play the {value}.", "I've been learning the {value}.", "Music is my thing, I play the {value}."),
        ("I sold my {old} and switched to the {value}.", "No more {old} for me, I play the {value} now."),
        ("I stopped playing the {old}.", "I sold my {old} and don't play any instrument now."),
    ),
    Slot(
        "language",
        ("Spanish", "Japanese", "German", "Italian", "Korean", "Arabic", "Swahili", "Dutch", "Greek", "Polish"),
        "{name} is learning {value}.",
        "Which language is {name} learning?",
        ("I'm learning {value}.", "I take {value} classes twice a week.", "I started studying {value}."),
        ("I dropped {old} and I'm learning {value} now.", "I switched from {old} to {value} lessons."),
        ("I stopped my {old} lessons.", "I gave up on learning {old}."),
    ),
    Slot(
        "car",
        ("Toyota", "Volvo", "Tesla", "Subaru", "Fiat", "Mazda", "Renault", "Skoda", "Kia", "Jeep"),
        "{name} drives a {value}.",
        "What car does {name} drive?",
        ("I drive a {value}.", "My car is a {value}.", "I got around in my {value} today."),
        ("I traded my {old} for a {value}.", "I sold the {old}; now I drive a {value}."),
        ("I sold my {old} and don't have a car now.", "No more {old}; I gave up driving."),
    ),
    Slot(
        "food",
        ("sushi", "tacos", "ramen", "lasagna", "curry", "falafel", "paella", "dumplings", "pho", "risotto"),
        "{name}'s favourite food is {value}.",
        "What is {name}'s favourite food?",
        ("My favourite food is {value}.", "I could eat {value} every day.", "Nothing beats {value} for me."),
        ("I used to love {old}, but now {value} is my favourite.", "I'm over {old}; these days it's all about {value}."),
    ),
)
SLOT_BY_NAME = {slot.name: slot for slot in SLOTS}

NAMES = (
    "Maya", "Omar", "Lena", "Tariq", "Sofia", "Jonas", "Amara", "Felix", "Ines", "Kenji", "Nadia", "Pavel",
    "Zara", "Diego", "Ingrid", "Kofi", "Leila", "Mateo", "Noor", "Elias", "Hana", "Ravi", "Freya", "Yusuf",
)

CHAT = (
    "Haha, that's hilarious.",
    "Can you recommend a good movie for tonight?",
    "Thanks for listening, talk soon!",
    "What's the capital of Australia again?",
    "The weather is lovely today.",
    "I'm a bit tired, it was a long day.",
    "Do you think it will rain tomorrow?",
    "Good morning! How are you?",
    "That article you mentioned was interesting.",
    "Ugh, Mondays.",
    "Remind me, how many ounces are in a pound?",
    "I watched a documentary about whales last night.",
    "Traffic was terrible this morning.",
    "Tell me a fun fact.",
    "Okay, sounds good.",
    "I'm making coffee, back in a minute.",
)
REPEAT_PREFIX = ("As I said, ", "Like I mentioned, ", "Just a reminder: ", "")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


@dataclass(frozen=True)
class GoldOp:
    """A gold operation, naming memories by slot (the episode builder maps slots to ids)."""

    op: str  # ADD | UPDATE | DELETE | NOOP | EXTEND (activity conversations: `activity_conversation`)
    slot: str | None = None
    value: str | None = None
    text: str | None = None  # the canonical memory text after the op


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    slot: str
    candidates: tuple[str, ...]  # every value the slot can take: what a reader looks for


@dataclass(frozen=True)
class SynthTurn:
    turn_id: str
    speaker: str
    text: str
    time: str
    kind: str
    ops: tuple[GoldOp, ...]
    questions: tuple[Question, ...]  # answered by the state right after this turn


@dataclass
class SynthConversation:
    seed: int
    person: str
    turns: list[SynthTurn] = field(default_factory=list)
    final_questions: list[Question] = field(default_factory=list)  # about every slot ever mentioned

    @property
    def sample_id(self) -> str:
        return f"synth-{self.seed}"


_A_VOWEL = re.compile(r"\b([Aa]) ([aeiouAEIOU])")


def fix_articles(text: str) -> str:
    """"a electrician" -> "an electrician"."""
    return _A_VOWEL.sub(lambda m: f"{m.group(1)}n {m.group(2)}", text)


def memory_text(slot: Slot, person: str, value: str) -> str:
    return fix_articles(slot.memory.format(name=person, value=value))


def question_for(slot: Slot, person: str, answer: str) -> Question:
    return Question(slot.question.format(name=person), answer, slot.name, slot.values)


def _date(rng: random.Random, day_index: int) -> str:
    hour = rng.randint(8, 21)
    return f"{hour % 12 or 12}:{rng.choice(('00', '15', '30', '45'))} {'am' if hour < 12 else 'pm'} on " \
           f"{1 + day_index % 28} {MONTHS[(day_index // 28) % 12]}, 2023"


def _pick_kind(rng: random.Random, state: dict[str, str], session: int) -> str:
    unused = len(SLOTS) - len(state)
    retractable = [s for s in state if SLOT_BY_NAME[s].retract]
    weights = {
        "intro": (5.0 if session == 0 else 1.5) if unused else 0.0,
        "change": 2.5 if state else 0.0,
        "retract": 1.2 if retractable else 0.0,
        "repeat": 1.0 if state else 0.0,
        "chat": 1.5,
    }
    kinds = [k for k in KINDS if weights[k] > 0]
    return rng.choices(kinds, [weights[k] for k in kinds])[0]


def _control_question(rng: random.Random, person: str, state: dict[str, str], skip: set[str]) -> list[Question]:
    """A question about a fact the turn does not touch: wrong edits elsewhere lose it."""
    others = sorted(s for s in state if s not in skip)
    if not others:
        return []
    name = rng.choice(others)
    return [question_for(SLOT_BY_NAME[name], person, state[name])]


def generate_conversation(seed: int, *, sessions: tuple[int, int] = (3, 4), turns: tuple[int, int] = (3, 5),
                          max_facts: int = 6) -> SynthConversation:
    """One conversation, a pure function of `seed`."""
    rng = random.Random(seed)
    person = rng.choice(NAMES)
    conv = SynthConversation(seed=seed, person=person)
    state: dict[str, str] = {}  # slot -> current value
    mentioned: set[str] = set()
    day = rng.randint(0, 200)
    n = 0
    for session in range(rng.randint(*sessions)):
        day += rng.randint(3, 40)
        when = _date(rng, day)
        for _ in range(rng.randint(*turns)):
            kind = _pick_kind(rng, state, session)
            if kind == "intro" and len(state) >= max_facts:
                kind = "change"
            n += 1
            ops: list[GoldOp] = []
            questions: list[Question] = []
            touched: set[str] = set()
            if kind == "intro":
                free = [s for s in SLOTS if s.name not in state]
                chosen = rng.sample(free, 2 if len(free) > 1 and len(state) < max_facts - 1 and rng.random() < 0.2 else 1)
                sentences = []
                for slot in chosen:
                    value = rng.choice(slot.values)
                    sentences.append(rng.choice(slot.intro).format(value=value))
                    state[slot.name] = value
                    ops.append(GoldOp("ADD", slot.name, value, memory_text(slot, person, value)))
                    questions.append(question_for(slot, person, value))
                    touched.add(slot.name)
                text = " ".join(sentences)
            elif kind == "change":
                slot = SLOT_BY_NAME[rng.choice(sorted(state))]
                old = state[slot.name]
                value = rng.choice([v for v in slot.values if v != old])
                text = rng.choice(slot.change).format(old=old, value=value)
                state[slot.name] = value
                ops.append(GoldOp("UPDATE", slot.name, value, memory_text(slot, person, value)))
                questions.append(question_for(slot, person, value))
                touched.add(slot.name)
            elif kind == "retract":
                slot = SLOT_BY_NAME[rng.choice(sorted(s for s in state if SLOT_BY_NAME[s].retract))]
                text = rng.choice(slot.retract).format(old=state.pop(slot.name))
                ops.append(GoldOp("DELETE", slot.name))
                questions.append(question_for(slot, person, UNKNOWN))
                touched.add(slot.name)
            elif kind == "repeat":
                slot = SLOT_BY_NAME[rng.choice(sorted(state))]
                sentence = slot.intro[0].format(value=state[slot.name])  # the plainest way to say it
                prefix = rng.choice(REPEAT_PREFIX)
                text = prefix + (sentence if sentence.startswith("I") or not prefix else sentence[0].lower() + sentence[1:])
                ops.append(GoldOp("NOOP"))
                questions.append(question_for(slot, person, state[slot.name]))
                touched.add(slot.name)
            else:
                text = rng.choice(CHAT)
                ops.append(GoldOp("NOOP"))
            questions += _control_question(rng, person, state, touched)
            mentioned |= touched
            conv.turns.append(SynthTurn(f"S{seed}:{n}", person, fix_articles(text), when, kind, tuple(ops), tuple(questions)))
    conv.final_questions = [
        question_for(SLOT_BY_NAME[name], person, state.get(name, UNKNOWN)) for name in sorted(mentioned)
    ]
    return conv


def split_seeds(split: str, n: int, *, offset: int = 0) -> list[int]:
    """`n` seeds of a split, starting `offset` seeds into its range."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    seeds = SPLITS[split]
    if offset < 0 or offset + n > len(seeds):
        raise ValueError(f"the {split} split holds {len(seeds)} seeds; {offset}+{n} asked")
    return list(seeds[offset : offset + n])


def generate(split: str, n: int, *, offset: int = 0, **kwargs) -> list[SynthConversation]:
    """`n` conversations of a split (train / dev / test)."""
    return [generate_conversation(seed, **kwargs) for seed in split_seeds(split, n, offset=offset)]


# --------------------------------------------------------------------------- dated events ("When did ...?")

# (said, asked): "I went to a pottery class yesterday." / "When did Maya go to a pottery class?"
EVENTS: tuple[tuple[str, str], ...] = (
    ("went to a pottery class", "go to a pottery class"),
    ("ran a charity 5k", "run a charity 5k"),
    ("went to a jazz concert", "go to a jazz concert"),
    ("painted a sunrise over the lake", "paint a sunrise over the lake"),
    ("gave a talk at a local school", "give a talk at a local school"),
    ("went camping in the mountains", "go camping in the mountains"),
    ("signed up for a cooking course", "sign up for a cooking course"),
    ("joined a book club", "join a book club"),
    ("went to a support group meeting", "go to a support group meeting"),
    ("had a picnic at the beach", "have a picnic at the beach"),
    ("took a train trip to the coast", "take a train trip to the coast"),
    ("volunteered at an animal shelter", "volunteer at an animal shelter"),
    ("visited the science museum", "visit the science museum"),
    ("bought a new bike", "buy a new bike"),
    ("started a vegetable garden", "start a vegetable garden"),
    ("went to a friend's wedding", "go to a friend's wedding"),
    ("finished a half marathon", "finish a half marathon"),
    ("saw a play at the theatre", "see a play at the theatre"),
    ("baked bread for the neighbours", "bake bread for the neighbours"),
    ("went hiking with coworkers", "go hiking with coworkers"),
    ("played in a chess tournament", "play in a chess tournament"),
    ("passed the driving test", "pass the driving test"),
    ("had a job interview", "have a job interview"),
    ("watched a meteor shower", "watch a meteor shower"),
    ("went to a pride parade", "go to a pride parade"),
    ("adopted a kitten from the shelter", "adopt a kitten from the shelter"),
    ("moved into a new apartment", "move into a new apartment"),
    ("took a salsa lesson", "take a salsa lesson"),
)
# How a turn dates its event, relative to the turn's own day: (phrase, days back; None: a month back).
WHEN: tuple[tuple[str, int | None], ...] = (
    ("yesterday", 1), ("yesterday", 1), ("last night", 1), ("today", 0), ("this morning", 0),
    ("two days ago", 2), ("three days ago", 3), ("the day before yesterday", 2), ("", 0), ("last month", None),
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
REMARKS = ("", "It was so much fun!", "I'm still thinking about it.", "What a day.", "I loved every minute.",
           "Honestly, it was exhausting.")


@dataclass(frozen=True)
class DatedEvent:
    """A turn that tells of an event, dated relative to the turn, and the question asking when it was."""

    turn: SynthTurn
    question: Question  # answer: the event's date as the models are shown it ("7 May 2023", "April 2023")


def _turn_day(when: str):
    """The calendar day of a synthetic turn time ("3:15 pm on 5 March, 2023")."""
    from datetime import date

    day, month, year = when.split(" on ", 1)[1].replace(",", "").split()
    return date(int(year), MONTHS.index(month) + 1, int(day))


def _shown_day(day) -> str:
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def dated_events(conv: SynthConversation, n: int) -> list[DatedEvent]:
    """`n` events told in `conv`'s sessions, by its person or a friend, and "When did X ...?" for each.

    The gold date is computed here, by calendar arithmetic on the turn's
    day, not by `edge.dates`: the runtime's resolution of "yesterday" and
    the rest is what these questions check (a test holds the two together).
    Drawn from their own random stream, so `conv` itself is unchanged and
    the Manager's episodes stay as they were.
    """
    from datetime import timedelta

    rng = random.Random(f"events:{conv.seed}")
    times = list(dict.fromkeys(t.time for t in conv.turns))
    friend = rng.choice([name for name in NAMES if name != conv.person])
    out: list[DatedEvent] = []
    for i, (said, asked) in enumerate(rng.sample(EVENTS, min(n, len(EVENTS)))):
        when = rng.choice(times)
        today = _turn_day(when)
        if rng.random() < 0.15:  # "last Friday": the latest Friday before the turn's day
            weekday = rng.randrange(7)
            back = (today.weekday() - weekday - 1) % 7 + 1
            phrase, answer = f"last {WEEKDAYS[weekday]}", _shown_day(today - timedelta(days=back))
        else:
            phrase, back = rng.choice(WHEN)
            if back is None:
                previous = today.replace(day=1) - timedelta(days=1)
                answer = f"{MONTHS[previous.month - 1]} {previous.year}"
            else:
                answer = _shown_day(today - timedelta(days=back))
        if not phrase:
            sentence = f"I just {said}!"
        elif rng.random() < 0.6:
            sentence = f"I {said} {phrase}."
        else:
            sentence = f"{phrase[0].upper() + phrase[1:]} I {said}."
        text = " ".join(part for part in (sentence, rng.choice(REMARKS)) if part)
        speaker = conv.person if rng.random() < 0.7 else friend
        turn = SynthTurn(f"S{conv.seed}:e{i}", speaker, text, when, "event", (), ())
        out.append(DatedEvent(turn, Question(f"When did {speaker} {asked}?", answer, "event", ())))
    return out


def untold_events(conv: SynthConversation, told: Sequence[DatedEvent], n: int) -> list[Question]:
    """`n` questions "When did Maya go skydiving?" about events `conv` never tells: their gold answer is "unknown".

    Asked of the conversation's person (or, as told events are, 30 % of the
    time of a friend) about events of `EVENTS` that none of `told` is; the
    Answer Agent must abstain instead of copying a date of another line.
    Drawn from their own random stream.
    """
    from edge.prompts import UNKNOWN

    rng = random.Random(f"untold:{conv.seed}")
    asked = [e.question.question for e in told]
    friend = rng.choice([name for name in NAMES if name != conv.person])
    untold = [a for _, a in EVENTS if not any(q.endswith(f" {a}?") for q in asked)]
    out = []
    for event in rng.sample(untold, min(n, len(untold))):
        who = conv.person if rng.random() < 0.7 else friend
        out.append(Question(f"When did {who} {event}?", UNKNOWN, "event", ()))
    return out


# --------------------------------------------------------------------------- activities (consolidated facts)

# (what the answer names, how the person says they took it up): a list that grows over sessions, which a
# consolidated fact holds in one line and single-clause facts in several (`edge.operations.consolidated_text`).
ACTIVITIES: tuple[tuple[str, str], ...] = (
    ("pottery", "took up pottery"), ("swimming", "started swimming"), ("a choir", "joined a choir"),
    ("chess", "started playing chess"), ("salsa", "began salsa classes"), ("climbing", "took up climbing"),
    ("gardening", "started gardening"), ("the violin", "began learning the violin"),
    ("running", "joined a running club"), ("painting", "took up painting"), ("yoga", "started doing yoga"),
    ("baking", "got into baking"), ("knitting", "picked up knitting"), ("archery", "tried archery"),
)
FIRST_ACTIVITY = ("I {did}.", "Guess what, I {did}!", "So I {did}, it is great fun.")
MORE_ACTIVITY = ("I also {did}.", "Oh, and I {did} too.", "Besides that, I {did}.", "On top of that I {did}.")
ACTIVITY_QUESTION = "What activities has {name} taken up?"


def activity_conversation(seed: int, *, sessions: tuple[int, int] = (3, 4), chat: tuple[int, int] = (3, 8)
                          ) -> SynthConversation:
    """A person who takes up one activity per session, with small talk between: the list questions of
    consolidated facts ("What activities has Maya taken up?" -> "pottery, swimming, a choir").

    The first activity is an ADD (slot "activities"), each later one an
    EXTEND of that fact; small talk is NOOP. `final_questions` asks for the
    whole list, in the order told. A pure function of `seed`, drawn from its
    own random stream (`activities:SEED`), so the other generators' output
    is unchanged.
    """
    rng = random.Random(f"activities:{seed}")
    person = rng.choice(NAMES)
    conv = SynthConversation(seed=seed, person=person)
    chosen = rng.sample(ACTIVITIES, rng.randint(*sessions))
    day = rng.randint(0, 200)
    n = 0
    for session, (name, did) in enumerate(chosen):
        day += rng.randint(3, 40)
        when = _date(rng, day)
        texts = [rng.choice(CHAT) for _ in range(rng.randint(*chat))]
        at = rng.randrange(len(texts) + 1)
        templates = FIRST_ACTIVITY if session == 0 else MORE_ACTIVITY
        op = GoldOp("ADD" if session == 0 else "EXTEND", "activities", name, fix_articles(f"{person} {did}."))
        for i, text in enumerate([*texts[:at], rng.choice(templates).format(did=did), *texts[at:]]):
            n += 1
            told = i == at
            conv.turns.append(SynthTurn(f"A{seed}:{n}", person, fix_articles(text), when,
                                        ("intro" if session == 0 else "extend") if told else "chat",
                                        (op,) if told else (GoldOp("NOOP"),), ()))
    answer = ", ".join(name for name, _ in chosen)
    conv.final_questions = [Question(ACTIVITY_QUESTION.format(name=person), answer, "activities", ())]
    return conv


def activity_conversations(split: str, n: int, *, offset: int = 0) -> list[SynthConversation]:
    """`n` activity conversations of a split (train / dev / test seeds, as `generate`)."""
    return [activity_conversation(seed) for seed in split_seeds(split, n, offset=offset)]
