"""Remarks for the person at the terminal, from any layer.

At the bottom of the package, so that a store (indexdb) or a listener can say
something without importing report, which sits above them.
"""

from __future__ import annotations

import sys


def note(message: str) -> None:
    """A remark for the person at the terminal; on stderr so JSON on stdout stays clean."""
    sys.stderr.write(message + "\n")
