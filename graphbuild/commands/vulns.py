"""`graphbuild vulns [CVE-ID | REF]`: the on-call question, from the stored scans: every
image carrying a vulnerability, where it came from, what runs it and what fixes it; or the
findings of one image (docs/vulnerabilities.md)."""

from __future__ import annotations

import re

from graphbuild import errors, graph, pipeline, queries, report, scanning, vulns
from graphbuild.config import SEVERITIES, Config
from graphbuild.console import plural
from graphbuild.report import brief, short
from graphbuild.state import State

# CVE-2026-1234, GHSA-xxxx-xxxx-xxxx, ALAS-2026-1, RUSTSEC-2026-0001, GO-2026-1234: an id,
# not a reference (a reference has no upper case in its repository)
_ID_RE = re.compile(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9-]+$")


def run(config: Config, query: str | None, severity: str | None, as_json: bool) -> int:
    spec = scanning.section(config)
    if severity is not None and severity not in SEVERITIES:
        raise errors.GraphbuildError(f"--severity {severity}: expected one of "
                                     f"{', '.join(SEVERITIES)}")  # fmt: skip
    vuln = query if query and _ID_RE.match(query) else None
    names = [query] if query and vuln is None else []
    g = graph.load(queries.open_index(config))
    running = pipeline.targets(config)
    with State(config.workspace) as state:
        # an id asked for by name is shown whatever its severity (unless --severity says)
        # and even when ignored, with a note saying until when
        carriers = vulns.assess(config, g, state, running, vuln, names, severity or "",
                                explicit=vuln is not None)  # fmt: skip
        exposures = state.exposures(vuln) if vuln else []
        scanned = bool(state.scans())
    if as_json:
        report.emit_json([c.document() for c in carriers])
        return errors.OK
    if not scanned:
        report.note("Nothing is scanned yet: run `graphbuild scan`.")
    if not carriers and vuln and not severity:
        print(f"No image carries {vuln} in its last scan.")
    elif not carriers:
        floor = severity or spec.severity
        print(f"No finding at or above {floor}" + (f" for {query}." if query else "."))
    else:
        report.table(
            ["ID", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED", "IMAGE", "ORIGIN", "FIX",
             "RUNS IN"],
            [(c.id, c.severity, c.package, c.installed, c.fixed or "-", short(c.image),
              c.origin + (f" ({short(c.base)})" if c.base else ""),
              c.fix + (f": {brief(c.note)}" if c.note else ""),
              ", ".join(f"{w['ring']}: {w['name']} ({w['where']})" for w in c.workloads))
             for c in carriers],
        )  # fmt: skip
        images = {(c.image, c.digest) for c in carriers}
        print(f"{plural(len(carriers), 'finding')} in {plural(len(images), 'image digest')}.")
    for exposure in exposures:
        seconds = report.between(exposure.opened, exposure.closed)
        if seconds is None:
            print(f"Exposed since {exposure.opened} (first seen running in "
                  f"{short(exposure.ref)}); still open.")  # fmt: skip
        else:
            ended = f"by run {exposure.run}" if exposure.run else "by a scan"
            print(f"Exposed from {exposure.opened} to {exposure.closed} ({ended}): "
                  f"{report.duration(seconds)}.")  # fmt: skip
    return errors.OK
