"""Validation gates: every rebuilt image passes them before anything deploys it.

A gate is a scanner, whose JSON report (Trivy or Grype) is judged here against a
severity and an allowlist, or a test command that must exit 0. Gates fail closed:
an image that no scanner could read is not a validated image.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphbuild import refs, retry
from graphbuild.config import SEVERITIES, Allowed, GateSpec
from graphbuild.errors import CommandFailed, GraphbuildError
from graphbuild.process import run
from graphbuild.state import GateStatus

RETRY_PAUSE = 2.0  # seconds before the one retry of a transient failure (a registry hiccup)
MAX_REPORT = 256 * 2**20  # a scanner's JSON report; a large image's is tens of MiB
MAX_FINDINGS = 50  # a result names at most this many; the report left in scratch has them all
_PLACEHOLDER_RE = re.compile(r"\{(image|digest|repository|tag|report)\}")
RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}  # what gates and scans compare


class GateError(GraphbuildError):
    """A scanner's output that is not a report graphbuild can judge."""


@dataclass(frozen=True)
class Finding:
    """One vulnerability, in the same words whichever scanner reported it."""

    id: str  # CVE-2026-1234, GHSA-...
    severity: str  # one of SEVERITIES
    package: str
    installed: str
    fixed: str  # "" when there is no fix
    target: str  # the file or OS the scanner found it in; "" if none
    layer: str = ""  # the diff id of the layer that brought it (Trivy Layer.DiffID, Grype layerID)


@dataclass(frozen=True)
class GateResult:
    gate: str
    status: GateStatus
    summary: str  # one line, read in `runs` and in the report
    findings: tuple[Finding, ...] = ()  # those that fail the image, worst first


def placeholders(argv: Sequence[str], reference: str, report: Path) -> list[str]:
    """Fill {image} {digest} {repository} {tag} {report} in one pass, so a value holding
    `{tag}` is left as it is; each argument stays one argument (no shell reads them)."""
    ref = refs.parse(reference)
    values = {"image": reference, "digest": ref.digest or "", "repository": ref.name,
              "tag": ref.tag or "", "report": str(report)}  # fmt: skip
    return [_PLACEHOLDER_RE.sub(lambda match: values[match[1]], arg) for arg in argv]


def findings(report: object) -> list[Finding]:
    """The vulnerabilities of a Trivy or a Grype JSON report; anything else is a GateError."""
    if isinstance(report, dict) and ("SchemaVersion" in report or "Results" in report):
        return [
            Finding(
                _get(vuln, "VulnerabilityID", str),
                _severity(_get(vuln, "Severity", str)),
                _get(vuln, "PkgName", str),
                _get(vuln, "InstalledVersion", str),
                _get(vuln, "FixedVersion", str),
                _get(result, "Target", str),
                _get(_get(vuln, "Layer", dict), "DiffID", str),
            )
            for result in _get(report, "Results", list, dict)
            for vuln in _get(result, "Vulnerabilities", list, dict)
        ]
    if isinstance(report, dict) and "matches" in report:
        out = []
        for match in _get(report, "matches", list, dict):
            vuln, artifact = _get(match, "vulnerability", dict), _get(match, "artifact", dict)
            fixed = _get(_get(vuln, "fix", dict), "versions", list, str)
            where = _get(artifact, "locations", list, dict)
            out.append(
                Finding(
                    _get(vuln, "id", str),
                    _severity(_get(vuln, "severity", str)),
                    _get(artifact, "name", str),
                    _get(artifact, "version", str),
                    ", ".join(fixed),
                    _get(where[0], "path", str) if where else "",
                    _get(where[0], "layerID", str) if where else "",
                )
            )
        return out
    raise GateError("not a Trivy or Grype JSON report")


def scanner(report: object) -> str:
    """Which scanner wrote a report, and its version and database where it says them:
    a finding a rebuild did not fix is looked at again once these change."""
    if not isinstance(report, dict):
        return "unknown"
    if "matches" in report:
        descriptor = report.get("descriptor")
        if not isinstance(descriptor, dict):
            return "grype"
        db = descriptor.get("db")
        db = db if isinstance(db, dict) else {}
        status = db.get("status")
        status = status if isinstance(status, dict) else {}
        built = db.get("built") or status.get("built")  # older grype, then grype >= 0.88
        words = [descriptor.get("name") or "grype", descriptor.get("version"),
                 f"db {built}" if isinstance(built, str) else None]  # fmt: skip
        return " ".join(str(w) for w in words if isinstance(w, str) and w)[:200]
    trivy = report.get("Trivy")
    version = trivy.get("Version") if isinstance(trivy, dict) else None
    return f"trivy {version}"[:200] if isinstance(version, str) and version else "trivy"


def judge(gate: GateSpec, found: Iterable[Finding], today: dt.date) -> GateResult:
    """Fail on any finding at or above `gate.fail_on` that no allowlist entry accepts today.

    An entry counts while today <= until; once expired, the summary says so, since the
    image that passed yesterday fails today for a reason nobody changed in the image.
    """
    unique: dict[tuple[str, str, str], Finding] = {}
    for finding in found:  # one package in two layers or two jars is still one problem
        unique.setdefault((finding.id, finding.package, finding.installed), finding)
    allowed: dict[str, Allowed] = {}
    for entry in gate.allow:  # an id listed twice: the later date is the one meant
        if entry.id not in allowed or entry.until > allowed[entry.id].until:
            allowed[entry.id] = entry
    failing: list[Finding] = []
    accepted: Counter[dt.date] = Counter()
    expired: dict[str, dt.date] = {}
    for finding in unique.values():
        if RANK[finding.severity] < RANK[gate.fail_on]:
            continue
        allows = allowed.get(finding.id)
        if allows is not None and today <= allows.until:
            accepted[allows.until] += 1
            continue
        failing.append(finding)
        if allows is not None:
            expired[finding.id] = allows.until
    failing.sort(key=lambda f: (-RANK[f.severity], f.id, f.package, f.installed))
    counts = Counter(f.severity for f in failing)
    worst = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if counts[s]) or "none"
    notes = [f"{n} accepted until {until}" for until, n in sorted(accepted.items())]
    notes += [f"{id_} accepted until {until} expired" for id_, until in sorted(expired.items())]
    summary = f"{worst} at or above {gate.fail_on}" + (f" ({'; '.join(notes)})" if notes else "")
    status = GateStatus.FAILED if failing else GateStatus.PASSED
    return GateResult(gate.name, status, summary, tuple(failing[:MAX_FINDINGS]))


def check(
    gate: GateSpec,
    reference: str,
    log: Path,
    cancel: threading.Event,
    today: dt.date,
    scratch: Path,
) -> GateResult:
    """Run one gate on one image (`reference`: name:tag@digest, as pushed).

    A scan is judged from its report whatever the scanner's exit code (`trivy --exit-code 1`
    exits 1 when it finds anything); no readable report fails the image. A transient failure
    is tried once more; a cancel is raised, as stopping says nothing about the image.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    report = scratch / f"{gate.name}.json"  # left there: the caller keeps it beside the log
    argv = placeholders(gate.argv, reference, report)
    _note(log, f"== gate {gate.name} on {reference}")

    def attempt(n: int) -> GateResult:
        report.unlink(missing_ok=True)  # a report of an earlier run must not pass this one
        failed = _run(gate, argv, log, cancel)
        why = "" if failed is None else str(failed).removeprefix(gate.name).lstrip(":").strip()
        if gate.kind == "test":
            status = GateStatus.PASSED if failed is None else GateStatus.FAILED
            result = GateResult(gate.name, status, why or "exit 0")
        else:
            try:
                return judge(gate, findings(read_report(report)), today)
            except GateError as err:
                result = GateResult(gate.name, GateStatus.FAILED, f"scanner failed: {why or err}")
        if failed is not None and failed.transient:
            raise retry.Again(why, value=result)
        return result

    def note(again: retry.Again, wait: float) -> None:
        _note(log, f"== gate {gate.name}: {again.why}; trying once more in {wait:g} s")

    try:
        return retry.call(attempt, tries=2, backoff=retry.Backoff(RETRY_PAUSE, factor=1),
                          cancel=cancel, on_retry=note)  # fmt: skip
    except retry.Again as last:  # failed again: that is the gate's result
        result: GateResult = last.value
        return result
    except retry.Cancelled:
        raise CommandFailed(f"{gate.name}: cancelled") from None


def _run(
    gate: GateSpec, argv: list[str], log: Path, cancel: threading.Event
) -> CommandFailed | None:
    """The command's failure, if it failed; a cancel is raised, never returned."""
    try:
        run(argv, log, cancel, gate.name, gate.timeout)
    except CommandFailed as err:
        if cancel.is_set():
            raise
        return err
    return None


def read_report(report: Path) -> object:
    """The scanner's JSON report; a GateError says why there is none to judge. Its size is
    bounded: an image's content must not take graphbuild's memory."""
    try:
        if report.stat().st_size > MAX_REPORT:
            raise GateError(f"{report.name} is over {MAX_REPORT // 2**20} MiB")
        return json.loads(report.read_bytes())
    except FileNotFoundError:
        raise GateError(f"no report at {report}") from None
    except (OSError, ValueError, RecursionError) as err:  # nested past Python's stack
        raise GateError(f"{report.name} is not JSON ({err})") from None


def _note(log: Path, line: str) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"{line}\n")


def _severity(word: str) -> str:
    """Scanners' words (`CRITICAL`, Grype's `Negligible`) on graphbuild's scale."""
    word = "low" if word.lower() == "negligible" else word.lower()
    return word if word in RANK else "unknown"


def _get(item: dict, key: str, kind: type, of: type = object) -> Any:
    """item[key] if it is a `kind` (a list: of `of`); null or missing is an empty one, as
    Trivy writes both for "nothing found"."""
    value = item.get(key)
    if value is None:
        return kind()
    if isinstance(value, kind) and (
        not isinstance(value, list) or all(isinstance(v, of) for v in value)
    ):
        return value
    raise GateError(f"not a Trivy or Grype JSON report: {key} is not a {kind.__name__}")
