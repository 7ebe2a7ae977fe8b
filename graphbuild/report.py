"""How results reach people and scripts: aligned tables, trees, JSON, progress.

Plain text tables rather than rich ones: a `uses` answer can list thousands of
images, and it must print in milliseconds and stay readable through a pipe.
rich is used only for the live progress display on a terminal.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from graphbuild import console, refs
from graphbuild.console import note as note  # report.note: what commands call
from graphbuild.errors import InvalidReference
from graphbuild.state import NodeStatus, Run

BUILDING = "building"  # a progress event, not a status: the builder of an image has started
# progress events of a gate running on a built image (named `IMAGE gate NAME`), counted
# apart from the images: its result is a line of its own
GATING, GATED = "gating", "gated"

if TYPE_CHECKING:  # rich is imported when a terminal shows the progress, not before
    from rich.live import Live
    from rich.table import Table


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def emit_json(data: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json_text(data))


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


_DIGEST_RE = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")


def brief(text: str) -> str:
    """Digests cut to 12 hex digits, for people; JSON and reports keep them whole."""
    return _DIGEST_RE.sub(r"\1…", text)


def run_table(run: Run) -> None:
    """A run for the terminal: one line per image, its outcome and why it was in the run."""
    counts: dict[str, int] = {}
    for node in run.nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"{run.kind} {run.id}: {run.status} ({summary or 'no images'})"
          + (f", reason: {run.reason}" if run.reason else ""))  # fmt: skip
    table(
        ["WAVE", "IMAGE", "OUTCOME", "REASON", "WHY", "TOOK", "DIGEST", "LOG"],
        [(n.wave, short(n.node), n.status + (f": {brief(n.error)}" if n.error else ""), n.reason,
          brief(n.detail), _took(n.started, n.finished), brief(n.digest or ""),
          n.log.rsplit("/", 1)[-1] if n.log else "")
         for n in run.nodes],
    )  # fmt: skip
    deploy_table(run)


def deploy_table(run: Run) -> None:
    """The validation and deploy part of a run: gates per image, then ring by ring."""
    if run.gates:
        print("Gates:")
        table(["IMAGE", "GATE", "RESULT", "SUMMARY"],
              [(short(g.node), g.gate, g.status, brief(g.summary)) for g in run.gates])  # fmt: skip
    images = [h for h in run.held if h.workload is None]
    if images:
        print("Held back from deploy:")
        table(["IMAGE", "DIGEST", "REASON"],
              [(short(h.node), brief(h.digest), brief(h.reason)) for h in images])  # fmt: skip
    workloads = [h for h in run.held if h.workload is not None]
    if workloads:
        print("Workloads held back:")
        table(["RING", "WORKLOAD", "IMAGE", "REASON"],
              [(h.ring, h.name, short(h.node), brief(h.reason)) for h in workloads])  # fmt: skip
    if run.rings:
        print("Deploys:")
        rows = [(d.ring, d.name, short(d.node), d.status, brief(d.detail)) for d in run.deploys]
        table(["RING", "WORKLOAD", "IMAGE", "OUTCOME", "DETAIL"], rows)
        for ring in run.rings:
            print(f"  ring {ring.ring}: {ring.status} ({brief(ring.detail)})")
    if run.exposures:
        print("Exposure ended by this run's deploy:")
        for line in exposure_lines(run):
            print(f"  {line}")


def _took(started: str | None, finished: str | None) -> str:
    if not started or not finished:
        return ""
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.1f} s"


def piped() -> bool:
    """Progress goes to a pipe or a file (a cron log, CI), not to a person at a terminal."""
    return not sys.stderr.isatty()


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[str], None]]:
    """Yields `step(line)`: a live bar on a terminal; otherwise one plain log line per step
    with `--verbose`, else nothing (the caller sums the steps up in one line)."""
    if piped():
        yield (lambda line: note(line)) if console.verbose else (lambda line: None)
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


# ---------------------------------------------------------------- runs


class RunProgress:
    """Follows a run: a live panel on a terminal (counts, builds running), log lines otherwise.

    An image is said to be `building` only once its builder starts (the `building` event,
    sent from the build's own thread): one found already built and served is `skipped`,
    with why, and was never building.
    """

    def __init__(self, total: int, waves: int) -> None:
        import threading

        self.total, self.waves = total, waves
        self.counts: dict[str, int] = {}
        self.running: dict[str, float] = {}
        self.building: set[str] = set()
        self.gating: set[str] = set()
        self.lock = threading.Lock()
        self.live: Live | None = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)

    def __enter__(self) -> RunProgress:
        if self.live:
            self.live.start()
            self.live.update(self._panel())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def event(self, node: str, status: str, info: dict[str, Any]) -> None:
        with self.lock:
            line = self._event(node, status, info)
            if self.live:
                self.live.update(self._panel())
            elif line:
                note(line)

    def _event(self, node: str, status: str, info: dict[str, Any]) -> str | None:
        """The line a log gets for this event, if any."""
        import time

        if status == NodeStatus.RUNNING:  # its key is worked out first: it may be skipped
            self.running[node] = time.monotonic()
            return None
        if status == GATING:
            self.running[node] = time.monotonic()
            self.gating.add(node)
            return f"{'gating':<9} {short(node)}"
        if status == GATED:
            self.running.pop(node, None)
            self.gating.discard(node)
            return None
        if status == BUILDING:
            self.building.add(node)
            return f"{'building':<9} {short(node)} (attempt {info['attempt']})"
        started = self.running.pop(node, None)
        self.building.discard(node)
        if status != "retrying":
            self.counts[status] = self.counts.get(status, 0) + 1
        if status == NodeStatus.SKIPPED:
            return f"{'skipped':<9} {short(node)} ({info['detail']}) {info['digest']}"
        took = f" in {time.monotonic() - started:.1f} s" if started else ""
        detail = info.get("digest") or info.get("error") or ""
        return f"{status:<9} {short(node)}{took} {detail}".rstrip()

    def _panel(self) -> Table:
        import time

        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        done = sum(self.counts.values())
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "starting"
        waves = console.plural(self.waves, "wave")
        table.add_row(f"[bold]{done}/{self.total}[/] images, {waves}", counts)
        for node, started in sorted(self.running.items(), key=lambda item: item[1]):
            doing = ("building" if node in self.building else "gating" if node in self.gating
                     else "preparing")  # fmt: skip
            table.add_row(f"  {doing} {short(node)}", f"{time.monotonic() - started:.0f} s")
        return table


def run_document(run: Run) -> dict[str, Any]:
    """A run as the JSON report and `runs --json` show it; each exposure its deploy ended
    with its length in seconds."""
    doc = asdict(run)
    for exposure in doc["exposures"]:
        exposure["seconds"] = between(exposure["opened"], exposure["closed"])
    return doc


def between(start: str, end: str | None) -> float | None:
    """Seconds from one stored time to another; None while there is no end."""
    if end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def duration(seconds: float) -> str:
    """3 d 4 h, 2 h 5 min, 7 min, 12 s: an exposure's length for people."""
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days} d {hours - 24 * days} h"
    if hours:
        return f"{hours} h {minutes - 60 * hours} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def exposure_lines(run: Run) -> list[str]:
    """What the run's deploy ended: each vulnerability's exposure window, and their sum."""
    ended = [(e.id, between(e.opened, e.closed) or 0.0) for e in run.exposures]
    lines = [f"{vuln}: exposed {duration(seconds)}" for vuln, seconds in ended]
    if len(ended) > 1:
        lines.append(f"in all: {duration(sum(s for _, s in ended))} over {len(ended)}")
    return lines


def run_markdown(run: Run) -> str:
    """A run as people read it in a CI summary or a ticket."""
    doc = run_document(run)
    lines = [
        f"# graphbuild {doc['kind']} {doc['id']}",
        "",
        f"- status: **{doc['status']}**",
        f"- started: {doc['started']}, finished: {doc['finished'] or 'not finished'}",
    ]
    if doc["reason"]:
        lines.append(f"- reason: {doc['reason']}")
    counts: dict[str, int] = {}
    for node in doc["nodes"]:
        counts[node["status"]] = counts.get(node["status"], 0) + 1
    lines += [f"- images: {', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'}", ""]
    lines += ["| wave | image | outcome | reason | digest | attempts |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for node in doc["nodes"]:
        why = f"{node['reason']}: {node['detail']}".replace("|", "\\|")
        outcome = node["status"] + (f" ({node['error']})" if node["error"] else "")
        lines.append(f"| {node['wave']} | `{node['node']}` | {outcome.replace('|', '/')} | "
                     f"{why} | `{(node['digest'] or '')[:19]}` | {node['attempts']} |")  # fmt: skip
    if run.gates:
        lines += ["", "## Gates", "", "| image | gate | result | summary |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| `{g.node}` | {g.gate} | {g.status} | {_cell(g.summary)} |" for g in run.gates]
    images = [h for h in run.held if h.workload is None]
    if images:
        lines += ["", "## Held back", "", "| image | digest | reason | caused by |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| `{h.node}` | `{h.digest}` | {_cell(h.reason)} | `{h.cause}` |"
                  for h in images]  # fmt: skip
    workloads = [h for h in run.held if h.workload is not None]
    if workloads:
        lines += ["", "Workloads held back (they keep what they run):", "",
                  "| ring | workload | image | reason |", "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {h.ring} | {_cell(h.name or '')} | `{h.node}` | {_cell(h.reason)} |"
                  for h in workloads]  # fmt: skip
    if run.rings:
        lines += ["", "## Deploys", ""]
        lines += [f"- ring **{r.ring}**: {r.status} ({_cell(r.detail)})" for r in run.rings]
        lines += ["", "| ring | workload | image | outcome | detail |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| {d.ring} | {_cell(d.name)} | `{d.reference}` | {d.status} | "
                  f"{_cell(d.detail)} |" for d in run.deploys]  # fmt: skip
    if run.exposures:
        lines += ["", "## Exposure ended", "",
                  "From the first scan that saw each in a deployed image to this run's deploy, "
                  "which removed it from the last ring:", ""]  # fmt: skip
        lines += [f"- {_cell(line)}" for line in exposure_lines(run)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
