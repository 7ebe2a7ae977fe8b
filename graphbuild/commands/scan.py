"""`graphbuild scan [REF...]`: scan the fleet's images, their bases and what the workloads
run, and keep each digest's findings (docs/vulnerabilities.md).

Exit 1 when a digest could not be scanned (a scanner failed or a registry did not answer):
what it carries is not known.
"""

from __future__ import annotations

from dataclasses import asdict

from graphbuild import errors, pipeline, report, scanning
from graphbuild.config import Config
from graphbuild.console import plural
from graphbuild.report import brief, short


def run(config: Config, names: list[str], as_json: bool, force: bool) -> int:
    scanning.section(config)
    now = pipeline.fresh(config)
    outcomes = pipeline.scan(config, now.graph, names, force)
    if names and not outcomes:
        raise errors.NotFound(f"{', '.join(names)}: no image the fleet builds, is built on or "
                              "runs; see `graphbuild images`")  # fmt: skip
    if as_json:
        report.emit_json([asdict(o) for o in outcomes])
    else:
        report.table(
            ["IMAGE", "PLATFORM", "DIGEST", "STATUS", "FINDINGS", "DETAIL"],
            [(short(o.ref), o.platform, brief(o.digest or ""), o.status,
              o.findings if o.status == scanning.SCANNED else "", brief(o.detail or o.scanner))
             for o in outcomes],
        )  # fmt: skip
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        print(", ".join(f"{plural(n, 'digest')} {s}" for s, n in sorted(counts.items()))
              or "Nothing to scan.")  # fmt: skip
    bad = any(o.status in (scanning.FAILED, scanning.UNREACHABLE) for o in outcomes)
    return errors.FAILED if bad or now.failed else errors.OK
