"""Vulnerabilities: scan what is built and what runs, tell which layer brought each
finding, and decide what fixes it (design rule 14: rebuild what a rebuild fixes).

A scan is of one image manifest digest (a platform's, for a multi-arch tag) and is kept
per digest in state.db; a digest scanned within `vulnerabilities.rescan` is not scanned
again. The layers of an image (diff ids, base first) are read from its config in the
registry; the base's layers are found as the longest prefix of them that is the layer list
of a digest the image's base had (the one it was built on, its baseline, or now). A
finding in those layers is inherited (`base`), any other `own`.

What fixes a finding is decided when it is asked (`vulns`, `plan`), from the stored scans:
- no fixed version: `none`;
- own layer: `rebuild IMAGE` (a rebuild without cache picks up the fixed package), unless
  a rebuild already made that digest and did not remove it: then `none`, with why, until
  the image, its base or the scanner's data changes;
- inherited from a fleet image: whatever fixes it there;
- inherited from an external base that still carries it at its current digest:
  `waiting on upstream BASE`; a base that moved to a digest without it: `rebuild IMAGE`
  (the check already plans it as base-changed).
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
from graphbuild.config import SEVERITIES, Config, VulnSpec
from graphbuild.errors import CommandFailed, ConfigError, InvalidReference
from graphbuild.graph import builds_on, image_data, node_items, out_edge_items
from graphbuild.indexdb import EXTERNAL, IMAGE
from graphbuild.registry import Failure, Registry, Resolved
from graphbuild.registry import client as registry_client
from graphbuild.registry.client import Known
from graphbuild.state import Exposure, FixAttempt, Found, Scan, State, now
from graphbuild.workloads import Workload

OWN, BASE, UNKNOWN = "own", "base", "unknown"  # where a finding came from
SCANNED, FRESH, FAILED = "scanned", "fresh", "failed"
MISSING, UNREACHABLE = "missing", "unreachable"  # no digest to scan: none yet, or no answer
PENDING, FIXED, NOT_FIXED = "pending", "fixed", "not-fixed"  # what a fixing rebuild did
NONE = "none"
SCANS = "scans"  # the workspace folder of each digest's last report and scanner log
DOCUMENT = (  # the fields of `vulns --json`, in order
    *("id", "severity", "package", "installed", "fixed", "image", "digest", "platform"),
    *("origin", "base", "layer", "workloads", "fix", "note", "first_seen", "last_seen"),
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


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


@dataclass
class Carrier:
    """One finding in one image digest, where it came from and what fixes it."""

    id: str
    severity: str
    package: str
    installed: str
    fixed: str
    image: str  # the reference scanned
    digest: str  # the image manifest scanned
    platform: str
    origin: str  # own | base | unknown
    base: str | None  # the base its layer came from
    layer: str
    workloads: list[dict[str, str]]
    fix: str  # rebuild IMAGE | waiting on upstream BASE | none
    note: str = ""
    first_seen: str = ""
    last_seen: str = ""
    node: str | None = field(default=None, repr=False)  # its fleet image, if any
    top: str = field(default="", repr=False)  # the digest the tag points at
    scanned: str = field(default="", repr=False)

    def document(self) -> dict[str, object]:
        """The stable JSON of `vulns --json` (docs/commands.md)."""
        return {key: getattr(self, key) for key in DOCUMENT}

    def reason(self) -> str:
        """The plan's detail for a rebuild it calls for."""
        layer = self.layer[:19] + "…" if len(self.layer) > 19 else self.layer or "?"
        return (f"{self.id} ({self.severity}): {self.package} {self.installed} → {self.fixed} "
                f"in its own layer {layer}")  # fmt: skip


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
            if last is not None and not force and _age(last.at) < spec.rescan:
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
        counted = [f for f in unique.values() if _counts(spec, f.severity, f.id, today)]
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


def _age(at: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(at)).total_seconds()


def _counts(
    spec: VulnSpec, severity: str, vuln: str, today: dt.date, floor: str = "",
    ignored: bool = False,
) -> bool:  # fmt: skip
    """At or above the severity asked (the configured one by default), and not ignored
    (unless `ignored` ones count too)."""
    if _RANK.get(severity, 0) < _RANK[floor or spec.severity]:
        return False
    return ignored or not any(e.id == vuln and today <= e.until for e in spec.ignore)


# ---------------------------------------------------------------- what fixes it


@dataclass
class _View:
    """What an assessment reads: the graph, the stored scans by tag digest, the workloads."""

    graph: nx.DiGraph[str]
    state: State
    spec: VulnSpec
    running: list[Workload]
    today: dt.date
    explicit: bool = False  # one id asked for by name: no severity floor, ignored ones shown
    by_top: dict[str, list[Scan]] = field(default_factory=dict)
    runs_on: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # top -> workloads

    def current(self, target: Target) -> str | None:
        """The digest the reference points at, as last seen (a digest it names, if it does)."""
        if "@" in target.ref:
            return target.ref.rsplit("@", 1)[1]
        seen = self.state.latest(target.ref)
        return seen.digest if seen else None

    def scans(self, top: str | None) -> list[Scan]:
        return self.by_top.get(top or "", [])


def assess(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    running: list[Workload],
    vuln: str | None = None,
    names: Sequence[str] = (),
    severity: str = "",
    explicit: bool = False,
) -> list[Carrier]:
    """Every finding in the current digest of each target (fleet images, bases, what runs),
    at or above `severity` (the configured one by default) and not ignored; with `vuln`, of
    that id only. `explicit` (an id asked for by name): whatever its severity, and an ignored
    one too, with a note that says until when."""
    view = _View(graph, state, section(config), running, dt.date.today(), explicit)
    view.by_top = state.scans_by_top()
    for workload in running:
        top = _running(state, workload)
        if top is not None:
            view.runs_on.setdefault(top, []).append(
                {"ring": workload.ring, "name": workload.name, "where": workload.where}
            )
    out: dict[tuple[str, str, str, str], Carrier] = {}
    for target in targets(config, graph, running, names):
        top = view.current(target)
        for scan in view.scans(top):
            for found in state.findings(scan.digest, vuln):
                floor = severity or ("unknown" if explicit else "")
                if not _counts(view.spec, found.severity, found.id, view.today, floor,
                               ignored=explicit):  # fmt: skip
                    continue
                key = (scan.digest, found.id, found.package, found.installed)
                if key not in out:  # one per digest: named as the fleet names it, if it does
                    out[key] = _carrier(view, target, scan, found)
    return sorted(out.values(), key=lambda c: (c.id, c.image, c.platform, c.package))


def _carrier(view: _View, target: Target, scan: Scan, found: Found) -> Carrier:
    origin = _origin(scan, found.layer)
    base = scan.base if origin == BASE else None
    fix, note = _fix(view, target.node if target.kind != "base" else None, target.ref, scan,
                     found, origin)  # fmt: skip
    where = view.runs_on.get(scan.top, [])
    if view.explicit:
        until = [e for e in view.spec.ignore if e.id == found.id and view.today <= e.until]
        note = "; ".join(filter(None, [note, *(f"ignored until {e.until}" + (
            f" ({e.reason})" if e.reason else "") for e in until[:1])]))  # fmt: skip
    return Carrier(found.id, found.severity, found.package, found.installed, found.fixed,
                   target.ref, scan.digest, scan.platform, origin, base, found.layer, where, fix,
                   note, found.first_seen, found.last_seen, target.node, scan.top,
                   scan.at)  # fmt: skip


def _origin(scan: Scan, layer: str) -> str:
    if not layer or layer not in scan.layers:
        return UNKNOWN if scan.base_layers else OWN  # no base: every layer is its own
    if scan.base_layers < 0:
        return UNKNOWN  # the image has a base whose layers were not found in it
    return BASE if scan.layers.index(layer) < scan.base_layers else OWN


def _fix(
    view: _View, node: str | None, ref: str, scan: Scan, found: Found, origin: str, depth: int = 0
) -> tuple[str, str]:
    """(fix, note) for a finding in `scan`; `node` is the fleet image it is, if any."""
    if not found.fixed:
        return NONE, "no fixed version is known"
    if node is None or node not in view.graph or view.graph.nodes[node]["kind"] != IMAGE:
        return f"waiting on upstream {ref}", ""  # not ours to build: its publisher fixes it
    if origin == UNKNOWN:
        return NONE, "which layer brought it is unknown: not rebuilt for it"
    if origin == OWN:
        for attempt in reversed(view.state.fix_attempts(node=node)):
            if (attempt.id, attempt.package) != (found.id, found.package):
                continue
            # the same image, advice and scanner version: a database that is rebuilt daily
            # (Grype's) must not make a rebuild that cannot help a daily one
            same = (attempt.after, attempt.fixed, _version(attempt.scanner)) == (
                scan.top, found.fixed, _version(scan.scanner))  # fmt: skip
            if attempt.status == NOT_FIXED and same:
                return NONE, (f"rebuild did not fix {found.id} ({found.package} still at "
                              f"{attempt.still})")  # fmt: skip
            break
        return f"rebuild {node}", ""
    base = scan.base
    assert base is not None  # origin BASE: the scan found the base's layers
    if base not in view.graph:  # the Dockerfile names another base since the scan
        return NONE, f"its base when scanned, {base}, is no longer in the graph: scan it again"
    attrs = view.graph.nodes[base]
    base_ref = base if attrs["kind"] == IMAGE or attrs["digest"] else (
        f"{attrs['name']}:{attrs['tag']}")  # fmt: skip
    now_top = view.current(Target(base_ref, "base", base))
    carried = [
        (scan_, f)
        for scan_ in view.scans(now_top)
        if scan_.platform == scan.platform or "" in (scan_.platform, scan.platform)
        for f in view.state.findings(scan_.digest, found.id)
        if f.package == found.package
    ]
    if not carried:
        scanned = {s.digest for s in view.scans(now_top)}
        if not scanned:  # what the base carries now is not known
            return f"waiting on upstream {base}", f"{base} is not scanned at its digest now"
        if scan.base_digest in scanned:  # the same base, which its own scan finds clean
            return f"waiting on upstream {base}", f"{base}'s own scan does not show it"
        return f"rebuild {node}", f"its base {base} has moved to a digest without it"
    if attrs["kind"] != IMAGE or depth > 50:
        return f"waiting on upstream {base}", f"still in it now; fixed in {found.fixed}"
    parent_scan, parent_found = carried[0]
    return _fix(view, base, base, parent_scan, parent_found,
                _origin(parent_scan, parent_found.layer), depth + 1)  # fmt: skip


def _version(scanner: str | None) -> str:
    """A scanner's name and version, without its database's build time."""
    return (scanner or "").split(" db ", 1)[0]


def _running(state: State, workload: Workload) -> str | None:
    """The digest a workload runs: the one its manifest pins, or its tag's, as last seen."""
    if workload.digest is not None:
        return workload.digest
    seen = state.latest(f"{workload.image}:{workload.tag or 'latest'}")
    return seen.digest if seen else None


def rebuilds(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    running: list[Workload],
    digests: Mapping[str, str],
    vuln: str | None = None,
) -> dict[str, list[Carrier]]:
    """Fleet images whose own layers, at the digest they have now (`digests`), carry a
    finding a rebuild fixes, by a scan within the rescan period: what a sweep (or
    `rebuild --cve`) rebuilds as `vulnerable`."""
    spec = section(config)
    roots: dict[str, list[Carrier]] = {}
    # one id named by on-call (`rebuild --cve`): whatever its severity or an ignore entry says
    for carrier in assess(config, graph, state, running, vuln, explicit=vuln is not None):
        node = carrier.node
        if node is None or carrier.origin != OWN or carrier.fix != f"rebuild {node}":
            continue
        if digests.get(node) != carrier.top or _age(carrier.scanned) >= spec.rescan:
            continue
        roots.setdefault(node, []).append(carrier)
    return roots


def attempts(run_id: str, roots: Mapping[str, Sequence[Carrier]]) -> list[FixAttempt]:
    """The fixes a run sets out to make, recorded as it starts and settled after it builds."""
    at = now()
    return [FixAttempt(run_id, node, c.id, c.package, c.installed, c.fixed, PENDING, None, None,
                       None, at) for node, found in roots.items() for c in found]  # fmt: skip


def settle(state: State, run_id: str, built: Mapping[str, str]) -> list[FixAttempt]:
    """Each pending fix of the run, judged by the scan of the digest its rebuild made
    (`built`: node -> digest): fixed, or not (then not tried again for that finding until the
    image, its base or the scanner's data change). Unscanned digests stay pending."""
    scans = state.scans_by_top()
    settled = []
    for attempt in state.fix_attempts(run=run_id):
        after = built.get(attempt.node)
        if attempt.status != PENDING or after is None or not scans.get(after):
            continue
        still = [(scan, f) for scan in scans[after]
                 for f in state.findings(scan.digest, attempt.id)
                 if f.package == attempt.package and _origin(scan, f.layer) != BASE]  # fmt: skip
        status = NOT_FIXED if still else FIXED
        settled.append(FixAttempt(attempt.run, attempt.node, attempt.id, attempt.package,
                                  attempt.installed, attempt.fixed, status, after,
                                  still[0][1].installed if still else None,
                                  still[0][0].scanner if still else None, now()))  # fmt: skip
    state.record_fix_attempts(settled)
    return settled


# ---------------------------------------------------------------- exposure


def expose(
    config: Config,
    state: State,
    running: list[Workload],
    run_id: str | None = None,
    deployed: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Open an exposure for each vulnerability (at or above the severity, not ignored) a
    deployed image carries, and close those none carries any more: (opened, closed).

    `deployed` (workload id -> digest) is what a run's deploy just put in place of what the
    deploy repositories said at the sync. Nothing is closed while a running digest has no
    scan: what it carries is not known.
    """
    spec, today = section(config), dt.date.today()
    scans = state.scans_by_top()
    present: dict[str, tuple[str, str]] = {}  # id -> digest, reference
    unknown = False
    for workload in running:
        top = (deployed or {}).get(workload.id) or workload.digest
        ref = f"{workload.image}:{workload.tag or 'latest'}"
        if top is None:
            seen = state.latest(ref)
            top = seen.digest if seen else None
        if top is None or top not in scans:
            unknown = True
            continue
        for scan in scans[top]:
            for found in state.findings(scan.digest):
                if _counts(spec, found.severity, found.id, today):
                    present.setdefault(found.id, (scan.digest, f"{ref}@{top}"))
    open_ = {e.id for e in state.exposures() if e.closed is None}
    opened = sorted(set(present) - open_)
    at = now()
    for vuln in opened:  # seen running now: a window opens (again, after a rollback)
        state.open_exposure(vuln, at, *present[vuln])
    closed = [] if unknown else sorted(open_ - set(present))
    for vuln in closed:
        state.close_exposure(vuln, at, run_id)
    return opened, closed


def window(exposure: Exposure) -> float | None:
    """Seconds from the first sighting in a deployed image to the deploy that removed it."""
    if exposure.closed is None:
        return None
    start, end = (
        dt.datetime.fromisoformat(exposure.opened),
        dt.datetime.fromisoformat(exposure.closed),
    )
    return (end - start).total_seconds()
