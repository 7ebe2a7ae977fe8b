from __future__ import annotations

import subprocess
import sys

from .site import graphbuild

# What a sync where nothing moved has no use for: linking (networkx), fetching (GitPython),
# the registries (httpx), and the build and deploy machinery.
UNNEEDED = ("networkx", "git", "gitdb", "httpx", "azure", "graphbuild.builders",
            "graphbuild.deployers", "graphbuild.execute", "graphbuild.builds",
            "graphbuild.scheduler", "graphbuild.graph", "graphbuild.detect")  # fmt: skip


def _imported(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run graphbuild under `python -X importtime`, which lists every module imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "graphbuild", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}  # fmt: skip
    return done, imported


def test_an_unchanged_sync_imports_none_of_the_fetch_link_and_build_machinery(
    remotes, write_config, tmp_path
):
    """A warm sync of a thousand remotes is a thousand `ls-remote`s: the Python it imports
    is paid before the first of them starts."""
    app = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    base = remotes("base", {"Dockerfile": "FROM debian:12\n"})
    write_config([
        {"name": "app", "url": str(app.url), "images": [
            {"image": "r.test/{dir}", "dockerfile": "images/*/Dockerfile"}]},
        {"name": "base", "url": str(base.url), "ref": "main",
         "images": [{"image": "r.test/base"}]},
    ])  # fmt: skip
    assert graphbuild("sync", cwd=tmp_path).returncode == 0
    done, imported = _imported(["sync"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Synced 2 repositories (0 with new commits); indexed 2 images" in done.stdout
    assert "graphbuild.sources" in imported  # the remotes were asked
    assert sorted(m for m in imported if m.split(".")[0] in UNNEEDED or m in UNNEEDED
                  or any(m.startswith(u + ".") for u in UNNEEDED)) == []  # fmt: skip


def test_a_sync_after_a_push_still_fetches_and_links(remotes, write_config, tmp_path):
    """What an unchanged sync leaves out is still there when something moved."""
    app = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    write_config([{"name": "app", "url": str(app.url), "images": [{"image": "r.test/app"}]}])
    assert graphbuild("sync", cwd=tmp_path).returncode == 0
    app.commit({"Dockerfile": "FROM r.test/base:1\n"})
    done, imported = _imported(["sync", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"git", "networkx", "graphbuild.graph"} <= imported
    assert '"fetched": true' in done.stdout and '"parsed": 1' in done.stdout
    uses = graphbuild("uses", "r.test/base:1", "--json", cwd=tmp_path)
    assert "r.test/app" in uses.stdout


def test_an_unchanged_sync_writes_neither_the_index_nor_the_kept_listings(
    remotes, write_config, tmp_path
):
    """Nothing moved, so nothing is parsed, linked or stored: index.db and the clones'
    kept listings are left as they were (a guard: it was so before the sync step moved)."""
    app = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    write_config([{"name": "app", "url": str(app.url), "images": [
        {"image": "r.test/{dir}", "dockerfile": "images/*/Dockerfile"}]}])  # fmt: skip
    assert graphbuild("sync", cwd=tmp_path).returncode == 0
    assert graphbuild("sync", cwd=tmp_path).returncode == 0  # the listing is kept by now
    kept = [tmp_path / ".graphbuild" / "index.db",
            tmp_path / ".graphbuild" / "repos" / "app.git" / "graphbuild-tree"]  # fmt: skip
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept}
    done = graphbuild("sync", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == before
