from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from graphbuild import config, sources, trees
from graphbuild.errors import CloneDamaged

from .site import git


def _config(write_config, repos):
    return config.load(write_config(repos))


def test_git_tree_reads_blobs_and_follows_symlinks(remotes, write_config):
    remote = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    (remote.work / "Dockerfile").symlink_to("images/a/Dockerfile")
    remote.commit({})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    tree = trees.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)
    try:
        assert tree.glob("**/Dockerfile") == ["images/a/Dockerfile"]  # the link is no copy
        assert tree.glob("images/*/Dockerfile") == ["images/a/Dockerfile"]
        assert tree.blob("Dockerfile") == tree.blob("images/a/Dockerfile")
        assert tree.read("Dockerfile") == b"FROM alpine:3.20\n"
        assert tree.blob("missing") is None
    finally:
        tree.close()


def test_dir_tree_blob_matches_git_and_stays_inside_the_folder(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM alpine:3.20\n")
    (tmp_path / "secret").write_text("x")
    (root / "escape").symlink_to(tmp_path / "secret")
    seen: dict = {}
    tree = trees.DirTree(root, {}, seen)
    expected = git(tmp_path, "hash-object", str(root / "Dockerfile"))
    assert tree.blob("Dockerfile") == expected
    assert tree.blob("escape") is None
    assert tree.blob("../secret") is None
    assert list(seen) == [str(root / "Dockerfile")]


def test_dir_tree_uses_the_stat_cache(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.20\n")
    st = (tmp_path / "Dockerfile").stat()
    key = str((tmp_path / "Dockerfile").resolve())
    known = {key: (st.st_mtime_ns, st.st_size, "cached-sha")}
    seen: dict = {}
    assert trees.DirTree(tmp_path, known, seen).blob("Dockerfile") == "cached-sha"
    assert seen == known
    Path(tmp_path / "Dockerfile").write_text("FROM alpine:3.21\n")
    assert trees.DirTree(tmp_path, known, seen).blob("Dockerfile") != "cached-sha"


GLOB_FILES = {
    "Dockerfile": "FROM alpine\n",
    "images/a/Dockerfile": "FROM alpine\n",
    "images/b/c/Dockerfile": "FROM alpine\n",
    ".hidden/Dockerfile": "FROM alpine\n",
    "v1/Dockerfile.b": "FROM alpine\n",
    "v1/Dockerfile.c": "FROM alpine\n",
    "i1/Dockerfile": "FROM alpine\n",
    "i2/Dockerfile": "FROM alpine\n",
}
PATTERNS = ["images/*/Dockerfile", "**/Dockerfile", "v?/Dockerfile.[ab]", "i[!1]/Dockerfile",
            "**/**/**/c/Dockerfile", "*/Dockerfile"]  # fmt: skip


def test_local_folders_and_git_commits_glob_alike(remotes, write_config):
    remote = remotes("app", GLOB_FILES)
    (remote.work / "images/a/loop").symlink_to("..")  # a folder symlink: not followed
    (remote.work / "images/a/Dockerfile.link").symlink_to("Dockerfile")
    (remote.work / "Dockerfile.copy").symlink_to("images/a/Dockerfile")
    remote.commit({})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    in_git = trees.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)
    on_disk = trees.DirTree(remote.work, {}, {})
    try:
        for pattern in PATTERNS:
            assert on_disk.glob(pattern) == in_git.glob(pattern), pattern
    finally:
        in_git.close()
    assert on_disk.glob("**/Dockerfile") == [
        ".hidden/Dockerfile", "Dockerfile", "i1/Dockerfile", "i2/Dockerfile",
        "images/a/Dockerfile", "images/b/c/Dockerfile",
    ]  # fmt: skip
    assert on_disk.glob("i[!1]/Dockerfile") == ["i2/Dockerfile"]
    assert on_disk.glob("*/Dockerfile") == [".hidden/Dockerfile", "i1/Dockerfile", "i2/Dockerfile"]


def test_a_symlink_loop_does_not_trap_the_walk(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/Dockerfile").write_text("FROM alpine\n")
    (tmp_path / "a/l1").symlink_to("..")
    (tmp_path / "a/l2").symlink_to("..")
    assert trees.DirTree(tmp_path, {}, {}).glob("**/Dockerfile") == ["a/Dockerfile"]


@pytest.mark.timeout(30)
def test_a_local_file_swapped_for_a_fifo_is_gone_not_waited_on(tmp_path):
    """Between the sync and the build a Dockerfile becomes a FIFO: reading it must not hang."""
    os.mkfifo(tmp_path / "Dockerfile")
    with pytest.raises(FileNotFoundError):
        trees.DirTree(tmp_path, {}, {}).read("Dockerfile")


def test_a_big_local_file_is_hashed_as_git_does_in_little_memory(tmp_path):
    """A context's 32 MiB file costs a chunk of memory to hash, not its size."""
    import tracemalloc

    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        for i in range(32):
            out.write(bytes([i]) * 2**20)
    tracemalloc.start()
    try:
        sha = trees.DirTree(tmp_path, {}, {}).blob("big.bin")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sha == git(tmp_path, "hash-object", "big.bin")
    assert peak < 4 * 2**20, f"hashing took {peak} bytes"


def test_a_kept_listing_serves_only_its_own_commit_and_only_whole(remotes, write_config):
    remote = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    clone = sources.clone_dir(cfg.workspace, "app")
    trees.GitTree(clone, sources.sync(cfg)[0].commit).close()
    remote.commit({"images/b/Dockerfile": "FROM alpine:3.21\n"})
    newer = sources.sync(cfg)[0].commit
    both = ["images/a/Dockerfile", "images/b/Dockerfile"]
    for damage in (
        lambda data: data,  # kept for the commit before
        lambda data: data.replace(b"images/b", b"images/c"),  # right commit, changed listing
        lambda data: data[: len(data) // 2],
        lambda data: b"",
    ):
        kept = clone / trees.TREE_CACHE
        kept.write_bytes(damage(kept.read_bytes()))
        tree = trees.GitTree(clone, newer)
        try:
            assert tree.glob("images/*/Dockerfile") == both
            assert tree.read("images/b/Dockerfile") == b"FROM alpine:3.21\n"
        finally:
            tree.close()


def test_a_clone_that_lost_its_objects_says_so_and_is_fetched_again(tmp_path, remotes):
    """A bad disk or a partial restore empties a clone that graphbuild still lists from its
    kept listing: reading it names the clone, not an internal error, and the next sync
    fetches the commit anew instead of trusting what the clone says it has."""
    remote = remotes("app", {"Dockerfile": "FROM debian:12\n"})
    repo = {"name": "app", "url": str(remote.url), "images": [{"image": "r.test/app"}]}
    (tmp_path / "repos.yaml").write_text(yaml.safe_dump({"repos": [repo]}))
    cfg = config.load(tmp_path / "repos.yaml")
    clone = sources.clone_dir(cfg.workspace, "app")

    def wipe() -> None:
        for item in (clone / "objects").iterdir():
            if item.name not in ("info", "pack"):
                shutil.rmtree(item)
        for pack in (clone / "objects" / "pack").iterdir():
            pack.unlink()

    def read(result: sources.SyncResult) -> bytes:
        tree = trees.open_tree(cfg.sources[0], result, cfg.workspace, {}, {})
        try:
            return tree.read("Dockerfile")
        finally:
            tree.close()

    (first,) = sources.sync(cfg)
    assert read(first) == b"FROM debian:12\n"  # the listing is kept in the clone now
    wipe()
    with pytest.raises(CloneDamaged, match=r"app\.git: object [0-9a-f]{12} is missing"):
        read(first)
    (again,) = sources.sync(cfg)
    assert again == sources.SyncResult("app", first.commit, fetched=True)
    assert read(again) == b"FROM debian:12\n"
    wipe()  # and with no listing kept: the listing itself cannot be made
    (clone / trees.TREE_CACHE).unlink()
    with pytest.raises(CloneDamaged, match=r"cannot list commit [0-9a-f]{12} in this clone"):
        read(again)
    assert sources.sync(cfg) == [sources.SyncResult("app", first.commit, fetched=True)]
