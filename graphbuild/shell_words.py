"""BuildKit's shell lexer, ported once: how a Dockerfile word's quotes, escapes, `$`
references and `<<` openers are read (moby/buildkit frontend/dockerfile/shell/lex.go).

BuildKit reads every word with this one lexer, so graphbuild does too. Two jobs use it:
expand.py substitutes variables (a Lexer whose references look up values, with caps on size
and work), heredoc.py splits a line into words with every reference kept as written (BuildKit's
SkipUnsetEnv with no variable set). What a reference becomes is theirs; the reading is here.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class LexError(ValueError):
    """BuildKit's lexer rejects this text."""


# Go's unicode.IsSpace: Python's isspace() less the four ASCII separators \x1c-\x1f
GO_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# a run of blanks, or of anything else: what addChar does to one character it does to a run
_BLANKS_OR_NOT = re.compile(f"([{GO_SPACES}]+)|[^{GO_SPACES}]+")


class _Buffer:
    """The word being built, shared by nested lexing as Go's sw.wordsBuffer is: a nested
    `${v-w}` empties it, so what came before it in the word is lost, as in BuildKit."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        return text


class _Words:
    """wordsStruct: splits on blanks, except inside raw (quoted, escaped) pieces."""

    def __init__(self, buffer: _Buffer) -> None:
        self.buffer = buffer
        self.words: list[str] = []
        self.in_word = False

    def add_string(self, text: str) -> None:
        """addString: addChar for each character, a blank ending the word; taken a run of
        blanks or of other characters at a time (a long word is not walked in Python)."""
        for run in _BLANKS_OR_NOT.finditer(text):
            if run.group(1) is None:
                self.add_raw(run.group())
            elif self.in_word and self.buffer.size:
                self.words.append(self.buffer.take())
                self.in_word = False

    def add_raw(self, text: str) -> None:
        """addRawChar and addRawString"""
        self.buffer.add(text)
        self.in_word = True

    def done(self) -> list[str]:
        """getWords"""
        if self.buffer.size:
            self.words.append(self.buffer.take())
            self.in_word = False
        return self.words


class _NoWords(_Words):
    """Words nobody reads, not kept: those of a text read for its value alone (ProcessWord),
    and those of the word inside `${}`, which processDollar throws away. Keeping them would
    walk a long value for nothing, and a line nested N deep N times."""

    def __init__(self) -> None:
        self.words = []

    def add_string(self, text: str) -> None:
        pass

    def add_raw(self, text: str) -> None:
        pass

    def done(self) -> list[str]:
        return self.words


_MODIFIERS = ("+", "-", "?", "#", "%")
_RUNS: dict[str, Callable[[str, int], re.Match[str] | None]] = {}


def _run_of_chars_but(special: str) -> Callable[[str, int], re.Match[str] | None]:
    """Matches the run of characters at a position that are none of `special`: the lexer
    passes these through as they are, so it takes them in one step, not one at a time (a
    character class repeated, so linear)."""
    match = _RUNS.get(special)
    if match is None:
        match = _RUNS[special] = re.compile(f"[^{re.escape(special)}]+").match
    return match


class Lexer:
    """shellWord: one text read as BuildKit's Lex reads it, with escape `escape` and its
    RawQuotes and RawEscapes. As written here every reference stays as written (SkipUnsetEnv
    with no variable set); a subclass gives references values by overriding reference(),
    modified() and replaced(), and may cap the size of what it builds (check_size, charge)."""

    def __init__(
        self, text: str, escape: str = "\\", raw_quotes: bool = False, raw_escapes: bool = False
    ) -> None:
        self.text, self.escape = text, escape
        self.raw_quotes, self.raw_escapes = raw_quotes, raw_escapes
        self.pos = 0
        self.buffer: _Buffer | None = None  # set when words are wanted

    def process_word(self) -> str:
        """ProcessWord: the text with its quotes, escapes and references resolved."""
        return self.stop_on("", self.raw_escapes)[0]

    def process_words(self) -> list[str]:
        """ProcessWords: the text resolved and split into words at blanks outside quotes."""
        self.buffer = _Buffer()
        return self.stop_on("", self.raw_escapes)[1]

    # -- what a reference becomes: kept as written here (SkipUnsetEnv, no variable set)

    def reference(self, name: str, braces: bool) -> str:
        """`$name` or `${name}`."""
        return "${" + name + "}" if braces else "$" + name

    def modified(self, name: str, null_is_unset: bool, op: str, word: str) -> str:
        """`${name-word}` and the other modifiers; `:` before it is null_is_unset. `op` may be
        no modifier at all after a `:` (`${v:x}`): BuildKit reads the word before saying so."""
        return "${" + name + (":" if null_is_unset else "") + op + word + "}"

    def replaced(self, name: str, pattern: str, replacement: str, replace_all: bool) -> str:
        """`${name/pattern/replacement}`, `//` for replace_all (BuildKit writes it back as one
        `/`)."""
        return "${" + name + "/" + pattern + "/" + replacement + "}"

    def check_size(self, size: int) -> None:
        """A piece being built has grown to `size` characters: no limit here."""

    def charge(self, size: int) -> None:
        """A piece of `size` characters is finished: no limit here."""

    # -- the lexer

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """processStopOn: the text up to `stop` (the end when ""), and its words: those of
        the whole text only, as a nested call (inside `${}`, with a stop) only empties the
        shared buffer for the caller to see."""
        text, escape = self.text, self.escape
        result: list[str] = []
        size = 0  # characters in `result`
        words: _Words = _NoWords()
        if self.buffer is not None:
            self.buffer.take()  # processStopOn resets the shared buffer
            if not stop:
                words = _Words(self.buffer)
        plain = _run_of_chars_but("$<'\"" + escape + stop)
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            while self.pos < len(text):
                run = plain(text, self.pos)
                if run:
                    chunk = run.group()
                    self.pos = run.end()
                    words.add_string(chunk)
                    result.append(chunk)
                    size += len(chunk)
                    continue
                ch = text[self.pos]
                if ch == stop:
                    self.pos += 1
                    self.charge(size)
                    return "".join(result), words.done()
                if ch in "$<'\"":
                    if ch == "$":
                        piece = self.dollar()
                        words.add_string(piece)
                    else:
                        if ch == "<":
                            piece = self.possible_heredoc()
                        elif ch == "'":
                            piece = self.single_quote()
                        else:
                            piece = self.double_quote()
                        words.add_raw(piece)
                    size = self.grown(result, size, piece)
                    continue
                self.pos += 1  # the escape: all else was a run or is handled above
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                    size += 1
                if self.pos >= len(text):
                    break
                ch = text[self.pos]
                self.pos += 1
                words.add_raw(ch)
                result.append(ch)
                size += 1
            if stop:
                raise LexError(f"unexpected end of statement while looking for matching {stop}")
            self.charge(size)
            return "".join(result), words.done()
        finally:
            self.raw_escapes = saved

    def grown(self, out: list[str], size: int, piece: str) -> int:
        """The size of `out`, `size` characters, once `piece` is added to it, checked."""
        out.append(piece)
        size += len(piece)
        self.check_size(size)
        return size

    def possible_heredoc(self) -> str:
        """processPossibleHeredoc: `<<` keeps the blanks after it."""
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.peek() and self.peek() in "\t\r ":
            self.pos += 1
        return "<<" + self.text[start : self.pos]

    def single_quote(self) -> str:
        """processSingleQuote: everything up to the next `'` as it is."""
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end == -1:
            self.pos = len(self.text)  # read to the end looking for it, as Go's scanner does
            raise LexError("unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos : end]
        self.pos = end + 1
        return f"'{body}'" if self.raw_quotes else body

    def double_quote(self) -> str:
        """processDoubleQuote: references resolved; the escape escapes only `"`, `$` and
        itself, and is kept as well when raw escapes are on."""
        self.pos += 1
        out = ['"'] if self.raw_quotes else []
        size = len(out)
        plain = _run_of_chars_but('"$' + self.escape)
        while True:
            run = plain(self.text, self.pos)
            if run:
                out.append(run.group())
                size += run.end() - self.pos
                self.pos = run.end()
                continue
            ch = self.peek()
            if ch == "":
                raise LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append(ch)
                    size += 1
                self.charge(size)
                return "".join(out)
            if ch == "$":
                size = self.grown(out, size, self.dollar())
                continue
            self.pos += 1  # the escape: all else was a run or is handled above
            if self.raw_escapes:
                out.append(ch)
                size += 1
            nxt = self.peek()
            if nxt == "":
                continue
            if nxt in ('"', "$", self.escape):
                ch = self.next()
            out.append(ch)
            size += 1

    def name(self) -> str:
        """processName: digits (Go's unicode.IsDigit), one special parameter, or letters (its
        IsLetter), digits and `_`. Not a regexp: `\\w` also takes digits Go does not (`²`)."""
        text, start = self.text, self.pos
        end, n = start, len(text)
        if end < n and text[end].isdecimal():
            while end < n and text[end].isdecimal():
                end += 1
        elif end < n and text[end] in "@*#?-$!0":  # isSpecialParam
            end += 1
        else:
            while end < n and ((c := text[end]).isalpha() or c.isdecimal() or c == "_"):
                end += 1
        self.pos = end
        return text[start:end]

    def dollar(self) -> str:
        """processDollar: the syntax of `$name` and `${...}`; what each form becomes is
        reference(), modified() and replaced()."""
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            return self.reference(name, braces=False) if name else "$"
        self.pos += 1
        ch = self.peek()
        if ch == "":
            raise LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "":  # Go names the modifier U+FFFD here; the end is what is wrong
            raise LexError("syntax error: missing '}'")
        if op == "}":
            return self.reference(name, braces=True)
        if op == "/":
            replace_all = self.peek() == "/"
            if replace_all:
                self.pos += 1
            pattern = self.nested("/", True, "syntax error: missing '/' in ${}")
            replacement = self.nested("}", True)
            return self.replaced(name, pattern, replacement, replace_all)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        elif op not in _MODIFIERS:
            raise LexError(f"unsupported modifier ({op}) in substitution")
        trims = op in ("#", "%")
        if null_is_unset and trims:
            raise LexError(f"unsupported modifier (:{op}) in substitution")
        word = self.nested("}", trims)
        return self.modified(name, null_is_unset, op, word)

    def nested(
        self, stop: str, raw_escapes: bool, at_end: str = "syntax error: missing '}'"
    ) -> str:
        """processStopOn inside `${}`: any failure that ran to the end is `at_end`."""
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except LexError:
            if self.pos >= len(self.text):
                raise LexError(at_end) from None
            raise
