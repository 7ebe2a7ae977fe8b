"""`graphbuild check`: which bases changed, which images are stale, missing or unknown, and why."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict

import networkx as nx

from graphbuild import detect, errors, graph, report
from graphbuild.commands import ensure
from graphbuild.config import Config
from graphbuild.registry import Registry
from graphbuild.report import short
from graphbuild.state import State
from graphbuild.workspace import STATE

_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


def checked(config: Config, g: nx.DiGraph, concurrency: int = 16) -> detect.Check:
    """Run detection on the stored graph; shared by check, plan, sweep and rebuild."""
    try:
        with (
            State(config.workspace) as state,
            Registry(config.registries, concurrency=concurrency) as registry,
        ):
            return detect.check(g, registry, state, config.mirrors, config.check_timeout)
    except sqlite3.OperationalError as err:  # a state.db held locked by another process 30 s
        if not (getattr(err, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY"):
            raise  # damaged, read-only, full: the workspace guard says what to do
        raise errors.GraphbuildError(f"{config.workspace / STATE}: {err}") from None


def run(config: Config, as_json: bool, concurrency: int) -> int:
    result = checked(config, graph.load(ensure(config)), concurrency)
    if as_json:
        report.emit_json(
            {
                "bases": [asdict(b) for b in result.bases],
                "images": [asdict(i) for i in result.images],
                "counts": result.counts(),
                "requests": result.requests,
                "ratelimits": result.ratelimits,
            }
        )
        return errors.OK
    print("Bases")
    report.table(
        ["BASE", "STATUS", "DIGEST", "SINCE", "IMAGES", "DETAIL"],
        [(short(b.id), b.status, _digest(b.digest), b.since or "", b.images, _short(b.detail))
         for b in result.bases],
    )  # fmt: skip
    print("\nImages")
    report.table(
        ["IMAGE", "STATUS", "REASON", "DETAIL"],
        [(short(i.id), i.status, i.reason, _why(i)) for i in result.images],
    )
    counts = ", ".join(f"{n} {key}" for key, n in sorted(result.counts().items()))
    print(f"\n{counts}; {result.requests} registry requests.")
    for host, left in sorted(result.ratelimits.items()):
        print(f"{host}: {left} pulls left in the rate-limit window.")
    return errors.OK


def _digest(digest: str | None) -> str:
    return _short(digest) if digest else ""


def _short(text: str) -> str:
    """Digests cut to 12 hex digits for people; JSON keeps them whole."""
    return _DIGEST_RE.sub(r"\1…", text)


def _why(image: detect.ImageCheck) -> str:
    detail = _short(image.detail)
    if image.status == detect.STALE and len(image.chain) > 2:
        return f"{detail} [{' <- '.join(short(n) for n in image.chain)}]"
    return detail
