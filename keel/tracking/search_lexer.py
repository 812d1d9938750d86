"""The run-search tokenizer: filter and order_by text into tokens that remember their position.

Each token keeps where it starts, so the parser in :mod:`keel.tracking.search` can point a caret
at the offending spot of a malformed query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from keel.errors import InvalidQuery

__all__ = ["SPECIAL_NUMBERS", "Token", "TokenKind", "tokenize"]


class TokenKind(Enum):
    FIELD = "field"
    STRING = "string"
    NUMBER = "number"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    KEYWORD = "keyword"
    END = "end"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # the source text as written
    position: int
    value: str = ""  # STRING: the unquoted string; KEYWORD: upper case; FIELD: the key
    prefix: str | None = None  # FIELD: the prefix as written, None for a bare name
    key_position: int = 0  # FIELD: where the key starts


_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "ASC", "DESC"})
SPECIAL_NUMBERS = {"nan": math.nan, "inf": math.inf, "infinity": math.inf}
_IDENT = re.compile(r"[^\W\d][\w\-/.:]*")
_IDENT_CHAR = re.compile(r"[\w\-/.:]")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("<=", ">=", "!=", "<>", "==", "<", ">", "=")


def tokenize(text: str) -> Iterator[Token]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            kind = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA}[c]
            yield Token(kind, c, i)
            i += 1
        elif c in "'\"":
            value, end = _read_quoted(text, i)
            yield Token(TokenKind.STRING, text[i:end], i, value)
            i = end
        elif c == "`":
            raise InvalidQuery(
                "backticks quote a key right after its prefix, as in metrics.`my metric`; "
                "quote string values with ' or \"",
                query=text,
                position=i,
            )
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            if op == "==":
                raise InvalidQuery("use = to test equality, not ==", query=text, position=i)
            yield Token(TokenKind.OP, op, i, "!=" if op == "<>" else op)
            i += len(op)
        elif c.isdigit() or c == "." or (c in "+-" and i + 1 < n and text[i + 1] in "0123456789."):
            match = _NUMBER.match(text, i)
            end = match.end() if match else i + 1
            if match is None or (end < n and _IDENT_CHAR.match(text, end)):
                while end < n and _IDENT_CHAR.match(text, end):
                    end += 1
                raise InvalidQuery(
                    f"invalid number {text[i:end]!r}; write numbers like 3, -0.5 or 1e-3, and "
                    "quote strings",
                    query=text,
                    position=i,
                )
            yield Token(TokenKind.NUMBER, match.group(), i, match.group())
            i = end
        elif (
            c in "+-"
            and (m := _IDENT.match(text, i + 1))
            and m.group().lower() in (SPECIAL_NUMBERS)
        ):
            yield Token(TokenKind.NUMBER, text[i : m.end()], i, text[i : m.end()])
            i = m.end()
        elif m := _IDENT.match(text, i):
            word, i = m.group(), m.end()
            if word.count(".") == 1 and word.endswith(".") and i < n and text[i] in '`"':
                # a quoted key: metrics.`my metric` or params."a b"
                key, i = _read_quoted(text, i)
                yield Token(
                    TokenKind.FIELD, text[m.start() : i], m.start(), key, word[:-1], m.end()
                )
            else:
                yield _field_or_keyword(word, m.start())
        else:
            raise InvalidQuery(f"unexpected character {c!r}", query=text, position=i)
    yield Token(TokenKind.END, "", n)


def _field_or_keyword(word: str, position: int) -> Token:
    if "." not in word:
        if word.upper() in _KEYWORDS:
            return Token(TokenKind.KEYWORD, word, position, word.upper())
        if word.lower() in SPECIAL_NUMBERS:
            return Token(TokenKind.NUMBER, word, position, word)
        return Token(TokenKind.FIELD, word, position, word, None, position)
    prefix, key = word.split(".", 1)
    return Token(TokenKind.FIELD, word, position, key, prefix, position + len(prefix) + 1)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string or key from ``start`` (a quote); returns (value, index after it).

    A doubled quote or a backslash before a quote or a backslash stands for that character;
    any other backslash is kept, so LIKE patterns can escape ``%`` and ``_`` with it.
    """
    quote, out, i, n = text[start], [], start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "\\'\"`":
            out.append(text[i + 1])
            i += 2
        elif c == quote and i + 1 < n and text[i + 1] == quote:
            out.append(quote)
            i += 2
        elif c == quote:
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    what = "key" if quote == "`" else "string"
    raise InvalidQuery(
        f"unterminated {what} starting here; close it with {quote}", query=text, position=start
    )
