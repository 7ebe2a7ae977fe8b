"""`graphbuild check`: which bases changed, which images are stale, missing or unknown, and why."""

from __future__ import annotations

from dataclasses import asdict

from graphbuild import detect, errors, graph, pipeline, queries, report
from graphbuild.config import Config
from graphbuild.report import brief, short


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
        [(short(b.id), b.status, brief(b.digest or ""), b.since or "", b.images, brief(b.detail))
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


def _why(image: detect.ImageCheck) -> str:
    detail = brief(image.detail)
    if image.status == detect.STALE and len(image.chain) > 2:
        return f"{detail} [{' <- '.join(short(n) for n in image.chain)}]"
    return detail
