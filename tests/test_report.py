"""What people read: run progress lines without a terminal, the live panel, run tables."""

from __future__ import annotations

from graphbuild import report
from graphbuild.state import Run, RunNode

D = "sha256:" + "ab" * 32


def test_without_a_terminal_a_run_is_one_line_per_event(capsys):
    with report.RunProgress(total=3, waves=2) as progress:
        assert progress.live is None  # pytest's stderr is not a TTY
        progress.event("r.test/a:1", "running", {"attempt": 1})
        progress.event("r.test/a:1", "retrying", {"error": "503", "in": 5.0})
        progress.event("r.test/a:1", "running", {"attempt": 2})
        progress.event("r.test/a:1", "succeeded", {"digest": D, "detail": ""})
        progress.event("r.test/b:1", "failed", {"error": "exited 1: no such file"})
        progress.event("r.test/c:1", "blocked", {"error": "r.test/b:1 failed"})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "building  r.test/a:1 (attempt 1)"
    assert lines[1].startswith("retrying  r.test/a:1") and "503" in lines[1]
    assert lines[3].startswith("succeeded r.test/a:1 in ") and lines[3].endswith(D)
    assert lines[4:] == ["failed    r.test/b:1 exited 1: no such file",
                         "blocked   r.test/c:1 r.test/b:1 failed"]  # fmt: skip
    assert progress.counts == {"succeeded": 1, "failed": 1, "blocked": 1}


def test_the_live_panel_counts_and_lists_the_builds_running():
    from rich.console import Console

    progress = report.RunProgress(total=4, waves=3)
    progress.event("r.test/a:1", "running", {"attempt": 1})
    progress.event("r.test/b:1", "running", {"attempt": 1})
    progress.event("r.test/b:1", "succeeded", {"digest": D})
    console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(progress._panel())
    text = console.export_text()
    assert "1/4 images, 3 waves" in text and "1 succeeded" in text
    assert "building r.test/a:1" in text and "r.test/b:1" not in text


def test_digests_are_cut_for_people_and_the_table_says_why():
    assert report.brief(f"built on x {D}, now {D}") == (f"built on x {D[:19]}…, now {D[:19]}…")
    assert report.brief("sha256:abc") == "sha256:abc"  # not a digest: left alone
    nodes = [
        RunNode("r.test/a:1", 0, "base-changed", f"python:3.12 moved to {D}", ["r.test/a:1"],
                "succeeded", 1, "2026-11-28T10:00:00+00:00", "2026-11-28T10:00:02.5+00:00", D,
                "/w/runs/1/r.test_a_1.log"),
        RunNode("r.test/b:1", 1, "parent-rebuilt", "built on r.test/a:1", ["r.test/b:1"],
                "blocked", error="r.test/a:1 failed"),
    ]  # fmt: skip
    run = Run("1", "rebuild", "CVE-2026-1234", "2026-11-28T10:00:00+00:00", None, "failed", {},
              nodes)  # fmt: skip
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report.run_table(run)
    text = out.getvalue()
    assert text.splitlines()[0] == (
        "rebuild 1: failed (1 blocked, 1 succeeded), reason: CVE-2026-1234"
    )
    assert "2.5 s" in text and "r.test_a_1.log" in text and f"{D[:19]}…" in text
    assert "blocked: r.test/a:1 failed" in text


def test_report_md_has_a_held_back_section_with_each_cause():
    """report.md names each held image with its digest, reason and the image that caused
    it, then the workloads that keep what they run; a `|` in a reason stays in its cell."""
    from graphbuild.state import HeldRecord

    base, app = "r.test/base:1", "r.test/app:1"
    why = f"built on {base}, which failed a gate"
    failed = "failed gate trivy: 1 critical | 2 high"
    nodes = [RunNode(n, 0, "stale", "", [n], "succeeded", digest=D) for n in (app, base)]
    run = Run("1", "sweep", None, "2026-11-28T10:00:00+00:00", None, "failed", {}, nodes,
              held=[HeldRecord(app, D, why, base),
                    HeldRecord(app, D, why, base, "kubectl:app", "app | web", "dev"),
                    HeldRecord(base, D, failed, base)])  # fmt: skip
    text = report.run_markdown(run)
    section = text.split("\n## Held back\n", 1)[1].splitlines()
    assert section == [
        "",
        "| image | digest | reason | caused by |",
        "| --- | --- | --- | --- |",
        f"| `{app}` | `{D}` | {why} | `{base}` |",
        f"| `{base}` | `{D}` | failed gate trivy: 1 critical \\| 2 high | `{base}` |",
        "",
        "Workloads held back (they keep what they run):",
        "",
        "| ring | workload | image | reason |",
        "| --- | --- | --- | --- |",
        f"| dev | app \\| web | `{app}` | {why} |",
    ]
    assert "## Held back" not in report.run_markdown(
        Run(
            *[
                getattr(run, f)
                for f in (
                    "id",
                    "kind",
                    "reason",
                    "started",
                    "finished",
                    "status",
                    "options",
                    "nodes",
                )
            ]
        )
    )
