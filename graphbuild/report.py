"""How results reach people and scripts: aligned tables, trees, JSON, progress.

Plain text tables rather than rich ones: a `uses` answer can list thousands of
images, and it must print in milliseconds and stay readable through a pipe.
rich is used only for the live progress display on a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from graphbuild import refs
from graphbuild.errors import InvalidReference


def emit_json(data: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, default=str) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = (
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    (out or sys.stdout).write("\n".join(lines) + "\n")


def short(node: str) -> str:
    """The familiar form people type: `python:3.12` for docker.io/library/python:3.12."""
    try:
        return refs.parse(node).familiar
    except InvalidReference:
        return node


def note(message: str) -> None:
    """A remark for the person at the terminal; on stderr so JSON on stdout stays clean."""
    sys.stderr.write(message + "\n")


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[str], None]]:
    """Yields `step(line)`: a live bar on a terminal, one plain log line per step otherwise."""
    if not sys.stderr.isatty():
        yield lambda line: note(line)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total, last="")

        def step(line: str) -> None:
            bar.update(task, advance=1, last=line)

        yield step
