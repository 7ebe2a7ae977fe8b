"""The scan step: scan what is built, what it is built on and what runs, and keep each
digest's findings with the layer that brought each one.

A scan is of one image manifest digest (a platform's, for a multi-arch tag) and is kept
per digest in state.db, with every index that holds it; a digest scanned within
`vulnerabilities.rescan` is not scanned again. The layers of an image (diff ids, base
first) are read from its config in the registry; the base's layers are the longest prefix
of them that is the layer list of a digest the image's base had (the one it was built on,
its baseline, or now). What a finding means is `vulns.py`'s to decide.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from graphbuild import gates, process, refs
from graphbuild.config import Config, VulnSpec
from graphbuild.errors import CommandFailed, ConfigError, InvalidReference
from graphbuild.graph import builds_on, image_data, node_items, out_edge_items
from graphbuild.indexdb import EXTERNAL, IMAGE
from graphbuild.registry import Failure, Registry, Resolved
from graphbuild.registry import client as registry_client
from graphbuild.registry.client import Known
from graphbuild.state import Scan, State, now
from graphbuild.workloads import Workload

SCANNED, FRESH, FAILED = "scanned", "fresh", "failed"
MISSING, UNREACHABLE = "missing", "unreachable"  # no digest to scan: none yet, or no answer
SCANS = "scans"  # the workspace folder of each digest's last report and scanner log
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Target:
    """A reference to scan: a fleet image, an external base, or what a workload runs."""

    ref: str  # name:tag, name:tag@digest or name@digest
    kind: str  # image | base | workload
    node: str | None  # its graph node, when the fleet knows it
    platforms: tuple[str, ...] = ()  # those the fleet builds or runs; none: one manifest


@dataclass
class Outcome:
    """What `scan` did with one digest of one reference."""

    ref: str
    digest: str | None
    platform: str
    status: str  # scanned | fresh | failed | missing | unreachable
    findings: int = 0  # at or above the configured severity, not ignored
    detail: str = ""
    scanner: str = ""


# ---------------------------------------------------------------- what to scan


def targets(
    config: Config, graph: nx.DiGraph[str], running: Iterable[Workload], names: Sequence[str] = ()
) -> list[Target]:
    """Every fleet image, every external base an image is built on, and every image a
    workload runs; with `names`, those whose repository (and tag, if given) they name."""
    found: dict[str, Target] = {}
    by_tag: dict[tuple[str, str], str] = {}
    on: dict[str, set[str]] = {}
    for node, attrs in node_items(graph):
        if attrs["kind"] != IMAGE:
            continue
        found[node] = Target(node, IMAGE, node, tuple(attrs["platforms"]))
        for tag in attrs["tags"]:
            by_tag[(attrs["image"], refs.parse(tag).tag or "latest")] = node
    for node, attrs in node_items(graph):
        if attrs["kind"] != EXTERNAL:
            continue
        children = [child for _, child, edge in out_edge_items(graph, node) if builds_on(edge)]
        if not children:  # a `# syntax` frontend only: not in any image
            continue
        for child in children:
            on.setdefault(node, set()).update(image_data(graph, child)["platforms"])
        ref = node if attrs["digest"] else f"{attrs['name']}:{attrs['tag']}"
        found.setdefault(ref, Target(ref, "base", node, tuple(sorted(on[node]))))
    for workload in running:
        ref = _reference(workload)
        known = by_tag.get((workload.image, workload.tag or "latest"))
        found.setdefault(ref, Target(ref, "workload", known))
    if not names:
        return list(found.values())
    wanted = [refs.parse(name) for name in names]
    return [t for t in found.values() if any(_names(w, t.ref) for w in wanted)]


def _reference(workload: Workload) -> str:
    """What a workload runs: name:tag, name:tag@digest, or name@digest."""
    tag = workload.tag or ("latest" if workload.digest is None else None)
    ref = workload.image + (f":{tag}" if tag else "")
    return ref + (f"@{workload.digest}" if workload.digest else "")


def _names(wanted: refs.Reference, ref: str) -> bool:
    got = refs.parse(ref)
    if wanted.name != got.name:
        return False
    return (wanted.tag is None or wanted.tag == got.tag) and (
        wanted.digest is None or wanted.digest == got.digest
    )


# ---------------------------------------------------------------- scanning


@dataclass
class _Job:
    target: Target
    top: str
    platform: str
    digest: str
    bases: list[str]  # digests the image's base had: where its layers may begin
    base_repo: str  # the base's repository, where those digests are read


@dataclass
class _Done:
    job: _Job
    scanner: str = ""
    found: list[gates.Finding] = field(default_factory=list)
    # digest -> its platform and diff ids, as read from the registry
    layers: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    base_digest: str | None = None
    base_layers: int = 0
    error: str = ""


def scan(
    config: Config,
    graph: nx.DiGraph[str],
    wanted: Sequence[Target],
    registry: Registry,
    state: State,
    cancel: threading.Event,
    force: bool = False,
) -> list[Outcome]:
    """Scan each target's current digests (one per platform) that have no scan within the
    rescan period (`force`: all of them) and store what the scanner found."""
    spec = section(config)
    # a digest other than the one recorded last is believed once its manifest is read, as
    # `check` believes one (rule 13): what `scan` records, `check` relies on
    asked: dict[str, Sequence[str]] = {t.ref: t.platforms for t in wanted}
    for target in wanted:  # its base's digest now: where its own layers begin, when the
        base = _base_tag(graph, target)  # base is not scanned with it (`scan IMAGE`)
        if base is not None:
            asked.setdefault(base, ())
    recorded = {ref: seen.digest if (seen := state.latest(ref)) else None
                for ref in asked if "@" not in ref}  # fmt: skip
    answers = registry.resolve_all(asked, known=Known(recorded=recorded),
                                   timeout=config.check_timeout)  # fmt: skip
    outcomes: list[Outcome] = []
    jobs: dict[str, _Job] = {}
    observed: list[tuple[str, str, str]] = []
    at = now()
    baselines = state.baselines()
    for target in wanted:
        answer = answers[target.ref]
        if isinstance(answer, Failure):  # not pushed yet (a sweep builds it), or no answer
            status = MISSING if answer.kind == registry_client.MISSING else UNREACHABLE
            outcomes.append(Outcome(target.ref, None, "", status, detail=answer.message))
            continue
        if "@" not in target.ref:
            observed.append((target.ref, "", answer.digest))
            observed += [(target.ref, p, d) for p, d in answer.platforms.items()]
        for platform, digest in _manifests(answer, target.platforms):
            state.point(answer.digest, digest, platform)
            if digest in jobs:
                continue
            last = state.scan_of(digest)
            if last is not None and not force and age(last.at) < spec.rescan:
                outcomes.append(Outcome(target.ref, digest, platform, FRESH, detail=last.at,
                                        scanner=last.scanner))  # fmt: skip
                continue
            bases, base_repo = _base_digests(graph, target, answer.digest, state, baselines,
                                             answers)  # fmt: skip
            jobs[digest] = _Job(target, answer.digest, platform, digest, bases, base_repo)
    state.observe(observed, at)
    known = {d: layers for job in jobs.values() for d in (job.digest, *job.bases)
             if (layers := state.layer_list(d)) is not None}  # fmt: skip
    folder = config.workspace / SCANS
    # Ctrl-C or SIGTERM stops the scanners running (their digests stay unscanned) and
    # keeps what the others found
    with (
        process.on_stop_signals(lambda count: cancel.set()),
        ThreadPoolExecutor(max_workers=spec.concurrency) as pool,
    ):
        done = list(pool.map(lambda job: _scan_one(spec, job, registry, known, folder, cancel),
                             jobs.values()))  # fmt: skip
    today = dt.date.today()
    for result in done:
        job = result.job
        for digest, (platform, ids) in result.layers.items():
            state.remember_layers(digest, platform, ids)
        if result.error:
            outcomes.append(Outcome(job.target.ref, job.digest, job.platform, FAILED,
                                    detail=result.error))  # fmt: skip
            continue
        base = _base_node(graph, job.target)
        _, own = result.layers[job.digest] if job.digest in result.layers else known[job.digest]
        record = Scan(job.digest, job.top, job.target.ref, job.platform, now(), result.scanner,
                      own, base, result.base_digest, result.base_layers)  # fmt: skip
        unique = {(f.id, f.package, f.installed): f for f in map(_clean, reversed(result.found))}
        state.record_scan(record, ((f.id, f.severity, f.package, f.installed, f.fixed, f.layer)
                                   for f in unique.values()))  # fmt: skip
        counted = [f for f in unique.values() if counts(spec, f.severity, f.id, today)]
        outcomes.append(Outcome(job.target.ref, job.digest, job.platform, SCANNED,
                                len(counted), scanner=result.scanner))  # fmt: skip
    if cancel.is_set():  # what finished is kept; the caller must not go on as if all had
        raise KeyboardInterrupt
    return sorted(outcomes, key=lambda o: (o.ref, o.platform))


def _clean(found: gates.Finding) -> gates.Finding:
    """A finding as stored and shown: what a scanner read from an image is image content,
    so no control characters (a terminal's escapes) and no field longer than 200."""
    fields = (found.id, found.severity, found.package, found.installed, found.fixed, found.target,
              found.layer)  # fmt: skip
    return gates.Finding(*(_CONTROL_RE.sub("", value)[:200] for value in fields))


def section(config: Config) -> VulnSpec:
    """The `vulnerabilities:` section; without one, a ConfigError that says what to add."""
    if config.vulnerabilities is None:
        raise ConfigError(str(config.file), "vulnerabilities", "missing: add a "
                          "`vulnerabilities:` section whose `scan:` is the scanner's argv, "
                          "with {image} and {report} (docs/vulnerabilities.md)")  # fmt: skip
    return config.vulnerabilities


def _manifests(answer: Resolved, platforms: Sequence[str]) -> list[tuple[str, str]]:
    """(platform, image manifest digest) to scan: the platforms asked for, or for an index
    nobody asked a platform of, linux/amd64 (or its first image); a manifest is itself."""
    if not answer.children:
        return [("", answer.digest)]
    if platforms and answer.platforms:
        return sorted(answer.platforms.items())
    chosen = "linux/amd64" if "linux/amd64" in answer.children else sorted(answer.children)[0]
    return [(chosen, answer.children[chosen])]


def _base_node(graph: nx.DiGraph[str], target: Target) -> str | None:
    if target.node is None or target.node not in graph:
        return None
    if graph.nodes[target.node]["kind"] != IMAGE:
        return None
    return image_data(graph, target.node)["base"]


def _base_digests(
    graph: nx.DiGraph[str],
    target: Target,
    top: str,
    state: State,
    baselines: Mapping[tuple[str, str], str],
    answers: Mapping[str, Resolved | Failure],
) -> tuple[list[str], str]:
    """The digests (tags' own) the image's base had that it may be built on (its build
    record's, its baseline, the base's digest now), and the base's repository."""
    base = _base_node(graph, target)
    if base is None or target.node is None:
        return [], ""
    found: list[str] = []
    build = state.build_of(target.node, top)
    if build is not None and base in build.parents:
        found.append(build.parents[base])
    baseline = baselines.get((target.node, base))
    if baseline:
        found.append(baseline)
    attrs = graph.nodes[base]
    repo = attrs["image"] if attrs["kind"] == IMAGE else attrs["name"]
    ref = _base_tag(graph, target)
    if ref is None:  # pinned by digest
        found.append(attrs["digest"])
    else:
        seen, now_ = state.latest(ref), answers.get(ref)  # as last recorded, and just now
        found += [seen.digest] if seen is not None else []
        found += [now_.digest] if isinstance(now_, Resolved) else []
    return list(dict.fromkeys(found)), repo


def _base_tag(graph: nx.DiGraph[str], target: Target) -> str | None:
    """The tag that names the image's base, whose digest moves; None for a base pinned by
    digest, or no base."""
    base = _base_node(graph, target)
    if base is None:
        return None
    attrs = graph.nodes[base]
    if attrs["kind"] == IMAGE:
        return base
    return None if attrs["digest"] else f"{attrs['name']}:{attrs['tag']}"


def _scan_one(
    spec: VulnSpec,
    job: _Job,
    registry: Registry,
    known: Mapping[str, tuple[str, list[str]]],
    folder: Path,
    cancel: threading.Event,
) -> _Done:
    """Run the scanner on one digest and read its layers and its base's; any failure is
    the result's error (a scanner that fails scans nothing: the digest stays unscanned)."""
    done = _Done(job)
    try:
        ref = refs.parse(job.target.ref)
    except InvalidReference as err:
        done.error = str(err)
        return done
    reference = f"{ref.name}:{ref.tag}@{job.digest}" if ref.tag else f"{ref.name}@{job.digest}"
    where = folder / job.digest.replace(":", "-")
    where.mkdir(parents=True, exist_ok=True)
    report, log = where / "report.json", where / "scan.log"
    report.unlink(missing_ok=True)  # an earlier report must not stand for this scan
    failed: CommandFailed | None = None
    try:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"== scan {reference} at {now()}\n")
        process.run(gates.placeholders(spec.scan, reference, report), log, cancel, "scanner",
                    spec.timeout)  # fmt: skip
    except CommandFailed as err:
        if cancel.is_set():
            done.error = "cancelled"
            return done
        failed = err  # judged by its report, as a gate is: trivy --exit-code 1 finds something
    try:
        document = gates.read_report(report)
        done.found, done.scanner = gates.findings(document), gates.scanner(document)
    except gates.GateError as err:
        done.error = f"scanner failed: {failed or err} (log: {log})"
        return done

    unread: list[str] = []

    def layers(digest: str) -> tuple[str, list[str]] | None:
        if digest in known:
            return known[digest]
        if digest not in done.layers:
            repo = ref.name if digest == job.digest else job.base_repo
            answer = registry.diff_ids(f"{repo}@{digest}")
            if isinstance(answer, Failure):
                unread.append(answer.message)
                return None
            done.layers[digest] = answer
        return done.layers[digest]

    found = layers(job.digest)
    if found is None:
        done.error = f"could not read its layers: {unread[-1]}"
        return done
    platform, own = found
    if job.base_repo:
        done.base_layers = -1  # until found: which layers are the base's is unknown
        for top in job.bases:  # the base's manifest of the platform its config says
            child = _child(registry, f"{job.base_repo}@{top}", job.platform or platform)
            base = layers(child) if child else None
            ids = base[1] if base else []
            if ids and len(ids) > max(done.base_layers, 0) and own[: len(ids)] == ids:
                done.base_digest, done.base_layers = child, len(ids)
    return done


def _child(registry: Registry, ref: str, platform: str) -> str | None:
    answer = registry.resolve(ref, [platform] if platform else [])
    if isinstance(answer, Failure):
        return None
    if not answer.children:
        return answer.digest
    return answer.platforms.get(platform) or _manifests(answer, ())[0][1]


def age(at: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(at)).total_seconds()


def counts(
    spec: VulnSpec, severity: str, vuln: str, today: dt.date, floor: str = "",
    ignored: bool = False,
) -> bool:  # fmt: skip
    """At or above the severity asked (the configured one by default), and not ignored
    (unless `ignored` ones count too)."""
    if gates.RANK.get(severity, 0) < gates.RANK[floor or spec.severity]:
        return False
    return ignored or not any(e.id == vuln and today <= e.until for e in spec.ignore)
