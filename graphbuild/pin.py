"""Pin a Dockerfile's bases to exact digests for one build (design rule 3).

A child must be built on the digest its parent just pushed, never on whatever
the tag points at when the builder pulls it. Every builder gets the same
treatment: a temporary copy of the Dockerfile in which each FROM, COPY --from
and RUN --mount from= that names an image names `name:tag@digest` instead.
Only the instructions concerned are touched; the rest of the file is byte for
byte the same, so the build itself is what the repository says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import partial

from graphbuild import dockerfile, refs
from graphbuild.dockerfile import COPY, FROM, MOUNT, BaseRef

# the value may be quoted (BuildKit strips the quotes); the quotes go with it
_FLAG_RE = {
    COPY: r"(--from=)([\"']?){raw}\2(?=\s|$)",
    MOUNT: r"((?:--mount=|,)(?:[^\s,]*,)*?from=)([\"']?){raw}\2(?=[,\s]|$)",
}


class Unpinnable(ValueError):
    """A base no rewrite of the file can pin for every platform at once."""


def pin(text: str, bases: Iterable[BaseRef], digests: Mapping[str, str]) -> str:
    """`text` with each of `bases` whose `name:tag` is in `digests` pulled by that digest.

    A FROM is rewritten whole on one line (its flags and stage name kept), which
    also pins a base written through an ARG: the parser knows what it expands to.
    A COPY --from or --mount from= has only its value replaced, where it stands,
    on the instruction's own lines (never in a heredoc's body). A reference the
    Dockerfile already pins by digest is left as it is.
    """
    source = dockerfile.read(text)
    by_line = {ins.line: ins for ins in source.instructions}
    wanted: dict[tuple[int, str, str], str] = {}
    for base in bases:
        pinned = _pinned(base, digests)
        if pinned is not None:
            wanted[(base.line, base.kind, base.raw)] = pinned
    _one_per_line(bases, wanted)
    lines = text.split("\n")
    for (line, kind, raw), pinned in sorted(wanted.items(), key=lambda item: -item[0][0]):
        ins = by_line.get(line)
        if ins is None:
            continue
        if kind == FROM and ins.cmd == "from":
            words = ins.args.split()
            flags = "".join(f"{flag} " for flag in ins.flags)
            stage = f" AS {words[2]}" if len(words) == 3 else ""
            cr = "\r" if lines[ins.end - 1].endswith("\r") else ""
            # blank lines where the continuation was: later instructions keep their numbers
            lines[ins.line - 1 : ins.end] = [f"FROM {flags}{pinned}{stage}{cr}"] + [cr] * (
                ins.end - ins.line
            )
        elif kind in _FLAG_RE:
            pattern = re.compile(_FLAG_RE[kind].format(raw=re.escape(raw)))
            for i in _own_lines(lines, ins, source.escape):
                lines[i] = pattern.sub(partial(_after_flag, pinned), lines[i])
    return "\n".join(lines)


def _after_flag(pinned: str, flag: re.Match[str]) -> str:
    """The flag (`--from=`, `from=`) as written, then the pinned reference."""
    return flag.group(1) + pinned


def _pinned(base: BaseRef, digests: Mapping[str, str]) -> str | None:
    if base.ref is None or base.kind not in (FROM, COPY, MOUNT):
        return None
    ref = refs.parse(base.ref)
    digest = digests.get(ref.tagged)
    if digest is None or ref.tag is None or ref.digest is not None:
        return None
    return f"{ref.tagged}@{digest}"


def _one_per_line(bases: Iterable[BaseRef], wanted: Mapping[tuple[int, str, str], str]) -> None:
    """A FROM that names another image per platform (`base-${TARGETARCH}`) cannot be pinned."""
    named: dict[int, set[str]] = {}
    for base in bases:
        if base.kind == FROM and base.ref is not None:
            named.setdefault(base.line, set()).add(base.ref)
    for (line, kind, _), _pinned_ref in wanted.items():
        if kind == FROM and len(named.get(line, ())) > 1:
            images = ", ".join(sorted(named[line]))
            raise Unpinnable(
                f"line {line}: FROM names a different image per platform ({images}); one "
                "Dockerfile cannot pin them all. Use one multi-platform base image instead"
            )


def _own_lines(lines: list[str], ins: dockerfile.Instruction, escape: str) -> range:
    """The physical lines of the instruction itself: its continuations, not heredoc bodies."""
    last = ins.line - 1
    while last < ins.end - 1 and lines[last].rstrip().endswith(escape):
        last += 1
    return range(ins.line - 1, last + 1)
