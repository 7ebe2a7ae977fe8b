"""Variable expansion in Dockerfile words, as BuildKit's shell lexer does it.

Base images are often written through ARGs (`FROM python:${PY%.*}-slim`), so
the graph is only right if every `${}` form expands exactly as in BuildKit
(moby/buildkit frontend/dockerfile/shell/lex.go): quotes removed, `\\$`
escapes, `${v:-w}`, `${v:+w}`, `${v:?m}`, `#`, `%` and `/` patterns. The word is read
by the lexer shared with heredoc detection (shell_words.py); this module gives its
references their values, matches the patterns, and bounds the work a file may cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from graphbuild.shell_words import Lexer, LexError

# A Dockerfile is a few KiB that a repository's author controls: without caps,
# 40 lines of `ARG A2=${A1}${A1}` ask for 2^40 characters.
MAX_VALUE = 64 * 1024  # characters in one expanded word; no real image reference comes close
MAX_WORK = 16 * 1024 * 1024  # units of work (see Budget) one Dockerfile may cost


# BuildKit would reject this word: the lexer's errors, and expansion's below
ExpandError = LexError


class TooLong(ExpandError):
    """The word expands to more than MAX_VALUE characters."""

    def __init__(self) -> None:
        super().__init__(f"expands to more than {MAX_VALUE // 1024} KiB")


class OverBudget(ExpandError):
    """The file has used up its Budget."""

    def __init__(self) -> None:
        super().__init__(
            f"evaluating this Dockerfile takes more than {MAX_WORK // 1024 // 1024} Mi units "
            "of work, the most graphbuild does for one file"
        )


class Budget:
    """The work one Dockerfile may still cost, shared by all its words: each word is capped,
    but many words each under the cap must not add up to unbounded time or memory. A unit
    is a character expanded, or scanned by a pattern (64 at once count as one); the reader
    charges other repeated work (ONBUILD triggers firing in many stages) to it too."""

    def __init__(self, work: int = MAX_WORK) -> None:
        self.left = work

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise OverBudget


class MissingValue(ExpandError):
    """`${v:?msg}` met an unset or empty variable: a value the build must supply."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{shorten(name, quote=False)}: {shorten(message, quote=False)}")


@dataclass
class Expansion:
    """The expanded word and the variables it read, found or not."""

    value: str
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


def expand(
    word: str, env: Mapping[str, str], escape: str = "\\", budget: Budget | None = None
) -> Expansion:
    """Expand `word` against `env`; unknown variables become empty, as in BuildKit.

    Raises TooLong past MAX_VALUE characters, and OverBudget when `budget` (the file's,
    else one of MAX_WORK for this word alone) runs out.
    """
    budget = budget or Budget()
    if not any(c in word for c in ("$", "'", '"', escape)):  # nothing to expand: the common case
        if len(word) > MAX_VALUE:
            raise TooLong
        budget.spend(len(word))
        return Expansion(word)
    lexer = _Expander(word, env, escape, budget)
    try:
        value = lexer.process_word()
    except RecursionError:
        raise ExpandError("substitutions nested too deeply") from None
    return Expansion(value, lexer.matched, lexer.unmatched)


class _Expander(Lexer):
    """BuildKit's lexer with variables (shellWord with envs, no SkipUnsetEnv): each reference is
    looked up in `env` and its `${}` form applied, every piece built is capped at MAX_VALUE and
    charged to the file's Budget, and the variables read are recorded (getEnv's capture)."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, budget: Budget) -> None:
        super().__init__(text, escape)
        self.env, self.budget = env, budget
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def check_size(self, size: int) -> None:
        """Capped before the piece is joined."""
        if size > MAX_VALUE:
            raise TooLong

    def charge(self, size: int) -> None:
        """Capped, and charged to the budget."""
        if size > MAX_VALUE:
            raise TooLong
        self.budget.spend(size)

    def lookup(self, name: str) -> tuple[str, bool]:
        """getEnv"""
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def reference(self, name: str, braces: bool) -> str:
        return self.lookup(name)[0]

    def modified(self, name: str, null_is_unset: bool, op: str, word: str) -> str:
        """The modifier switch of processDollar; trimSuffix and trimPrefix."""
        value, found = self.lookup(name)
        if op not in ("+", "-", "?", "#", "%"):
            shown = (":" if null_is_unset else "") + op
            raise ExpandError(f"unsupported modifier ({shown}) in substitution")
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
        return trim(_Pattern(word), value, greedy, self.budget)

    def replaced(self, name: str, pattern: str, replacement: str, replace_all: bool) -> str:
        value, _ = self.lookup(name)
        return _replace(_Pattern(pattern), value, replacement, replace_all, self.budget)


class _Pattern:
    """A shell pattern (`*`, `?`, `\\` escapes), matched without backtracking.

    BuildKit turns patterns into Go regexps, which never backtrack. Python's
    re does, and `${A/*a*a*a*a*x/}` against a long value would take forever.
    Here the positions a match can have reached are the bits of an int (see
    _Matcher), and a replace finds every match start in one pass: the time is
    linear in the value times the pattern's length, divided by the 64 bits a
    machine word holds.
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
                    shown = shorten(pattern, quote=False)
                    raise ExpandError(f"invalid pattern ({shown}) in substitution: invalid escape")
                self.tokens.append(nxt)
                i += 1
            elif ch == "*":
                if not self.tokens or self.tokens[-1] is not None:
                    self.tokens.append(None)
            else:
                self.tokens.append("" if ch == "?" else ch)

    def matcher(self, value: str, budget: Budget, backwards: bool = False) -> _Matcher:
        """This pattern against `value`; `backwards` matches the reversed pattern against the
        reversed value, which finds where matches start and what a suffix trim cuts."""
        if backwards:
            return _Matcher(self.tokens[::-1], value[::-1], budget)
        return _Matcher(self.tokens, value, budget)


class _Matcher:
    """A pattern against one value, with positions 0..len(value) as the bits of an int."""

    def __init__(self, tokens: list[str | None], value: str, budget: Budget) -> None:
        self.tokens, self.budget = tokens, budget
        n = len(value)
        self.everything = (1 << (n + 1)) - 1
        self.step = (n >> 6) + 1  # an operation on the positions costs a pass over the words
        # bit i of masks[c] is set when value[i] == c, for the literal chars of the pattern
        wanted = {t for t in tokens if t}
        where: dict[str, list[int]] = {c: [] for c in wanted}
        if wanted:
            budget.spend(n + self.step * len(wanted))
            for i, ch in enumerate(value):
                if ch in where:
                    where[ch].append(i)
        self.masks: dict[str, int] = {}
        for ch, positions in where.items():
            bits = bytearray((n >> 3) + 1)
            for i in positions:
                bits[i >> 3] |= 1 << (i & 7)
            self.masks[ch] = int.from_bytes(bits, "little")

    def ends(self, reached: int) -> int:
        """Bit j is set when the pattern matches value[i:j] for some bit i of `reached`."""
        for token in self.tokens:
            if not reached:
                return 0
            self.budget.spend(self.step)
            if token is None:
                lowest = reached & -reached
                reached = self.everything & ~(lowest - 1)
            elif token == "":
                reached = (reached << 1) & self.everything
            else:
                reached = ((reached & self.masks[token]) << 1) & self.everything
        return reached


def _trim_prefix(pattern: _Pattern, value: str, greedy: bool, budget: Budget) -> str:
    ends = pattern.matcher(value, budget).ends(1)
    if not ends:
        return value
    cut = ends.bit_length() - 1 if greedy else (ends & -ends).bit_length() - 1
    return value[cut:]


def _trim_suffix(pattern: _Pattern, value: str, greedy: bool, budget: Budget) -> str:
    ends = pattern.matcher(value, budget, backwards=True).ends(1)
    if not ends:
        return value
    cut = ends.bit_length() - 1 if greedy else (ends & -ends).bit_length() - 1
    return value[: len(value) - cut]


def _replace(
    pattern: _Pattern, value: str, replacement: str, replace_all: bool, budget: Budget
) -> str:
    """Leftmost, longest matches, as Go's ReplaceAllString with greedy stars.

    Matching the reversed pattern backwards from every position at once gives
    every position a match starts at. A pattern without `*` has one length, so
    a match's end is known; with a `*`, the longest match from the first start
    swallows every later one, so only a few starts ever need their ends.
    """
    n = len(value)
    backwards = pattern.matcher(value, budget, backwards=True)
    bits = bin(backwards.ends(backwards.everything))[:1:-1]  # bits[r] == "1": a start at n - r
    budget.spend(n + 1)
    starts = [n - r for r in range(len(bits) - 1, -1, -1) if bits[r] == "1"]
    forward = None if None not in pattern.tokens else pattern.matcher(value, budget)
    out: list[str] = []
    i, last_end, size = 0, -1, 0
    for start in starts:
        if start < i:
            continue
        if forward is None:
            end = start + len(pattern.tokens)
        else:
            end = forward.ends(1 << start).bit_length() - 1
        if end == start == last_end:  # no empty match right after one
            continue
        size += start - i + len(replacement)
        if size > MAX_VALUE:
            raise TooLong
        out += [value[i:start], replacement]
        last_end = end
        if not replace_all:
            i = end
            break
        if end > start:
            i = end
        else:
            out.append(value[start : start + 1])
            i = start + 1
    out.append(value[i:])
    return "".join(out)


def shorten(text: str, quote: bool = True, limit: int = 80) -> str:
    """`text` for an error message, quoted, and cut short so the message stays one line."""
    cut = text[:limit]
    shown = repr(cut) if quote else cut
    return shown if len(cut) == len(text) else f"{shown}… ({len(text)} characters)"
