"""`graphbuild rebuild REF...`: the on-call path: rebuild now, whatever the digests say."""

from __future__ import annotations

from graphbuild import errors, execute, plan, report
from graphbuild.commands import build, synced
from graphbuild.commands.check import checked
from graphbuild.config import Config
from graphbuild.state import sweep_lock


def run(
    config: Config,
    names: list[str],
    *,
    reason: str,
    downstream: bool,
    depth: int | None,
    settings: execute.RunSettings,
    as_json: bool,
) -> int:
    """The named images, or everything built on a named base, with `reason` on every one.

    A scheduled sweep holding the lock is waited for, not raced: two builds of
    one image at once would push in an arbitrary order.
    """
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        g, nodes, failed_sync = synced(config, names)
        digests = checked(config, g).digests  # what the parents outside the rebuild are now
        steps = plan.forced(g, nodes, reason, downstream, depth, digests)
        code = build(config, g, steps, "rebuild", reason, settings, as_json)
        return errors.FAILED if failed_sync else code
