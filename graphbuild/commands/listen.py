"""`graphbuild listen`: registry push events make a sweep come sooner.

ACR (or Docker Hub) posts each push here; pushes that arrive together are
collected into one sweep of what is built on the pushed images. Events only
speed things up: the scheduled sweep stays the source of truth (rule 2), and a
lost event costs at most the time until it runs.

The sweeps run in the main thread, one at a time, so Ctrl-C and SIGTERM reach
them as they reach any sweep: the first stops new builds, the second cancels.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import NoReturn

from graphbuild import (
    builds,
    detect,
    errors,
    events,
    extras,
    indexdb,
    pipeline,
    process,
    refs,
    report,
    web,
)
from graphbuild.commands import mirror, sweep
from graphbuild.config import Config
from graphbuild.guard import guarded
from graphbuild.state import (
    WEBHOOK_EVENTS,
    RunStatus,
    State,
    add_counts,
    built_here,
    sweep_lock,
)


def run(
    config: Config,
    host: str,
    port: int,
    secret_env: str,
    window: float,
    max_wait: float,
    settings: builds.RunSettings,
    max_images: int,
    ui: bool = False,
    token_env: str | None = None,
) -> int:
    if window > max_wait:
        raise errors.GraphbuildError(f"--window {window:g} is longer than --max-wait {max_wait:g}")
    if token_env is not None and not ui:
        raise errors.GraphbuildError("--token-env guards the web view: it needs --ui")
    token = None if token_env is None else web.token(token_env)  # "" is refused, not none
    if ui:  # listen writes state.db anyway: bring it to this graphbuild's schema first
        State(config.workspace).db.close()
    pages = web.Site(config, token).get if ui else None
    if config.azure is not None and config.mirrors:  # each sweep first imports into ACR
        extras.require_azure("listen with `mirrors:` (imports into ACR)")
    pipeline.ready(config)  # its sweeps build: said now, not at the first push
    process.STOP_REQUESTED.clear()
    # a batch to sweep, or None: a burst began, so sync now, while its window runs
    batches: queue.Queue[tuple[frozenset[str], threading.Event] | None] = queue.Queue()
    stopping = threading.Event()

    def fire(pushed: frozenset[str]) -> None:  # the debouncer's thread: hand over, wait
        done = threading.Event()
        batches.put((pushed, done))
        while not done.wait(0.5) and not stopping.is_set():
            pass  # pushes meanwhile gather into the next batch

    def take(push: events.Push) -> None:
        if push.digest and built_here(config.workspace, push.digest):
            return  # graphbuild's own push coming back: what is built on it was just built
        if not relevant(config, push.ref):
            return  # nothing is built on it: it must not hold a burst's sweep back
        debouncer.add(push)

    def stop(count: int) -> NoReturn:
        raise KeyboardInterrupt

    secret = events.secret(secret_env)
    debouncer = events.Debouncer(fire, window, max_wait, on_burst=lambda: batches.put(None))
    server = None
    try:  # from the moment the port is open, Ctrl-C is a clean stop
        server = events.serve(host, port, secret, take, pages=pages,
                              on_event=counted(config.workspace))  # fmt: skip
        threading.Thread(target=server.serve_forever, name="graphbuild-hooks", daemon=True).start()
        address = f"http://{host}:{server.server_address[1]}/hooks"
        report.note(f"Listening on {address}/acr and {address}/dockerhub; pushes within "
                    f"{window:g} s make one sweep.")  # fmt: skip
        if ui:
            report.note(f"The web view is on {web.address(host, server.server_address[1])}.")
            if token_env is None and not web.loopback(host):
                report.note(web.OPEN_WARNING)
        with process.on_stop_signals(stop, (signal.SIGTERM,)):  # a pod's stop, between sweeps
            syncs = EarlySyncs(lambda: _sync(config), window)
            while True:
                try:
                    item = batches.get(timeout=1)
                except queue.Empty:
                    continue
                if item is None:
                    syncs.burst()
                    continue
                pushed, done = item
                try:
                    if _sweep(config, pushed, settings, max_images, syncs.take()):
                        break  # the sweep was interrupted: so is listening
                finally:
                    done.set()
                if process.STOP_REQUESTED.is_set():  # the sweep took the signal, and ended well
                    raise KeyboardInterrupt
                syncs.swept()
    except KeyboardInterrupt:
        report.note("Stopping: no more pushes are taken.")
    finally:
        stopping.set()  # a batch handed over but never swept does not hold the close up
        if server is not None:
            server.shutdown()
            server.server_close()
        debouncer.close(flush=False)
    return errors.OK


def counted(workspace: Path) -> Callable[[str], None]:
    """What counts each webhook event's outcome in state.db, where /metrics reads it: from
    the server's threads, each with a connection of its own."""

    def count(outcome: str) -> None:
        add_counts(workspace, {WEBHOOK_EVENTS: {outcome: 1}})

    return count


def relevant(config: Config, ref: str) -> bool:
    """Whether anything in the stored graph is built on `ref` (a mirror's name means its
    upstream), asked when the push arrives, of index.db as the last sync left it, with no
    sync: a push nothing is built on then starts nothing and holds no burst back. Without
    an index yet, every push is taken (the sweep syncs first). A Dockerfile merged since
    the last sync that uses the pushed image is rebuilt by the next scheduled sweep."""
    name = refs.upstream(ref, config.mirrors)
    try:
        db = indexdb.reader(config.workspace)
    except errors.GraphbuildError:  # another graphbuild's index: the sweep rebuilds it
        return True
    if db is None:
        return True
    with closing(db):
        if indexdb.meta(db) is None or indexdb.match(db, name):
            return True
    report.note(f"Pushed: {name}; nothing here is built on it: no sweep.")
    return False


class EarlySyncs:
    """Each burst's one sync, made as its first push arrives, handed to its batch.

    Bursts and batches alternate in the queue, except when a burst begins between the
    debouncer taking a batch and handing it over: then the sync made for that batch is
    the one the batch gets, and the newer burst's is made right after that batch.
    """

    STALE = 10.0  # seconds past the window: a storm held the batch back, sync again

    def __init__(
        self,
        sync: Callable[[], pipeline.Fresh | None],
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sync, self._window, self._clock = sync, window, clock
        self._made: tuple[float, pipeline.Fresh | None] | None = None
        self._owed = False

    def burst(self) -> None:
        """A burst began: sync now, while its window runs, unless the batch to come has
        its sync yet; then this burst's is made once that batch is swept."""
        if self._made is None:
            self._made = (self._clock(), self._sync())
        else:
            self._owed = True

    def take(self) -> pipeline.Fresh | None:
        """The sync for the batch about to be swept; None: the batch syncs itself."""
        made, self._made = self._made, None
        if made is None or self._clock() - made[0] > self._window + self.STALE:
            return None  # what was merged while a storm went on counts
        return made[1]

    def swept(self) -> None:
        if self._owed:
            self._owed = False
            self.burst()


def _sync(config: Config) -> pipeline.Fresh | None:
    """The coming batch's one sync, made as its burst's first push arrives: while the
    window waits for the rest of the burst, not after it. None if it failed: the batch
    then syncs itself, and says why if it fails again."""
    try:
        return guarded(config, lambda: pipeline.fresh(config))
    except errors.GraphbuildError as err:
        report.note(f"Syncing for the pushes: {err}")
    except Exception as err:  # a bug must not end the listener
        report.note(f"Syncing for the pushes stopped on an internal error, please report it: "
                    f"{type(err).__name__}: {err}")  # fmt: skip
    return None


def _sweep(
    config: Config,
    pushed: frozenset[str],
    settings: builds.RunSettings,
    max_images: int,
    synced: pipeline.Fresh | None = None,
) -> bool:
    """Mirror, then sweep what is built on the pushed images; True when it was interrupted.

    Whatever stops one batch is one line, and `listen` goes on: the next push, or the
    schedule, tries again (design rule 2)."""
    names = {refs.upstream(ref, config.mirrors) for ref in pushed}  # a mirror's push too
    try:
        return guarded(config, lambda: _batch(config, pushed, settings, max_images, synced))
    except errors.GraphbuildError as err:
        report.note(f"The sweep for {', '.join(sorted(names))} stopped: {err}")
    except Exception as err:  # a bug must not end the listener: say so, and go on
        report.note(f"The sweep for {', '.join(sorted(names))} stopped on an internal error, "
                    f"please report it: {type(err).__name__}: {err}")  # fmt: skip
    return False


def _batch(
    config: Config,
    pushed: frozenset[str],
    settings: builds.RunSettings,
    max_images: int,
    synced: pipeline.Fresh | None,
) -> bool:
    names = {refs.upstream(ref, config.mirrors) for ref in pushed}
    now = synced or pipeline.fresh(config)  # the batch's one sync: its sweep does not sync again
    with closing(indexdb.connect(config.workspace)) as db:
        known = sorted(name for name in names if indexdb.match(db, name))
        now.nodes = indexdb.match_all(db, known)  # what the sweep is limited to
    if not known:
        report.note(f"{len(pushed)} push(es) of images nothing here is built on: no sweep.")
        return False
    if config.azure is not None and config.mirrors:  # builds pin the upstream digest
        try:
            part = detect.needed(now.graph, now.nodes)  # the sweep's part, and the
            used = {p for n in part for p in now.graph.predecessors(n)}  # frontends it uses
            mirror.shown(pipeline.mirror(config, now.graph, False, part | used), False, False)
        except errors.GraphbuildError as err:  # the images on what failed fail their builds
            report.note(f"Mirroring before the sweep: {err}")
    report.note(f"Pushed: {', '.join(known)}. Sweeping what is built on them.")
    before = _latest(config)
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        done = pipeline.sweep(config, settings, max_images=max_images, only=known, synced=now)
    code = sweep.shown(config, done, max_images, as_json=False)
    report.note(f"That sweep exited {code}.")
    after = _latest(config)
    return after is not None and after != before and after[1] == RunStatus.INTERRUPTED


def _latest(config: Config) -> tuple[str, RunStatus] | None:
    """The newest run's id and status."""
    with State(config.workspace) as state:
        runs = state.runs(limit=1)
    return (runs[0].id, runs[0].status) if runs else None
