"""What graphbuild has observed and done, kept across runs, in the workspace's state.db.

Unlike index.db (derived from the repositories, dropped when its schema
changes), this is history nobody can re-derive: every digest a reference
resolved to and when, and every image graphbuild built with the exact
parent digests it was built on. So its schema is versioned and migrated
forward, never dropped. Secrets never reach it: it holds references and
digests only.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from graphbuild import filelock, process
from graphbuild.console import note
from graphbuild.errors import GraphbuildError
from graphbuild.workspace import STATE, StateDamaged, damaged, read_only, unusable

# Each entry moves the schema one version forward; append, never edit.
MIGRATIONS = (
    """
    CREATE TABLE digests (
        ref TEXT NOT NULL, platform TEXT NOT NULL, digest TEXT NOT NULL,
        first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        PRIMARY KEY (ref, platform, digest));
    CREATE INDEX digests_latest ON digests (ref, platform, last_seen);
    CREATE TABLE index_children (
        digest TEXT NOT NULL, platform TEXT NOT NULL, child TEXT NOT NULL,
        PRIMARY KEY (digest, platform));
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY, image TEXT NOT NULL, digest TEXT NOT NULL,
        built_at TEXT NOT NULL, run_id TEXT, parents TEXT NOT NULL);
    CREATE INDEX builds_image ON builds (image, built_at);
    """,
    """
    CREATE TABLE baselines (
        image TEXT NOT NULL, parent TEXT NOT NULL, digest TEXT NOT NULL, since TEXT NOT NULL,
        PRIMARY KEY (image, parent));
    CREATE TABLE manifest_notes (digest TEXT PRIMARY KEY, annotations TEXT NOT NULL);
    """,
    """
    ALTER TABLE builds ADD COLUMN key TEXT;
    CREATE INDEX builds_key ON builds (key);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT, started TEXT NOT NULL,
        finished TEXT, status TEXT NOT NULL, options TEXT NOT NULL);
    CREATE TABLE run_nodes (
        run TEXT NOT NULL, node TEXT NOT NULL, wave INTEGER NOT NULL, reason TEXT NOT NULL,
        detail TEXT NOT NULL, chain TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, started TEXT, finished TEXT, digest TEXT,
        log TEXT, key TEXT, error TEXT, PRIMARY KEY (run, node));
    """,
    """
    ALTER TABLE builds ADD COLUMN source TEXT;
    """,
    """
    CREATE TABLE gate_results (
        run TEXT NOT NULL, node TEXT NOT NULL, gate TEXT NOT NULL, digest TEXT NOT NULL,
        status TEXT NOT NULL, summary TEXT NOT NULL, findings TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (run, node, gate));
    CREATE TABLE deploys (
        run TEXT NOT NULL, ring TEXT NOT NULL, workload TEXT NOT NULL, name TEXT NOT NULL,
        node TEXT NOT NULL, reference TEXT NOT NULL, deployer TEXT NOT NULL,
        status TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (run, ring, workload));
    CREATE TABLE rings (
        run TEXT NOT NULL, ring TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL,
        at TEXT NOT NULL, PRIMARY KEY (run, ring));
    """,
    """
    CREATE TABLE run_processes (
        run TEXT NOT NULL, node TEXT NOT NULL, pgid INTEGER NOT NULL, started INTEGER NOT NULL,
        boot TEXT NOT NULL, PRIMARY KEY (run, pgid, started));
    """,
    """
    CREATE TABLE held (
        run TEXT NOT NULL, node TEXT NOT NULL, workload TEXT NOT NULL, digest TEXT NOT NULL,
        reason TEXT NOT NULL, cause TEXT NOT NULL, name TEXT NOT NULL, ring TEXT NOT NULL,
        at TEXT NOT NULL, PRIMARY KEY (run, node, workload));
    """,
    """
    CREATE TABLE scans (
        digest TEXT PRIMARY KEY, top TEXT NOT NULL, ref TEXT NOT NULL, platform TEXT NOT NULL,
        at TEXT NOT NULL, scanner TEXT NOT NULL, layers TEXT NOT NULL, base TEXT,
        base_digest TEXT, base_layers INTEGER NOT NULL);
    CREATE INDEX scans_top ON scans (top);
    CREATE TABLE findings (
        digest TEXT NOT NULL, id TEXT NOT NULL, package TEXT NOT NULL, installed TEXT NOT NULL,
        fixed TEXT NOT NULL, severity TEXT NOT NULL, layer TEXT NOT NULL,
        first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        PRIMARY KEY (digest, id, package, installed));
    CREATE INDEX findings_id ON findings (id);
    CREATE TABLE scan_tops (
        top TEXT NOT NULL, digest TEXT NOT NULL, platform TEXT NOT NULL,
        PRIMARY KEY (top, digest));
    CREATE TABLE layer_lists (
        digest TEXT PRIMARY KEY, platform TEXT NOT NULL, diff_ids TEXT NOT NULL);
    CREATE TABLE vuln_fixes (
        run TEXT NOT NULL, node TEXT NOT NULL, id TEXT NOT NULL, package TEXT NOT NULL,
        installed TEXT NOT NULL, fixed TEXT NOT NULL, status TEXT NOT NULL, after TEXT,
        still TEXT, scanner TEXT, at TEXT NOT NULL, PRIMARY KEY (run, node, id, package));
    CREATE TABLE exposures (
        id TEXT NOT NULL, opened TEXT NOT NULL, digest TEXT NOT NULL, ref TEXT NOT NULL,
        closed TEXT, run TEXT, PRIMARY KEY (id, opened));
    """,
    """
    CREATE TABLE freshness (
        node TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        detail TEXT NOT NULL, chain TEXT NOT NULL, digest TEXT, since TEXT, at TEXT NOT NULL);
    CREATE TABLE counters (
        name TEXT NOT NULL, label TEXT NOT NULL, value INTEGER NOT NULL,
        PRIMARY KEY (name, label));
    """,
    # when the whole graph was last checked: a push's check of its part never moves it
    "CREATE TABLE whole_checks (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);",
    # a run asks, of each image it builds on, whether that digest failed a gate
    "CREATE INDEX gate_results_by_image ON gate_results (node, digest);",
)
SCRATCH = "scratch"  # the workspace folder holding each run's build contexts while it builds
# counters: /metrics serves each as graphbuild_<name>_total, one series per label
REGISTRY_REQUESTS = "registry_requests"  # per registry host, token servers excluded
REGISTRY_ERRORS = "registry_errors"  # per host: requests with no answer, a 429 or a 5xx
WEBHOOK_EVENTS = "webhook_events"  # per outcome: accepted, ignored, refused
BUILDS = "builds"  # per outcome, counted as each image's build reaches it (update_node)


# Every status graphbuild records is a member of one of these, so "failed" of a gate cannot be
# compared with "failed" of a deploy by mistake. StrEnum: each member is its string, so JSON,
# SQLite and text output read exactly the words they did.
class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class NodeStatus(StrEnum):
    """An image in a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    BLOCKED = "blocked"


OUTCOMES = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED, NodeStatus.FAILED,
                      NodeStatus.BLOCKED})  # how an image's build ends  # fmt: skip


class GateStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


class DeployStatus(StrEnum):
    DEPLOYED = "deployed"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class RingStatus(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    MANUAL = "manual"
    NOTHING_TO_DEPLOY = "nothing-to-deploy"


@dataclass(frozen=True)
class Freshness:
    """What the last check said of a node (an image or a base): what the web view and
    /metrics show without asking a registry again."""

    node: str
    kind: str  # image | external (indexdb's node kinds)
    status: str  # an image's up-to-date | stale | missing | unknown; a base's changed | ...
    reason: str
    detail: str
    chain: list[str]
    digest: str | None
    since: str | None  # a base's: when its tag was first seen at `digest`
    at: str  # when the check ran


@dataclass(frozen=True)
class Seen:
    digest: str
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class Build:
    image: str
    digest: str
    built_at: str
    parents: dict[str, str]  # base node id -> the digest it had when this was built
    run_id: str | None = None
    key: str | None = None  # the content address: source and parents' digests (keys.py)
    source: str | None = None  # the image's own inputs: Dockerfile, context, options


@dataclass
class RunNode:
    """One image in a run, as it stands: recorded at every change, so a crash loses nothing."""

    node: str
    wave: int
    reason: str
    detail: str
    chain: list[str]
    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started: str | None = None
    finished: str | None = None
    digest: str | None = None
    log: str | None = None
    key: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class GateRecord:
    node: str
    gate: str
    digest: str
    status: GateStatus
    summary: str
    findings: list[dict[str, Any]]  # gates.Finding, as JSON


@dataclass(frozen=True)
class DeployRecord:
    ring: str
    workload: str  # Workload.id
    name: str  # what people call it
    node: str
    reference: str  # name:tag@digest it now runs
    deployer: str
    status: DeployStatus
    detail: str


@dataclass(frozen=True)
class RingRecord:
    ring: str
    status: RingStatus
    detail: str


@dataclass(frozen=True)
class HeldRecord:
    """An image a run built but held back from deploy, or a workload that runs one and so
    stays on its old digest: what was not deployed must be on record, not only printed."""

    node: str
    digest: str  # the digest that was not deployed
    reason: str
    cause: str  # the image whose gate failed or has not run: `node` itself, or what it is built on
    workload: str | None = None  # Workload.id; None: the image itself
    name: str | None = None  # the workload as people call it
    ring: str | None = None


@dataclass(frozen=True)
class Scan:
    """One digest's last good scan, and which of its layers came from its base."""

    digest: str  # the image manifest scanned (a platform's, for a multi-arch image)
    top: str  # the digest its tag pointed at: the index, or `digest` itself
    ref: str  # the reference it was scanned as
    platform: str  # "" when the tag names a single image manifest
    at: str
    scanner: str  # e.g. "trivy 0.58.0", "grype 0.86.0 db 2026-12-05T01:02:03Z"
    layers: list[str]  # diff ids, base first
    base: str | None = None  # the graph node its first `base_layers` layers are
    base_digest: str | None = None
    base_layers: int = 0


@dataclass(frozen=True)
class Found:
    """A finding as stored for a digest."""

    digest: str
    id: str
    severity: str
    package: str
    installed: str
    fixed: str
    layer: str
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class FixAttempt:
    """A rebuild made to fix a finding in an image's own layers, and whether it did."""

    run: str
    node: str
    id: str
    package: str
    installed: str
    fixed: str
    status: str  # pending | fixed | not-fixed
    after: str | None  # the digest the rebuild made
    still: str | None  # the version still installed after it, when not fixed
    scanner: str | None  # the scanner (version, database) that judged it
    at: str


@dataclass(frozen=True)
class Exposure:
    """How long a vulnerability ran in a deployed image: from the first scan that saw it
    there to the deploy (or scan) that found it in none."""

    id: str
    opened: str
    digest: str
    ref: str
    closed: str | None
    run: str | None  # the run whose deploy closed it


@dataclass
class Run:
    id: str
    kind: str  # sweep | rebuild
    reason: str | None
    started: str
    finished: str | None
    status: RunStatus
    options: dict[str, Any]  # what the run was asked to do, for `resume`
    nodes: list[RunNode]
    gates: list[GateRecord] = field(default_factory=list)
    deploys: list[DeployRecord] = field(default_factory=list)
    rings: list[RingRecord] = field(default_factory=list)
    held: list[HeldRecord] = field(default_factory=list)
    exposures: list[Exposure] = field(default_factory=list)  # those its deploy ended


def now() -> str:
    """A UTC timestamp; microseconds, so two answers in one second keep their order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class State:
    """The workspace's state.db; one per process, used from one thread."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / STATE
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.Error as err:
            if damaged(err):
                raise StateDamaged(self.path, err) from None
            raise unusable(err, workspace) or GraphbuildError(f"{self.path}: {err}") from None

    @classmethod
    def reader(cls, workspace: Path) -> State:
        """state.db opened read-only, never migrated nor locked for writing: how the web view
        and the queries read while sweeps write. The schema must be this graphbuild's."""
        self = cls.__new__(cls)
        self.path = workspace / STATE
        try:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                      timeout=30, check_same_thread=False)  # fmt: skip
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as err:
            raise GraphbuildError(f"{self.path}: {err}") from None
        if version != len(MIGRATIONS):
            self.db.close()
            raise GraphbuildError(
                f"{self.path} has schema {version}, not {len(MIGRATIONS)}: "
                "run a graphbuild command that writes it"
            )
        return self

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def _migrate(self) -> None:
        """Each step in its own IMMEDIATE transaction that re-reads the version inside it:
        two first runs at once migrate once, and a failed step leaves the old schema."""
        while True:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise GraphbuildError(
                        f"{self.path} was written by a newer graphbuild (schema {version}); "
                        "upgrade graphbuild"
                    )
                if version == len(MIGRATIONS):
                    self.db.execute("COMMIT")
                    return
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # -- digests

    def latest(self, ref: str, platform: str = "") -> Seen | None:
        """The digest `ref` resolved to most recently (for `platform`, "" for the tag itself)."""
        row = self.db.execute(
            "SELECT digest, first_seen, last_seen FROM digests WHERE ref = ? AND platform = ? "
            "ORDER BY last_seen DESC, rowid DESC LIMIT 1",
            (ref, platform),
        ).fetchone()
        return Seen(*row) if row else None

    def observe(self, seen: Iterable[tuple[str, str, str]], at: str | None = None) -> None:
        """Record (ref, platform, digest) answers. first_seen is when the reference began
        pointing at the digest this time: a tag that moves back starts a new span."""
        at = at or now()
        with self.db:
            for ref, platform, digest in seen:
                current = self.latest(ref, platform)
                if current is not None and current.digest == digest:
                    self.db.execute(
                        "UPDATE digests SET last_seen = ? WHERE ref = ? AND platform = ? "
                        "AND digest = ?",
                        (at, ref, platform, digest),
                    )
                else:
                    self.db.execute(
                        "INSERT INTO digests VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                        "(ref, platform, digest) DO UPDATE SET first_seen = ?, last_seen = ?",
                        (ref, platform, digest, at, at, at, at),
                    )

    def children(self, digests: Iterable[str]) -> dict[str, dict[str, str]]:
        """Known platform children of index digests: an index never changes its children."""
        found: dict[str, dict[str, str]] = {}
        for digest in set(digests):
            rows = self.db.execute(
                "SELECT platform, child FROM index_children WHERE digest = ?", (digest,)
            )
            for platform, child in rows:
                found.setdefault(digest, {})[platform] = child
        return found

    def remember_children(self, digest: str, children: Mapping[str, str]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO index_children VALUES (?, ?, ?)",
                ((digest, platform, child) for platform, child in children.items()),
            )

    def annotations(self, digests: Iterable[str]) -> dict[str, dict[str, str]]:
        """The annotations of manifests read before (a manifest never changes them)."""
        found = {}
        for digest in set(digests):
            row = self.db.execute(
                "SELECT annotations FROM manifest_notes WHERE digest = ?", (digest,)
            ).fetchone()
            if row:
                found[digest] = json.loads(row[0])
        return found

    def remember_annotations(self, found: Mapping[str, Mapping[str, str]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO manifest_notes VALUES (?, ?)",
                ((digest, json.dumps(dict(n), sort_keys=True)) for digest, n in found.items()),
            )

    # -- baselines: what each image is known (or first assumed) to be built on

    def baselines(self) -> dict[tuple[str, str], str]:
        rows = self.db.execute("SELECT image, parent, digest FROM baselines")
        return {(image, parent): digest for image, parent, digest in rows}

    def set_baselines(self, rows: Iterable[tuple[str, str, str]], at: str | None = None) -> None:
        """(image, parent, digest): the parent digest the image is built on, as far as known.

        Only evidence (annotations, a build) moves a baseline; a check only sets the
        first one, so a change stays visible until the image is rebuilt.
        """
        at = at or now()
        with self.db:
            self.db.executemany(
                "INSERT INTO baselines VALUES (?, ?, ?, ?) ON CONFLICT (image, parent) "
                "DO UPDATE SET digest = excluded.digest, since = excluded.since "
                "WHERE digest != excluded.digest",
                ((image, parent, digest, at) for image, parent, digest in rows),
            )

    # -- builds

    def record_build(
        self,
        image: str,
        digest: str,
        parents: Mapping[str, str],
        run_id: str | None = None,
        at: str | None = None,
        key: str | None = None,
        source: str | None = None,
    ) -> None:
        at = at or now()
        with self.db:
            self.db.execute(
                "INSERT INTO builds (image, digest, built_at, run_id, parents, key, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (image, digest, at, run_id, json.dumps(dict(parents), sort_keys=True), key, source),
            )
        self.set_baselines(((image, parent, d) for parent, d in parents.items()), at)

    # -- runs: written as they happen, read by `runs` and `resume`

    def create_run(
        self, kind: str, reason: str | None, options: dict[str, Any], nodes: list[RunNode]
    ) -> str:
        started = now()
        stamp = started[:19].replace("-", "").replace(":", "").replace("T", "-")
        run = f"{stamp}-{os.urandom(2).hex()}"  # sorts by time, readable: 20261128-203000-9f2c
        with self.db:
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (
                    run,
                    kind,
                    reason,
                    started,
                    RunStatus.RUNNING,
                    json.dumps(options, sort_keys=True),
                ),
            )
            self.db.executemany(
                "INSERT INTO run_nodes (run, node, wave, reason, detail, chain, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((run, n.node, n.wave, n.reason, n.detail, json.dumps(n.chain), n.status)
                 for n in nodes),
            )  # fmt: skip
        return run

    def update_node(self, run: str, node: RunNode) -> None:
        """Record the node as it stands; an outcome it reaches is counted (BUILDS) once, in
        the same transaction, so a resume that turns `failed` into `succeeded` adds one
        success and takes nothing back."""
        with self.db:
            before = self.db.execute(
                "SELECT status FROM run_nodes WHERE run = ? AND node = ?", (run, node.node)
            ).fetchone()
            if node.status in OUTCOMES and (before is None or before[0] != node.status):
                self.db.execute(_COUNT, (BUILDS, str(node.status), 1))
            self.db.execute(
                "UPDATE run_nodes SET status = ?, attempts = ?, started = ?, finished = ?, "
                "digest = ?, log = ?, key = ?, error = ?, reason = ?, detail = ? "
                "WHERE run = ? AND node = ?",
                (node.status, node.attempts, node.started, node.finished, node.digest,
                 node.log, node.key, node.error, node.reason, node.detail, run, node.node),
            )  # fmt: skip

    def finish_run(self, run: str, status: RunStatus) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET status = ?, finished = ? WHERE id = ?", (status, now(), run)
            )

    def rebuilt_since(self, started: str, nodes: Iterable[str]) -> list[str]:
        """Runs started after `started` that built any of `nodes`: a resume of an older run
        would push images on older digests over theirs."""
        wanted = set(nodes)
        rows = self.db.execute(
            "SELECT runs.id, run_nodes.node FROM runs JOIN run_nodes ON run_nodes.run = runs.id "
            "WHERE runs.started > ? AND run_nodes.status = ? ORDER BY runs.started",
            (started, NodeStatus.SUCCEEDED),
        )
        return list(dict.fromkeys(run for run, node in rows if node in wanted))

    def durations(self) -> dict[str, float]:
        """Seconds each image's last successful build took: what the scheduler weighs."""
        rows = self.db.execute(
            "SELECT node, started, finished FROM run_nodes WHERE status = ? "
            "AND started IS NOT NULL AND finished IS NOT NULL ORDER BY finished",
            (NodeStatus.SUCCEEDED,),
        )
        return {
            node: (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
            for node, start, end in rows
        }

    def abandon_runs(self) -> list[str]:
        """Runs still marked running when the sweep lock is free died with their process:
        marked interrupted, for `resume`, once what they left behind is gone."""
        self.end_leftovers()
        with self.db:
            running = (RunStatus.RUNNING,)
            dead = [r for (r,) in self.db.execute("SELECT id FROM runs WHERE status = ?", running)]
            self.db.execute(
                "UPDATE runs SET status = ? WHERE status = ?", (RunStatus.INTERRUPTED, *running)
            )
            self.db.execute(
                "UPDATE run_nodes SET status = ? WHERE status = ?",
                (NodeStatus.PENDING, NodeStatus.RUNNING),
            )
        return dead

    def end_leftovers(self) -> None:
        """What runs of a killed graphbuild left behind: their builders' process groups are
        killed (a helper must not push over a tag later) and their scratch folders removed.
        The caller holds the sweep lock, so no live run owns either."""
        groups = self.db.execute("SELECT pgid, started, boot FROM run_processes").fetchall()
        for pgid, started, boot in groups:
            process.end_group(process.Group(pgid, started, boot))
        with self.db:
            self.db.execute("DELETE FROM run_processes")
        shutil.rmtree(self.path.parent / SCRATCH, ignore_errors=True)

    def reopen_run(self, run: str) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET status = ?, finished = NULL WHERE id = ?", (RunStatus.RUNNING, run)
            )

    def runs(self, limit: int = 50) -> list[Run]:
        rows = self.db.execute(
            "SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [run for (run_id,) in rows if (run := self.run(run_id, nodes=False))]

    def run(self, run_id: str, nodes: bool = True) -> Run | None:
        row = self.db.execute(
            "SELECT id, kind, reason, started, finished, status, options FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        found = []
        if nodes:
            for r in self.db.execute(
                "SELECT node, wave, reason, detail, chain, status, attempts, started, finished, "
                "digest, log, key, error FROM run_nodes WHERE run = ? ORDER BY wave, node",
                (run_id,),
            ):
                found.append(
                    RunNode(r[0], r[1], r[2], r[3], json.loads(r[4]), NodeStatus(r[5]), *r[6:])
                )
        run = Run(
            row[0], row[1], row[2], row[3], row[4], RunStatus(row[5]), json.loads(row[6]), found
        )
        if nodes:
            run.gates = [
                GateRecord(r[0], r[1], r[2], GateStatus(r[3]), r[4], json.loads(r[5]))
                for r in self.db.execute(
                    "SELECT node, gate, digest, status, summary, findings FROM gate_results "
                    "WHERE run = ? ORDER BY node, gate",
                    (run_id,),
                )
            ]
            run.deploys = [
                DeployRecord(r[0], r[1], r[2], r[3], r[4], r[5], DeployStatus(r[6]), r[7])
                for r in self.db.execute(
                    "SELECT ring, workload, name, node, reference, deployer, status, detail "
                    "FROM deploys WHERE run = ? ORDER BY at, workload",
                    (run_id,),
                )
            ]
            run.rings = [
                RingRecord(r[0], RingStatus(r[1]), r[2])
                for r in self.db.execute(
                    "SELECT ring, status, detail FROM rings WHERE run = ? ORDER BY at", (run_id,)
                )
            ]
            run.held = [
                HeldRecord(*r[:4], *(value or None for value in r[4:]))
                for r in self.db.execute(
                    "SELECT node, digest, reason, cause, workload, name, ring FROM held "
                    "WHERE run = ? ORDER BY node, workload",
                    (run_id,),
                )
            ]
            run.exposures = [
                Exposure(*r)
                for r in self.db.execute(
                    "SELECT * FROM exposures WHERE run = ? ORDER BY id, opened", (run_id,)
                )
            ]
        return run

    # -- validation and deploys of a run's images

    def record_gate(self, run: str, record: GateRecord) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO gate_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run, record.node, record.gate, record.digest, record.status, record.summary,
                 json.dumps(record.findings), now()),
            )  # fmt: skip

    def record_deploy(self, run: str, record: DeployRecord) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO deploys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run, record.ring, record.workload, record.name, record.node, record.reference,
                 record.deployer, record.status, record.detail, now()),
            )  # fmt: skip

    def record_ring(self, run: str, record: RingRecord) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO rings VALUES (?, ?, ?, ?, ?)",
                (run, record.ring, record.status, record.detail, now()),
            )

    def record_held(self, run: str, records: Iterable[HeldRecord]) -> None:
        """What the run holds back now, in place of what an earlier judgement of it held (a
        resume or `deploy` judges again): each image and workload once, and none that passes."""
        at = now()
        with self.db:
            self.db.execute("DELETE FROM held WHERE run = ?", (run,))
            self.db.executemany(
                "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((run, r.node, r.workload or "", r.digest, r.reason, r.cause, r.name or "",
                  r.ring or "", at) for r in records),
            )  # fmt: skip

    def failed_gates(self, node: str, digest: str) -> list[str]:
        """The gates whose latest result on this image digest, in any run, is not a pass."""
        return list(self.failed_gates_of({node: digest}).get(node, {}))

    def failed_gates_of(self, images: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """`failed_gates` of many images (node -> digest), each with the run that judged it
        last (node -> gate -> run): a run asks it of every image it builds on, and names
        the run that can judge it again."""
        found: dict[str, dict[str, str]] = {}
        for node, digest in images.items():
            latest: dict[str, tuple[GateStatus, str]] = {}
            for gate, status, run in self.db.execute(
                "SELECT gate, status, run FROM gate_results WHERE node = ? AND digest = ? "
                "ORDER BY at",
                (node, digest),
            ):
                latest[gate] = (GateStatus(status), run)
            if failed := {g: run for g, (s, run) in latest.items() if s != GateStatus.PASSED}:
                found[node] = failed
        return found

    def stopped_before_gates(self, images: Mapping[str, str]) -> dict[str, set[str]]:
        """Of many images (node -> digest), those whose digest was last built by a run that
        was then stopped, before validating it (an interrupted run runs no gates after its
        builds): node -> the gates that have judged the digest all the same."""
        found: dict[str, set[str]] = {}
        for node, digest in images.items():
            row = self.db.execute(
                "SELECT r.status FROM builds b JOIN runs r ON r.id = b.run_id WHERE b.image = ? "
                "AND b.digest = ? ORDER BY b.id DESC LIMIT 1",
                (node, digest),
            ).fetchone()
            if row and row[0] == RunStatus.INTERRUPTED:
                judged = self.db.execute(
                    "SELECT DISTINCT gate FROM gate_results WHERE node = ? AND digest = ?",
                    (node, digest),
                )
                found[node] = {gate for (gate,) in judged}
        return found

    def gates_on(self, node: str, digest: str) -> list[dict[str, Any]]:
        """Each gate's latest result on this image digest, in any run: the image page's."""
        rows = self.db.execute(
            "SELECT gate, status, summary, run, at FROM gate_results WHERE node = ? AND "
            "digest = ? ORDER BY at",
            (node, digest),
        )
        latest = {r[0]: dict(zip(("gate", "status", "summary", "run", "at"), r, strict=True))
                  for r in rows}  # fmt: skip
        return [latest[gate] for gate in sorted(latest)]

    def built_digests(self, image: str) -> set[str]:
        """Every digest graphbuild pushed for an image: how a digest-only reference in a
        manifest is known to run it."""
        rows = self.db.execute("SELECT digest FROM builds WHERE image = ?", (image,))
        return {digest for (digest,) in rows}

    def build_of(self, image: str, digest: str) -> Build | None:
        """graphbuild's record of the build that produced `image` at `digest`, if it made it."""
        row = self.db.execute(
            "SELECT image, digest, built_at, parents, run_id, key, source FROM builds "
            "WHERE image = ? AND digest = ? ORDER BY built_at DESC, id DESC LIMIT 1",
            (image, digest),
        ).fetchone()
        return None if row is None else _build(row)

    def last_built(self, images: Iterable[str]) -> dict[str, str]:
        """The digest of each image's latest build graphbuild recorded (those it built)."""
        found = {}
        for image in set(images):
            row = self.db.execute(
                "SELECT digest FROM builds WHERE image = ? ORDER BY built_at DESC, id DESC LIMIT 1",
                (image,),
            ).fetchone()
            if row:
                found[image] = str(row[0])
        return found

    def builds(self, image: str) -> list[Build]:
        """Every build graphbuild recorded for an image, oldest first: its history."""
        rows = self.db.execute(
            "SELECT image, digest, built_at, parents, run_id, key, source FROM builds "
            "WHERE image = ? ORDER BY id",
            (image,),
        )
        return [_build(row) for row in rows]

    # -- vulnerabilities: scans per digest, fixes tried, exposure

    def scan_of(self, digest: str) -> Scan | None:
        row = self.db.execute(_SCANS + " WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else _scan(row)

    def scans(self) -> list[Scan]:
        return [_scan(row) for row in self.db.execute(_SCANS)]

    def scans_by_top(self) -> dict[str, list[Scan]]:
        """The scans of each digest a tag or a reference pointed at (an index: its platforms'
        scans, each under the platform it is there; a manifest: its own)."""
        found: dict[str, list[Scan]] = {}
        for row in self.db.execute(
            "SELECT scan_tops.top, scan_tops.platform, scans.digest, scans.top, ref, "
            "scans.platform, at, scanner, layers, base, base_digest, base_layers "
            "FROM scans JOIN scan_tops ON scan_tops.digest = scans.digest"
        ):
            top, platform, *rest = row
            scan = _scan(tuple(rest))
            found.setdefault(top, []).append(replace(scan, top=top, platform=platform))
        return found

    def point(self, top: str, digest: str, platform: str) -> None:
        """`top` (what a reference points at) holds the image manifest `digest` for
        `platform`: a digest scanned once serves every index that holds it."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO scan_tops VALUES (?, ?, ?)", (top, digest, platform)
            )

    def record_scan(self, scan: Scan, found: Iterable[tuple[str, str, str, str, str, str]]) -> None:
        """A good scan of `scan.digest`: (id, severity, package, installed, fixed, layer) each.
        A finding seen before keeps its first_seen; one not seen now keeps its old last_seen,
        so the digest's current findings are those seen at its last scan."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scan.digest, scan.top, scan.ref, scan.platform, scan.at, scan.scanner,
                 json.dumps(scan.layers), scan.base, scan.base_digest, scan.base_layers),
            )  # fmt: skip
            self.db.executemany(
                "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (digest, id, package, installed) DO UPDATE SET "
                "fixed = excluded.fixed, severity = excluded.severity, layer = excluded.layer, "
                "last_seen = excluded.last_seen",
                ((scan.digest, id_, package, installed, fixed, severity, layer, scan.at, scan.at)
                 for id_, severity, package, installed, fixed, layer in found),
            )  # fmt: skip

    def findings(self, digest: str | None = None, vuln: str | None = None) -> list[Found]:
        """The findings of each digest's last scan: of one digest, of one vulnerability id, or
        all."""
        rows = self.db.execute(
            "SELECT findings.digest, id, severity, package, installed, fixed, layer, first_seen, "
            "last_seen FROM findings JOIN scans ON scans.digest = findings.digest "
            "WHERE findings.last_seen = scans.at AND (?1 IS NULL OR findings.digest = ?1) "
            "AND (?2 IS NULL OR id = ?2) ORDER BY id, findings.digest, package",
            (digest, vuln),
        )
        return [Found(*row) for row in rows]

    def layer_list(self, digest: str) -> tuple[str, list[str]] | None:
        """An image manifest's platform (as its config says) and layers (diff ids)."""
        row = self.db.execute(
            "SELECT platform, diff_ids FROM layer_lists WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else (row[0], list(json.loads(row[1])))

    def remember_layers(self, digest: str, platform: str, diff_ids: list[str]) -> None:
        """A manifest's layers never change: read once per digest."""
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO layer_lists VALUES (?, ?, ?)",
                (digest, platform, json.dumps(diff_ids)),
            )

    def record_fix_attempts(self, attempts: Iterable[FixAttempt]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vuln_fixes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((a.run, a.node, a.id, a.package, a.installed, a.fixed, a.status, a.after,
                  a.still, a.scanner, a.at) for a in attempts),
            )  # fmt: skip

    def fix_attempts(self, run: str | None = None, node: str | None = None) -> list[FixAttempt]:
        """Oldest first: of one run, of one image, or all."""
        rows = self.db.execute(
            "SELECT * FROM vuln_fixes WHERE (?1 IS NULL OR run = ?1) AND (?2 IS NULL OR node = ?2) "
            "ORDER BY at, rowid",
            (run, node),
        )
        return [FixAttempt(*row) for row in rows]

    def exposures(self, vuln: str | None = None) -> list[Exposure]:
        rows = self.db.execute(
            "SELECT * FROM exposures WHERE ?1 IS NULL OR id = ?1 ORDER BY opened", (vuln,)
        )
        return [Exposure(*row) for row in rows]

    def open_exposure(self, vuln: str, at: str, digest: str, ref: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO exposures VALUES (?, ?, ?, ?, NULL, NULL)",
                (vuln, at, digest, ref),
            )

    def close_exposure(self, vuln: str, at: str, run: str | None) -> None:
        with self.db:
            self.db.execute(
                "UPDATE exposures SET closed = ?, run = ? WHERE id = ? AND closed IS NULL",
                (at, run, vuln),
            )

    # -- what the last check found, and counters for /metrics

    def record_freshness(self, rows: Iterable[Freshness], whole: bool = True) -> None:
        """The last check's answer for every node, in place of the one before: a check asks
        about the whole graph (design rule 2), so a node it did not name has left it. Not
        `whole`: only these nodes' rows change (a push's check of its part, what a run
        built); the time of the last whole check stays."""
        rows = list(rows)
        with self.db:
            if whole:
                self.db.execute("DELETE FROM freshness")
                at = max((f.at for f in rows), default=now())
                self.db.execute("INSERT OR REPLACE INTO whole_checks VALUES (1, ?)", (at,))
            self.db.executemany(
                "INSERT OR REPLACE INTO freshness VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((f.node, f.kind, f.status, f.reason, f.detail, json.dumps(f.chain), f.digest,
                  f.since, f.at) for f in rows),
            )  # fmt: skip

    def last_whole_check(self) -> str | None:
        """When a check last asked about the whole graph (`check`, `plan`, a whole sweep)."""
        row = self.db.execute("SELECT at FROM whole_checks").fetchone()
        return None if row is None else str(row[0])

    def freshness(self, node: str | None = None) -> dict[str, Freshness]:
        rows = self.db.execute(
            "SELECT node, kind, status, reason, detail, chain, digest, since, at FROM freshness "
            "WHERE ?1 IS NULL OR node = ?1",
            (node,),
        )
        return {r[0]: Freshness(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])
                for r in rows}  # fmt: skip

    def count(self, name: str, counts: Mapping[str, int]) -> None:
        """Add to the counters `name` (one per label) that /metrics serves as `_total`s."""
        with self.db:
            self.db.executemany(_COUNT, ((name, label, n) for label, n in counts.items() if n))

    def counters(self, name: str) -> dict[str, int]:
        rows = self.db.execute("SELECT label, value FROM counters WHERE name = ?", (name,))
        return dict(rows.fetchall())


_COUNT = (
    "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (name, label) "
    "DO UPDATE SET value = value + excluded.value"
)
_SCANS = (
    "SELECT digest, top, ref, platform, at, scanner, layers, base, base_digest, base_layers "
    "FROM scans"
)


def _scan(row: tuple[Any, ...]) -> Scan:
    digest, top, ref, platform, at, scanner, layers, base, base_digest, base_layers = row
    return Scan(digest, top, ref, platform, at, scanner, json.loads(layers), base, base_digest,
                base_layers)  # fmt: skip


def _build(row: tuple[Any, ...]) -> Build:
    """A `builds` row, selected as the queries above select it."""
    return Build(row[0], row[1], row[2], json.loads(row[3]), *row[4:])


def add_counts(workspace: Path, counts: Mapping[str, Mapping[str, int]]) -> None:
    """Add to /metrics' counters ({name: {label: n}}) on the side: within two seconds or not
    at all, saying so, never raising. A count must not delay a webhook's reply past its
    deadline, nor replace an error already on its way up (a registry client closing)."""
    rows = [(name, label, n) for name, per in counts.items() for label, n in per.items() if n]
    if not rows:
        return
    try:
        if not (workspace / STATE).exists():
            State(workspace).db.close()  # the first run of a workspace: create it
        with closing(sqlite3.connect(workspace / STATE, timeout=2)) as db, db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
                db.executemany(_COUNT, rows)
    except (sqlite3.Error, GraphbuildError, OSError) as err:
        note(f"{workspace / STATE}: could not add to the counters /metrics serves: {err}")


def _version(path: Path) -> int | None:
    """state.db's schema version, read without writing; None when there is none yet (no
    file, or an empty one a first run has not written)."""
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error as err:
        raise GraphbuildError(f"{path}: cannot read it: {err}") from None
    return None if version == 0 and tables == 0 else version


def current(workspace: Path) -> int | None:
    """Refuse a state.db an older graphbuild wrote, without migrating it: what a reader
    that must not write (the web view) says at its start, and at each read (`reading`).
    Its schema version, None when there is none yet."""
    path = workspace / STATE
    version = _version(path)
    if version is not None and version < len(MIGRATIONS):
        raise GraphbuildError(
            f"{path} has schema {version}, an older graphbuild's; this one reads schema "
            f"{len(MIGRATIONS)}. The web view never migrates it: serve with the graphbuild "
            "that writes it, or let this one's sweep migrate it first"
        )
    return version


def migrate(workspace: Path) -> None:
    """Bring an existing state.db to this graphbuild's schema: what a command of the CLI
    does before it reads (the web view never does, `current`)."""
    version = _version(workspace / STATE)
    if version is not None and version < len(MIGRATIONS):
        State(workspace).db.close()


def reading(workspace: Path) -> State | None:
    """state.db for queries, read-only (State.reader), never migrated; None before any run
    wrote one. One an older graphbuild wrote is refused (`current`): the CLI migrates it
    first (`migrate`), the web view answers 503."""
    return None if current(workspace) is None else State.reader(workspace)


def find_build(workspace: Path, key: str) -> Build | None:
    """build_with_key from any thread: a short read-only connection of its own."""
    db = read_only(workspace / STATE)
    try:
        row = db.execute(
            "SELECT image, digest, built_at, parents, run_id, key, source FROM builds "
            "WHERE key = ? "
            "ORDER BY built_at DESC, id DESC LIMIT 1",
            (key,),
        ).fetchone()
    finally:
        db.close()
    return _build(row) if row else None


def built_here(workspace: Path, digest: str) -> bool:
    """Did graphbuild push this digest? From any thread, read-only: `listen` asks for every
    push, and its own pushes come back as events."""
    if not (workspace / STATE).exists():
        return False
    with closing(read_only(workspace / STATE)) as db:
        row = db.execute("SELECT 1 FROM builds WHERE digest = ? LIMIT 1", (digest,)).fetchone()
    return row is not None


def scratch(workspace: Path, run: str) -> Path:
    """Where run `run` writes what it builds from; removed as each build ends, and by the
    next run should this one be killed."""
    return workspace / SCRATCH / run


def note_group(workspace: Path, run: str, node: str, group: process.Group) -> None:
    """A builder's process group, recorded as it starts, from its build's thread: if
    graphbuild dies, the next run kills what is left of it (`abandon_runs`)."""
    with closing(sqlite3.connect(workspace / STATE, timeout=30)) as db, db:
        db.execute(
            "INSERT OR REPLACE INTO run_processes VALUES (?, ?, ?, ?, ?)",
            (run, node, group.pgid, group.started, group.boot),
        )


def drop_group(workspace: Path, run: str, group: process.Group) -> None:
    """The group ended with its command: nothing of it to kill. A row this fails to delete
    is harmless: end_group finds nothing left of that group (and never another's)."""
    with (
        suppress(sqlite3.Error),
        closing(sqlite3.connect(workspace / STATE, timeout=30)) as db,
        db,
    ):
        db.execute(
            "DELETE FROM run_processes WHERE run = ? AND pgid = ? AND started = ?",
            (run, group.pgid, group.started),
        )


@contextmanager
def sweep_lock(
    workspace: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Only one sweep at a time: wait for the running one, or say who holds it and stop.

    Whoever takes it first ends what a killed graphbuild left running, before any sync,
    check or build: nothing of an earlier run may push while this one looks.
    """
    with filelock.exclusive(workspace / "sweep.lock", on_wait, wait):
        if (workspace / STATE).exists():
            with State(workspace) as state:
                state.end_leftovers()
        yield
