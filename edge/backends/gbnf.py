"""The GBNF grammar edge decodes a JSON schema under, in process (llama.cpp) or on a server that takes GBNF.

llama-cpp-python's JSON-schema converter, mended where its output let
through what JSON or UTF-8 forbid (`strict_json_strings`, `whole_code_points`).
"""
from __future__ import annotations

import re


# One character of a JSON string. Raw: anything but the quote, the backslash, the C0 control characters
# (JSON forbids them inside strings: a newline must be the escape backslash-n) and DEL. Escaped: only
# \" \\ \/ \n \r \t; \b, \f and \uXXXX could spell control characters and lone surrogates, which the
# bank refuses as "not text". Wider exclusions (C1 controls, non-characters) would cost real text:
# llama.cpp refuses a token holding an unfinished UTF-8 sequence when the character it may complete to
# *could* fall in an excluded range, so excluding U+1FFFE would refuse the first half of every emoji
# split across two tokens.
JSON_STRING_CHAR = r'[^"\\\x00-\x1F\x7F] | "\\" ["\\/nrt]'


def strict_json_strings(grammar: str) -> str:
    """`grammar` (GBNF from llama-cpp-python's JSON-schema converter) with strings that are JSON.

    llama-cpp-python 0.3.36 writes `char ::= [^"\\] | "\\" (...)`: any
    character but a quote or a backslash, so a raw newline inside a string
    passed the grammar and the reply failed `json.loads` ("not JSON"). Its
    `dot` rule (regex patterns) has the same hole and lets a raw quote end
    the string early; both become JSON_STRING_CHAR.
    """
    lines = []
    for line in grammar.splitlines():
        name = line.split("::=", 1)[0].strip() if "::=" in line else None
        lines.append(f"{name} ::= {JSON_STRING_CHAR}" if name in ("char", "dot") else line)
    return "\n".join(lines) + "\n"


_SURROGATE_PAIR = re.compile(r"(?<!\\)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)


def whole_code_points(grammar: str) -> str:
    """`grammar` with every character beyond the BMP written as one code point (`\\U0001FAE9`).

    llama-cpp-python's converter writes the literals of `enum`/`const`
    values with `json.dumps`, so an emoji in a turn's clause became the
    surrogate pair `\\ud83e\\udee9`; llama.cpp reads each half as a code
    point of its own, which no valid UTF-8 encodes, and the reply came out
    as six U+FFFD ("tired ������" stored as a fact). GBNF's `\\U` escape
    names the character itself.
    """
    def joined(match: re.Match) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    return _SURROGATE_PAIR.sub(joined, grammar)


def schema_gbnf(schema_json: str) -> str:
    """The GBNF grammar edge decodes a JSON schema (given as JSON text) under, in process or on a server.

    llama-cpp-python's converter, with JSON strings (`strict_json_strings`)
    and characters beyond the BMP written whole (`whole_code_points`).
    Raises what the converter raises for a schema it cannot convert.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return strict_json_strings(whole_code_points(json_schema_to_gbnf(schema_json)))
