"""gitops: write the new digest into the deploy repository, commit, push; Argo CD or Flux
watching the repository rolls it out.

Edits are surgical (deploy_yaml.rewrite): only the located reference changes, and
each file is read back afterwards to confirm it. A push that loses a race with
another commit is redone on top of it. Nothing to change means no commit.

Whoever pushes to the deploy repository decides what the clone holds, symlinks
included: a file is read and written only when it is a regular file reached
through no symlink, so an edit never lands outside the clone.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from graphbuild import deploy_yaml, refs, retry, sources
from graphbuild.config import DeployRepoSpec
from graphbuild.deployers import Applied, Change, Context
from graphbuild.errors import GraphbuildError, InvalidReference
from graphbuild.state import DeployStatus

PUSH_ATTEMPTS = 3
_NO_WAIT = retry.Backoff(0)  # a lost race is redone at once: the winner has pushed already
_TIMEOUT = 300
_PUSH_MARKS = (("! [",), ("remote: ",))  # a refusal's reason, then a hook's, before git's summary
# The reasons git gives, in a refused ref's `! [rejected]` or `! [remote rejected]` line, for
# a push that lost a race: the branch moved before it reached the remote (`fetch first`,
# `non-fast-forward`), or while the remote was receiving it (`failed to update ref`, the
# ref moved or its lock was held: `cannot lock ref`; git 2.51 and later say `incorrect old
# value provided`, or `failed to update refs` for the whole batch). A hook's or a rule's
# refusal (`pre-receive hook declined`, `hook declined`, `deny updating a hidden ref`) is
# not among them: trying again changes nothing.
_RACES = frozenset({"fetch first", "non-fast-forward", "failed to update ref",
                    "failed to update refs", "incorrect old value provided"})  # fmt: skip
_IDENTITY = {
    "GIT_AUTHOR_NAME": "graphbuild",
    "GIT_AUTHOR_EMAIL": "graphbuild@localhost",
    "GIT_COMMITTER_NAME": "graphbuild",
    "GIT_COMMITTER_EMAIL": "graphbuild@localhost",
}


@dataclass
class _Edit:
    """One file's text before and after, and the changes it carries."""

    before: str
    after: str
    changes: list[Change]


class Gitops:
    name = "gitops"
    batched = True  # one commit per ring and repository

    def __init__(self, repos: Mapping[str, DeployRepoSpec]) -> None:
        self.repos = repos

    def preview(self, changes: list[Change], context: Context) -> list[str]:
        out = []
        for spec, items in self._by_repo(changes):
            clone = self._checkout(spec, context)
            edits, _ = self._edit(clone, items)
            target = self._target(spec, context)
            for file, edit in edits.items():
                if edit.after != edit.before:
                    diff = difflib.unified_diff(
                        edit.before.splitlines(keepends=True),
                        edit.after.splitlines(keepends=True),
                        f"a/{file}", f"b/{file}",
                    )  # fmt: skip
                    out.append(f"# {spec.name} -> {target}\n" + "".join(diff))
        return out

    def apply(self, changes: list[Change], context: Context) -> list[Applied]:
        import git

        done: list[Applied] = []
        for spec, items in self._by_repo(changes):
            try:
                done += self._apply_repo(spec, items, context)
            except GraphbuildError as err:
                done += [Applied(c, DeployStatus.FAILED, str(err)) for c in items]
            except git.GitCommandError as err:  # add or commit: a hook, a signing setup
                step = " ".join(err.command[:2])
                detail = f"{spec.name}: {step} failed: {sources.git_reason(err)}"
                done += [Applied(c, DeployStatus.FAILED, detail) for c in items]
            except OSError as err:  # writing in the clone: a full or read-only disk
                detail = f"{spec.name}: cannot write {err.filename}: {err.strerror}"
                done += [Applied(c, DeployStatus.FAILED, detail) for c in items]
        return done

    def _by_repo(self, changes: list[Change]) -> list[tuple[DeployRepoSpec, list[Change]]]:
        groups: dict[str, list[Change]] = {}
        for change in changes:
            groups.setdefault(change.workload.repo or "", []).append(change)
        return [(self.repos[name], items) for name, items in groups.items()]

    def _apply_repo(
        self, spec: DeployRepoSpec, changes: list[Change], context: Context
    ) -> list[Applied]:
        import git

        def attempt(n: int) -> list[Applied]:
            clone = self._checkout(spec, context)
            changed, results = self._edit(clone, changes)
            if not changed:
                return results
            for file, edit in changed.items():
                _write(clone, file, edit.after)
            results += self._confirm(clone, changed)
            good = [r.change for r in results if r.status == DeployStatus.DEPLOYED]
            if not good:
                return results
            target = self._target(spec, context)
            with git.Repo(clone) as repo:
                files = sorted({c.workload.file or "" for c in good})
                repo.git.add("--", *files)
                repo.git.commit("--quiet", "-m", _message(good, context), env=_identity())
                commit = repo.head.commit.hexsha
                try:
                    force = ["--force"] if spec.push_branch else []  # graphbuild's own branch
                    repo.git.push("--quiet", *force, "origin", f"HEAD:refs/heads/{target}",
                                  env=sources.git_env(spec.url),
                                  kill_after_timeout=_TIMEOUT)  # fmt: skip
                except git.GitCommandError as err:
                    reason = sources.git_reason(err, _PUSH_MARKS, spec.url)
                    detail = f"push to {target} failed: {reason}"
                    failed = [r if r.status != DeployStatus.DEPLOYED
                              else Applied(r.change, DeployStatus.FAILED, detail)
                              for r in results]  # fmt: skip
                    if _raced(str(err.stderr)):  # redone on top of what won, from a new clone
                        raise retry.Again(f"push to {target} lost a race", value=failed) from None
                    return failed
            where = f"commit {commit[:12]} pushed to {spec.name} {target}"
            _log(context, where)
            return [r if r.status != DeployStatus.DEPLOYED
                    else Applied(r.change, DeployStatus.DEPLOYED, where)
                    for r in results]  # fmt: skip

        def redo(again: retry.Again, wait: float) -> None:
            _log(context, f"{again.why}; redoing it on top")

        try:
            return retry.call(attempt, tries=PUSH_ATTEMPTS, backoff=_NO_WAIT, on_retry=redo)
        except retry.Again as last:  # lost every race: the last push's failure stands
            lost: list[Applied] = last.value
            return lost

    def _checkout(self, spec: DeployRepoSpec, context: Context) -> Path:
        """The deploy repository's branch as it is now, in a working clone of graphbuild's,
        with nothing left over from an earlier attempt."""
        import git

        path = context.workspace / "deploy" / f"{spec.name}"
        env = sources.git_env(spec.url)
        try:
            repo = git.Repo(path) if (path / ".git").is_dir() else git.Repo.init(path, mkdir=True)
            with repo:
                repo.git.config("core.autocrlf", "false")  # bytes stay as they are, CRLF too
                remote = f"refs/remotes/origin/{spec.branch}"
                repo.git.fetch("--quiet", "--no-tags", "--depth=1", "origin",
                               f"+refs/heads/{spec.branch}:{remote}",
                               env=env, kill_after_timeout=_TIMEOUT)  # fmt: skip
                repo.git.checkout("--quiet", "--force", "-B", "graphbuild", remote)
                repo.git.clean("-fdxq")
        except git.GitCommandError as err:
            detail = sources.git_reason(err, url=spec.url)
            raise GraphbuildError(f"{spec.name}: cannot fetch {spec.branch}: {detail}") from None
        return path

    def _edit(self, clone: Path, changes: list[Change]) -> tuple[dict[str, _Edit], list[Applied]]:
        """Each file with the changes it needs made; the changes already in place, and those
        that could not be made."""
        edits: dict[str, _Edit] = {}
        results: list[Applied] = []
        for change in changes:
            file = change.workload.file or ""
            if file not in edits:
                try:
                    text = _read(clone, file)
                except deploy_yaml.ManifestError as err:
                    results.append(Applied(change, DeployStatus.FAILED, f"{file}: {err}"))
                    continue
                except (OSError, UnicodeDecodeError) as err:
                    why = err.strerror if isinstance(err, OSError) else err
                    unread = f"{file}: cannot read: {why}"
                    results.append(Applied(change, DeployStatus.FAILED, unread))
                    continue
                edits[file] = _Edit(text, text, [])
            edit = edits[file]
            try:
                found = _locate(file, edit.after, change)
                after = deploy_yaml.rewrite(edit.after, found, change.tag, change.digest)
            except deploy_yaml.ManifestError as err:
                results.append(Applied(change, DeployStatus.FAILED, f"{file}: {err}"))
                continue
            if after == edit.after:
                results.append(Applied(change, DeployStatus.UNCHANGED, "already there"))
            else:
                edit.after = after
                edit.changes.append(change)
        return {f: e for f, e in edits.items() if e.changes}, results

    def _confirm(self, clone: Path, edits: dict[str, _Edit]) -> list[Applied]:
        """Read each written file back: the reference must now hold the digest, or the file
        goes back to what it was and the change fails."""
        results = []
        for file, edit in edits.items():
            bad = []
            for change in edit.changes:
                try:
                    ok = _locate(file, _read(clone, file), change).digest == change.digest
                except (deploy_yaml.ManifestError, OSError, UnicodeDecodeError):
                    ok = False
                if not ok:
                    bad.append(change)
            if bad:
                _write(clone, file, edit.before)
                lost = f"{file}: read back without the new digest"
                results += [Applied(c, DeployStatus.FAILED, lost) for c in edit.changes]
            else:
                results += [Applied(c, DeployStatus.DEPLOYED) for c in edit.changes]
        return results

    def _target(self, spec: DeployRepoSpec, context: Context) -> str:
        if spec.push_branch is None:
            return spec.branch
        return spec.push_branch.replace("{run}", context.run_id).replace("{ring}", context.ring)


def _locate(file: str, text: str, change: Change) -> deploy_yaml.Found:
    """The reference the workload was found at, in the file as it is now: same place, same
    image and tag, and the digest the sync saw (or this change's). Anything else is an edit
    someone made since the sync, which a deploy must not undo."""
    was = change.workload.found
    assert was is not None
    for found in deploy_yaml.again(file, text, was):  # a ConfigMap of Helm values too
        if found.doc != was.doc or found.path != was.path:
            continue
        if _image(found) != change.workload.image:
            break
        if found.tag != was.tag or found.digest not in (was.digest, change.digest):
            now = found.name + (f":{found.tag}" if found.tag else "")
            now += f"@{found.digest}" if found.digest else ""
            raise deploy_yaml.ManifestError(f"changed since the sync (now {now}); left alone",
                                          was.line)  # fmt: skip
        return found
    raise deploy_yaml.ManifestError(
        f"line {was.line}: the reference is no longer there; run `graphbuild sync`"
    )


def _raced(stderr: str) -> bool:
    """Whether git refused the push because it lost a race (a reason in _RACES). Only git's
    own `! [` lines count: what a hook prints comes prefixed with `remote: `."""
    reasons = [line.rstrip().rpartition(" (")[2].removesuffix(")")
               for line in stderr.splitlines() if line.lstrip().startswith("! [")]  # fmt: skip
    return bool(reasons) and all(reason in _RACES for reason in reasons)


def _message(changes: list[Change], context: Context) -> str:
    count = len({c.node for c in changes})
    lines = [
        f"graphbuild: deploy {count} image{'s' if count != 1 else ''} to {context.ring}",
        "",
        context.reason,
        "",
        *(f"- {c.workload.file}: {c.reference}" for c in changes),
        "",
        f"Graphbuild-Run: {context.run_id}",
    ]
    return "\n".join(lines)


def _identity() -> dict[str, str]:
    """graphbuild signs its commits unless the environment names someone."""
    return {k: os.environ.get(k, v) for k, v in _IDENTITY.items()}


def _image(found: deploy_yaml.Found) -> str | None:
    """The repository a located reference names, normalised as workloads are."""
    try:
        return refs.parse(found.name).name
    except InvalidReference:
        return None


def _regular(clone: Path, file: str) -> os.stat_result:
    """`file`'s lstat when it is a regular file in the clone reached through no symlink;
    otherwise ManifestError saying why. git checks a committed symlink out as one, and
    following it would edit a file elsewhere, in the clone or outside it."""
    parts = PurePosixPath(file).parts
    if not parts or ".." in parts or PurePosixPath(file).is_absolute():
        raise deploy_yaml.ManifestError("refused: not a path inside the clone")
    path = clone
    for i, part in enumerate(parts):
        path = path / part
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            what = "it" if i == len(parts) - 1 else "/".join(parts[: i + 1])
            out = not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(clone))
            leads = " that leads out of the clone" if out else ""
            raise deploy_yaml.ManifestError(
                f"refused: {what} is a symlink{leads}; graphbuild writes only regular files"
            )
    if not stat.S_ISREG(st.st_mode):
        raise deploy_yaml.ManifestError("refused: not a regular file")
    return st


def _read(clone: Path, file: str) -> str:
    """A manifest's text, if it is a regular file of at most MAX_BYTES in the clone."""
    size = _regular(clone, file).st_size
    if size > deploy_yaml.MAX_BYTES:
        raise deploy_yaml.ManifestError(deploy_yaml.too_big(size))
    fd = os.open(clone / file, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as stream:
        return stream.read(deploy_yaml.MAX_BYTES + 1).decode("utf-8")


def _write(clone: Path, file: str, text: str) -> None:
    """Replace a file `_read` accepted; O_NOFOLLOW keeps even a link made since then shut."""
    fd = os.open(clone / file, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with open(fd, "wb") as stream:
        stream.write(text.encode("utf-8"))


def _log(context: Context, line: str) -> None:
    with context.log.open("a") as out:
        out.write(line + "\n")
