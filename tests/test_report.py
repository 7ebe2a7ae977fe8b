"""What people read: run progress lines without a terminal, the live panel, run tables."""

from __future__ import annotations

from graphbuild import console, report
from graphbuild.state import Run, RunNode

D = "sha256:" + "ab" * 32


def test_without_a_terminal_a_run_is_one_line_per_event(capsys):
    with report.RunProgress(total=4, waves=2) as progress:
        assert progress.live is None  # pytest's stderr is not a TTY
        progress.event("r.test/a:1", "running", {"attempt": 1})
        progress.event("r.test/a:1", "building", {"attempt": 1})
        progress.event("r.test/a:1", "retrying", {"error": "503", "in": 5.0})
        progress.event("r.test/a:1", "running", {"attempt": 2})
        progress.event("r.test/a:1", "building", {"attempt": 2})
        progress.event("r.test/a:1", "succeeded", {"digest": D, "detail": ""})
        progress.event("r.test/b:1", "running", {"attempt": 1})
        progress.event("r.test/b:1", "failed", {"error": "exited 1: no such file"})
        progress.event("r.test/c:1", "blocked", {"error": "r.test/b:1 failed"})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "building  r.test/a:1 (attempt 1)"
    assert lines[1].startswith("retrying  r.test/a:1") and "503" in lines[1]
    assert lines[2] == "building  r.test/a:1 (attempt 2)"
    assert lines[3].startswith("succeeded r.test/a:1 in ") and lines[3].endswith(D)
    assert lines[4].startswith("failed    r.test/b:1 in ") and lines[4].endswith(": no such file")
    assert lines[5:] == ["blocked   r.test/c:1 r.test/b:1 failed"]
    assert progress.counts == {"succeeded": 1, "failed": 1, "blocked": 1}


def test_an_image_found_built_and_served_is_skipped_with_why_and_never_building(capsys):
    """Its key is worked out after it starts: only its builder starting makes it `building`."""
    with report.RunProgress(total=1, waves=1) as progress:
        progress.event("r.test/a:1", "running", {"attempt": 1})
        why = "up-to-date: this exact build is served"
        progress.event("r.test/a:1", "skipped", {"digest": D, "detail": why})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"skipped   r.test/a:1 ({why}) {D}"]
    assert progress.counts == {"skipped": 1}


def test_a_gate_running_is_shown_apart_from_the_counts_of_images(capsys):
    from rich.console import Console

    with report.RunProgress(total=2, waves=2) as progress:
        progress.event("r.test/a:1", "running", {"attempt": 1})
        progress.event("r.test/a:1", "succeeded", {"digest": D, "detail": ""})
        progress.event("r.test/a:1 gate smoke", report.GATING, {})
        console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(progress._panel())
        progress.event("r.test/a:1 gate smoke", report.GATED, {})
    assert "gating r.test/a:1 gate smoke" in console.export_text()
    assert capsys.readouterr().err.splitlines()[1] == "gating    r.test/a:1 gate smoke"
    assert progress.counts == {"succeeded": 1} and not progress.running


def test_the_live_panel_counts_and_lists_the_builds_running():
    from rich.console import Console

    progress = report.RunProgress(total=4, waves=3)
    progress.event("r.test/a:1", "running", {"attempt": 1})
    progress.event("r.test/a:1", "building", {"attempt": 1})
    progress.event("r.test/b:1", "running", {"attempt": 1})
    progress.event("r.test/c:1", "running", {"attempt": 1})
    progress.event("r.test/b:1", "succeeded", {"digest": D})
    console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(progress._panel())
    text = console.export_text()
    assert "1/4 images, 3 waves" in text and "1 succeeded" in text
    assert "building r.test/a:1" in text and "r.test/b:1" not in text
    assert "preparing r.test/c:1" in text  # its key first: it may yet be skipped


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


# -- tables, names and JSON as people and scripts read them

E = "sha256:" + "cd" * 32


def _printed(call, *args) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        call(*args)
    return out.getvalue()


def test_a_table_aligns_columns_and_ends_lines_without_blanks():
    import io

    out = io.StringIO()
    report.table(["IMAGE", "N", "NOTE"], [("r.test/a:1", 1, None), ("b", 22, "x")], out)
    assert out.getvalue() == "IMAGE       N   NOTE\nr.test/a:1  1\nb           22  x\n"
    out = io.StringIO()
    report.table(["A", "B"], [], out)
    assert out.getvalue() == "A  B\n"


def test_short_is_the_name_people_type_and_leaves_what_it_cannot_read():
    assert report.short("docker.io/library/python:3.12") == "python:3.12"
    assert report.short("docker.io/team/app:1") == "team/app:1"
    assert report.short("r.test/app:1") == "r.test/app:1"
    assert report.short(f"docker.io/library/alpine@{D}") == f"alpine@{D}"
    assert report.short("not a reference!") == "not a reference!"


def test_json_text_is_indented_and_shows_any_value_as_text():
    from pathlib import Path

    assert report.json_text({"log": Path("/w/a.log"), "n": [1]}) == (
        '{\n  "log": "/w/a.log",\n  "n": [\n    1\n  ]\n}\n'
    )


def _full_run() -> Run:
    from graphbuild.state import DeployRecord, Exposure, GateRecord, HeldRecord, RingRecord

    nodes = [
        RunNode("docker.io/team/base:1", 0, "base-changed", f"alpine:3 moved to {D}",
                ["alpine:3", "docker.io/team/base:1"], "succeeded", 1,
                "2026-11-28T10:00:00+00:00", "2026-11-28T10:01:05+00:00", D, "/w/runs/1/b.log"),
        RunNode("r.test/app:1", 1, "parent-rebuilt", "built on team/base:1",
                ["docker.io/team/base:1", "r.test/app:1"], "failed", 2,
                error="exited 1: a | b"),
    ]  # fmt: skip
    return Run(
        "20261128-100000-abcd", "sweep", None, "2026-11-28T10:00:00+00:00",
        "2026-11-28T10:02:00+00:00", "failed", {}, nodes,
        gates=[GateRecord("docker.io/team/base:1", "trivy", D, "failed",
                          f"1 critical in {E}", [])],
        deploys=[DeployRecord("dev", "gitops:web", "web", "docker.io/team/base:1",
                              f"team/base:1@{D}", "gitops", "unchanged", "already there")],
        rings=[RingRecord("dev", "healthy", "1 unchanged")],
        held=[HeldRecord("docker.io/team/base:1", D, "failed gate trivy: 1 critical",
                         "docker.io/team/base:1"),
              HeldRecord("docker.io/team/base:1", D, "failed gate trivy: 1 critical",
                         "docker.io/team/base:1", "gitops:api", "api", "dev")],
        exposures=[Exposure("CVE-2026-1", "2026-12-01T10:00:00+00:00", D, f"team/base:1@{D}",
                            "2026-12-03T12:30:00+00:00", "20261128-214334-9a07")],
    )  # fmt: skip


def test_run_table_prints_each_image_then_gates_holds_and_deploys():
    b = f"{D[:19]}…"
    assert _printed(report.run_table, _full_run()).splitlines() == [
        "sweep 20261128-100000-abcd: failed (1 failed, 1 succeeded)",
        "WAVE  IMAGE         OUTCOME                  REASON          WHY"
        "                                     TOOK    DIGEST                LOG",
        f"0     team/base:1   succeeded                base-changed    alpine:3 moved to {b}"
        f"  65.0 s  {b}  b.log",
        "1     r.test/app:1  failed: exited 1: a | b  parent-rebuilt  built on team/base:1",
        "Gates:",
        "IMAGE        GATE   RESULT  SUMMARY",
        f"team/base:1  trivy  failed  1 critical in {E[:19]}…",
        "Held back from deploy:",
        "IMAGE        DIGEST                REASON",
        f"team/base:1  {b}  failed gate trivy: 1 critical",
        "Workloads held back:",
        "RING  WORKLOAD  IMAGE        REASON",
        "dev   api       team/base:1  failed gate trivy: 1 critical",
        "Deploys:",
        "RING  WORKLOAD  IMAGE        OUTCOME    DETAIL",
        "dev   web       team/base:1  unchanged  already there",
        "  ring dev: healthy (1 unchanged)",
        "Exposure ended by this run's deploy:",
        "  CVE-2026-1: exposed 2 d 2 h",
    ]


def test_a_run_without_images_or_deploys_says_so_in_one_line():
    run = Run("1", "sweep", None, "2026-11-28T10:00:00+00:00", None, "succeeded", {}, [])
    assert _printed(report.run_table, run) == (
        "sweep 1: succeeded (no images)\nWAVE  IMAGE  OUTCOME  REASON  WHY  TOOK  DIGEST  LOG\n"
    )
    assert _printed(report.deploy_table, run) == ""


def test_report_md_has_the_run_its_images_gates_and_deploys():
    assert report.run_markdown(_full_run()).splitlines() == [
        "# graphbuild sweep 20261128-100000-abcd",
        "",
        "- status: **failed**",
        "- started: 2026-11-28T10:00:00+00:00, finished: 2026-11-28T10:02:00+00:00",
        "- images: 1 failed, 1 succeeded",
        "",
        "| wave | image | outcome | reason | digest | attempts |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| 0 | `docker.io/team/base:1` | succeeded | base-changed: alpine:3 moved to {D} | "
        f"`{D[:19]}` | 1 |",
        "| 1 | `r.test/app:1` | failed (exited 1: a / b) | parent-rebuilt: built on "
        "team/base:1 | `` | 2 |",
        "",
        "## Gates",
        "",
        "| image | gate | result | summary |",
        "| --- | --- | --- | --- |",
        f"| `docker.io/team/base:1` | trivy | failed | 1 critical in {E} |",
        "",
        "## Held back",
        "",
        "| image | digest | reason | caused by |",
        "| --- | --- | --- | --- |",
        f"| `docker.io/team/base:1` | `{D}` | failed gate trivy: 1 critical | "
        "`docker.io/team/base:1` |",
        "",
        "Workloads held back (they keep what they run):",
        "",
        "| ring | workload | image | reason |",
        "| --- | --- | --- | --- |",
        "| dev | api | `docker.io/team/base:1` | failed gate trivy: 1 critical |",
        "",
        "## Deploys",
        "",
        "- ring **dev**: healthy (1 unchanged)",
        "",
        "| ring | workload | image | outcome | detail |",
        "| --- | --- | --- | --- | --- |",
        f"| dev | web | `team/base:1@{D}` | unchanged | already there |",
        "",
        "## Exposure ended",
        "",
        "From the first scan that saw each in a deployed image to this run's deploy, which "
        "removed it from the last ring:",
        "",
        "- CVE-2026-1: exposed 2 d 2 h",
    ]


def test_report_md_of_an_unfinished_run_with_a_reason():
    run = Run("1", "rebuild", "CVE-2026-1", "t0", None, "running", {}, [])
    assert report.run_markdown(run) == (
        "# graphbuild rebuild 1\n\n- status: **running**\n"
        "- started: t0, finished: not finished\n- reason: CVE-2026-1\n- images: none\n\n"
        "| wave | image | outcome | reason | digest | attempts |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
    )


def test_the_run_document_has_the_fields_commands_md_promises():
    doc = report.run_document(_full_run())
    assert list(doc) == ["id", "kind", "reason", "started", "finished", "status", "options",
                         "nodes", "gates", "deploys", "rings", "held", "exposures"]  # fmt: skip
    assert list(doc["nodes"][0]) == ["node", "wave", "reason", "detail", "chain", "status",
                                     "attempts", "started", "finished", "digest", "log", "key",
                                     "error"]  # fmt: skip
    assert list(doc["gates"][0]) == ["node", "gate", "digest", "status", "summary", "findings"]
    assert list(doc["deploys"][0]) == ["ring", "workload", "name", "node", "reference",
                                       "deployer", "status", "detail"]  # fmt: skip
    assert list(doc["rings"][0]) == ["ring", "status", "detail"]
    assert list(doc["held"][0]) == ["node", "digest", "reason", "cause", "workload", "name",
                                    "ring"]  # fmt: skip
    assert doc["held"][0]["workload"] is None and doc["nodes"][0]["digest"] == D
    assert list(doc["exposures"][0]) == ["id", "opened", "digest", "ref", "closed", "run",
                                         "seconds"]  # fmt: skip
    assert doc["exposures"][0]["seconds"] == 2 * 86400 + 2.5 * 3600


def test_a_run_report_sums_up_the_exposure_its_deploy_ended():
    lines = report.run_markdown(_full_run()).splitlines()
    assert lines[lines.index("## Exposure ended") + 4] == "- CVE-2026-1: exposed 2 d 2 h"


def test_progress_without_a_terminal_is_one_line_per_step_when_verbose(capsys, monkeypatch):
    monkeypatch.setattr(console, "verbose", True)
    with report.progress(2, "syncing") as step:
        step("synced a")
        step("synced b")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "synced a\nsynced b\n")
    report.note("a remark")
    assert capsys.readouterr().err == "a remark\n"


def test_progress_without_a_terminal_is_silent_unless_verbose(capsys):
    """The caller sums the steps up in one line: a cron log is not a line per repository."""
    with report.progress(2, "syncing") as step:
        step("synced a")
        step("synced b")
    assert capsys.readouterr() == ("", "")
