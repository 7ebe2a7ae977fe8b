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

from graphbuild import dockerfile, refs
from graphbuild.dockerfile import COPY, FROM, MOUNT, BaseRef

_FLAG_RE = {
    COPY: r"(--from=)({raw})(?=\s|$)",
    MOUNT: r"((?:--mount=|,)(?:[^\s,]*,)*?from=)({raw})(?=[,\s]|$)",
}


def pin(text: str, bases: Iterable[BaseRef], digests: Mapping[str, str]) -> str:
    """`text` with each of `bases` whose `name:tag` is in `digests` pulled by that digest.

    A FROM is rewritten whole on one line (its flags and stage name kept), which
    also pins a base written through an ARG: the parser knows what it expands to.
    A COPY --from or --mount from= has only its value replaced, where it stands.
    """
    source = dockerfile.read(text)
    by_line = {ins.line: ins for ins in source.instructions}
    lines = text.split("\n")
    for base in sorted(bases, key=lambda b: -b.line):  # bottom up: earlier lines stay put
        pinned = _pinned(base, digests)
        ins = by_line.get(base.line)
        if pinned is None or ins is None:
            continue
        if base.kind == FROM and ins.cmd == "from":
            words = ins.args.split()
            flags = "".join(f"{flag} " for flag in ins.flags)
            stage = f" AS {words[2]}" if len(words) == 3 else ""
            # blank lines where the continuation was: later instructions keep their numbers
            lines[ins.line - 1 : ins.end] = [f"FROM {flags}{pinned}{stage}"] + [""] * (
                ins.end - ins.line
            )
        elif base.kind in _FLAG_RE:
            pattern = re.compile(_FLAG_RE[base.kind].format(raw=re.escape(base.raw)))
            for i in range(ins.line - 1, ins.end):
                lines[i] = pattern.sub(lambda m, new=pinned: m.group(1) + new, lines[i])
    return "\n".join(lines)


def _pinned(base: BaseRef, digests: Mapping[str, str]) -> str | None:
    if base.ref is None or base.kind not in (FROM, COPY, MOUNT):
        return None
    ref = refs.parse(base.ref)
    digest = digests.get(ref.tagged)
    if digest is None or ref.tag is None:
        return None
    return f"{ref.tagged}@{digest}"
