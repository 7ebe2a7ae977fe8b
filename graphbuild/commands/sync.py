"""`graphbuild sync`: fetch every repository, parse what changed, store the graph."""

from __future__ import annotations

from graphbuild import errors, report, syncing
from graphbuild.config import Config


def run(config: Config, jobs: int, as_json: bool) -> int:
    summary = syncing.sync(config, jobs)  # not the pipeline's imports
    if as_json:
        report.emit_json(
            {
                "repos": [
                    {"name": r.repo, "commit": r.commit, "fetched": r.fetched, "error": r.error}
                    for r in summary.repos
                ],
                "images": summary.images,
                "parsed": summary.parsed,
                "cached": summary.cached,
                "problems": [p.__dict__ for p in summary.problems],
            }
        )
    else:
        new = sum(1 for r in summary.repos if r.fetched)
        print(
            f"Synced {len(summary.repos)} repositories ({new} with new commits); "
            f"indexed {summary.images} images: parsed {summary.parsed} Dockerfiles, "
            f"{summary.cached} from cache."
        )
        if summary.problems:
            count = len(summary.problems)
            print(f"{count} problem{'s' if count != 1 else ''}:")
            for p in summary.problems:
                print(f"  {p.level:<10} {p}")
    failed = any(p.level == errors.ERROR for p in summary.problems)
    return errors.FAILED if failed else errors.OK
