"""Remarks for the person at the terminal, from any layer, and the words they are made of.

At the bottom of the package, so that a store (indexdb) or a listener can say
something without importing report, which sits above them.
"""

from __future__ import annotations

import sys

_PLURALS = {"repository": "repositories"}

# `--verbose`: progress line by line where a pipe otherwise gets one summary line. The CLI
# sets it for each command that syncs.
verbose = False


def note(message: str) -> None:
    """A remark for the person at the terminal; on stderr so JSON on stdout stays clean."""
    sys.stderr.write(message + "\n")


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 image`, `2 images`, `0 repositories`: a count and its noun, agreed.

    `many` is the plural when it is not `word` + s (`repository` is known).
    """
    if count == 1:
        return f"{count} {word}"
    return f"{count} {many or _PLURALS.get(word) or word + 's'}"
