"""Validation gates: scanner reports judged, test commands run, failures closed.

Real small commands stand in for the scanners: `sh` copying a checked-in report.
"""

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest

from graphbuild import gates
from graphbuild.config import Allowed, GateSpec
from graphbuild.errors import CommandFailed
from graphbuild.gates import Finding, GateError, check, findings, judge
from graphbuild.state import GateStatus

FIXTURES = Path(__file__).parent / "fixtures" / "gates"
DIGEST = "sha256:" + "ab" * 32
REFERENCE = f"localhost:5000/shop/api:1.4@{DIGEST}"
TODAY = dt.date(2026, 6, 1)
PASSED, FAILED = GateStatus.PASSED, GateStatus.FAILED


def report(name):
    return json.loads((FIXTURES / name).read_text())


def copies(name, code=0):
    """A scanner that writes the fixture as its report, then exits `code`."""
    return ("sh", "-c", f'cp "$1" "$2"; exit {code}', "sh", str(FIXTURES / name), "{report}")


def scan(argv, fail_on="critical", allow=(), timeout=60.0):
    return GateSpec("trivy", "scan", tuple(argv), fail_on=fail_on, allow=allow, timeout=timeout)


def smoke(argv, timeout=60.0):
    return GateSpec("smoke", "test", tuple(argv), timeout=timeout)


def finding(id_="CVE-2026-1", severity="high", package="openssl", installed="3.1", target=""):
    return Finding(id_, severity, package, installed, "", target)


def run_gate(gate, tmp_path, cancel=None):
    return check(gate, REFERENCE, tmp_path / "log", cancel or threading.Event(), TODAY,
                 tmp_path / "scratch")  # fmt: skip


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(gates, "RETRY_PAUSE", 0)


# -- reading reports


def test_findings_of_a_trivy_report():
    found = findings(report("trivy-alpine.json"))
    target = "localhost:5000/shop/api:1.4 (alpine 3.19.1)"
    assert found == [
        Finding(
            "CVE-2024-2511",
            "critical",
            "libssl3",
            "3.1.4-r5",
            "3.1.4-r6",
            target,
            "sha256:d4fc045c9e3a848011de66f34b81f052d4f2c15a17bb196d637e526349601820",
        ),
        Finding("CVE-2024-4603", "high", "libcrypto3", "3.1.4-r5", "3.1.5-r0", target),
        Finding("CVE-2023-42363", "medium", "busybox", "1.36.1-r15", "1.36.1-r17", target),
        Finding("CVE-2024-5535", "low", "libssl3", "3.1.4-r5", "", target),
        Finding("CVE-2024-9143", "unknown", "libcrypto3", "3.1.4-r5", "3.1.7-r1", target),
    ]


@pytest.mark.parametrize(
    "clean",
    [
        report("trivy-clean.json"),
        {"SchemaVersion": 2, "ArtifactName": "x"},  # no Results at all
        {"SchemaVersion": 2, "Results": None},
        {"Results": [{"Target": "x", "Vulnerabilities": []}]},
    ],
)
def test_findings_of_a_clean_trivy_report(clean):
    assert findings(clean) == []


def test_findings_of_a_grype_report():
    assert findings(report("grype.json")) == [
        Finding("CVE-2022-42889", "critical", "commons-text", "1.9", "1.10.0",
                "/app/lib/commons-text-1.9.jar",
                "sha256:7a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        Finding("CVE-2022-42889", "critical", "commons-text", "1.9", "1.10.0",
                "/app/plugins/report/commons-text-1.9.jar"),
        Finding("GHSA-jfh8-c2jp-5v3q", "high", "log4j-core", "2.14.1", "2.15.0, 2.12.2",
                "/app/lib/log4j-core-2.14.1.jar"),
        Finding("CVE-2023-4039", "low", "libgcc-s1", "12.2.0-14", "", ""),
        Finding("CVE-2025-0001", "unknown", "libexample1", "0.3-1", "", ""),
    ]  # fmt: skip


def test_a_severity_no_scale_knows_is_unknown():
    vuln = {"VulnerabilityID": "CVE-1", "Severity": "Important"}
    assert findings({"Results": [{"Vulnerabilities": [vuln]}]})[0].severity == "unknown"


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        [],
        "Results",
        None,
        {"runs": []},  # SARIF is not judged
        {"Results": "none"},
        {"Results": [{"Vulnerabilities": {"CVE-1": "HIGH"}}]},
        {"Results": [{"Vulnerabilities": [{"VulnerabilityID": 7}]}]},
        {"matches": [{"vulnerability": []}]},
        {"matches": [{"vulnerability": {"id": "x", "fix": {"versions": "1.0"}}}]},
    ],
)
def test_findings_refuses_what_is_not_a_report(garbage):
    with pytest.raises(GateError, match=r"^not a Trivy or Grype JSON report"):
        findings(garbage)


# -- judging


def test_fail_on_is_the_lowest_severity_that_fails():
    found = [finding(severity="high"), finding("CVE-2026-2", "medium")]
    passed = judge(scan(["s", "{report}"], fail_on="critical"), found, TODAY)
    assert passed == gates.GateResult("trivy", PASSED, "none at or above critical")
    failed = judge(scan(["s", "{report}"], fail_on="high"), found, TODAY)
    assert failed == gates.GateResult("trivy", FAILED, "1 high at or above high", (found[0],))


def test_summary_counts_worst_first_and_findings_are_the_failing_ones():
    found = findings(report("trivy-alpine.json"))
    result = judge(scan(["s", "{report}"], fail_on="medium"), found, TODAY)
    assert result.summary == "1 critical, 1 high, 1 medium at or above medium"
    assert [f.id for f in result.findings] == ["CVE-2024-2511", "CVE-2024-4603", "CVE-2023-42363"]


def test_an_allowlist_entry_counts_through_its_last_day():
    allow = (Allowed("CVE-2024-2511", until=TODAY, reason="no fix in alpine 3.19 yet"),)
    gate = scan(["s", "{report}"], fail_on="critical", allow=allow)
    result = judge(gate, findings(report("trivy-alpine.json")), TODAY)
    assert result == gates.GateResult(
        "trivy", PASSED, "none at or above critical (1 accepted until 2026-06-01)"
    )


def test_an_expired_allowlist_entry_no_longer_applies_and_says_so():
    allow = (Allowed("CVE-2024-2511", until=TODAY - dt.timedelta(days=1)),)
    gate = scan(["s", "{report}"], fail_on="high", allow=allow)
    result = judge(gate, findings(report("trivy-alpine.json")), TODAY)
    assert result.status == FAILED
    assert result.summary == (
        "1 critical, 1 high at or above high (CVE-2024-2511 accepted until 2026-05-31 expired)"
    )


def test_accepted_and_failing_findings_in_one_summary():
    allow = (Allowed("CVE-2024-4603", dt.date(2027, 1, 31)), Allowed("CVE-2024-2511", TODAY))
    gate = scan(["s", "{report}"], fail_on="medium", allow=allow)
    result = judge(gate, findings(report("trivy-alpine.json")), TODAY)
    assert result.status == FAILED
    assert result.summary == (
        "1 medium at or above medium (1 accepted until 2026-06-01; 1 accepted until 2027-01-31)"
    )


def test_an_id_allowed_below_the_threshold_is_not_mentioned():
    allow = (Allowed("CVE-2024-5535", TODAY - dt.timedelta(days=30)),)  # low, expired
    result = judge(scan(["s", "{report}"], "high", allow), [finding(severity="low")], TODAY)
    assert result.summary == "none at or above high"


def test_one_finding_in_two_places_counts_once():
    result = judge(scan(["s", "{report}"]), findings(report("grype.json")), TODAY)
    assert result.summary == "1 critical at or above critical"
    assert result.findings == (findings(report("grype.json"))[0],)
    twice = [finding(target="usr/lib/a"), finding(target="usr/lib/b")]
    assert judge(scan(["s", "{report}"], "high"), twice, TODAY).summary == "1 high at or above high"
    versions = [finding(installed="3.1"), finding(installed="3.2")]  # two copies: two problems
    assert judge(scan(["s", "{report}"], "high"), versions, TODAY).summary.startswith("2 high")


def test_a_result_names_at_most_50_findings():
    many = [finding(f"CVE-2026-{i:04}", "critical") for i in range(120)]
    result = judge(scan(["s", "{report}"]), many, TODAY)
    assert result.summary == "120 critical at or above critical"
    assert len(result.findings) == 50


# -- running scanners


def test_a_scan_judges_the_report_and_leaves_it_in_scratch(tmp_path):
    result = run_gate(scan(copies("trivy-alpine.json"), fail_on="high"), tmp_path)
    assert (result.status, result.summary) == (FAILED, "1 critical, 1 high at or above high")
    kept = tmp_path / "scratch" / "trivy.json"
    assert json.loads(kept.read_text()) == report("trivy-alpine.json")
    log = (tmp_path / "log").read_text()
    assert log.startswith(f"== gate trivy on {REFERENCE}\n$ sh -c ")


def test_a_clean_scan_passes(tmp_path):
    result = run_gate(scan(copies("trivy-clean.json"), fail_on="low"), tmp_path)
    assert result == gates.GateResult("trivy", PASSED, "none at or above low")


@pytest.mark.parametrize(("name", "status"), [("trivy-alpine.json", FAILED),
                                              ("trivy-clean.json", PASSED)])  # fmt: skip
def test_a_scanner_that_exits_1_with_a_report_is_judged_by_the_report(tmp_path, name, status):
    """`trivy --exit-code 1` exits 1 whenever it finds anything, even what is allowed."""
    assert run_gate(scan(copies(name, code=1)), tmp_path).status == status


@pytest.mark.parametrize(
    ("script", "summary"),
    [
        ("echo 'FATAL image scan error: unable to find the image'; exit 2",
         "scanner failed: exited 2: FATAL image scan error: unable to find the image"),
        ('echo "<html>502 Bad Gateway" > "$1"; echo "error: invalid report"; exit 2',
         "scanner failed: exited 2: error: invalid report"),
        ('echo "<html>" > "$1"', "scanner failed: trivy.json is not JSON (Expecting value: "),
        ('echo "{}" > "$1"', "scanner failed: not a Trivy or Grype JSON report"),
        ("echo wrote it elsewhere", "scanner failed: no report at "),
        # nested past Python's stack: refused as any other unreadable report
        ("printf '%*s' 200000 '' | tr ' ' '[' > \"$1\"",
         "scanner failed: trivy.json is not JSON (maximum recursion depth"),
    ],
)  # fmt: skip
def test_a_scanner_without_a_readable_report_fails_the_image(tmp_path, script, summary):
    result = run_gate(scan(["sh", "-c", script, "sh", "{report}"]), tmp_path)
    assert result.status == FAILED
    assert result.summary.startswith(summary)


def test_a_report_of_an_earlier_run_is_not_judged(tmp_path):
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "trivy.json").write_text((FIXTURES / "trivy-clean.json").read_text())
    result = run_gate(scan(["sh", "-c", "exit 0", "sh", "{report}"]), tmp_path)
    assert result.status == FAILED
    assert result.summary.startswith("scanner failed: no report at ")


# -- test commands


def test_a_test_that_exits_0_passes(tmp_path):
    result = run_gate(smoke(["sh", "-c", 'test "$1" = "$2"', "sh", "{image}", REFERENCE]), tmp_path)
    assert result == gates.GateResult("smoke", PASSED, "exit 0")


def test_a_failing_test_names_its_exit_code_and_last_line(tmp_path):
    argv = ["sh", "-c", "echo starting; echo 'curl: /healthz returned 500'; echo; exit 3"]
    result = run_gate(smoke(argv), tmp_path)
    assert result == gates.GateResult("smoke", FAILED, "exited 3: curl: /healthz returned 500")
    assert "starting\n" in (tmp_path / "log").read_text()


def test_a_test_that_cannot_start_fails(tmp_path):
    result = run_gate(smoke(["/nonexistent/smoke-test"]), tmp_path)
    assert result.status == FAILED
    assert result.summary.startswith("cannot run /nonexistent/smoke-test (")


# -- placeholders


def test_placeholders_fill_every_argument_in_one_pass():
    argv = ["--image={image}", "{repository}:{tag}", "{digest}", "{report}", "{{.Name}}", "{x}"]
    filled = gates.placeholders(argv, REFERENCE, Path("/s/{tag}/{image}.json"))
    assert filled == [
        f"--image={REFERENCE}",
        "localhost:5000/shop/api:1.4",
        DIGEST,
        "/s/{tag}/{image}.json",  # a value is never substituted again
        "{{.Name}}",  # other braces (a trivy --template) are the scanner's
        "{x}",
    ]


def test_placeholders_of_a_reference_without_tag():
    filled = gates.placeholders(["{repository}", "{tag}"], f"alpine@{DIGEST}", Path("r"))
    assert filled == ["docker.io/library/alpine", ""]


def test_a_hostile_value_reaches_the_command_as_one_argument(tmp_path):
    """No shell ever reads a gate's argv: a path with spaces, `;` and `$(...)` stays whole."""
    scratch = tmp_path / "a b; rm -rf " / " $(id) {tag}"
    argv_file = tmp_path / "argv"
    script = 'for a in "$@"; do printf "%s\\n" "$a"; done > "$0"; cp "$1" "$2"'
    argv = ["sh", "-c", script, str(argv_file), str(FIXTURES / "trivy-clean.json"), "{report}",
            "a b; rm -rf / $(id)", "{tag}"]  # fmt: skip
    gate = scan(argv)
    result = check(gate, REFERENCE, tmp_path / "log", threading.Event(), TODAY, scratch)
    assert result.status == PASSED
    report_path = str(scratch / "trivy.json")
    assert "a b; rm -rf / $(id) {tag}/trivy.json" in report_path
    assert argv_file.read_text().splitlines() == [
        str(FIXTURES / "trivy-clean.json"), report_path, "a b; rm -rf / $(id)", "1.4"
    ]  # fmt: skip
    assert (scratch / "trivy.json").is_file()


# -- retries, cancel, timeout


def flaky(counter, then):
    """Fails with a transient error on its first run, then runs `then`; counts its runs."""
    refused = 'echo "dial tcp 10.0.0.7:443: connect: connection refused"; exit 1'
    script = 'n=$(cat "$0" 2>/dev/null || echo 0); echo $((n + 1)) > "$0"; '
    script += f'if [ "$n" = 0 ]; then {refused}; fi; {then}'
    return ["sh", "-c", script, str(counter), str(FIXTURES / "trivy-alpine.json"), "{report}"]


def test_a_transient_failure_is_retried_once(tmp_path):
    counter = tmp_path / "runs"
    result = run_gate(scan(flaky(counter, 'cp "$1" "$2"')), tmp_path)
    assert counter.read_text() == "2\n"
    assert (result.status, result.summary) == (FAILED, "1 critical at or above critical")
    assert "trying once more" in (tmp_path / "log").read_text()


def test_a_test_with_a_transient_failure_is_retried_once(tmp_path):
    counter = tmp_path / "runs"
    assert run_gate(smoke(flaky(counter, "exit 0")), tmp_path).status == PASSED
    assert counter.read_text() == "2\n"


def test_a_failure_that_is_not_transient_is_not_retried(tmp_path):
    counter = tmp_path / "runs"
    argv = ["sh", "-c", 'echo x >> "$0"; echo "FATAL unknown flag"; exit 1', str(counter)]
    result = run_gate(scan([*argv, "{report}"]), tmp_path)
    assert result.summary == "scanner failed: exited 1: FATAL unknown flag"
    assert counter.read_text() == "x\n"


def test_a_failure_that_stays_transient_fails_after_the_retry(tmp_path):
    counter = tmp_path / "runs"
    argv = ["sh", "-c", 'echo x >> "$0"; echo "503 Service Unavailable"; exit 1', str(counter)]
    result = run_gate(scan([*argv, "{report}"]), tmp_path)
    assert result.summary == "scanner failed: exited 1: 503 Service Unavailable"
    assert counter.read_text() == "x\nx\n"


def test_the_retry_pause_is_a_pause(tmp_path, monkeypatch):
    monkeypatch.setattr(gates, "RETRY_PAUSE", 0.5)
    started = time.monotonic()
    run_gate(smoke(flaky(tmp_path / "runs", "exit 0")), tmp_path)
    assert time.monotonic() - started >= 0.5


def test_a_cancel_is_raised_not_a_gate_result(tmp_path):
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailed, match="cancelled"):
            run_gate(scan(["sh", "-c", "exec sleep 30", "sh", "{report}"]), tmp_path, cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_a_cancel_during_the_retry_pause_is_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(gates, "RETRY_PAUSE", 30)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailed, match=r"^trivy: cancelled$"):
            run_gate(scan(flaky(tmp_path / "runs", 'cp "$1" "$2"')), tmp_path, cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert (tmp_path / "runs").read_text() == "1\n"


def test_a_scanner_that_times_out_is_retried_then_fails(tmp_path):
    counter = tmp_path / "runs"
    argv = ["sh", "-c", 'echo x >> "$0"; exec sleep 30', str(counter), "{report}"]
    started = time.monotonic()
    result = run_gate(scan(argv, timeout=0.5), tmp_path)
    assert time.monotonic() - started < 10
    assert result == gates.GateResult("trivy", FAILED, "scanner failed: timed out after 0.5 s")
    assert counter.read_text() == "x\nx\n"
