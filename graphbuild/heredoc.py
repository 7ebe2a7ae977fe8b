"""Which heredocs a Dockerfile line opens, found as BuildKit finds them.

BuildKit's heredocsFromLine splits the line into words with its shell lexer
(shell/lex.go) and matches each word against reHeredoc, so `<< EOF`, `<<E"OF"` and
`<<'EOF'` open heredocs and `<<- EOF` does not. A regexp over the raw line cannot
tell these apart; this is a port of just the lexer's word splitting, with no
variable set, which is all the answer depends on.
"""

from __future__ import annotations

import re

from graphbuild.errors import DockerfileError
from graphbuild.expand import shorten

# reHeredoc, Go's \d and \s. Possessive blanks: the rest is no `<` either way, and a word of
# many blanks then a `<` would otherwise be tried at every split (RE2 is linear; re is not)
_HEREDOC_RE = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*+([^<]*)")


def openers(line: str, line_no: int) -> list[tuple[bool, str]]:
    """(chomp, terminator) of each heredoc a line opens, as BuildKit's heredocsFromLine finds
    them: the line is split into words by its shell lexer (always with `\\` as escape), where
    blanks right after `<<` stay in the word (`<< EOF` is one word, `<<- EOF` two); each word
    matching reHeredoc names a heredoc whose terminator is the rest, lexed again without quotes.
    A line the lexer cannot split (an unclosed quote) opens none."""
    try:
        words = _ShellWords(line, raw_quotes=True, raw_escapes=True).split()
    except _LexError:
        return []
    found: list[tuple[bool, str]] = []
    for word in words:
        match = _HEREDOC_RE.fullmatch(word)
        if match is None or not match.group(3):
            continue
        rest = match.group(3)
        try:
            names = _ShellWords(rest, raw_quotes=False, raw_escapes=False).split()
            if len(names) != 1:
                continue
            raw = _ShellWords(rest, raw_quotes=True, raw_escapes=False).split()
        except _LexError as err:
            raise DockerfileError(line_no, f"failed to process {shorten(rest)}: {err}") from None
        if len(raw) != len(names):
            raise DockerfileError(
                line_no,
                f"internal lexing of heredoc produced inconsistent results: {shorten(rest)}",
            )
        found.append((match.group(2) == "-", names[0]))
    return found


class _LexError(ValueError):
    """BuildKit's lexer fails on this text."""


def _go_space(ch: str) -> bool:
    """Go's unicode.IsSpace: Python's isspace() less the four ASCII separators \\x1c-\\x1f."""
    return ch.isspace() and not "\x1c" <= ch <= "\x1f"


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
    """shell/lex.go wordsStruct: splits on blanks, except inside raw (quoted) pieces."""

    def __init__(self, buffer: _Buffer) -> None:
        self.buffer = buffer
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _go_space(ch):
            if self.in_word and self.buffer.size:
                self.words.append(self.buffer.take())
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw(self, text: str) -> None:
        self.buffer.add(text)
        self.in_word = True

    def done(self) -> list[str]:
        if self.buffer.size:
            self.words.append(self.buffer.take())
            self.in_word = False
        return self.words


class _ShellWords:
    """BuildKit's shell lexer (shell/lex.go) splitting words as heredoc detection runs it:
    escape `\\`, no variable set and unset ones kept as written (SkipUnsetEnv), quotes and
    escapes kept or removed as asked. Only word boundaries and heredoc names matter here."""

    def __init__(self, text: str, raw_quotes: bool, raw_escapes: bool) -> None:
        self.text, self.raw_quotes, self.raw_escapes = text, raw_quotes, raw_escapes
        self.pos = 0
        self.buffer = _Buffer()

    def split(self) -> list[str]:
        return self.stop_on("", self.raw_escapes)[1]

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """processStopOn: the text up to `stop` (the end when ""), and its words."""
        result: list[str] = []
        self.buffer.take()
        words = _Words(self.buffer)
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            while self.pos < len(self.text):
                ch = self.peek()
                if stop and ch == stop:
                    self.pos += 1
                    return "".join(result), words.done()
                if ch in "$<'\"":
                    piece = {
                        "$": self.dollar,
                        "<": self.possible_heredoc,
                        "'": self.single_quote,
                        '"': self.double_quote,
                    }[ch]()
                    result.append(piece)
                    if ch == "$":
                        words.add_string(piece)
                    else:
                        words.add_raw(piece)
                    continue
                self.pos += 1
                if ch == "\\":
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    if self.pos >= len(self.text):
                        break
                    ch = self.next()
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
            if stop:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.done()
        finally:
            self.raw_escapes = saved

    def possible_heredoc(self) -> str:
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.peek() and self.peek() in "\t\r ":
            self.pos += 1
        return "<<" + self.text[start : self.pos]

    def single_quote(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end == -1:
            raise _LexError("unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos : end]
        self.pos = end + 1
        return f"'{body}'" if self.raw_quotes else body

    def double_quote(self) -> str:
        self.pos += 1
        out = ['"'] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == "":
                raise _LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == "\\":
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt == "":
                    continue
                if nxt in '"$\\':
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdecimal():  # Go's unicode.IsDigit
            while self.peek().isdecimal():
                self.pos += 1
        elif ch and ch in "@*#?-$!0":
            self.pos += 1
        else:
            while (c := self.peek()) and (c.isalpha() or c.isdecimal() or c == "_"):
                self.pos += 1
        return self.text[start : self.pos]

    def dollar(self) -> str:
        """processDollar with no variable set: every reference is kept as written."""
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            return "$" + name
        self.pos += 1
        ch = self.peek()
        if ch == "":
            raise _LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            return "${" + name + "}"
        modifier = op
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
            modifier += op
        if null_is_unset or (op and op in "+-?#%"):
            trims = op in ("#", "%")
            if null_is_unset and trims:
                raise _LexError(f"unsupported modifier ({modifier}) in substitution")
            word = self.nested("}", trims)
            return "${" + name + modifier + word + "}"
        if op == "/":
            if self.peek() == "/":
                self.pos += 1
            pattern = self.nested("/", True, "syntax error: missing '/' in ${}")
            replacement = self.nested("}", True)
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise _LexError(f"unsupported modifier ({modifier}) in substitution")

    def nested(
        self, stop: str, raw_escapes: bool, at_end: str = "syntax error: missing '}'"
    ) -> str:
        try:
            return self.stop_on(stop, raw_escapes)[0]
        except _LexError:
            if self.pos >= len(self.text):
                raise _LexError(at_end) from None
            raise
