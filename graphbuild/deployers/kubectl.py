"""kubectl: point one container of a workload at the validated image, then wait for the rollout.

`kubectl set image` sends a strategic-merge patch naming only that container, so
the rest of the workload stays as its owners keep it. The image is read first: a
rerun finds it in place and does not patch again, but still waits for the
rollout, so a rollout that was stuck last time cannot pass now. `rollout status`
turns "patched" into "running": a rollout that never gets ready fails the change
rather than passing as deployed. A CronJob has no rollout; its next Job runs the
new image.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from graphbuild.deployers import Applied, Change, Context
from graphbuild.errors import CommandFailed
from graphbuild.process import run
from graphbuild.state import DeployStatus

_CALL_TIMEOUT = 60.0  # a get or a patch; an API server silent for a minute is down
_CRONJOB = {"cronjob", "cronjobs", "cj"}
# kind[.version.group]/name: a value starting with `-` would reach kubectl as a flag
_RESOURCE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.]*/[a-z0-9][a-z0-9.-]*\Z")


class Kubectl:
    name = "kubectl"
    batched = False  # each workload is patched and recorded on its own

    def preview(self, changes: list[Change], context: Context) -> list[str]:
        return [shlex.join(argv) for change in changes for argv in _commands(change)]

    def apply(self, changes: list[Change], context: Context) -> list[Applied]:
        return [self._apply(change, context) for change in changes]

    def _apply(self, change: Change, context: Context) -> Applied:
        options = change.workload.kubectl
        resource, container = options["resource"], options["container"]
        if not _RESOURCE_RE.match(resource):
            why = f"kubectl resource {resource!r}: expected kind/name"
            return Applied(change, DeployStatus.FAILED, why)
        set_image, *rollout = _commands(change)
        patched = f"kubectl set image {resource} {container}={change.reference}"
        try:
            if context.cancel.is_set():  # a quick command would finish before run() looks
                raise CommandFailed(f"kubectl {resource}: cancelled")
            images = _images(change, context.log)
            if container not in images:
                why = f"no container {container} in {resource}"
                return Applied(change, DeployStatus.FAILED, why)
            unchanged = images[container] == change.reference
            if not unchanged:
                what = f"kubectl set image {resource}"
                run(set_image, context.log, context.cancel, what, timeout=_CALL_TIMEOUT)
            if rollout:  # also when unchanged: a rerun after a stuck rollout must not pass
                # kubectl's --timeout ends the wait; the process timeout is for a hung kubectl
                what, wait = f"kubectl rollout status {resource}", float(_timeout(options))
                run(rollout[0], context.log, context.cancel, what, timeout=wait + _CALL_TIMEOUT)
        except CommandFailed as err:
            if context.cancel.is_set():
                raise
            return Applied(change, DeployStatus.FAILED, str(err))
        done = "rolled out" if rollout else "a CronJob has no rollout to wait for"
        if unchanged:
            already = f"{resource} {container} runs it already; {done}"
            return Applied(change, DeployStatus.UNCHANGED, already)
        return Applied(change, DeployStatus.DEPLOYED, f"{patched}; {done}")


def _commands(change: Change) -> list[list[str]]:
    """What changes the cluster and waits for it: set image, and rollout status but for a
    CronJob. The read before them changes nothing and is not shown."""
    options = change.workload.kubectl
    resource, container = options["resource"], options["container"]
    kubectl = _kubectl(options)
    commands = [[*kubectl, "set", "image", resource, f"{container}={change.reference}"]]
    if not _is_cronjob(resource):
        timeout = f"--timeout={_timeout(options)}s"
        commands.append([*kubectl, "rollout", "status", resource, timeout])
    return commands


def _images(change: Change, log: Path) -> dict[str, str]:
    """Each container's image in the workload now, init containers too."""
    options = change.workload.kubectl
    resource = options["resource"]
    argv = [*_kubectl(options), "get", resource, "-o", "json"]
    what = f"kubectl get {resource}"
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        try:
            done = subprocess.run(
                argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=_CALL_TIMEOUT,
                check=False, process_group=0,  # a terminal's Ctrl-C is for graphbuild only
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{what}: timed out after {_CALL_TIMEOUT:g} s", True) from None
        except OSError as err:
            raise CommandFailed(f"{what}: cannot run kubectl ({err.strerror})") from None
        out.write(done.stderr)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").splitlines()
        last = next((line for line in reversed(lines) if line.strip()), "")
        raise CommandFailed(f"{what} exited {done.returncode}: {last[:300]}")
    try:
        spec = json.loads(done.stdout).get("spec") or {}
    except (ValueError, AttributeError):
        raise CommandFailed(f"{what}: kubectl printed no JSON object") from None
    if _is_cronjob(resource):
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    return {c.get("name"): c.get("image") for c in containers}


def _kubectl(options: Mapping[str, str]) -> list[str]:
    """kubectl and the flags that pick the cluster and namespace, each value one argument."""
    argv = ["kubectl"]
    for key in ("kubeconfig", "context", "namespace"):
        if options.get(key):
            argv += [f"--{key}", options[key]]
    return argv


def _timeout(options: Mapping[str, str]) -> str:
    return options.get("timeout") or "300"


def _is_cronjob(resource: str) -> bool:
    """`cronjob/x`, `cj/x`, `cronjobs.batch/x`, `CronJob.v1.batch/x`."""
    return resource.partition("/")[0].partition(".")[0].lower() in _CRONJOB
