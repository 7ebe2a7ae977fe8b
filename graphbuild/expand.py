"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

Base images are often written through ARGs (`FROM python:${PY%.*}-slim`), so
the graph is only right if every `${}` form expands exactly as in BuildKit
(moby/buildkit frontend/dockerfile/shell/lex.go): quotes removed, `\\$`
escapes, `${v:-w}`, `${v:+w}`, `${v:?m}`, `#`, `%` and `/` patterns.
"""

from __future__ import annotations

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
    try:
        value = lexer.until(None, raw_escapes=False)
    except RecursionError:
        raise ExpandError("substitutions nested too deeply") from None
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
        trim = _trim_prefix if op == "#" else _trim_suffix
        return trim(_Pattern(word), value, greedy)

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
        return _replace(_Pattern(pattern), value, replacement, replace_all)


class _Pattern:
    """A shell pattern (`*`, `?`, `\\` escapes) matched by simulating all positions at once.

    BuildKit turns patterns into Go regexps, which never backtrack. Python's
    re does, and `${A/*a*a*a*a*x/}` against a long value would take forever,
    so the set of positions a match can have reached is kept as the bits of
    an int: every step is a few big-int operations, linear in the value.
    """

    def __init__(self, pattern: str) -> None:
        self.tokens: list[str | None] = []  # None is `*`, "" is `?`, else one literal char
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            i += 1
            if ch == "\\":
                nxt = pattern[i] if i < len(pattern) else ""
                if nxt in ("}", "/"):
                    continue  # only escapes the ${} syntax, not part of the pattern
                if nxt not in ("*", "?", "\\"):
                    raise ExpandError(
                        f"invalid pattern ({pattern}) in substitution: invalid escape"
                    )
                self.tokens.append(nxt)
                i += 1
            elif ch == "*":
                if not self.tokens or self.tokens[-1] is not None:
                    self.tokens.append(None)
            else:
                self.tokens.append("" if ch == "?" else ch)

    def reversed(self) -> _Pattern:
        flipped = _Pattern("")
        flipped.tokens = self.tokens[::-1]
        return flipped

    def ends(self, value: str, start: int) -> int:
        """Bit i is set when the pattern matches value[start:i] exactly."""
        n = len(value)
        everything = (1 << (n + 1)) - 1
        reached = 1 << start
        masks: dict[str, int] = {}
        for token in self.tokens:
            if not reached:
                return 0
            if token is None:
                lowest = reached & -reached
                reached = everything & ~(lowest - 1)
            elif token == "":
                reached = (reached << 1) & everything
            else:
                if token not in masks:
                    bits = "".join("1" if c == token else "0" for c in reversed(value))
                    masks[token] = int(bits or "0", 2)
                reached = ((reached & masks[token]) << 1) & everything
        return reached


def _trim_prefix(pattern: _Pattern, value: str, greedy: bool) -> str:
    ends = pattern.ends(value, 0)
    if not ends:
        return value
    cut = ends.bit_length() - 1 if greedy else (ends & -ends).bit_length() - 1
    return value[cut:]


def _trim_suffix(pattern: _Pattern, value: str, greedy: bool) -> str:
    return _trim_prefix(pattern.reversed(), value[::-1], greedy)[::-1]


def _replace(pattern: _Pattern, value: str, replacement: str, replace_all: bool) -> str:
    """Leftmost, longest matches, as Go's ReplaceAllString with greedy stars."""
    out: list[str] = []
    i, last_end = 0, -1
    while i <= len(value):
        ends = pattern.ends(value, i)
        end = ends.bit_length() - 1 if ends else -1
        if end >= 0 and not (end == i and i == last_end):  # no empty match right after one
            out.append(replacement)
            last_end = end
            if not replace_all:
                return "".join(out) + value[end:]
            if end > i:
                i = end
                continue
        if i < len(value):
            out.append(value[i])
        i += 1
    return "".join(out)
