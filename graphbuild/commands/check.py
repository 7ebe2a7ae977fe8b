"""`graphbuild check`: which bases changed, which images are stale, missing or unknown, and why.

Exit 1 when a registry did not answer for a base or an image: the answer is incomplete.
"""

from __future__ import annotations

from dataclasses import asdict

from graphbuild import detect, errors, graph, pipeline, queries, report
from graphbuild.config import Config
from graphbuild.console import plural
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
        return _code(result)
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
    counts = ", ".join(_count(key, n) for key, n in sorted(result.counts().items()))
    print(f"\n{counts}; {plural(result.requests, 'registry request')}.")
    for host, left in sorted(result.ratelimits.items()):
        print(f"{host}: {left} pulls left in the rate-limit window.")
    return _code(result)


def _code(result: detect.Check) -> int:
    """1 when a registry did not answer for something: the answer is not the whole truth."""
    return errors.FAILED if result.unanswered() else errors.OK


def _count(key: str, n: int) -> str:
    """`1 base changed`, `2 images stale`: a count's key (`bases changed`) agreed with it."""
    kind, status = key.split(" ", 1)
    return f"{plural(n, kind.removesuffix('s'))} {status}"


def _why(image: detect.ImageCheck) -> str:
    detail = brief(image.detail)
    if image.status == detect.STALE and len(image.chain) > 2:
        return f"{detail} [{' <- '.join(short(n) for n in image.chain)}]"
    return detail
