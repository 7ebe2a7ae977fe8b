"""`graphbuild check`: which bases changed, which images are stale, missing or unknown, and why."""

from __future__ import annotations

import re
from dataclasses import asdict

from graphbuild import detect, errors, graph, pipeline, queries, report
from graphbuild.config import Config
from graphbuild.report import short

_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


def run(config: Config, as_json: bool, concurrency: int) -> int:
    result = pipeline.check(config, graph.load(queries.open_index(config)), concurrency)
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
