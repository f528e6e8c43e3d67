"""The JSON texts a schema allows, as a character automaton.

`edge.prompts` describes replies with a small subset of JSON schema (object
with fixed properties, const, enum, string with length bounds, array with
item bounds, anyOf). `compile_schema` turns such a schema into a Glushkov
automaton over characters that accepts the *canonical* layout of those
replies: Python's `json.dumps` default separators (`{"ops": [{"op": "ADD",
...}]}`), properties in schema order, strings of printable characters
without escapes. That layout is the one the prompts show and a subset of
what the runtime's llama.cpp grammar accepts.

A state is a frozenset of positions. String maxLength is not part of the
automaton (it would multiply its states); `Grammar.matches` checks it, and
`edge.train.constrained` enforces it while decoding.
"""
from __future__ import annotations

import json
from typing import Any

# --------------------------------------------------------------------------- schema -> regular expression

SAFE = object()  # the "any printable string character" class
STRUCTURE = ",]}[{: "  # characters of the JSON layout, never of a value


def _is_safe(ch: str) -> bool:
    return ch not in '"\\' and ch >= " " and ch != "\x7f" and ch != "\ufffd" and not ("\u2028" <= ch <= "\u2029")


def _lit(text: str) -> tuple:
    return ("lit", text)


def _cat(*parts: tuple) -> tuple:
    return ("cat", parts)


def _alt(*parts: tuple) -> tuple:
    return ("alt", parts)


def _rep(part: tuple, low: int, high: int | None) -> tuple:
    return ("rep", part, low, high)


def schema_to_regex(schema: dict[str, Any]) -> tuple:
    """The canonical JSON texts valid under `schema`, as a small regular-expression tree."""
    if "const" in schema:
        return _lit(json.dumps(schema["const"]))
    if "enum" in schema:
        return _alt(*(_lit(json.dumps(v)) for v in schema["enum"]))
    if "anyOf" in schema:
        return _alt(*(schema_to_regex(s) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "string":
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        return _cat(_lit('"'), _rep(("cls", SAFE, high), low, None), _lit('"'))
    if kind == "array":
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        if high == 0 or "items" not in schema:
            if low > 0:
                raise ValueError("an array with minItems needs an items schema")
            return _lit("[]")
        item = schema["items"]
        more = _rep(_cat(_lit(", "), schema_to_regex(item)), max(0, low - 1), None if high is None else high - 1)
        body = _cat(schema_to_regex(item), more)
        return _cat(_lit("["), body if low > 0 else _rep(body, 0, 1), _lit("]"))
    if kind == "object":
        props = schema.get("properties", {})
        missing = set(props) - set(schema.get("required", props))
        if missing:
            raise ValueError(f"optional properties are not supported: {sorted(missing)}")
        parts: list[tuple] = [_lit("{")]
        for i, (key, sub) in enumerate(props.items()):
            parts += [_lit((", " if i else "") + json.dumps(key) + ": "), schema_to_regex(sub)]
        return _cat(*parts, _lit("}"))
    raise ValueError(f"unsupported schema piece: {json.dumps(schema)[:120]}")


# --------------------------------------------------------------------------- regular expression -> automaton


class Grammar:
    """A Glushkov automaton over characters; a state is a frozenset of positions."""

    START = -1

    def __init__(self, regex: tuple) -> None:
        self.matchers: list[object] = []  # position -> a char, or SAFE
        self.limits: list[int | None] = []  # position -> maxLength of its string (SAFE positions)
        self.follow: list[set[int]] = []
        nullable, first, last = self._build(regex)
        if nullable:
            raise ValueError("the empty reply cannot be valid")
        self.first = first
        self.last = frozenset(last)
        self.start: frozenset[int] = frozenset([self.START])
        self._steps: dict[tuple[frozenset[int], str], frozenset[int] | None] = {}
        self._dist = self._distances()

    def _new(self, matcher: object, limit: int | None = None) -> int:
        self.matchers.append(matcher)
        self.limits.append(limit)
        self.follow.append(set())
        return len(self.matchers) - 1

    def _build(self, node: tuple) -> tuple[bool, set[int], set[int]]:
        kind = node[0]
        if kind == "lit":
            positions = [self._new(ch) for ch in node[1]]
            for a, b in zip(positions, positions[1:]):
                self.follow[a].add(b)
            return (not positions, set(positions[:1]), set(positions[-1:]))
        if kind == "cls":
            p = self._new(node[1], node[2])
            return False, {p}, {p}
        if kind == "alt":
            nullable, first, last = False, set(), set()
            for part in node[1]:
                n, f, l = self._build(part)
                nullable, first, last = nullable or n, first | f, last | l
            return nullable, first, last
        if kind == "cat":
            nullable, first, last = True, set(), set()
            for part in node[1]:
                n, f, l = self._build(part)
                for p in last:
                    self.follow[p] |= f
                first = first | f if nullable else first
                last = last | l if n else l
                nullable = nullable and n
            return nullable, first, last
        if kind == "rep":
            _, part, low, high = node
            if high is None:  # part{low,} = part{low} part*
                pieces = [part] * low
                n, f, l = self._build(_cat(*pieces)) if pieces else (True, set(), set())
                n2, f2, l2 = self._build(part)
                for p in l2:
                    self.follow[p] |= f2
                for p in l:
                    self.follow[p] |= f2
                return n, f | f2 if n else f, l | l2
            optional = None  # part{0,k} = (part (part (...)?)?)?
            for _ in range(high - low):
                optional = ("opt", _cat(part, optional) if optional else part)
            pieces = [part] * low + ([optional] if optional else [])
            return self._build(_cat(*pieces)) if pieces else (True, set(), set())
        if kind == "opt":
            _, f, l = self._build(node[1])
            return True, f, l
        raise ValueError(f"unknown node {kind!r}")

    def _distances(self) -> list[int]:
        """For each position: the fewest characters still needed to finish, once it is matched."""
        inf = 1 << 30
        dist = [inf] * len(self.matchers)
        preds: list[list[int]] = [[] for _ in self.matchers]
        for p, nexts in enumerate(self.follow):
            for q in nexts:
                preds[q].append(p)
        frontier = sorted(self.last)
        for p in frontier:
            dist[p] = 0
        while frontier:
            nxt = []
            for q in frontier:
                for p in preds[q]:
                    if dist[p] > dist[q] + 1:
                        dist[p] = dist[q] + 1
                        nxt.append(p)
            frontier = nxt
        return dist

    def distance(self, state: frozenset[int]) -> int:
        """Characters still needed to complete the JSON from `state` (0: complete)."""
        if self.START in state:
            return 1 + min(self._dist[p] for p in self.first)
        return min(self._dist[p] for p in state)

    def accepts(self, state: frozenset[int]) -> bool:
        return bool(state & self.last)

    def in_string(self, state: frozenset[int]) -> bool:
        """Whether the last character matched was string content."""
        return any(p != self.START and self.matchers[p] is SAFE for p in state)

    def string_limit(self, state: frozenset[int]) -> int | None:
        """maxLength of the string the next character may write into, if any."""
        limits = [self.limits[q] for p in state for q in (self.first if p == self.START else self.follow[p])
                  if self.limits[q] is not None]
        return min(limits) if limits else None

    def _next_matchers(self, state: frozenset[int]) -> set[object]:
        return {self.matchers[q] for p in state for q in (self.first if p == self.START else self.follow[p])}

    @staticmethod
    def _branches(matchers: set[object]) -> bool:
        return SAFE not in matchers and len(matchers) > 1

    def is_choice(self, state: frozenset[int]) -> bool:
        """Whether the schema branches here between fixed texts (an operation, an id, a tier, one more item
        or the end), as opposed to free text or a forced continuation."""
        return self._branches(self._next_matchers(state))

    def is_value_choice(self, state: frozenset[int]) -> bool:
        """A branch point between quoted values (an operation, an id, a tier), not between "one more item" and
        the end of an array."""
        matchers = self._next_matchers(state)
        return self._branches(matchers) and not matchers & set(STRUCTURE)

    def step(self, state: frozenset[int], ch: str) -> frozenset[int] | None:
        key = (state, ch)
        if key in self._steps:
            return self._steps[key]
        candidates: set[int] = set()
        for p in state:
            candidates |= self.first if p == self.START else self.follow[p]
        safe = _is_safe(ch)
        nxt = frozenset(q for q in candidates if self.matchers[q] == ch or (self.matchers[q] is SAFE and safe))
        result = nxt or None
        self._steps[key] = result
        return result

    def walk(self, text: str, state: frozenset[int] | None = None) -> frozenset[int] | None:
        state = self.start if state is None else state
        for ch in text:
            state = self.step(state, ch)
            if state is None:
                return None
        return state

    def matches(self, text: str) -> bool:
        """Whether `text` is a complete reply, string maxLengths included."""
        state: frozenset[int] | None = self.start
        run = 0
        for ch in text:
            state = self.step(state, ch)
            if state is None:
                return False
            run = run + 1 if self.in_string(state) else 0
            limits = [self.limits[p] for p in state if p != self.START and self.limits[p] is not None]
            if limits and run > min(limits):
                return False
        return self.accepts(state)


def compile_schema(schema: dict[str, Any]) -> Grammar:
    return Grammar(schema_to_regex(schema))
