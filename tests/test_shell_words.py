"""BuildKit's shell lexer as heredoc detection runs it: raw quotes and escapes, no variables.

Expansion through the same lexer is tested in test_expand.py. The expected words are
BuildKit's (moby/buildkit 73ed6825c shell/lex.go, built with Go and run with RawQuotes,
RawEscapes and SkipUnsetEnv, as heredocsFromLine runs it).
"""

import re

import pytest

from graphbuild.shell_words import GO_SPACES, Lexer, LexError


def words(line):
    return Lexer(line, raw_quotes=True, raw_escapes=True).process_words()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("cat <<EOF > /x", ["cat", "<<EOF", ">", "/x"], id="opener-alone"),
        pytest.param("a << EOF", ["a", "<< EOF"], id="blanks-after-opener-stay"),
        pytest.param(
            'x <<E"OF" \'y z\' "$HOME/a b"',
            ["x", '<<E"OF"', "'y z'", '"$HOME/a b"'],
            id="quotes-kept-and-not-split",
        ),
        pytest.param("ab${v-w}cd e", ["${v-w}cd", "e"], id="nested-word-empties-the-buffer"),
        pytest.param("ab${v}cd", ["ab${v}cd"], id="plain-reference-keeps-the-word"),
        pytest.param("a\\ b c", ["a\\ b", "c"], id="escaped-blank"),
        pytest.param("${a//x/y} $1 $ ${#}", ["${a/x/y}", "$1", "$", "${#}"], id="as-written"),
        pytest.param("a\u00a0b\x1cc", ["a", "b\x1cc"], id="go-blanks"),
    ],
)
def test_words_split_as_buildkit_splits_them(line, expected):
    assert words(line) == expected


def test_an_unclosed_quote_is_an_error():
    with pytest.raises(LexError, match="matching double-quote"):
        words('echo "<<EOF')


def test_blanks_are_gos_unicode_isspace():
    """Go's unicode.IsSpace is Python's isspace() less the separators \\x1c-\\x1f."""
    blank = re.compile(f"[{GO_SPACES}]")
    for code in range(0x110000):
        ch = chr(code)
        assert bool(blank.fullmatch(ch)) == (ch.isspace() and not 0x1C <= code <= 0x1F), hex(code)
