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
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from graphbuild import filelock, report
from graphbuild.errors import GraphbuildError

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
)


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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class State:
    """The workspace's state.db; one per process, used from one thread."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / "state.db"
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.Error as err:
            raise GraphbuildError(f"{self.path}: {err}") from None

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise GraphbuildError(
                f"{self.path} was written by a newer graphbuild (schema {version}); upgrade it"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            if version:
                report.note(f"{self.path}: migrating the state to schema {number}")
            # one transaction per step: a failed migration leaves the previous schema intact
            self.db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

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
        """Record (ref, platform, digest) answers; a digest seen again keeps its first_seen."""
        at = at or now()
        with self.db:
            self.db.executemany(
                "INSERT INTO digests VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (ref, platform, digest) DO UPDATE SET last_seen = excluded.last_seen",
                ((ref, platform, digest, at, at) for ref, platform, digest in seen),
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

    # -- builds

    def record_build(
        self,
        image: str,
        digest: str,
        parents: Mapping[str, str],
        run_id: str | None = None,
        at: str | None = None,
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO builds (image, digest, built_at, run_id, parents) "
                "VALUES (?, ?, ?, ?, ?)",
                (image, digest, at or now(), run_id, json.dumps(dict(parents), sort_keys=True)),
            )

    def build_of(self, image: str, digest: str) -> Build | None:
        """graphbuild's record of the build that produced `image` at `digest`, if it made it."""
        row = self.db.execute(
            "SELECT image, digest, built_at, parents, run_id FROM builds "
            "WHERE image = ? AND digest = ? ORDER BY built_at DESC, id DESC LIMIT 1",
            (image, digest),
        ).fetchone()
        if row is None:
            return None
        return Build(row[0], row[1], row[2], json.loads(row[3]), row[4])


@contextmanager
def sweep_lock(workspace: Path, wait: bool = False) -> Iterator[None]:
    """Only one sweep at a time: wait for the running one, or say who holds it and stop."""
    lock = workspace / "sweep.lock"
    with filelock.exclusive(
        lock, lambda who: report.note(f"Waiting for the sweep of {who}."), wait
    ):
        yield
