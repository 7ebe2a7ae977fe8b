"""The gitops deployer against real bare git remotes: it pins the validated digest in the
deploy repository's manifest (that reference and not another byte, CRLF kept), commits once
per repository with a message that says why, pushes to the branch or to graphbuild's own
branch, redoes a push that lost a race, changes nothing when the digest is already there,
fails cleanly (no traceback, no credentials) when the reference moved or the remote is
unreachable, and previews the exact diff without pushing. A deploy repository is written by
others: a file that became a symlink, sits behind a symlinked folder or grew hostile since
the sync fails alone, and a token in the URL never shows on a command line.
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest

from graphbuild import deploy_yaml, discovery, trees
from graphbuild.config import DeployRepoSpec
from graphbuild.deployers import Applied, Change, Context
from graphbuild.deployers.gitops import PUSH_ATTEMPTS, Gitops
from graphbuild.state import DeployStatus
from graphbuild.workloads import Workload

from .git_http import seen_during, serving
from .site import git

D = "sha256:" + "d" * 64
DEPLOYED, UNCHANGED, FAILED = DeployStatus.DEPLOYED, DeployStatus.UNCHANGED, DeployStatus.FAILED
E = "sha256:" + "e" * 64
WEB_NODE, NGINX_NODE = "registry.example/apps/web:1", "docker.io/library/nginx:1.25"
REASON = "registry.example/apps/web:1: stale: built on registry.example/base:1"

WEB = """\
# the web tier; image: registry.example/apps/web:1 stays as it is in this comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: web
          image: "registry.example/apps/web:1"   # quoted, and kept so
        - name: proxy
          image: nginx:1.25
"""
CRLF = (
    "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: api\r\nspec:\r\n  containers:\r\n"
    "    - name: api\r\n      image: registry.example/apps/web:1 # kept\r\n"
)
FILES = {"envs/dev/web.yaml": WEB, "envs/dev/api.yaml": CRLF, "README.md": "deploy\n"}


@pytest.fixture(autouse=True)
def _no_identity(monkeypatch):
    """graphbuild signs commits unless the environment names someone: start from nobody."""
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def spec_for(url: Path | str, push_branch: str | None = None) -> DeployRepoSpec:
    return DeployRepoSpec(name="deploy", url=str(url), branch="main", push_branch=push_branch,
                          rings={"dev": ("envs/dev/**",)})  # fmt: skip


def discovered(remote, spec: DeployRepoSpec) -> dict[str, Workload]:
    """The remote's workloads by name, found the way a sync finds them."""
    found, problems = discovery.discover(spec, trees.DirTree(remote.work, {}, {}))
    assert problems == []
    return {w.name: w for w in found}


def context(tmp_path: Path, run_id: str = "run1", ring: str = "dev") -> Context:
    return Context(run_id, ring, REASON, tmp_path / "deploy.log", threading.Event(),
                   tmp_path / "ws")  # fmt: skip


def shown(remote, ref: str, path: str) -> str:
    """A file in the bare remote, byte for byte."""
    out = subprocess.run(["git", "--git-dir", str(remote.url), "show", f"{ref}:{path}"],
                         check=True, capture_output=True).stdout  # fmt: skip
    return out.decode()


def head(remote, ref: str = "main") -> str:
    return git(remote.url, "rev-parse", ref)


def log(remote, ref: str = "main") -> list[str]:
    return git(remote.url, "log", "--format=%s", ref).splitlines()


def test_apply_pins_the_digests_commits_once_and_pushes(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    web, proxy = found["Deployment/shop/web (web)"], found["Deployment/shop/web (proxy)"]
    api = found["Pod//api (api)"]
    changes = [Change(web, WEB_NODE, "1", D), Change(proxy, NGINX_NODE, "1.25", E),
               Change(api, WEB_NODE, "1", D)]  # fmt: skip
    done = Gitops({"deploy": spec}).apply(changes, context(tmp_path))

    commit = head(remote)
    where = f"commit {commit[:12]} pushed to deploy main"
    assert done == [Applied(c, DEPLOYED, where) for c in changes]
    assert log(remote) == ["graphbuild: deploy 2 images to dev", "initial"]
    assert git(remote.url, "log", "-1", "--format=%B", "main") == (
        "graphbuild: deploy 2 images to dev\n\n"
        f"{REASON}\n\n"
        f"- envs/dev/web.yaml: registry.example/apps/web:1@{D}\n"
        f"- envs/dev/web.yaml: docker.io/library/nginx:1.25@{E}\n"
        f"- envs/dev/api.yaml: registry.example/apps/web:1@{D}\n\n"
        "Graphbuild-Run: run1"
    )
    people = "%an <%ae> / %cn <%ce>"
    assert git(remote.url, "log", "-1", f"--format={people}", "main") == (
        "graphbuild <graphbuild@localhost> / graphbuild <graphbuild@localhost>"
    )
    assert shown(remote, "main", "envs/dev/web.yaml") == WEB.replace(
        '"registry.example/apps/web:1"', f'"registry.example/apps/web:1@{D}"'
    ).replace("image: nginx:1.25", f"image: nginx:1.25@{E}")
    assert shown(remote, "main", "envs/dev/api.yaml") == CRLF.replace(
        "apps/web:1 # kept\r\n", f"apps/web:1@{D} # kept\r\n"
    )
    assert shown(remote, "main", "README.md") == "deploy\n"
    assert git(remote.url, "diff", "--name-only", "main~1", "main").splitlines() == [
        "envs/dev/api.yaml", "envs/dev/web.yaml"
    ]  # fmt: skip
    assert (tmp_path / "deploy.log").read_text() == where + "\n"


def test_the_author_named_by_the_environment_signs_the_commit(remotes, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Release Bot")
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert done.status == DEPLOYED
    people = "%an <%ae> / %cn <%ce>"
    assert git(remote.url, "log", "-1", f"--format={people}", "main") == (
        "Release Bot <graphbuild@localhost> / graphbuild <graphbuild@localhost>"
    )
    assert log(remote) == ["graphbuild: deploy 1 image to dev", "initial"]


def test_the_same_digest_again_is_unchanged_and_commits_nothing(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    changes = [Change(found["Deployment/shop/web (web)"], WEB_NODE, "1", D),
               Change(found["Pod//api (api)"], WEB_NODE, "1", D)]  # fmt: skip
    gitops = Gitops({"deploy": spec})
    assert [a.status for a in gitops.apply(changes, context(tmp_path))] == [DEPLOYED, DEPLOYED]
    pushed = head(remote)
    again = gitops.apply(changes, context(tmp_path, run_id="run2"))
    assert again == [Applied(c, UNCHANGED, "already there") for c in changes]
    assert head(remote) == pushed
    assert len(log(remote)) == 2


def test_a_change_already_in_place_is_unchanged_beside_one_that_is_not(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    web, proxy = found["Deployment/shop/web (web)"], found["Deployment/shop/web (proxy)"]
    gitops = Gitops({"deploy": spec})
    gitops.apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    both = [Change(web, WEB_NODE, "1", D), Change(proxy, NGINX_NODE, "1.25", E)]
    done = gitops.apply(both, context(tmp_path, run_id="run2"))
    assert [a.status for a in done] == [UNCHANGED, DEPLOYED]


def test_a_push_branch_leaves_the_branch_alone_and_is_force_updated(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    initial = head(remote)
    spec = spec_for(remote.url, push_branch="graphbuild/{run}-{ring}")
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    gitops = Gitops({"deploy": spec})
    branch = "graphbuild/run7-dev"

    (first,) = gitops.apply([Change(web, WEB_NODE, "1", D)], context(tmp_path, "run7"))
    pushed = head(remote, branch)
    assert first.status == DEPLOYED
    assert first.detail == f"commit {pushed[:12]} pushed to deploy {branch}"
    assert head(remote) == initial
    assert head(remote, f"{branch}~1") == initial
    assert f"web:1@{D}" in shown(remote, branch, "envs/dev/web.yaml")

    # the branch exists: a second apply (another digest) replaces it, on top of main again
    (second,) = gitops.apply([Change(web, WEB_NODE, "1", E)], context(tmp_path, "run7"))
    assert second.status == DEPLOYED
    assert head(remote, branch) != pushed
    assert head(remote, f"{branch}~1") == initial
    assert shown(remote, branch, "envs/dev/web.yaml") == WEB.replace(
        'apps/web:1"', f'apps/web:1@{E}"'
    )
    assert head(remote) == initial
    assert git(remote.url, "for-each-ref", "--format=%(refname)").splitlines() == [
        f"refs/heads/{branch}", "refs/heads/main"
    ]  # fmt: skip


def test_a_push_that_lost_a_race_is_redone_on_top(remotes, tmp_path, monkeypatch):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    original = Gitops._checkout
    calls = []

    def checkout_then_someone_pushes(self, spec, context):
        path = original(self, spec, context)
        calls.append(path)
        if len(calls) == 1:  # between graphbuild's fetch and its push
            remote.commit({"envs/dev/other.yaml": "kind: ConfigMap\n"}, "someone else")
        return path

    monkeypatch.setattr(Gitops, "_checkout", checkout_then_someone_pushes)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert len(calls) == 2
    assert done.status == DEPLOYED
    assert done.detail == f"commit {head(remote)[:12]} pushed to deploy main"
    assert log(remote) == ["graphbuild: deploy 1 image to dev", "someone else", "initial"]
    assert shown(remote, "main", "envs/dev/other.yaml") == "kind: ConfigMap\n"
    assert f"web:1@{D}" in shown(remote, "main", "envs/dev/web.yaml")
    assert (tmp_path / "deploy.log").read_text().splitlines() == [
        "push to main lost a race; redoing it on top",
        done.detail,
    ]


def racing(remote, marker: Path, first_push: str) -> None:
    """A pre-receive hook that, on the first push only, runs `first_push` (sh) in the bare
    remote while git is receiving the push: the remote side of a race, not a refusal. A
    later push finds main's lock free again."""
    hook = remote.url / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\nif [ ! -e '{marker}' ]; then\n  : > '{marker}'\n"
                    f"{first_push}\nelse\n  rm -f refs/heads/main.lock\nfi\nexit 0\n")  # fmt: skip
    hook.chmod(0o755)


# Someone's commit lands on main after git checked the push was a fast-forward and before
# it moved the ref: git's own objects and ref, outside the push's quarantine.
ANOTHER_COMMIT = """\
  unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
  export GIT_AUTHOR_NAME=someone GIT_AUTHOR_EMAIL=someone@example.invalid
  export GIT_COMMITTER_NAME=someone GIT_COMMITTER_EMAIL=someone@example.invalid
  was=$(git rev-parse refs/heads/main)
  now=$(echo 'someone else' | git commit-tree "$was^{tree}" -p "$was")
  git update-ref refs/heads/main "$now" "$was"
"""
# Another push holds main's lock while git wants to take it.
LOCK_HELD = "  : > refs/heads/main.lock"
RACES = pytest.mark.parametrize("first_push", [ANOTHER_COMMIT, LOCK_HELD], ids=["moved", "locked"])


@RACES
def test_a_push_that_lost_a_race_inside_the_remote_is_redone(remotes, tmp_path, first_push):
    """git answers `! [remote rejected] HEAD -> main (failed to update ref)` (2.51 and later:
    `incorrect old value provided`): the push is fetched, edited and pushed again."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    marker = tmp_path / "raced"
    racing(remote, marker, first_push)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert marker.exists()
    assert done.status == DEPLOYED, done.detail
    assert done.detail == f"commit {head(remote)[:12]} pushed to deploy main"
    history = log(remote)
    if first_push is ANOTHER_COMMIT:  # graphbuild's commit is on top of theirs, not over it
        assert history == ["graphbuild: deploy 1 image to dev", "someone else", "initial"]
    else:
        assert history == ["graphbuild: deploy 1 image to dev", "initial"]
    assert f"web:1@{D}" in shown(remote, "main", "envs/dev/web.yaml")
    assert (tmp_path / "deploy.log").read_text().splitlines() == [
        "push to main lost a race; redoing it on top",
        done.detail,
    ]


def test_a_race_lost_on_every_try_fails_after_the_last_one(remotes, tmp_path):
    """Someone commits during every push: graphbuild tries PUSH_ATTEMPTS times, then fails
    with git's reason, and their commits stay."""
    remote = remotes("deploy", FILES)
    tries = tmp_path / "tries"
    hook = remote.url / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho try >> '{tries}'\n{ANOTHER_COMMIT}exit 0\n")
    hook.chmod(0o755)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert tries.read_text() == "try\n" * PUSH_ATTEMPTS
    assert (done.status, done.detail) == (
        FAILED, "push to main failed: ! [remote rejected] HEAD -> main (failed to update ref)"
    ) or "incorrect old value provided" in done.detail  # fmt: skip
    assert log(remote) == ["someone else"] * PUSH_ATTEMPTS + ["initial"]


@RACES
def test_the_race_is_what_git_really_reports(remotes, tmp_path, first_push):
    """The scaffolding above makes git itself report a lost race, as item 10 quotes it."""
    remote = remotes("deploy", FILES)
    racing(remote, tmp_path / "raced", first_push)
    git(remote.work, "commit", "-q", "--allow-empty", "-m", "mine")
    pushed = subprocess.run(["git", "push", "origin", "HEAD:main"], cwd=remote.work,
                            capture_output=True, text=True)  # fmt: skip
    assert pushed.returncode == 1
    said = pushed.stderr
    assert "cannot lock ref 'refs/heads/main'" in said or "incorrect old value" in said, said
    assert re.search(r"! \[remote rejected\] HEAD -> main \((failed to update refs?|"
                     r"incorrect old value provided)\)", said), said  # fmt: skip


@pytest.mark.parametrize("hook", ["pre-receive", "update"])
def test_a_hook_that_declines_is_not_retried_and_says_why(remotes, tmp_path, hook):
    """A hook's refusal is final, whatever the hook prints (even words of a race)."""
    remote = remotes("deploy", FILES)
    before = head(remote)
    tries = tmp_path / "tries"
    script = remote.url / "hooks" / hook
    words = "cannot lock ref 'refs/heads/main' (failed to update ref) (fetch first)"
    script.write_text(f"#!/bin/sh\necho try >> '{tries}'\necho \"{words}\" >&2\nexit 1\n")
    script.chmod(0o755)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    declined = "pre-receive hook declined" if hook == "pre-receive" else "hook declined"
    assert (done.status, done.detail) == (
        FAILED, f"push to main failed: ! [remote rejected] HEAD -> main ({declined})"
    )  # fmt: skip
    assert tries.read_text() == "try\n"
    assert head(remote) == before
    log_file = tmp_path / "deploy.log"
    assert not log_file.exists() or "lost a race" not in log_file.read_text()


def test_a_reference_that_moved_since_the_sync_fails_and_pushes_nothing(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    web, api = found["Deployment/shop/web (web)"], found["Pod//api (api)"]
    # the deploy repository changed since discovery: the containers are init containers now
    moved = WEB.replace("      containers:\n", "      initContainers:\n")
    remote.commit({"envs/dev/web.yaml": moved, "envs/dev/api.yaml": None}, "reshuffle")
    before = head(remote)

    done = Gitops({"deploy": spec}).apply(
        [Change(web, WEB_NODE, "1", D), Change(api, WEB_NODE, "1", D)], context(tmp_path)
    )
    assert [(a.status, a.detail) for a in done] == [
        (FAILED, "envs/dev/web.yaml: line 12: the reference is no longer there; "
                 "run `graphbuild sync`"),
        (FAILED, "envs/dev/api.yaml: cannot read: No such file or directory"),
    ]  # fmt: skip
    assert head(remote) == before
    assert shown(remote, "main", "envs/dev/web.yaml") == moved


def test_another_image_at_the_old_place_is_not_pinned(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    swapped = WEB.replace('"registry.example/apps/web:1"', "busybox:1")
    remote.commit({"envs/dev/web.yaml": swapped}, "web replaced by busybox")
    before = head(remote)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert done.status == FAILED
    assert head(remote) == before  # and busybox is not pinned to web's digest


def test_an_unreachable_remote_fails_every_change_with_a_clear_message(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    missing = tmp_path / "nowhere.git"
    changes = [Change(found["Deployment/shop/web (web)"], WEB_NODE, "1", D),
               Change(found["Pod//api (api)"], WEB_NODE, "1", D)]  # fmt: skip
    done = Gitops({"deploy": spec_for(missing)}).apply(changes, context(tmp_path))
    detail = f"deploy: cannot fetch main: fatal: '{missing}' does not appear to be a git repository"
    assert done == [Applied(c, FAILED, detail) for c in changes]


def test_credentials_in_the_url_never_reach_the_message_or_the_clone(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    web = discovered(remote, spec_for(remote.url))["Deployment/shop/web (web)"]
    spec = spec_for("https://user:s3cret@127.0.0.1:9/x.git")
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert done.status == FAILED
    # git (2.39 and later) leaves the credentials out itself; graphbuild redacts them anyway
    said = (
        r"deploy: cannot fetch main: fatal: unable to access "
        r"'https://(user:\*\*\*@)?127\.0\.0\.1:9/x\.git/': "
    )
    assert re.match(said, done.detail), done.detail
    assert "s3cret" not in done.detail
    clone = tmp_path / "ws" / "deploy" / "deploy"
    assert "s3cret" not in (clone / ".git" / "config").read_text()


def test_preview_shows_the_diff_and_pushes_nothing(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    changes = [Change(found["Deployment/shop/web (web)"], WEB_NODE, "1", D),
               Change(found["Pod//api (api)"], WEB_NODE, "1", D)]  # fmt: skip
    before = head(remote)
    shown_diff = Gitops({"deploy": spec}).preview(changes, context(tmp_path))
    assert shown_diff == [
        "# deploy -> main\n"
        "--- a/envs/dev/web.yaml\n"
        "+++ b/envs/dev/web.yaml\n"
        "@@ -9,6 +9,6 @@\n"
        "     spec:\n"
        "       containers:\n"
        "         - name: web\n"
        '-          image: "registry.example/apps/web:1"   # quoted, and kept so\n'
        f'+          image: "registry.example/apps/web:1@{D}"   # quoted, and kept so\n'
        "         - name: proxy\n"
        "           image: nginx:1.25\n",
        "# deploy -> main\n"
        "--- a/envs/dev/api.yaml\n"
        "+++ b/envs/dev/api.yaml\n"
        "@@ -5,4 +5,4 @@\n"
        " spec:\r\n"
        "   containers:\r\n"
        "     - name: api\r\n"
        "-      image: registry.example/apps/web:1 # kept\r\n"
        f"+      image: registry.example/apps/web:1@{D} # kept\r\n",
    ]
    assert head(remote) == before
    assert git(remote.url, "for-each-ref", "--format=%(refname)") == "refs/heads/main"
    assert not (tmp_path / "deploy.log").exists()


def declining(remote, tries: Path) -> None:
    """A pre-receive hook, as a protected branch: every push is refused, each try counted."""
    hook = remote.url / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho try >> '{tries}'\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)


def test_a_refused_push_fails_and_leaves_the_branch_as_it_was(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    before = head(remote)
    declining(remote, tmp_path / "tries")
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert done.status == FAILED
    assert done.detail == (
        "push to main failed: ! [remote rejected] HEAD -> main (pre-receive hook declined)"
    )
    assert head(remote) == before


def test_a_refused_push_is_not_retried_as_a_race(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    declining(remote, tmp_path / "tries")
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (tmp_path / "tries").read_text() == "try\n"
    log = tmp_path / "deploy.log"
    assert not log.exists() or "lost a race" not in log.read_text()


def test_a_refused_push_says_why(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    declining(remote, tmp_path / "tries")
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert "pre-receive hook declined" in done.detail or "main is protected" in done.detail


def test_a_tag_someone_changed_since_the_sync_is_not_undone(remotes, tmp_path):
    """A developer bumped web:1 to web:2 while the sweep was building: pinning web:1 now
    would roll their change back, so the deploy leaves it and fails."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    bumped = WEB.replace('"registry.example/apps/web:1"', '"registry.example/apps/web:2"')
    remote.commit({"envs/dev/web.yaml": bumped}, "bump web to 2")
    before = head(remote)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (done.status, done.detail) == (
        FAILED, "envs/dev/web.yaml: line 12: changed since the sync "
                "(now registry.example/apps/web:2); left alone",
    )  # fmt: skip
    assert head(remote) == before


def test_a_commit_git_refuses_fails_the_changes_without_a_traceback(remotes, tmp_path, monkeypatch):
    """A global `commit.gpgsign` with no usable signer makes `git commit` fail."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    config = tmp_path / "gitconfig"
    config.write_text("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    before = head(remote)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert done.status == FAILED
    assert done.detail.startswith("deploy: git commit failed: ")
    assert "gpg" in done.detail
    assert head(remote) == before


# ---------------------------------------------------------------- hostile deploy repositories

DEEP = "a: " + "[" * 600 + "]" * 600 + "\n"
BIG = "kind: Pod\n" + "#" * deploy_yaml.MAX_BYTES + "\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (DEEP, "envs/dev/web.yaml: line 1: nested deeper than 100 levels"),
        (BIG, f"envs/dev/web.yaml: {len(BIG)} bytes, over the {deploy_yaml.MAX_BYTES} bytes "
              "(2 MiB) a manifest may have"),
    ],
)  # fmt: skip
def test_a_manifest_made_hostile_since_the_sync_fails_alone(remotes, tmp_path, text, says):
    """Pushed between the sweep's sync and its deploy: that file's change fails with why, the
    other file is still deployed (600 levels raised RecursionError out of apply)."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    web, api = found["Deployment/shop/web (web)"], found["Pod//api (api)"]
    remote.commit({"envs/dev/web.yaml": text}, "hostile")
    done = Gitops({"deploy": spec}).apply(
        [Change(web, WEB_NODE, "1", D), Change(api, WEB_NODE, "1", D)], context(tmp_path)
    )
    assert [(a.status, a.detail) for a in done] == [
        (FAILED, says), (DEPLOYED, f"commit {head(remote)[:12]} pushed to deploy main")
    ]  # fmt: skip
    assert shown(remote, "main", "envs/dev/web.yaml") == text


def link(remote, path: str, target: Path | str) -> None:
    """Replace `path` in the deploy repository by a symlink to `target`, and push it."""
    full = remote.work / path
    if full.is_dir() and not full.is_symlink():
        subprocess.run(["rm", "-r", str(full)], check=True)
    else:
        full.unlink()
    full.symlink_to(target)
    remote.commit({}, f"{path} is now a symlink")


def test_a_manifest_replaced_by_a_symlink_out_of_the_clone_is_not_written(remotes, tmp_path):
    """It used to rewrite the file the link pointed at, outside the clone, then fail with
    `git failed: git failed`."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    outside = tmp_path / "outside.yaml"
    outside.write_text(WEB)
    link(remote, "envs/dev/web.yaml", outside)
    before = head(remote)
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (done.status, done.detail) == (
        FAILED, "envs/dev/web.yaml: refused: it is a symlink that leads out of the clone; "
                "graphbuild writes only regular files",
    )  # fmt: skip
    assert outside.read_text() == WEB
    assert head(remote) == before


def test_a_symlink_inside_the_clone_is_not_followed_either(remotes, tmp_path):
    remote = remotes("deploy", {**FILES, "envs/prod/web.yaml": WEB})
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    web, api = found["Deployment/shop/web (web)"], found["Pod//api (api)"]
    link(remote, "envs/dev/web.yaml", "../prod/web.yaml")
    done = Gitops({"deploy": spec}).apply(
        [Change(web, WEB_NODE, "1", D), Change(api, WEB_NODE, "1", D)], context(tmp_path)
    )
    assert [(a.status, a.detail) for a in done] == [
        (FAILED, "envs/dev/web.yaml: refused: it is a symlink; graphbuild writes only regular "
                 "files"),
        (DEPLOYED, f"commit {head(remote)[:12]} pushed to deploy main"),
    ]  # fmt: skip
    assert shown(remote, "main", "envs/prod/web.yaml") == WEB  # prod is not dev's to pin


def test_a_manifest_behind_a_symlinked_folder_is_not_written(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    changes = [Change(found["Deployment/shop/web (web)"], WEB_NODE, "1", D),
               Change(found["Pod//api (api)"], WEB_NODE, "1", D)]  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("web.yaml", "api.yaml"):
        (elsewhere / name).write_text(FILES[f"envs/dev/{name}"])
    link(remote, "envs/dev", elsewhere)
    before = head(remote)
    done = Gitops({"deploy": spec}).apply(changes, context(tmp_path))
    refused = ": refused: envs/dev is a symlink that leads out of the clone; graphbuild writes " \
              "only regular files"  # fmt: skip
    assert done == [Applied(c, FAILED, f"{c.workload.file}{refused}") for c in changes]
    assert (elsewhere / "web.yaml").read_text() == WEB
    assert (elsewhere / "api.yaml").read_bytes() == CRLF.encode()
    assert head(remote) == before


def test_a_manifest_that_is_now_a_folder_is_refused(remotes, tmp_path):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    remote.commit({"envs/dev/web.yaml": None})
    remote.commit({"envs/dev/web.yaml/x.yaml": WEB})
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (done.status, done.detail) == (FAILED, "envs/dev/web.yaml: refused: not a regular file")


def hooks(tmp_path: Path, monkeypatch, pre_commit: str) -> None:
    """A global hooks folder whose pre-commit hook runs `pre_commit` (sh)."""
    folder = tmp_path / "hooks"
    folder.mkdir()
    (folder / "pre-commit").write_text(f"#!/bin/sh\n{pre_commit}\n")
    (folder / "pre-commit").chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(f"[core]\n\thooksPath = {folder}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))


def test_a_git_step_that_says_nothing_is_named_with_its_status(remotes, tmp_path, monkeypatch):
    """It said `git failed: git failed`."""
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    hooks(tmp_path, monkeypatch, "exit 3")
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (done.status, done.detail) == (
        FAILED, "deploy: git commit failed: exit status 1, and git said nothing"
    )  # fmt: skip


def test_a_git_step_says_why_without_secrets(remotes, tmp_path, monkeypatch):
    remote = remotes("deploy", FILES)
    spec = spec_for(remote.url)
    web = discovered(remote, spec)["Deployment/shop/web (web)"]
    hooks(
        tmp_path,
        monkeypatch,
        "echo 'checking...' >&2\necho 'fatal: see https://bot:s3cret@x.test/policy' >&2\nexit 1",
    )
    (done,) = Gitops({"deploy": spec}).apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))
    assert (done.status, done.detail) == (
        FAILED, "deploy: git commit failed: fatal: see https://bot:***@x.test/policy"
    )  # fmt: skip


# ---------------------------------------------------------------- credentials over HTTP

TOKEN = "tok3n-d0-not-leak"


def test_a_token_in_the_url_is_in_no_command_line_nor_file(remotes, tmp_path):
    """The fetch and the push carry the credential in their environment, as a header for that
    URL: never in git-remote-http's argv, the clone's config or the log."""
    remote = remotes("deploy", FILES)
    with serving(tmp_path / "remotes", TOKEN) as server:
        url = f"http://bot:{TOKEN}@127.0.0.1:{server.port}/deploy.git"
        spec = spec_for(url)
        web = discovered(remote, spec_for(remote.url))["Deployment/shop/web (web)"]
        gitops = Gitops({"deploy": spec})

        def apply() -> list[Applied]:
            return gitops.apply([Change(web, WEB_NODE, "1", D)], context(tmp_path))

        for service in ("git-upload-pack", "git-receive-pack"):
            git(remote.work, "push", "-q", "--force", "origin", "HEAD:main")  # undo the pin
            lines, (done,) = seen_during(server, service, apply)
            assert any(b"remote-http" in cmd for cmd in lines.values()), service
            assert [cmd for cmd in lines.values() if TOKEN.encode() in cmd] == [], service
            assert done.status == DEPLOYED, done.detail
        assert set(server.authorizations) == {server.expected}
        assert {"git-upload-pack", "git-receive-pack"} <= set(server.services)
    assert shown(remote, "main", "envs/dev/web.yaml").count(D) == 1
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in (tmp_path / "deploy.log").read_text()


APPLICATION = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop, namespace: argocd}
spec:
  sources:
    - chart: shop
      repoURL: https://charts.example.com
      targetRevision: 1.4.2
      helm:
        valuesObject:
          frontend:
            image: {repository: registry.example/apps/web, tag: "1"}
    - chart: api
      repoURL: https://charts.example.com
      targetRevision: 2.0.0
      helm:
        values: |
          image:
            repository: registry.example/apps/web
            tag: "1"   # the api runs the web image too
"""
RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2beta2
kind: HelmRelease
metadata: {name: web, namespace: shop}
spec:
  chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}
  valuesFrom:
    - {kind: ConfigMap, name: web-values, valuesKey: prod.yaml}
  values:
    sidecar: {image: registry.example/apps/web:1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-values, namespace: shop}
data:
  prod.yaml: |-
    image:
      repository: registry.example/apps/web
      tag: '1'
"""
APPLICATION_SET = """\
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: web, namespace: argocd}
spec:
  generators: [{list: {elements: [{cluster: dev}]}}]
  template:
    metadata: {name: 'web-{{cluster}}'}
    spec:
      source:
        chart: web
        helm:
          valuesObject:
            image:
              repository: registry.example/apps/web
              tag: >-
                1
"""
CHARTS = """\
helmCharts:
- name: web
  repo: https://charts.example.com
  valuesInline:
    image: registry.example/apps/web:1
"""


def test_inline_helm_values_are_pinned_in_place(remotes, tmp_path):
    """Argo CD valuesObject and a values string, an ApplicationSet's template (its tag a
    folded block), a Flux HelmRelease's values and the ConfigMap it takes values from,
    kustomize helmCharts: each file is its old self with only the pinned spans changed."""
    files = {
        "envs/dev/app.yaml": APPLICATION,
        "envs/dev/release.yaml": RELEASE,
        "envs/dev/appset.yaml": APPLICATION_SET,
        "envs/dev/kustomization.yaml": CHARTS,
    }
    remote = remotes("deploy", files)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    assert sorted(found) == [
        "Application/argocd/shop:sources[0]:frontend.image",
        "Application/argocd/shop:sources[1]:image",
        "ApplicationSet/argocd/web:image",
        "ConfigMap/shop/web-values:prod.yaml:image",
        "HelmRelease/shop/web:sidecar.image",
        "helmCharts/web:image",
    ]
    changes = [Change(w, WEB_NODE, "1", D) for w in found.values()]
    done = Gitops({"deploy": spec}).apply(changes, context(tmp_path))
    assert [a.status for a in done] == [DEPLOYED] * 6, done
    assert shown(remote, "main", "envs/dev/app.yaml") == APPLICATION.replace(
        'tag: "1"}', f'tag: "1@{D}"}}'
    ).replace('tag: "1"   #', f'tag: "1@{D}"   #')
    assert shown(remote, "main", "envs/dev/release.yaml") == RELEASE.replace(
        "tag: '1'", f"tag: '1@{D}'"
    ).replace("apps/web:1}", f"apps/web:1@{D}}}")
    assert shown(remote, "main", "envs/dev/appset.yaml") == APPLICATION_SET.replace(
        "                1\n", f"                1@{D}\n"
    )
    assert shown(remote, "main", "envs/dev/kustomization.yaml") == CHARTS.replace(
        "web:1\n", f"web:1@{D}\n"
    )
    again = Gitops({"deploy": spec}).apply(changes, context(tmp_path, run_id="run2"))
    assert [a.status for a in again] == [UNCHANGED] * 6


OVERRIDES = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop, namespace: argocd}
spec:
  sources:
    - repoURL: https://github.com/acme/shop-deploy.git
      path: overlays/dev
      kustomize:
        images:
          - web=registry.example/apps/web:1   # the override runs
          - 'registry.example/apps/web:1'
    - chart: shop
      repoURL: https://charts.example.com
      helm:
        parameters:
          - name: image.repository
            value: registry.example/apps/web
          - name: image.tag
            value: "1"
    - chart: api
      repoURL: https://charts.example.com
      helm:
        parameters: [{name: api.image.tag, value: '1'}]
        values: |
          api:
            image: {repository: registry.example/apps/web, tag: "0"}
"""
FLUX_IMAGES = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  path: ./apps/dev
  images:
    - name: web
      newName: registry.example/apps/web
      newTag: "1"
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: shop}
spec:
  postRenderers:
    - kustomize:
        images:
          - {name: web, newName: registry.example/apps/web, newTag: "1"}
"""


def test_images_argo_cd_and_flux_set_are_pinned_in_place(remotes, tmp_path):
    """Argo CD's kustomize.images strings and helm.parameters (alone, and over a values
    string, whose tag they set), a Flux Kustomization's images and a HelmRelease's
    post-renderer images, found by a sync and pinned by one pushed commit: each file is its
    old self with only the pinned spans changed."""
    files = {"envs/dev/app.yaml": OVERRIDES, "envs/dev/flux.yaml": FLUX_IMAGES}
    remote = remotes("deploy", files)
    spec = spec_for(remote.url)
    found = discovered(remote, spec)
    assert sorted(found) == [
        "Application/argocd/shop:sources[0]:kustomize.images[0]",
        "Application/argocd/shop:sources[0]:kustomize.images[1]",
        "Application/argocd/shop:sources[1]:image",
        "Application/argocd/shop:sources[2]:api.image",
        "HelmRelease/shop/web:postRenderers[0]:images[0]",
        "Kustomization/flux-system/apps:images[0]",
    ]
    changes = [Change(w, WEB_NODE, "1", D) for w in found.values()]
    done = Gitops({"deploy": spec}).apply(changes, context(tmp_path))
    assert [a.status for a in done] == [DEPLOYED] * 6, done
    assert log(remote) == ["graphbuild: deploy 1 image to dev", "initial"]
    assert shown(remote, "main", "envs/dev/app.yaml") == OVERRIDES.replace(
        "web:1   #", f"web:1@{D}   #"
    ).replace(
        "'registry.example/apps/web:1'",
        f"'registry.example/apps/web=registry.example/apps/web:1@{D}'",
    ).replace('value: "1"', f'value: "1@{D}"').replace("value: '1'", f"value: '1@{D}'")
    assert shown(remote, "main", "envs/dev/flux.yaml") == FLUX_IMAGES.replace(
        '      newTag: "1"\n', f'      newTag: "1"\n      digest: {D}\n'
    ).replace('newTag: "1"}', f'newTag: "1", digest: {D}}}')
    again = Gitops({"deploy": spec}).apply(changes, context(tmp_path, run_id="run2"))
    assert [a.status for a in again] == [UNCHANGED] * 6
    assert log(remote) == ["graphbuild: deploy 1 image to dev", "initial"]
