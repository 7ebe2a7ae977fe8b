"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

Base images are often written through ARGs (`FROM python:${PY%.*}-slim`), so
the graph is only right if every `${}` form expands exactly as in BuildKit
(moby/buildkit frontend/dockerfile/shell/lex.go): quotes removed, `\\$`
escapes, `${v:-w}`, `${v:+w}`, `${v:?m}`, `#`, `%` and `/` patterns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_SPECIAL_PARAMS = "@*#?-$!0"


class ExpandError(ValueError):
    """BuildKit would reject this word."""


class MissingValue(ExpandError):
    """`${v:?msg}` met an unset or empty variable: a value the build must supply."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


@dataclass
class Expansion:
    """The expanded word and the variables it read, found or not."""

    value: str
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> Expansion:
    """Expand `word` against `env`; unknown variables become empty, as in BuildKit."""
    lexer = _Lexer(word, env, escape)
    value = lexer.until(None, raw_escapes=False)
    return Expansion(value, lexer.matched, lexer.unmatched)


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text, self.env, self.escape = text, env, escape
        self.pos = 0
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def until(self, stop: str | None, raw_escapes: bool) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
            elif ch == "'":
                out.append(self.single_quote())
            elif ch == '"':
                out.append(self.double_quote())
            else:
                self.pos += 1
                if ch == self.escape:
                    if raw_escapes:
                        out.append(ch)
                    if self.pos >= len(self.text):
                        break
                    ch = self.next()
                out.append(ch)
        if stop is not None:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def single_quote(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end == -1:
            raise ExpandError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def double_quote(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == "":
                raise ExpandError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                nxt = self.peek()
                if nxt == "":
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.pos += 1
            return self.text[start : self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        while (c := self.peek()) and (c.isalnum() or c == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            return self.lookup(name)[0] if name else "$"
        self.pos += 1
        ch = self.peek()
        if ch == "":
            raise ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "":
            raise ExpandError("syntax error: missing '}'")
        if op == "}":
            return self.lookup(name)[0]
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        if op not in "+-?#%" or op == "":
            shown = (":" if null_is_unset else "") + op
            raise ExpandError(f"unsupported modifier ({shown}) in substitution")
        try:
            word = self.until("}", raw_escapes=op in "#%")
        except ExpandError:
            if self.pos >= len(self.text):
                raise ExpandError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        empty = not found or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if not found:
                raise MissingValue(name, word or "is not allowed to be unset")
            if null_is_unset and value == "":
                raise MissingValue(name, word or "is not allowed to be empty")
            return value
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        if op == "#":
            return _trim_prefix(word, value, greedy)
        return _reverse(_trim_prefix(_reverse_pattern(word), _reverse(value), greedy))

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        try:
            pattern = self.until("/", raw_escapes=True)
        except ExpandError:
            if self.pos >= len(self.text):
                raise ExpandError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement = self.until("}", raw_escapes=True)
        except ExpandError:
            if self.pos >= len(self.text):
                raise ExpandError("syntax error: missing '}'") from None
            raise
        value, _ = self.lookup(name)
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        return regex.sub(lambda _m: replacement, value, count=0 if replace_all else 1)


def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Shell wildcards (`*`, `?`, `\\` escapes) as a regex, as convertShellPatternToRegex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            nxt = pattern[i] if i < len(pattern) else ""
            if nxt in ("}", "/"):
                continue
            if nxt not in ("*", "?", "\\"):
                raise ExpandError(f"invalid pattern ({pattern}) in substitution: invalid escape")
            out.append(re.escape(nxt))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy, anchored=True).search(value)
    return value[match.end() :] if match else value


def _reverse(text: str) -> str:
    return text[::-1]


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each escape before the character it escapes."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))
