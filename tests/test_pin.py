"""Pinning a Dockerfile to its parents' digests (design rule 3).

Every case checks the exact text pin() writes, then the property the executor relies
on: parsing the pinned text gives the same references with the digest added to each
pinned one, and every other instruction keeps its command, arguments and line.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphbuild import refs
from graphbuild.dockerfile import parse, read
from graphbuild.pin import Unpinnable, pin

D1, D2, D3 = (f"sha256:{c * 64}" for c in "123")
PINNED = "sha256:" + "a" * 64
PYTHON = "docker.io/library/python:3.12"


def df(*lines, eol="\n"):
    return eol.join(lines) + eol


def pinned(text, digests, **kw):
    """pin() as the executor calls it, then the property checked on the result."""
    out = pin(text, parse(text, **kw).refs, digests)
    assert_pinned(text, out, digests, **kw)
    return out


def wanted(ref, digests):
    """The reference the pinned file should name: `name:tag@digest` if `name:tag` is pinned."""
    parsed = refs.parse(ref)
    if parsed.digest is None and parsed.tagged in digests:
        return f"{parsed.tagged}@{digests[parsed.tagged]}"
    return ref


def assert_pinned(text, out, digests, **kw):
    before, after = parse(text, **kw).refs, parse(out, **kw).refs
    assert len(after) == len(before)
    changed = set()
    for old, new in zip(before, after, strict=True):
        assert (new.kind, new.line, new.stage, new.platform, new.final) == (
            old.kind,
            old.line,
            old.stage,
            old.platform,
            old.final,
        )
        assert new.ref == wanted(old.ref, digests)
        if new.ref != old.ref:
            changed.add(old.line)
            ours, theirs = refs.parse(new.ref), refs.parse(old.ref)
            assert ours.digest == digests[theirs.tagged]
            assert ours.tagged == theirs.tagged
    old_ins, new_ins = read(text).instructions, read(out).instructions
    assert [i.line for i in new_ins] == [i.line for i in old_ins]
    touched = set()
    for a, b in zip(old_ins, new_ins, strict=True):
        assert b.cmd == a.cmd
        if a.line in changed:
            touched |= set(range(a.line, a.end + 1))
        else:
            assert (b.cmd, b.flags, b.args, b.line, b.end) == (
                a.cmd,
                a.flags,
                a.args,
                a.line,
                a.end,
            )
    # every physical line outside the rewritten instructions is byte for byte the same
    old_lines, new_lines = text.split("\n"), out.split("\n")
    assert len(new_lines) == len(old_lines)
    for n, (a, b) in enumerate(zip(old_lines, new_lines, strict=True), start=1):
        if n not in touched:
            assert b == a, f"line {n} changed"


# -- FROM


def test_plain_from_names_the_digest():
    text = df("FROM python:3.12", "RUN pip install flask")
    assert pinned(text, {PYTHON: D1}) == df(f"FROM {PYTHON}@{D1}", "RUN pip install flask")


def test_from_keeps_platform_flag_and_stage_name():
    """The flag stays unexpanded (BuildKit expands it per build); the stage name stays usable."""
    text = df(
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build",
        "RUN go build ./...",
        "FROM scratch",
        "COPY --from=build /out /",
    )
    assert pinned(text, {"docker.io/library/golang:1.22": D1}) == df(
        f"FROM --platform=$BUILDPLATFORM docker.io/library/golang:1.22@{D1} AS build",
        "RUN go build ./...",
        "FROM scratch",
        "COPY --from=build /out /",
    )


def test_from_through_an_arg_is_pinned_to_what_it_expands_to():
    text = df("ARG B=x:1", "FROM ${B}", "RUN true")
    assert pinned(text, {"docker.io/library/x:1": D1}) == df(
        "ARG B=x:1", f"FROM docker.io/library/x:1@{D1}", "RUN true"
    )


def test_from_through_an_overridden_arg_is_pinned_to_the_build_arg():
    """The build's own build_args decide the base, so they decide the pin."""
    text = df("ARG B=x:1", "FROM ${B}")
    digests = {"docker.io/library/x:1": D1, "docker.io/library/y:2": D2}
    out = pinned(text, digests, build_args={"B": "y:2"})
    assert out == df("ARG B=x:1", f"FROM docker.io/library/y:2@{D2}")


def test_multi_line_from_keeps_every_later_line_number():
    text = df(
        "FROM --platform=linux/amd64 \\",
        "    python:3.12 \\",
        "    # a comment inside the continuation",
        "    AS base",
        "ENV A=1",
        "RUN echo one \\",
        "    two",
        "FROM base",
        "COPY --from=base /a /b",
    )
    out = pinned(text, {PYTHON: D1})
    assert out.split("\n")[:4] == [f"FROM --platform=linux/amd64 {PYTHON}@{D1} AS base", "", "", ""]
    lines = [(i.cmd, i.line) for i in read(out).instructions]
    assert lines == [("from", 1), ("env", 5), ("run", 6), ("from", 8), ("copy", 9)]


def test_lower_case_from_and_as_are_pinned():
    text = df("from python:3.12 as base", "from base")
    assert pinned(text, {PYTHON: D1}) == df(f"FROM {PYTHON}@{D1} AS base", "from base")


def test_crlf_file_keeps_its_other_lines():
    text = df("FROM python:3.12", "RUN true", "COPY --from=python:3.12 /a /b", eol="\r\n")
    out = pinned(text, {PYTHON: D1})
    assert out.split("\n")[1:] == [
        "RUN true\r",
        f"COPY --from={PYTHON}@{D1} /a /b\r",
        "",
    ]


# -- COPY --from and RUN --mount from=


def test_copy_from_image_replaces_only_the_value():
    text = df(
        "FROM alpine:3.20",
        "COPY --chown=app:app --from=nginx:1.27 --link /etc/nginx /etc/nginx",
    )
    out = pinned(text, {"docker.io/library/nginx:1.27": D1})
    assert out == df(
        "FROM alpine:3.20",
        f"COPY --chown=app:app --from=docker.io/library/nginx:1.27@{D1} --link /etc/nginx "
        "/etc/nginx",
    )


def test_copy_from_a_stage_is_untouched_even_if_its_name_is_a_pinned_image():
    """`nginx` here is the stage, not docker.io/library/nginx: nothing to pin."""
    text = df("FROM alpine:3.20 AS nginx", "FROM busybox:1", "COPY --from=nginx /a /b")
    digests = {"docker.io/library/nginx:latest": D1, "docker.io/library/busybox:1": D2}
    out = pinned(text, digests)
    assert out == df(
        "FROM alpine:3.20 AS nginx",
        f"FROM docker.io/library/busybox:1@{D2}",
        "COPY --from=nginx /a /b",
    )


def test_mount_from_replaces_only_the_from_value():
    uv = "ghcr.io/astral-sh/uv:0.4"
    text = df(
        "FROM python:3.12",
        f"RUN --mount=type=bind,from={uv},source=/uv,target=/bin/uv uv sync",
    )
    out = pinned(text, {uv: D1})
    assert out == df(
        "FROM python:3.12",
        f"RUN --mount=type=bind,from={uv}@{D1},source=/uv,target=/bin/uv uv sync",
    )


def test_mount_with_from_not_first_and_other_mounts():
    text = df(
        "FROM python:3.12",
        "RUN --mount=type=cache,target=/root/.cache "
        "--mount=type=bind,source=/x,from=tool:1,target=/y --network=none make",
    )
    out = pinned(text, {"docker.io/library/tool:1": D1})
    assert out.split("\n")[1] == (
        "RUN --mount=type=cache,target=/root/.cache "
        f"--mount=type=bind,source=/x,from=docker.io/library/tool:1@{D1},target=/y "
        "--network=none make"
    )


def test_two_sources_on_one_line_are_each_pinned():
    text = df(
        "FROM python:3.12",
        "RUN --mount=from=a:1,target=/a --mount=type=bind,target=/b,from=b:2 true",
    )
    out = pinned(text, {"docker.io/library/a:1": D1, "docker.io/library/b:2": D2})
    assert out.split("\n")[1] == (
        f"RUN --mount=from=docker.io/library/a:1@{D1},target=/a "
        f"--mount=type=bind,target=/b,from=docker.io/library/b:2@{D2} true"
    )


# -- what stays as it is


def test_refs_not_in_digests_are_untouched_byte_for_byte():
    """Only an exact `name:tag` match pins: another tag of the same repository does not."""
    text = df(
        "FROM python:3.12 AS base",
        "COPY --from=nginx:1.27 /a /b",
        "RUN --mount=from=tool:1,target=/t true",
        f"FROM python:3.12@{PINNED}",
    )
    digests = {"docker.io/library/python:3.11": D1, "docker.io/library/nginx:1.26": D2}
    assert pinned(text, digests) == text
    assert pinned(text, {}) == text


def test_heredoc_mentioning_from_is_untouched():
    text = df(
        "FROM alpine:3.20",
        "RUN <<EOF",
        "FROM alpine:3.20",
        "COPY --from=alpine:3.20 /a /b",
        "EOF",
        "COPY <<EOT /etc/motd",
        "FROM alpine:3.20",
        "EOT",
        "COPY --from=alpine:3.20 /x /y",
    )
    out = pinned(text, {"docker.io/library/alpine:3.20": D1})
    lines = text.split("\n")
    lines[0] = f"FROM docker.io/library/alpine:3.20@{D1}"
    lines[8] = f"COPY --from=docker.io/library/alpine:3.20@{D1} /x /y"
    assert out == "\n".join(lines)


def test_scratch_is_untouched():
    text = df("FROM scratch", "COPY --from=busybox:1 /bin/busybox /bin/")
    digests = {"docker.io/library/scratch:latest": D1, "docker.io/library/busybox:1": D2}
    assert pinned(text, digests) == df(
        "FROM scratch", f"COPY --from=docker.io/library/busybox:1@{D2} /bin/busybox /bin/"
    )


def test_a_base_pinned_by_digest_alone_is_untouched():
    text = df(f"FROM python@{PINNED}", "RUN true")
    assert pinned(text, {PYTHON: D1, "docker.io/library/python": D2}) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(df(f"FROM python:3.12@{PINNED}", "RUN true"), id="from"),
        pytest.param(
            df("FROM python:3.12", f"COPY --from=python:3.12@{PINNED} /a /b"),
            id="copy-beside-the-tag",
        ),
    ],
)
def test_a_base_already_pinned_by_digest_keeps_its_digest(text):
    """The executor pins `python:3.12` (the tag the FROM follows); the COPY's own pin stays."""
    out = pin(text, parse(text).refs, {PYTHON: D1})
    assert f"python:3.12@{PINNED}" in out
    assert_pinned(text, out, {PYTHON: D1})


def test_a_per_platform_from_is_refused_not_pinned_to_one_platforms_base():
    """One rewritten line cannot name two digests: building every platform on one is wrong."""
    text = df("ARG TARGETARCH", "FROM example/base-${TARGETARCH}:1", "RUN true")
    platforms = ["linux/amd64", "linux/arm64"]
    digests = {"docker.io/example/base-amd64:1": D1, "docker.io/example/base-arm64:1": D2}
    with pytest.raises(Unpinnable, match="line 2: FROM names a different image per platform"):
        pin(text, parse(text, platforms=platforms).refs, digests)
    (single,) = parse(text, platforms=["linux/arm64"]).refs  # one platform: pinned as usual
    assert_pinned(text, pin(text, [single], digests), digests, platforms=["linux/arm64"])


def test_mount_heredoc_body_is_untouched():
    text = df(
        "FROM alpine:3.20",
        "RUN --mount=type=bind,from=tool:1,target=/t <<EOF",
        "echo --mount=type=bind,from=tool:1",
        "EOF",
    )
    out = pin(text, parse(text).refs, {"docker.io/library/tool:1": D1})
    assert out.split("\n")[2] == "echo --mount=type=bind,from=tool:1"


def test_quoted_copy_from_is_pinned():
    text = df("FROM alpine:3.20", 'COPY --from="nginx:1" /a /b')
    digests = {"docker.io/library/nginx:1": D1}
    assert_pinned(text, pin(text, parse(text).refs, digests), digests)


# -- the property, over generated Dockerfiles

IMAGES = ["python:3.12", "alpine:3.20", "ghcr.io/o/tool:1", "localhost:5000/team/base:2", "debian"]
KEYS = sorted({refs.normalize(i).tagged for i in IMAGES})
PINNED_IMAGE = f"busybox:1@{PINNED}"  # its tag is never in digests


@st.composite
def dockerfiles(draw):
    lines = []
    arg = draw(st.sampled_from([None, *IMAGES]))
    if arg:
        lines.append(f"ARG B={arg}")
    stages = []
    for i in range(draw(st.integers(1, 3))):
        choices = [*IMAGES, PINNED_IMAGE, "scratch", *stages] + (["${B}"] if arg else [])
        base = draw(st.sampled_from(choices))
        flag = draw(st.sampled_from(["", "--platform=linux/amd64 ", "--platform=$BUILDPLATFORM "]))
        if draw(st.booleans()):
            lines += [f"FROM {flag}\\", f"    {base} \\", f"    AS s{i}"]
        else:
            lines.append(f"FROM {flag}{base} AS s{i}")
        sources = [*IMAGES, PINNED_IMAGE, *stages]
        for _ in range(draw(st.integers(0, 4))):
            src = draw(st.sampled_from(sources))
            lines += draw(
                st.sampled_from(
                    [
                        [f"COPY --chown=1:1 --from={src} /a /b"],
                        [f"COPY --from={src} --link /a /b"],
                        [f"RUN --mount=type=bind,from={src},target=/t true"],
                        [f"RUN --mount=type=bind,source=/s,from={src},target=/t \\", "    make"],
                        ["RUN <<EOF", f"FROM {src}", f"COPY --from={src} /a /b", "EOF"],
                        ["ENV A=1", "", "# FROM python:3.12"],
                        ["RUN echo \\", "    # comment", "    done"],
                    ]
                )
            )
        stages.append(f"s{i}")
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    digests = {key: draw(st.sampled_from([D1, D2, D3])) for key in keys}
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + eol, digests


# database=None: hypothesis keeps no example database in the project.
@settings(max_examples=200, deadline=None, database=None)
@given(dockerfiles())
def test_pinned_text_parses_to_the_same_refs_with_digests(case):
    text, digests = case
    pinned(text, digests)
