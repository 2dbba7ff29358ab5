"""The filter language of dynamic groups (pure; no I/O): parse once, evaluate many.

Example::

    model == "edge-gw-2" and (tag == "line-3" or firmware < "2.1.0") and not app.modbus-bridge

Grammar (keywords are lower case; whitespace is free)::

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" or ")" | condition
    condition  := attribute OP value | attribute "in" "[" value ("," value)* "]"
                | attribute "~=" value                     (a glob: * ? [...])
                | "app." NAME                              (the app is installed)
    attribute  := model | serial | firmware | agent | slot | slot_state | tag | "app." NAME
    OP         := == | != | < | <= | > | >=
    value      := "double" or 'single' quoted string (\\ escapes \\, " and ')
                | a bare version starting with a digit, e.g. 2.1.0

Semantics:

* ``firmware``, ``agent``, ``slot``, ``slot_state`` and ``app.NAME`` come from the device's
  last inventory; ``model`` and ``serial`` from its identity; ``tag`` from its tags.
* Ordering compares versions numerically segment by segment when both sides are dotted
  numbers (``2.10.0 > 2.9``), otherwise as strings.
* An attribute the device has not reported (no inventory yet, an app not installed) makes
  every comparison false, except ``!=`` which is ``not ==``.
* ``tag == "x"``: the device has tag x; ``tag != "x"``: it has not; ``tag in [..]``: it has
  one of them; ``tag ~= "line-*"``: one of its tags matches. Tags cannot be ordered.

Limits: 2,000 characters, nesting depth 16, 64 conditions, 64 values in a list, strings of
128 characters. Every refusal is an :class:`InvalidRequest` naming the position (1-based)
and what was expected there.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from garrison.errors import InvalidRequest
from garrison.updates.eligibility import valid_name

MAX_LENGTH = 2000
MAX_DEPTH = 16
MAX_CONDITIONS = 64
MAX_VALUES = 64
MAX_STRING = 128

SCALARS = ("model", "serial", "firmware", "agent", "slot", "slot_state")
ORDERING = ("<", "<=", ">", ">=")
OPERATORS = ("==", "!=", *ORDERING)
HINT = 'example: model == "edge-gw-2" and (tag == "line-3" or firmware < "2.1.0")'

_NUMERIC = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BARE = re.compile(r"[0-9][0-9A-Za-z.+~\-]*")


@dataclass(frozen=True)
class Facts:
    """What a filter can see of one device."""

    model: str
    serial: str
    firmware: str | None = None
    agent: str | None = None
    slot: str | None = None
    slot_state: str | None = None
    tags: frozenset[str] = frozenset()
    apps: Mapping[str, str] = field(default_factory=dict)


def version_key(value: str) -> tuple[int, tuple[int, ...], str]:
    """The ordering key of a version: dotted numbers numerically, anything else as text
    (text sorts after numbers: only like is meaningfully compared with like)."""
    if _NUMERIC.fullmatch(value):
        return (0, tuple(int(p) for p in value.split(".")), "")
    return (1, (), value)


def _compare(left: str, op: str, right: str) -> bool:
    a, b = version_key(left), version_key(right)
    if a[0] != b[0]:  # a number and a text: compare both as text
        a, b = (1, (), left), (1, (), right)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


# -- the syntax tree --------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``attribute op value`` (``in``: ``values``; ``has``: the app is installed)."""

    attribute: str
    op: str  # one of OPERATORS, "in", "~=" or "has"
    values: tuple[str, ...] = ()

    def matches(self, facts: Facts) -> bool:
        if self.attribute == "tag":
            return self._tags(facts.tags)
        if self.attribute.startswith("app."):
            value = facts.apps.get(self.attribute[4:])
        else:
            value = getattr(facts, self.attribute)
        if self.op == "has":
            return value is not None
        if self.op == "!=":
            return value != self.values[0]
        if value is None:
            return False
        if self.op == "==":
            return value == self.values[0]
        if self.op == "in":
            return value in self.values
        if self.op == "~=":
            return fnmatch.fnmatchcase(value, self.values[0])
        return _compare(value, self.op, self.values[0])

    def _tags(self, tags: frozenset[str]) -> bool:
        if self.op == "==":
            return self.values[0] in tags
        if self.op == "!=":
            return self.values[0] not in tags
        if self.op == "in":
            return any(v in tags for v in self.values)
        return any(fnmatch.fnmatchcase(t, self.values[0]) for t in tags)  # ~=


@dataclass(frozen=True)
class Not:
    item: Node

    def matches(self, facts: Facts) -> bool:
        return not self.item.matches(facts)


@dataclass(frozen=True)
class AllOf:
    items: tuple[Node, ...]

    def matches(self, facts: Facts) -> bool:
        return all(item.matches(facts) for item in self.items)


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Node, ...]

    def matches(self, facts: Facts) -> bool:
        return any(item.matches(facts) for item in self.items)


Node = Condition | Not | AllOf | AnyOf


@dataclass(frozen=True)
class Filter:
    """A parsed filter: ``text`` as given, ``root`` its tree."""

    text: str
    root: Node

    def matches(self, facts: Facts) -> bool:
        return self.root.matches(facts)


# -- the tokenizer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: Literal["word", "string", "op", "punct", "end"]
    text: str
    pos: int  # 0-based offset in the filter text

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the filter"
        if self.kind == "string":
            return f"the string {self.text[:40]!r}"
        return repr(self.text[:40])


def _error(pos: int, message: str) -> InvalidRequest:
    return InvalidRequest(f"filter, position {pos + 1}: {message}", hint=HINT)


def _tokens(text: str) -> list[Token]:
    found: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()[],":
            found.append(Token("punct", ch, i))
            i += 1
        elif text.startswith(("==", "!=", "<=", ">=", "~="), i):
            found.append(Token("op", text[i : i + 2], i))
            i += 2
        elif ch == "=":
            raise _error(i, "'=' is not an operator; use '==' to compare")
        elif ch in "<>":
            found.append(Token("op", ch, i))
            i += 1
        elif ch in "\"'":
            value, end = _string(text, i)
            found.append(Token("string", value, i))
            i = end
        elif bare := _BARE.match(text, i):
            found.append(Token("string", bare.group(), i))
            i = bare.end()
        elif word := _WORD.match(text, i):
            found.append(Token("word", word.group(), i))
            i = word.end()
        else:
            raise _error(i, f"unexpected character {ch!r}")
    found.append(Token("end", "", n))
    return found


def _string(text: str, start: int) -> tuple[str, int]:
    quote, i, chars = text[start], start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\\"'":
                raise _error(i, "expected \\\\, \\\" or \\' after a backslash")
            chars.append(text[i + 1])
            i += 2
        elif ch == quote:
            value = "".join(chars)
            if len(value) > MAX_STRING:
                raise _error(start, f"a string is at most {MAX_STRING} characters")
            return value, i + 1
        elif ch in "\r\n" or not ch.isprintable():
            raise _error(i, "expected the closing quote (strings are one printable line)")
        else:
            chars.append(ch)
            i += 1
    raise _error(start, f"expected the closing {quote} of this string")


# -- the parser -------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.conditions = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.token.kind == "word" and self.token.text == word:
            self.at += 1
            return True
        return False

    def expect(self, kind: str, text: str, what: str) -> Token:
        token = self.token
        if token.kind != kind or token.text != text:
            raise _error(token.pos, f"expected {what}, found {token.describe()}")
        return self.take()

    def parse(self) -> Node:
        root = self.or_(0)
        if self.token.kind != "end":
            raise _error(
                self.token.pos, f"expected 'and', 'or' or the end, found {self.token.describe()}"
            )
        return root

    def or_(self, depth: int) -> Node:
        items = [self.and_(depth)]
        while self.keyword("or"):
            items.append(self.and_(depth))
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def and_(self, depth: int) -> Node:
        items = [self.unary(depth)]
        while self.keyword("and"):
            items.append(self.unary(depth))
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def unary(self, depth: int) -> Node:
        if depth >= MAX_DEPTH:
            raise _error(self.token.pos, f"nested deeper than {MAX_DEPTH} levels")
        if self.keyword("not"):
            return Not(self.unary(depth + 1))
        if self.token.kind == "punct" and self.token.text == "(":
            self.take()
            inner = self.or_(depth + 1)
            self.expect("punct", ")", "')' to close the parenthesis")
            return inner
        return self.condition()

    def condition(self) -> Condition:
        token = self.token
        if token.kind != "word" or token.text in ("and", "or", "not", "in"):
            raise _error(
                token.pos,
                "expected a condition (an attribute: " + ", ".join(SCALARS) + ", tag or "
                f"app.NAME) or '(' or 'not', found {token.describe()}",
            )
        self.take()
        attribute = _attribute(token)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _error(token.pos, f"at most {MAX_CONDITIONS} conditions in one filter")
        op_token = self.token
        if op_token.kind == "word" and op_token.text == "in":
            self.take()
            return Condition(attribute, "in", self.values())
        if op_token.kind != "op":
            if attribute.startswith("app."):
                return Condition(attribute, "has")
            raise _error(
                op_token.pos,
                f"expected an operator (== != < <= > >= in ~=) after {attribute!r}, "
                f"found {op_token.describe()}",
            )
        self.take()
        op = op_token.text
        if attribute == "tag" and op in ORDERING:
            raise _error(op_token.pos, f"tags cannot be ordered with {op!r}; use ==, !=, in, ~=")
        return Condition(attribute, op, (self.value(),))

    def value(self) -> str:
        token = self.token
        if token.kind != "string":
            raise _error(
                token.pos, f"expected a quoted string or a version, found {token.describe()}"
            )
        self.take()
        if len(token.text) > MAX_STRING:
            raise _error(token.pos, f"a value is at most {MAX_STRING} characters")
        return token.text

    def values(self) -> tuple[str, ...]:
        self.expect("punct", "[", "'[' to start the list of values")
        found = [self.value()]
        while self.token.kind == "punct" and self.token.text == ",":
            self.take()
            found.append(self.value())
            if len(found) > MAX_VALUES:
                raise _error(self.token.pos, f"at most {MAX_VALUES} values in a list")
        self.expect("punct", "]", "',' or ']' to end the list of values")
        return tuple(found)


def _attribute(token: Token) -> str:
    name = token.text
    if name in SCALARS or name == "tag":
        return name
    if name.startswith("app."):
        app = name[4:]
        if not valid_name(app):
            raise _error(token.pos + 4, f"{app[:40]!r} is not a valid app name")
        return name
    raise _error(
        token.pos,
        f"unknown attribute {name[:40]!r}; expected one of " + ", ".join(SCALARS) + ", tag, "
        "app.NAME",
    )


def parse_filter(text: object) -> Filter:
    """The parsed filter ``text``; :class:`InvalidRequest` with the position otherwise."""
    if not isinstance(text, str):
        raise InvalidRequest("a filter must be a string", hint=HINT)
    if len(text) > MAX_LENGTH:
        raise InvalidRequest(f"a filter is at most {MAX_LENGTH} characters", hint=HINT)
    if not text.strip():
        raise InvalidRequest("a dynamic group needs a non-empty filter", hint=HINT)
    return Filter(text, _Parser(_tokens(text)).parse())
