from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from graphbuild import config, contexts, sources, trees
from graphbuild.errors import ContextError

from .site import GIT_ENV


def _config(write_config, repos):
    return config.load(write_config(repos))


# ---------------------------------------------------------------- build contexts

NOT_SENT = "graphbuild does not send it to a builder"


def _synced_tree(write_config, remote):
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    assert result.error is None, result.error
    return trees.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)


def _listing(top: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink():
            found[rel] = ("link", str(path.readlink()))
        elif path.is_dir():
            found[rel] = ("dir",)
        else:
            found[rel] = ("file", path.stat().st_mode & 0o777, path.read_bytes())
    return found


def _craft(remote, entries: str, blobs: dict[str, bytes]) -> None:
    """Commit a tree git's own commands would refuse to make (`..`, `.git`, a name twice),
    as a hostile pusher can: `entries` are mktree lines under `ctx/`, `{name}` a blob's id."""

    def run(*args: str, data: bytes | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=remote.work, input=data, capture_output=True,
                              check=True, env={**os.environ, **GIT_ENV})  # fmt: skip
        return done.stdout.decode().strip()

    ids = {name: run("hash-object", "-w", "--stdin", data=data) for name, data in blobs.items()}
    sub = run("mktree", data=f"100644 blob {ids['f']}\tf\n".encode())
    other = run("mktree", data=f"100644 blob {ids['f']}\tg\n".encode())
    lines = entries.format(sub=sub, other=other, **ids)
    raw = b"".join(  # mktree checks an entry's mode against its object: write the tree itself
        f"{mode} {name}\0".encode() + bytes.fromhex(sha)
        for mode, _, rest in (line.split(" ", 2) for line in lines.splitlines())
        for sha, name in [rest.split("\t")]
    )
    ctx = run("hash-object", "-t", "tree", "-w", "--stdin", "--literally", data=raw)
    root = run("mktree", data=f"040000 tree {ctx}\tctx\n".encode())
    commit = run("commit-tree", root, "-m", "crafted")
    run("push", "-q", "-f", "origin", f"{commit}:refs/heads/main")


def test_a_commit_and_its_work_tree_export_alike_and_as_their_key_says(
    remotes, write_config, tmp_path
):
    remote = remotes("app", {"ctx/Dockerfile": "FROM scratch\n", "ctx/sub/f": "f\n",
                             "ctx/.gitattributes": "* export-subst\n", "ctx/v": "$Format:%H$\n",
                             "other/secret": "not in the context\n"})  # fmt: skip
    (remote.work / "ctx/run").write_text("#!/bin/sh\n")
    (remote.work / "ctx/run").chmod(0o755)
    (remote.work / "ctx/l").symlink_to("sub/f")
    (remote.work / "ctx/up").symlink_to("../other")
    remote.commit({})
    tree = _synced_tree(write_config, remote)
    try:
        in_git, git_digest = contexts.export(tree, "app", "ctx", tmp_path / "git")
        assert git_digest == tree.content("ctx")
    finally:
        tree.close()
    folder = trees.DirTree(remote.work, {}, {})
    on_disk, disk_digest = contexts.export(folder, "app", "ctx", tmp_path / "disk")
    assert (in_git, on_disk) == (tmp_path / "git/ctx", tmp_path / "disk/ctx")
    assert disk_digest == git_digest == folder.content("ctx")
    assert (
        _listing(in_git)
        == _listing(on_disk)
        == {
            ".gitattributes": ("file", 0o644, b"* export-subst\n"),
            "Dockerfile": ("file", 0o644, b"FROM scratch\n"),
            "l": ("link", "sub/f"),
            "run": ("file", 0o755, b"#!/bin/sh\n"),
            "sub": ("dir",),
            "sub/f": ("file", 0o644, b"f\n"),
            "up": ("link", "../other"),  # inside the repository, not sent: it leads nowhere
            "v": ("file", 0o644, b"$Format:%H$\n"),  # the blob, not git archive's substitution
        }
    )
    assert not (tmp_path / "git/other").exists()


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        pytest.param("040000 tree {sub}\t..\n", f"app:ctx/../f: a path git refuses to check out "
                     f"('..'); {NOT_SENT}", id="dot-dot"),
        pytest.param("040000 tree {sub}\t.GIT\n", f"app:ctx/.GIT/f: a path git refuses to check "
                     f"out ('.GIT'); {NOT_SENT}", id="dot-git"),
        pytest.param("100644 blob {f}\tx\n040000 tree {sub}\tx\n", "app:ctx/x/f: the tree holds "
                     f"this path twice (as a file or symlink, and as a folder); {NOT_SENT}",
                     id="file-and-folder"),
        pytest.param("120000 blob {d_link}\tx\n040000 tree {sub}\tx\n040000 tree {other}\td\n",
                     "app:ctx/x/f: the tree holds this path twice (as a file or symlink, and as "
                     f"a folder); {NOT_SENT}", id="written-through-a-link"),
        pytest.param("120000 blob {loop_a}\ta\n120000 blob {loop_b}\tb\n", "app:ctx/a: symlink "
                     f"loop, or a chain of more than 40 symlinks; {NOT_SENT}", id="loop"),
        pytest.param("120000 blob {nul}\tx\n", f"app:ctx/x: symlink target is not a path; "
                     f"{NOT_SENT}", id="nul"),
        pytest.param("120000 blob {long}\tx\n", f"app:ctx/x: symlink target longer than 4096 "
                     f"bytes; {NOT_SENT}", id="long"),
        pytest.param("100644 blob {sub}\tx\n", f"app:ctx/x: its tree entry names a tree, not a "
                     f"file; {NOT_SENT}", id="tree-as-a-file"),
    ],
)  # fmt: skip
def test_a_crafted_tree_is_refused_naming_the_path_and_the_rule(
    remotes, write_config, tmp_path, entries, says
):
    remote = remotes("app", {"ctx/Dockerfile": "FROM scratch\n"})
    blobs = {"f": b"f\n", "d_link": b"d", "loop_a": b"b", "loop_b": b"a", "nul": b"a\0b",
             "long": b"a/" * 3000}  # fmt: skip
    _craft(remote, entries, blobs)
    tree = _synced_tree(write_config, remote)
    try:
        with pytest.raises(ContextError) as refused:
            contexts.export(tree, "app", "ctx", tmp_path / "context")
    finally:
        tree.close()
    assert str(refused.value) == says
    assert not (tmp_path / "context/ctx/d/f").exists()  # nothing written through a link


def test_symlinks_past_the_steps_graphbuild_checks_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(contexts, "LINK_STEPS", 50)
    (tmp_path / "ctx").mkdir()
    for i in range(20):
        (tmp_path / f"ctx/l{i}").symlink_to("a/b/c/../../../f")
    with pytest.raises(ContextError, match=r"^app:ctx/l\d+: more symlinks than graphbuild "
                       rf"checks \(50 steps\); {NOT_SENT}$"):  # fmt: skip
        contexts.export(trees.DirTree(tmp_path, {}, {}), "app", "ctx", tmp_path / "out")


def test_a_file_is_written_with_its_mode_whatever_the_umask(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/f").write_text("f")
    (tmp_path / "ctx/x").write_text("x")
    (tmp_path / "ctx/x").chmod(0o700)
    old = os.umask(0o077)
    try:
        top, _ = contexts.export(trees.DirTree(tmp_path, {}, {}), "app", "ctx", tmp_path / "o")
    finally:
        os.umask(old)
    assert [(p.name, p.stat().st_mode & 0o777) for p in sorted(top.iterdir())] == [
        ("f", 0o644), ("x", 0o755)]  # fmt: skip


def test_a_local_context_that_is_a_symlink_loop_is_refused_by_name(tmp_path):
    (tmp_path / "ctx").symlink_to("ctx")
    tree = trees.DirTree(tmp_path, {}, {})
    assert tree.content("ctx") == trees.DirTree(tmp_path, {}, {}).content("nothing-here")
    with pytest.raises(ContextError) as refused:
        contexts.export(tree, "local", "ctx", tmp_path / "out")
    assert str(refused.value) == (
        "local:ctx: the build context is a symlink (to ctx), not a folder; graphbuild sends a "
        "builder only a folder of the repository"
    )


def test_a_local_folder_swapped_for_a_symlink_after_the_walk_is_not_read_through(tmp_path):
    """A file is opened folder by folder from the root, never through a symlink: a folder
    that becomes a link to /etc between the walk and the copy leads nowhere."""
    (tmp_path / "ctx/sub").mkdir(parents=True)
    (tmp_path / "ctx/sub/passwd").write_text("mine")
    assert os.read(contexts._open_beneath(tmp_path, "ctx/sub/passwd"), 10) == b"mine"
    (tmp_path / "ctx/sub/passwd").unlink()
    (tmp_path / "ctx/sub").rmdir()
    (tmp_path / "ctx/sub").symlink_to("/etc")
    with pytest.raises(OSError) as refused:
        contexts._open_beneath(tmp_path, "ctx/sub/passwd")
    assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
