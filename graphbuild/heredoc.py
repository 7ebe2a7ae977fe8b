"""Which heredocs a Dockerfile line opens, found as BuildKit finds them.

BuildKit's heredocsFromLine splits the line into words with its shell lexer
(shell/lex.go) and matches each word against reHeredoc, so `<< EOF`, `<<E"OF"` and
`<<'EOF'` open heredocs and `<<- EOF` does not. A regexp over the raw line cannot
tell these apart; the words come from the lexer shared with expansion
(shell_words.py), with no variable set, which is all the answer depends on.
"""

from __future__ import annotations

import re

from graphbuild.errors import DockerfileError
from graphbuild.expand import shorten
from graphbuild.shell_words import Lexer, LexError

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
        words = Lexer(line, raw_quotes=True, raw_escapes=True).process_words()
    except LexError:
        return []
    found: list[tuple[bool, str]] = []
    for word in words:
        match = _HEREDOC_RE.fullmatch(word)
        if match is None or not match.group(3):
            continue
        rest = match.group(3)
        try:
            names = Lexer(rest).process_words()
            if len(names) != 1:
                continue
            raw = Lexer(rest, raw_quotes=True).process_words()
        except LexError as err:
            raise DockerfileError(line_no, f"failed to process {shorten(rest)}: {err}") from None
        if len(raw) != len(names):
            raise DockerfileError(
                line_no,
                f"internal lexing of heredoc produced inconsistent results: {shorten(rest)}",
            )
        found.append((match.group(2) == "-", names[0]))
    return found
