"""Variable expansion as BuildKit's shell lexer does it (reference rules 13 and 15)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphbuild.expand import ExpandError, MissingValue, expand

# `u` is never in ENV: it is the unset variable of every case.
ENV = {
    "v": "value",
    "e": "",  # set but empty
    "a": "A",
    "b": "B",
    "PY": "3.12.4",
    "P": "x/y/z",
    "F": "foo/bar/foo",
}


def value(word, escape="\\"):
    return expand(word, ENV, escape).value


def case(word, expected, name):
    return pytest.param(word, expected, id=name)


FORMS = [
    # plain references
    case("$v", "value", "dollar-name"),
    case("${v}", "value", "braces"),
    case("pre-${v}-post", "pre-value-post", "braces-in-word"),
    case("$v.$a", "value.A", "name-ends-at-punctuation"),
    # ${v:-w}: w when unset or empty
    case("${u:-w}", "w", "colon-minus-unset"),
    case("${e:-w}", "w", "colon-minus-empty"),
    case("${v:-w}", "value", "colon-minus-set"),
    # ${v-w}: w only when unset
    case("${u-w}", "w", "minus-unset"),
    case("${e-w}", "", "minus-set-but-empty"),
    case("${v-w}", "value", "minus-set"),
    # ${v:+w}: w when set and non-empty
    case("${u:+w}", "", "colon-plus-unset"),
    case("${e:+w}", "", "colon-plus-empty"),
    case("${v:+w}", "w", "colon-plus-set"),
    # ${v+w}: w when set, even to ""
    case("${u+w}", "", "plus-unset"),
    case("${e+w}", "w", "plus-set-but-empty"),
    case("${v+w}", "w", "plus-set"),
    # ${v:?m} / ${v?m} pass the value through when they do not fail
    case("${v:?m}", "value", "colon-question-set"),
    case("${v?m}", "value", "question-set"),
    case("${e?m}", "", "question-set-but-empty"),
    # prefix patterns
    case("${PY#*.}", "12.4", "hash-shortest-star"),
    case("${PY##*.}", "4", "hash-longest-star"),
    case("${PY#?.}", "12.4", "hash-question-mark"),
    case("${PY#9}", "3.12.4", "hash-no-match"),
    case("${P#*/}", "y/z", "hash-slash"),
    # suffix patterns
    case("${PY%.*}", "3.12", "percent-shortest-star"),
    case("${PY%%.*}", "3", "percent-longest-star"),
    case("${PY%.?}", "3.12", "percent-question-mark"),
    case("${PY%x}", "3.12.4", "percent-no-match"),
    case("python:${PY%.*}-slim", "python:3.12-slim", "percent-in-word"),
    case("${u%.*}", "", "percent-unset"),
    # replacement
    case("${F/foo/X}", "X/bar/foo", "slash-first"),
    case("${F//foo/X}", "X/bar/X", "double-slash-all"),
    case("${F/b*r/X}", "foo/X/foo", "slash-star"),
    case("${F/*/X}", "X", "slash-star-is-greedy"),
    case("${F//o?/_}", "f_/bar/f_", "double-slash-question-mark"),
    case("${F/nope/X}", "foo/bar/foo", "slash-no-match"),
    case("${F/foo/}", "/bar/foo", "slash-empty-replacement"),
    # nested words
    case("${u:-${b}}", "B", "nested-default"),
    case("${a:-${b}}", "A", "nested-default-not-used"),
    case("${u:-$b}", "B", "nested-default-no-braces"),
    case("${v:+${a}${b}}", "AB", "nested-alternative"),
    case("${u:-${u:-deep}}", "deep", "doubly-nested"),
    # escapes
    case("\\$v", "$v", "escaped-dollar"),
    case("\\${v}", "${v}", "escaped-dollar-braces"),
    case("$", "$", "lone-dollar"),
    # quotes are removed (rule 15)
    case('"${v}"', "value", "double-quotes"),
    case("'${v}'", "${v}", "single-quotes-no-expansion"),
    case('golang:"${PY}-alpine"', "golang:3.12.4-alpine", "quotes-inside-word"),
    case('"a b"', "a b", "quoted-blank"),
    case('"\\$v"', "$v", "escaped-dollar-in-double-quotes"),
    case("a\"\"'b'c", "abc", "empty-and-adjacent-quotes"),
]


@pytest.mark.parametrize(("word", "expected"), FORMS)
def test_expansion_forms(word, expected):
    assert value(word) == expected


def test_backtick_escape():
    assert value("`$v", escape="`") == "$v"
    assert value("C:\\$v", escape="`") == "C:\\value"


@pytest.mark.parametrize(
    ("word", "name", "message"),
    [
        pytest.param("${u:?need u}", "u", "need u", id="colon-question-unset"),
        pytest.param("${e:?need e}", "e", "need e", id="colon-question-empty"),
        pytest.param("${u?need u}", "u", "need u", id="question-unset"),
        pytest.param("${u?}", "u", "is not allowed to be unset", id="question-default-message"),
        pytest.param("${e:?}", "e", "is not allowed to be empty", id="colon-question-default"),
        pytest.param("x${u:-${b:?x}}${u:?inner}", "u", "inner", id="after-other-forms"),
    ],
)
def test_required_values_raise_missing_value(word, name, message):
    with pytest.raises(MissingValue) as info:
        value(word)
    assert info.value.name == name
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("word", "message"),
    [
        pytest.param("${v:=w}", "unsupported modifier", id="assign-default"),
        pytest.param("${v=w}", "unsupported modifier", id="assign-default-no-colon"),
        pytest.param("${v:1:2}", "unsupported modifier", id="substring"),
        pytest.param("${v:1}", "unsupported modifier", id="offset"),
        pytest.param("${", "missing '}'", id="unterminated-open"),
        pytest.param("${v", "missing '}'", id="unterminated-name"),
        pytest.param("${v:-w", "missing '}'", id="unterminated-default"),
        pytest.param("${F/a", "missing '/'", id="unterminated-replacement"),
        pytest.param("${}", "bad substitution", id="empty-braces"),
        pytest.param('"open', "double-quote", id="unterminated-double-quote"),
        pytest.param("'open", "single-quote", id="unterminated-single-quote"),
    ],
)
def test_rejected_words_raise_expand_error(word, message):
    with pytest.raises(ExpandError, match=message) as info:
        value(word)
    assert not isinstance(info.value, MissingValue)


# -- where two ports of lex.go disagreed, BuildKit's answer (moby/buildkit 73ed6825c, each
#    checked against lex.go built with Go): the lexer is now one, shared with heredoc.py

GO_ENV = {"V": "*a\\b", "A": "x", "A\u00b2": "the name read too far"}

# word: BuildKit's answer, the value or "error: " and the message
BUILDKIT_ANSWERS = {
    # processName: unicode.IsLetter and IsDigit (Nd); a superscript two is neither
    "$A\u00b2": "x\u00b2",
    # processDoubleQuote keeps the escape when raw escapes are on (inside #, % and /)
    '${V#"\\*"}': "*a\\b",
    '${V%"\\b"}': "*a",
    '${V/"\\b"/X}': "*aX",
    # no `:` before a trim
    "${V:#*}": "error: unsupported modifier (:#) in substitution",
    "${V:%b}": "error: unsupported modifier (:%) in substitution",
    # the word after `${v:` is read before the modifier is judged; it runs to the end
    "${V:x": "error: syntax error: missing '}'",
    "${V:": "error: syntax error: missing '}'",
    # an unclosed quote inside ${} reads to the end: the brace is what is missing
    "${V:-'open": "error: syntax error: missing '}'",
    "${V/'a/b}": "error: syntax error: missing '/' in ${}",
}


@pytest.mark.parametrize(("word", "answer"), BUILDKIT_ANSWERS.items())
def test_words_are_read_as_buildkit_reads_them(word, answer):
    try:
        got = expand(word, GO_ENV).value
    except ExpandError as err:
        got = f"error: {err}"
    assert got == answer


def test_unmatched_collects_undefined_variables():
    result = expand("${REG}/app:${TAG:-1}-$SUFFIX$v", {"v": "x", "REG": "quay.io"})
    assert result.value == "quay.io/app:1-x"
    assert result.matched == {"REG", "v"}
    assert result.unmatched == {"TAG", "SUFFIX"}


def test_set_but_empty_counts_as_matched():
    result = expand("a${e}b", ENV)
    assert result.value == "ab"
    assert result.matched == {"e"}
    assert result.unmatched == set()


def test_nothing_to_expand():
    result = expand("alpine:3.20", ENV)
    assert (result.value, result.matched, result.unmatched) == ("alpine:3.20", set(), set())


# -- patterns are matched without backtracking; a regex is the oracle on small inputs

PATTERN_CHARS = st.text(alphabet="ab*?", max_size=6)
VALUES = st.text(alphabet="abc", max_size=8)


def _regex(pattern, greedy, anchored):
    body = "".join(
        (".*" if greedy else ".*?") if c == "*" else "." if c == "?" else re.escape(c)
        for c in pattern
    )
    return re.compile(("^" if anchored else "") + body, re.DOTALL)


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERN_CHARS, text=VALUES)
def test_patterns_agree_with_a_regex(pattern, text):
    env = {"V": text}
    for greedy in (False, True):
        match = _regex(pattern, greedy, anchored=True).search(text)
        op = "##" if greedy else "#"
        assert expand(f"${{V{op}{pattern}}}", env).value == (text[match.end() :] if match else text)
        rev = _regex(pattern[::-1], greedy, anchored=True).search(text[::-1])
        op = "%%" if greedy else "%"
        expected = (text[::-1][rev.end() :] if rev else text[::-1])[::-1]
        assert expand(f"${{V{op}{pattern}}}", env).value == expected
    first = _regex(pattern, True, anchored=False).search(text)
    if first and first.end() > first.start():
        assert (
            expand(f"${{V/{pattern}/X}}", env).value
            == text[: first.start()] + "X" + text[first.end() :]
        )


def test_many_stars_do_not_backtrack():
    env = {"A": "a" * 2000}
    stars = "*a" * 40 + "*x"
    assert expand(f"${{A/{stars}/b}}", env).value == "a" * 2000
    assert expand(f"${{A##{stars}}}", env).value == "a" * 2000
    assert expand("${A//a/b}", env).value == "b" * 2000


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ExpandError, match="nested too deeply"):
        expand("${A:-" * 2000 + "x" + "}" * 2000, {})


def _go_replace_all(regex, text, replacement):
    """Go's ReplaceAllString: an empty match right after a match is not a match."""
    out, pos, last = [], 0, -1
    for match in regex.finditer(text):
        if match.start() == match.end() == last:
            continue
        out += [text[pos : match.start()], replacement]
        pos = last = match.end()
    return "".join(out) + text[pos:]


@settings(max_examples=400, deadline=None, database=None)
@given(pattern=PATTERN_CHARS, text=VALUES)
def test_replace_all_agrees_with_a_regex(pattern, text):
    expected = _go_replace_all(_regex(pattern, True, anchored=False), text, "X")
    assert expand(f"${{V//{pattern}/X}}", {"V": text}).value == expected


# -- bounded work: a value has a cap, a pattern costs time linear in its value

KIB = 1024


def test_a_value_of_64_kib_expands_and_one_more_character_is_an_error():
    assert len(expand("${H}${H}", {"H": "x" * 32 * KIB}).value) == 64 * KIB
    with pytest.raises(ExpandError, match="more than 64 KiB"):
        expand("${H}${H}x", {"H": "x" * 32 * KIB})
    with pytest.raises(ExpandError, match="more than 64 KiB"):
        expand("${u:-${H}${H}}x", {"H": "x" * 32 * KIB})
    assert len(expand("x" * 64 * KIB, {}).value) == 64 * KIB
    with pytest.raises(ExpandError, match="more than 64 KiB"):
        expand("x" * (64 * KIB + 1), {})


LONG = "a" * 60_000  # no `b` in it: every pattern below matches nowhere or everywhere


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${V//b/}", LONG),
        ("${V/b/}", LONG),
        ("${V//?b/x}", LONG),
        ("${V//a?b/x}", LONG),
        ("${V//*b/}", LONG),
        ("${V//b*/}", LONG),
        ("${V//a*b*a/}", LONG),
        ("${V#*b}", LONG),
        ("${V##*b}", LONG),
        ("${V%b*}", LONG),
        ("${V%%b*}", LONG),
        ("${V//a/b}", "b" * 60_000),
        ("${V//aa/b}", "b" * 30_000),
        ("${V//?/}", ""),
        ("${V//*/x}", "x"),
    ],
)
def test_a_pattern_on_a_long_value_is_matched_in_linear_time(word, expected):
    assert expand(word, {"V": LONG}).value == expected
