"""`graphbuild report RUN [--html OUT]`: a run's report, as its report.md says it, or as the
run page in one self-contained HTML file (`-`: standard output), for CI artifacts and mail."""

from __future__ import annotations

import sys
from pathlib import Path

from graphbuild import errors, pages, report
from graphbuild.commands.runs import unknown_run
from graphbuild.config import Config
from graphbuild.state import State


def run(config: Config, run_id: str, html: Path | None) -> int:
    with State(config.workspace) as state:
        found = state.run(run_id)
    if found is None:
        raise unknown_run(run_id)
    if html is None:
        sys.stdout.write(report.run_markdown(found))
        return errors.OK
    page = pages.run_page(found)
    if str(html) == "-":
        sys.stdout.write(page)
        return errors.OK
    try:
        html.write_text(page, encoding="utf-8")
    except OSError as err:
        raise errors.GraphbuildError(f"{html}: cannot write it ({err.strerror})") from None
    report.note(f"Wrote {html}")
    return errors.OK
