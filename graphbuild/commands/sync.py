"""`graphbuild sync`: fetch every repository, parse what changed, store the graph."""

from __future__ import annotations

from graphbuild import errors, report, syncing
from graphbuild.config import Config
from graphbuild.console import plural


def run(config: Config, jobs: int, as_json: bool) -> int:
    summary = syncing.sync(config, jobs, summary=False)  # its answer is the summary line
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
        print(
            f"{syncing.synced_line(summary.repos)}; indexed {plural(summary.images, 'image')}: "
            f"parsed {plural(summary.parsed, 'Dockerfile')}, {summary.cached} from cache."
        )
        if summary.problems:
            print(f"{plural(len(summary.problems), 'problem')}:")
            for p in summary.problems:
                print(f"  {p.level:<10} {p}")
    failed = any(p.level == errors.ERROR for p in summary.problems)
    return errors.FAILED if failed else errors.OK
