"""The build of one image: the work the scheduler runs for a node.

Every node gets a content-addressed key (source, Dockerfile, build options, the
exact digests of its parents). A key already built and served is skipped, unless
the run forces every build (`rebuild` does, but with `--skip-served`); otherwise
the source is exported into the workspace's scratch, the Dockerfile is pinned to
the parents' digests and the builder is asked to build it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from graphbuild import contexts, dockerfile, keys, pin, process, refs, sources, trees
from graphbuild.builders import Builder, BuildRequest
from graphbuild.config import IMAGE_CONTEXT, Config, RepoSpec
from graphbuild.errors import CommandFailed, ContextError, DockerfileError, GraphbuildError
from graphbuild.graph import BUILD_INPUTS, builds_on, edge_data, image_data, node_items
from graphbuild.index import BuildOptions
from graphbuild.indexdb import EXTERNAL, ImageNode
from graphbuild.registry.manifests import BASE_DIGEST, BASE_NAME
from graphbuild.scheduler import Failed, Outcome, Stop
from graphbuild.state import NodeStatus, drop_group, find_build, note_group
from graphbuild.state import scratch as scratch_dir
from graphbuild.workspace import stuck


@dataclass
class RunSettings:
    max_parallel: int = 4
    retries: int = 2
    backoff: float = 5.0
    force: bool = False  # build even when a build with the same key is served
    no_cache: bool = False


class Builds:
    """The work of one run: for a node, decide its key, skip or build it, record it."""

    def __init__(
        self,
        config: Config,
        graph: nx.DiGraph[str],
        digests: Mapping[str, str],
        builder: Builder,
        run_id: str,
        reasons: Mapping[str, str],
        settings: RunSettings,
        logs: Path,
        missing: frozenset[str] = frozenset(),
        on_build: Callable[[str], None] = lambda node: None,
        fresh: frozenset[str] = frozenset(),
    ) -> None:
        self.config, self.graph, self.builder = config, graph, builder
        self.on_build = on_build  # called, from the build's thread, as its builder starts
        self.missing = missing  # a tag is not in the registry: a push is due whatever the key
        # rebuilt for a vulnerability: whatever the key, and without cache, so that its
        # package steps run again and fetch the fixed versions
        self.fresh = fresh
        self.served = dict(digests)  # node -> digest the registry served when the plan was made
        self.digests = dict(digests)  # node -> digest to pin to; built nodes are added
        self.run_id, self.reasons, self.settings, self.logs = run_id, reasons, settings, logs
        self.lock = threading.Lock()
        self.keys: dict[str, tuple[str, str]] = {}  # node -> (source, key)
        self.parents: dict[str, dict[str, str]] = {}
        self.repos = {repo.name: repo for repo in config.repos}
        self.by_tag = {tag: node for node, attrs in node_items(graph)
                       if attrs["kind"] != EXTERNAL for tag in attrs["tags"]}  # fmt: skip

    def work(self, node: str, cancel: threading.Event) -> Outcome:
        """One node's build; a failure on a workspace that cannot be written stops the run."""
        try:
            return self._attempt(node, cancel)
        except (Failed, OSError) as err:
            why = stuck(self.config.workspace)
            if why is None:
                raise
            raise Stop(f"the workspace {self.config.workspace} {why}: stopping the run "
                       f"({err})") from None  # fmt: skip

    def _attempt(self, node: str, cancel: threading.Event) -> Outcome:
        attrs = image_data(self.graph, node)
        repo = self.repos.get(attrs["repo"])
        if repo is None:
            raise Failed(f"repository {attrs['repo']} is no longer in the config")
        # in the workspace, not /tmp: a killed graphbuild's is removed by the next run
        scratch = scratch_dir(self.config.workspace, self.run_id) / log_name(node)[: -len(".log")]
        shutil.rmtree(scratch, ignore_errors=True)  # an earlier attempt's, if it left any
        watch = process.Watch(
            lambda group: note_group(self.config.workspace, self.run_id, node, group),
            lambda group: drop_group(self.config.workspace, self.run_id, group),
        )
        try:
            try:
                scratch.mkdir(parents=True)
            except OSError as err:
                raise Failed(f"cannot make {scratch}: {err.strerror}") from None
            with process.watched(watch):
                outcome = self._build(node, attrs, repo, scratch, cancel)
        except CommandFailed as err:
            raise Failed(str(err), err.transient) from None
        except GraphbuildError as err:  # what the repository holds: that image fails, alone
            raise Failed(str(err)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if outcome.status == NodeStatus.SUCCEEDED:
            with self.lock:
                self.digests[node] = outcome.digest
        return outcome

    def _build(
        self, node: str, attrs: ImageNode, repo: RepoSpec, scratch: Path, cancel: threading.Event
    ) -> Outcome:
        options = BuildOptions.of(attrs)  # exactly what the graph was linked with
        context, text, content, folders = self._source(repo, attrs, options, scratch)
        try:
            parsed = options.parse(text)
        except DockerfileError as err:  # changed since the sync read it
            parts = (attrs["repo"], attrs["dockerfile"], err.line)
            where = ":".join(str(p) for p in parts if p)
            raise Failed(f"{where}: {err.message}") from None
        pins, parents = self._pins(node, parsed.refs)
        named = {name: digest for name, (_, digest) in folders.items()}
        source = keys.source_key(node, attrs, content, named)
        key = keys.build_key(source, parents)
        with self.lock:
            self.keys[node], self.parents[node] = (source, key), parents
        again = self.settings.force or node in self.fresh
        done = None if again else find_build(self.config.workspace, key)
        served = done is not None and done.digest == self.served.get(node)
        if done is not None and served and node not in self.missing:
            return Outcome(
                NodeStatus.SKIPPED, done.digest, "up-to-date: this exact build is served"
            )
        pinned = scratch / "Dockerfile.pinned"
        try:
            pinned.write_text(pin.pin(text, parsed.refs, pins), "utf-8", "surrogateescape")
        except pin.Unpinnable as err:
            raise Failed(f"{attrs['repo']}:{attrs['dockerfile']}: {err}") from None
        except OSError as err:
            raise Failed(f"cannot write {pinned}: {err.strerror}") from None
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / log_name(node)
        reason = f"{self.reasons.get(node, '')}"[:200]
        marks = {"io.graphbuild.run": self.run_id, "io.graphbuild.reason": reason}
        request = BuildRequest(
            image=node, tags=tuple(attrs["tags"]), context=context, dockerfile=pinned,
            build_args=options.build_args, secret_args=_secrets(attrs, options),
            target=options.target, platforms=options.platforms,
            contexts=_build_contexts(options, pins, {n: p for n, (p, _) in folders.items()}),
            labels=marks,
            annotations={**marks, **_base_annotations(parsed.refs, parents, attrs["base"])},
            no_cache=self.settings.no_cache or node in self.fresh, log=log,
            insecure_pull=self._insecure(parents), insecure_push=self._insecure([node]),
        )  # fmt: skip
        self.on_build(node)
        return Outcome(NodeStatus.SUCCEEDED, self.builder.build(request, cancel))

    def _source(
        self, repo: RepoSpec, attrs: ImageNode, options: BuildOptions, scratch: Path
    ) -> tuple[Path, str, str, dict[str, tuple[Path, str]]]:
        """The build context written into `scratch`, the Dockerfile's text, the digest of
        that context's content, and each named context that is a folder (where it was
        written, its content's digest), at the commit the graph read: the key covers what
        is sent."""
        tree = self._tree(repo, attrs)
        folders: dict[str, tuple[Path, str]] = {}
        where = f"{repo.name}:{options.dockerfile}"
        try:
            dockerfile.check_size(tree.size(options.dockerfile))  # a local file may have grown
            # surrogateescape: a byte that is not UTF-8 goes back into the pinned copy as it was
            text = tree.read(options.dockerfile).decode("utf-8", "surrogateescape")
            context, content = contexts.export(tree, repo.name, options.context,
                                              scratch / "context")  # fmt: skip
            for i, (name, folder) in enumerate(sorted(options.folders.items())):
                try:  # written like the main context: nothing through a symlink, nothing outside
                    folders[name] = contexts.export(tree, repo.name, folder,
                                                   scratch / f"named-{i}")  # fmt: skip
                except ContextError as err:
                    raise Failed(f"{err} (named context contexts.{name})") from None
        except DockerfileError as err:
            raise Failed(f"{where}: {err.message}") from None
        except FileNotFoundError:
            raise Failed(f"{where} is gone") from None
        except OSError as err:  # a local folder's file, unreadable since the sync
            raise Failed(f"{where}: cannot read it ({err.strerror})") from None
        finally:
            tree.close()
        return context, text, content, folders

    def _tree(self, repo: RepoSpec, attrs: ImageNode) -> trees.Tree:
        """The repository at the commit the graph read."""
        result = sources.SyncResult(repo.name, attrs["commit"])
        if repo.path is not None:
            return trees.open_tree(repo, result, self.config.workspace, {}, {})
        from git.exc import GitError

        try:
            return trees.open_tree(repo, result, self.config.workspace, {}, {})
        except (GitError, OSError) as err:  # the clone, not what the repository holds
            raise Failed(f"{attrs['repo']}: cannot read commit {attrs['commit']} from its "
                         f"clone ({type(err).__name__}); `graphbuild sync` fetches it "
                         "again") from None  # fmt: skip

    def _pins(
        self, node: str, bases: list[dockerfile.BaseRef]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """`name:tag` -> digest for the Dockerfile, and parent node -> digest for the record."""
        pins: dict[str, str] = {}
        parents: dict[str, str] = {}
        tracked = {
            p for p in self.graph.predecessors(node) if builds_on(edge_data(self.graph, p, node))
        }
        for base in bases:
            if base.ref is None or base.kind not in BUILD_INPUTS:
                continue
            ref = refs.parse(base.ref)
            parent = self._node_for(ref)
            if parent not in tracked:
                continue
            if ref.digest is not None:  # pinned in the Dockerfile: built on that, whatever moved
                parents[parent] = ref.digest
                continue
            with self.lock:
                digest = self.digests.get(parent)
            if digest is None:
                raise Failed(f"no digest to pin {parent} to: its registry gave no answer")
            parents[parent] = pins[ref.tagged] = digest
        return pins, parents

    def _node_for(self, ref: refs.Reference) -> str:
        """The graph node a reference names: an image by any of its tags, else the base."""
        name = refs.upstream(str(ref), self.config.mirrors)  # a mirrored base is its upstream
        return self.by_tag.get(ref.tagged, name) if ref.tag is not None else name

    def _insecure(self, nodes: Iterable[str]) -> bool:
        """Is any of these images' registry a plain-http loopback one?"""
        hosts = {refs.parse(node).domain for node in nodes}
        return any(spec.insecure for host, spec in self.config.registries.items() if host in hosts)


def _secrets(attrs: ImageNode, options: BuildOptions) -> dict[str, str]:
    """The secret build args' values, from the environment now: stored nowhere. A variable
    that is not set, or set to "", fails the image (the build would silently go without it)."""
    values = {}
    for name, variable in options.secret_build_args.items():
        value = os.environ.get(variable)
        if not value:
            raise Failed(f"{attrs['repo']}:{attrs['dockerfile']}: secret build arg {name}: "
                         f"${variable} is not set or empty")  # fmt: skip
        values[name] = value
    return values


def _build_contexts(
    options: BuildOptions, pins: Mapping[str, str], folders: Mapping[str, Path]
) -> dict[str, str]:
    """The named contexts as `--build-context` takes them: an image pinned to the digest the
    Dockerfile's own uses of it are pinned to (so the build record's parents and base
    annotations name what was built on), a folder where it was written. An image no
    reached stage uses has no such digest and goes as written, like such a stage's FROM."""
    out = {}
    for name, value in options.contexts.items():
        if name in folders:
            out[name] = str(folders[name])
            continue
        ref = refs.normalize(value[len(IMAGE_CONTEXT) :])
        digest = pins.get(ref.tagged) if ref.digest is None else None
        out[name] = f"{IMAGE_CONTEXT}{ref.tagged}@{digest}" if digest else IMAGE_CONTEXT + str(ref)
    return out


def _base_annotations(
    bases: list[dockerfile.BaseRef], parents: Mapping[str, str], base: str | None
) -> dict[str, str]:
    """The OCI base annotations, for every builder: the parent as the Dockerfile names it
    (`name:tag`) and the exact digest it was pinned to. buildah's own would name
    `name@digest`, and BuildKit writes none."""
    final = next((b for b in bases if b.final and b.kind == dockerfile.FROM and b.ref), None)
    if base is None or base not in parents or final is None or final.ref is None:
        return {}
    return {BASE_NAME: refs.parse(final.ref).tagged if "@" not in final.ref else final.ref,
            BASE_DIGEST: parents[base]}  # fmt: skip


def log_name(node: str) -> str:
    """A file name per image, readable, and distinct even where two names read alike."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)[:100]
    return f"{safe}-{hashlib.sha256(node.encode()).hexdigest()[:8]}.log"
