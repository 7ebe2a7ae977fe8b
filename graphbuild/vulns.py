"""What fixes each vulnerability the scans found (design rule 14: rebuild what a rebuild
fixes), what a sweep rebuilds for one, whether the rebuild fixed it, and how long each ran
in a deployed image.

Decided when it is asked (`vulns`, `plan`), from the scans `scanning.py` stored:
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx

from graphbuild.config import Config, VulnSpec
from graphbuild.indexdb import IMAGE
from graphbuild.scanning import Target, age, counts, section, targets
from graphbuild.state import FixAttempt, Found, Scan, State, now
from graphbuild.workloads import Workload

OWN, BASE, UNKNOWN = "own", "base", "unknown"  # where a finding came from
PENDING, FIXED, NOT_FIXED = "pending", "fixed", "not-fixed"  # what a fixing rebuild did
NONE = "none"
DOCUMENT = (  # the fields of `vulns --json`, in order
    *("id", "severity", "package", "installed", "fixed", "image", "digest", "platform"),
    *("origin", "base", "layer", "workloads", "fix", "note", "first_seen", "last_seen"),
)


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


def reasons(found: Sequence[Carrier]) -> str:
    """A `vulnerable` step's detail: each finding once, however many platforms carry it."""
    return "; ".join(dict.fromkeys(carrier.reason() for carrier in found))


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
                if not counts(view.spec, found.severity, found.id, view.today, floor,
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
        if digests.get(node) != carrier.top or age(carrier.scanned) >= spec.rescan:
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
                if counts(spec, found.severity, found.id, today):
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
