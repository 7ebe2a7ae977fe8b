#!/usr/bin/env python3
"""Benchmark push -> first ring deployed: `graphbuild listen` and a sweep started at once.

Everything is real and on loopback: Debian's docker-registry on a free 127.0.0.1
port, buildah builds (chroot isolation, vfs storage), bare git remotes for the
fleet and for a GitOps deploy repository. The small fleet: an upstream base in
the registry, `platform/base` built on it, three images (`apps/web`, `apps/api`,
`apps/worker`) built on that, each run by a Deployment of ring `dev` (the first
ring; `prod` is manual). With --unrelated N (default 100), N more repositories
follow, one image each on another base, built once at set-up.

One sample: push a new digest of the upstream base to the registry (the clock
starts when the registry has answered the manifest PUT), then
  listen   POST its ACR push event to a running `graphbuild listen --window W`
           (real HTTP), which sweeps what is built on it
  sweep    start `graphbuild sweep` at once
  listen + unrelated pushes
           as listen, with 20 ACR events of an image nothing is built on posted
           every 0.3 s from 3 s before the relevant push on
and the clock stops at the `at` of the first ring's record in state.db (written
once its deploy commit is pushed to the GitOps remote: the script checks the
commit is there). listen and sweep run without gates, with one `test` gate
that sleeps --gate seconds (by default a child waits for its parent's gate), and
with that gate and deployments.build_during_gates: true. The listener is warmed
by one unmeasured push after it starts.

The breakdown is taken from what the parts record, each on the same wall clock:
  window   (listen) the POST's answer -> its batch begins ("Pushed: X. Sweeping ..."), at most
           the configured --window: the debounce. listen syncs from the burst's first
           push while the window runs; a sync longer than the window counts in gaps
  start    (sweep) the push -> its first git command: process start-up
  post     (listen) the push -> the POST answered
  sync     first git command -> graphbuild's first registry request (the
           registry's own log, start = logged time - duration): fetch, index, link;
           for listen, first git command -> its "Synced ..." line (inside the window)
  check    -> the check's answer stored (state.db freshness `at`)
  plan     -> the run's start (state.db runs.started)
  builds   time at least one `buildah bud` or `buildah push` ran (a shim on PATH
           logs each buildah process), between the run's start and the ring
  gates    time a gate command ran (it logs itself) and no build did
  deploy   the last build or gate ends -> the first ring's record
  gaps     the rest, all inside the run: starting it, between builds, between the
           last build and the gates, recording what happened
  own      graphbuild's own time: total - window - builds - gates
  t-build  total - builds: buildah's time varies by a second or more between
           samples on 2 cores while the work is the same in every case, so the
           goals that compare cases compare this
  t-window t-build - window: what listen costs beyond its deliberate wait
  reqs     graphbuild's requests to the registry (its log), push -> ring
Figures are medians over --runs samples (--large-runs with the unrelated
repositories), each column on its own: the columns need not add up.

graphbuild is measured as users run it: installed with `pip install .` into a venv
of its own in the work folder (byte-compiled, no test libraries), unless
--graphbuild names another.

Usage: scripts/bench_latency.py [--runs 5] [--large-runs 2] [--unrelated 100]
                                [--window 2] [--gate 2] [--keep] [--json]
                                [--graphbuild EXE]
(about 8 minutes with the defaults on 2 cores, 1.5 of them building the 100
unrelated images once). Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphbuild.events import SECRET_HEADER  # noqa: E402
from tests.oci import LocalRegistry, free_port  # noqa: E402 - the test suite's registry
from tests.site import DEPLOYMENT, base_and_apps, git, local_build, make_remote  # noqa: E402

SECRET = "bench-latency-secret-0123456789"  # noqa: S105 - a loopback listener's, for this run
APPS = ("web", "api", "worker")
# a buildah that logs "start end argv" of every call, then answers as buildah does
SHIM = """#!/bin/sh
start=$(date +%s.%N)
{buildah} "$@"
code=$?
echo "$start $(date +%s.%N) $*" >> {log}
exit $code
"""
# a gate that sleeps, then logs "start end image"
GATE = 'start=$(date +%s.%N); sleep "$2"; echo "$start $(date +%s.%N) $1" >> "$3"'
DURING = ", built during gates"  # the case's name with deployments.build_during_gates
COLUMNS = ("total", "window", "start", "post", "sync", "check", "plan", "builds", "gates",
           "deploy", "gaps", "own", "t-build", "t-window", "reqs")  # fmt: skip


def clock() -> float:
    """Seconds since the epoch, read from the monotonic clock (steps of the wall clock
    do not reach it), to set against the timestamps of state.db, git and the registry."""
    return _WALL0 + time.monotonic() - _MONO0


_WALL0, _MONO0 = time.time(), time.monotonic()


def epoch(stamp: str) -> float:
    """An ISO 8601 timestamp (state.db, the registry's log) as seconds since the epoch."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp.replace("Z", "+00:00"))
    return datetime.fromisoformat(stamp).timestamp()


def intervals(
    path: Path, keep: Callable[[str], bool] = lambda rest: True
) -> list[tuple[float, float]]:
    """The (start, end) of each line "start end rest" of a shim's log whose rest is kept."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        start, end, rest = [*line.split(" ", 2), ""][:3]
        if keep(rest):
            found.append((float(start), float(end)))
    return found


def covered(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] inside at least one of the spans."""
    total, reach = 0.0, lo
    for start, end in sorted(spans):
        start, end = max(start, reach), min(end, hi)
        if end > start:
            total += end - start
            reach = end
    return total


def is_build(argv: str) -> bool:
    return bool(re.search(r"(^| )(bud|build|push)( |$)", argv))


Sample = dict[str, float | None]  # one push's figures by column; None: a marker not seen


class Fleet:
    """The registry, the remotes, repos.yaml and the instrumented environment."""

    def __init__(self, root: Path, exe: str, gate: float) -> None:
        self.root, self.exe, self.gate_seconds = root, exe, gate
        self.registry = LocalRegistry(root / "registry").start()
        h = self.host = self.registry.host
        self.pushes = 0
        self.registry.image("upstream/base", "1", content="upstream 0")
        self.registry.image("other/base", "1", content="another base")
        self.platform = make_remote(root, "platform", {
            "base/Dockerfile": f"FROM {h}/upstream/base:1\nCOPY f /platform-base\n",
            "base/f": "base",
        })  # fmt: skip
        self.apps = make_remote(root, "apps", {
            **{f"{app}/Dockerfile": f"FROM {h}/platform/base:1\nCOPY f /{app}\n" for app in APPS},
            **{f"{app}/f": app for app in APPS},
        })  # fmt: skip
        self.deploy = make_remote(root, "deploy", {
            **{f"envs/{ring}/{app}.yaml": DEPLOYMENT.format(name=app, image=f"{h}/apps/{app}:1")
               for ring in ("dev", "prod") for app in APPS},
        })  # fmt: skip
        self.unrelated: list[dict] = []
        self.buildah_log, self.gate_log = root / "buildah.log", root / "gates.log"
        self.trace = root / "git-trace.log"
        shims = root / "bin"
        shims.mkdir()
        buildah = shutil.which("buildah") or sys.exit("buildah is not installed")
        shim = SHIM.format(buildah=shlex.quote(buildah), log=shlex.quote(str(self.buildah_log)))
        (shims / "buildah").write_text(shim)
        (shims / "buildah").chmod(0o755)
        self.env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "TZ": "UTC",
                    "GIT_TRACE": str(self.trace), "GIT_TERMINAL_PROMPT": "0",
                    "GRAPHBUILD_WEBHOOK_SECRET": SECRET}  # fmt: skip
        self.env.pop("GRAPHBUILD_CONFIG", None)

    @property
    def workspace(self) -> Path:
        return self.root / ".graphbuild"

    def add_unrelated(self, count: int) -> None:
        h = self.host
        for n in range(count):
            name = f"u{n:03d}"
            files = {"Dockerfile": f"FROM {h}/other/base:1\nCOPY f /f\n", "f": name}
            made = make_remote(self.root, name, files)
            image = {"image": f"{h}/unrelated/{name}", "dockerfile": "Dockerfile", "tags": ["1"]}
            self.unrelated.append({"name": name, "url": str(made.url), "images": [image]})

    def write_config(self, gated: bool, during: bool = False) -> None:
        """The fleet's repos.yaml; `gated`, with the gate; `during`, children built while
        their parents' gates run (deployments.build_during_gates)."""
        h = self.host
        config = {
            **local_build(h, self.root),
            "repos": [*base_and_apps(h, self.platform.url, self.apps.url), *self.unrelated],
            "deployments": {
                "rings": [{"name": "dev"}, {"name": "prod", "manual": True}],
                "repos": [{"name": "deploy", "url": str(self.deploy.url), "branch": "main",
                           "rings": {"dev": ["envs/dev/**"], "prod": ["envs/prod/**"]}}],
            },
        }  # fmt: skip
        if gated:
            argv = ["sh", "-c", GATE, "sh", "{image}", f"{self.gate_seconds:g}", str(self.gate_log)]
            config["gates"] = [{"name": "wait", "test": argv}]
            config["deployments"]["build_during_gates"] = during
        (self.root / "repos.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def graphbuild(self, *args: str) -> subprocess.Popen[str]:
        """graphbuild in a process group of its own, which `stop` ends with its builds."""
        return subprocess.Popen(
            [self.exe, *args], cwd=self.root, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def finish(self, process: subprocess.Popen[str], timeout: float) -> str:
        """Its stderr once it has exited; stopped if it takes longer or the bench is."""
        try:
            return process.communicate(timeout=timeout)[1]
        except BaseException:
            stop(process)
            raise

    def setup_sweep(self) -> None:
        """A sweep of everything: every image built and deployed, the index synced."""
        done = self.graphbuild("sweep", "--yes")
        err = self.finish(done, 1800)
        if done.returncode != 0:
            sys.exit(f"the set-up sweep exited {done.returncode}:\n{err[-3000:]}")

    def push(self) -> tuple[float, str]:
        """A new digest of the upstream base: (when the registry had it, its digest)."""
        self.pushes += 1
        digest = self.registry.image("upstream/base", "1", content=f"upstream {self.pushes}")
        return clock(), digest

    def event(self, repository: str, tag: str, digest: str) -> bytes:
        """An ACR push event as the ACR webhook reference documents it."""
        return json.dumps({
            "id": f"bench-{self.pushes}-{repository}-{tag}", "action": "push",
            "timestamp": datetime.now(UTC).isoformat(),
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 524,
                       "digest": digest, "length": 524, "repository": repository, "tag": tag},
            "request": {"id": "bench", "host": self.host, "method": "PUT",
                        "useragent": "scripts/bench_latency.py"},
        }).encode()  # fmt: skip

    # -- reading what the parts recorded

    def first_git_after(self, after: float) -> float | None:
        """When the first git command after `after` started (GIT_TRACE, in UTC)."""
        day = datetime.fromtimestamp(after, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for line in self.trace.read_text(errors="replace").splitlines():
            found = re.match(r"(\d\d):(\d\d):(\d\d\.\d+) ", line)
            if not found:
                continue
            hours, minutes, seconds = int(found[1]), int(found[2]), float(found[3])
            at = (day + timedelta(hours=hours, minutes=minutes, seconds=seconds)).timestamp()
            if at < after - 43200:  # past midnight
                at += 86400
            if at >= after:
                return at
        return None

    def requests(self, after: float, before: float) -> list[tuple[float, str]]:
        """graphbuild's registry requests that started between `after` and `before`, from
        the registry's log (its time is the answer's; minus the duration, the start): (when,
        the path)."""
        line = re.compile(
            r'time="([^"]+)".*http\.request\.uri=(\S+) .*'
            r"http\.request\.useragent=graphbuild/.*http\.response\.duration=(\S+)"
        )
        units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
        found = []
        for match in line.finditer(self.registry.log.read_text(errors="replace")):
            amount = re.fullmatch(r"([\d.]+)(ns|µs|us|ms|s|m)", match[3])
            start = epoch(match[1]) - (float(amount[1]) * units[amount[2]] if amount else 0.0)
            if after <= start <= before:
                found.append((start, match[2]))
        return sorted(found)

    def state(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.workspace / 'state.db'}?mode=ro", uri=True)

    def run_after(self, after: float) -> tuple[str, float, float, float | None] | None:
        """The run started after `after`: (its id, its start, its first ring's record, when
        its check's answer was stored)."""
        with closing(self.state()) as db:
            runs = [(i, epoch(s)) for i, s in db.execute("SELECT id, started FROM runs")]
            mine = sorted((s, i) for i, s in runs if s >= after)
            if len(mine) != 1:
                print(f"  expected one run after the push, found {len(mine)}", file=sys.stderr)
                return None
            started, run = mine[0]
            ring = db.execute("SELECT at, status FROM rings WHERE run = ? AND ring = 'dev'",
                              (run,)).fetchone()  # fmt: skip
            stored = [epoch(at) for (at,) in db.execute("SELECT at FROM freshness")]
        if ring is None or ring[1] != "healthy":
            print(f"  run {run}: ring dev is {ring and ring[1]}", file=sys.stderr)
            return None
        # a check stores one `at` for every node; what the run built is stored later
        checked = min((at for at in stored if at >= after), default=None)
        return run, started, epoch(ring[0]), checked

    def deployed(self, run: str) -> bool:
        """The run's commit is on the GitOps remote's main branch."""
        log = git(self.deploy.url, "log", "--format=%B", "-n", "5", "main")
        return run in log

    def sample(self, t0: float, posted: float | None, heard: Heard | None = None) -> Sample | None:
        """The breakdown of the push at `t0` (its run finished); `heard`, for listen, when it
        said its sync was done and its batch began."""
        found = self.run_after(t0)
        if found is None:
            return None
        run, started, ring, checked = found
        if not self.deployed(run):
            print(f"  run {run}: no commit of it in the deploy remote", file=sys.stderr)
        sync = self.first_git_after(t0)  # nothing runs git between the push and the sync
        asked = self.requests(t0, ring)
        check = next((at for at, path in asked if "/manifests/" in path), None)
        builds = intervals(self.buildah_log, is_build)
        gates = intervals(self.gate_log)
        built = covered(builds, started, ring)
        gated = covered(builds + gates, started, ring) - built  # gates while nothing builds
        ends = [b for a, b in builds + gates if started <= b <= ring]
        total = ring - t0
        p: dict[str, float | None] = {"total": total, "builds": built, "gates": gated,
                                      "t-build": total - built, "reqs": len(asked)}  # fmt: skip
        p["deploy"] = ring - max(ends) if ends else None
        waited = 0.0  # the part of the sync that kept the batch waiting past its window
        if posted is not None and heard is not None:
            p["post"] = posted - t0
            # the batch begins at the window's end, or at its sync's end if that is later:
            # the sync starts at the push and runs while the window waits
            p["window"] = min(heard.window, heard.began - posted)
            p["sync"] = heard.synced - sync if sync else None
            waited = max(0.0, heard.began - posted - heard.window)
        else:
            p["start"] = sync - t0 if sync else None
            p["sync"] = check - sync if check and sync else None
        p["check"] = checked - check if checked and check else None
        p["plan"] = started - checked if checked else None
        p["own"] = total - (p.get("window") or 0.0) - built - gated
        p["t-window"] = p["t-build"] - (p.get("window") or 0.0)
        named = [p.get(k) for k in ("start", "post", "check", "plan", "deploy")]
        named.append(waited if posted is not None else p.get("sync"))
        p["gaps"] = p["own"] - sum(x for x in named if x is not None)
        return p


@dataclass
class Heard:
    """When listen said what: its configured window, its sync done, its batch begun."""

    window: float
    synced: float
    began: float


class Listener:
    """A running `graphbuild listen`, its stderr read line by line as it comes."""

    def __init__(self, fleet: Fleet, window: float) -> None:
        self.fleet, self.port, self.window = fleet, free_port(), window
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log = (fleet.root / "listen.log").open("a")
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--window", f"{window:g}"]
        self.process = fleet.graphbuild("listen", *args)
        self.url = f"http://127.0.0.1:{self.port}/hooks/acr"
        self.http = httpx.Client(timeout=10)  # one client: the POST is not a client's start
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            at = clock()
            self.log.write(f"{at:.6f} {line}")
            self.lines.put((at, line))

    def wait_for(self, text: str, timeout: float) -> float:
        """When listen said `text` (a line holding it arrived)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                at, line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if text in line:
                return at
        raise SystemExit(f"listen said no {text!r} within {timeout:g} s; see {self.log.name}")

    def post(self, body: bytes, http: httpx.Client | None = None) -> float:
        answer = (http or self.http).post(self.url, content=body, headers={SECRET_HEADER: SECRET})
        if answer.status_code != 202:
            sys.exit(f"listen answered {answer.status_code}: {answer.text}")
        return clock()

    def once(self, unrelated: bool = False) -> Sample | None:
        """One push announced to the listener; with `unrelated`, amid 20 pushes of an image
        nothing is built on, one every 0.3 s from 3 s before it."""
        stream = None
        if unrelated:
            stream = threading.Thread(target=self._unrelated)
            stream.start()
            time.sleep(3.0)
        t0, digest = self.fleet.push()
        posted = self.post(self.fleet.event("upstream/base", "1", digest))
        synced = self.wait_for("Synced ", 600)  # the burst's sync, begun at its first push
        began = self.wait_for("Sweeping what is built on", 600)  # the batch, window's end
        self.wait_for("That sweep exited", 600)
        if stream:
            stream.join()
        return self.fleet.sample(t0, posted, Heard(self.window, synced, began))

    def _unrelated(self) -> None:
        with httpx.Client(timeout=10) as http:  # this thread's own
            for n in range(20):
                event = self.fleet.event("nobody/uses-this", str(n), "sha256:" + f"{n:064x}")
                try:
                    self.post(event, http)
                except httpx.TransportError:  # the bench is stopping, and listen with it
                    return
                time.sleep(0.3)

    def stop(self) -> None:
        stop(self.process)
        self.log.close()
        self.http.close()


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to its process group, as a pod's stop; SIGKILL if it is still there in 60 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def listening(fleet: Fleet, window: float) -> Iterator[Listener]:
    listener = Listener(fleet, window)
    try:
        listener.wait_for("Listening on", 60)
        yield listener
    finally:
        listener.stop()


def swept(fleet: Fleet) -> Sample | None:
    """One push, then `graphbuild sweep` started at once."""
    t0, _ = fleet.push()
    done = fleet.graphbuild("sweep")
    err = fleet.finish(done, 600)
    if done.returncode != 0:
        print(f"  sweep exited {done.returncode}: {err[-1500:]}", file=sys.stderr)
    return fleet.sample(t0, None)


def median(samples: list[Sample], column: str) -> float | None:
    values = [v for s in samples if (v := s.get(column)) is not None]
    return statistics.median(values) if values else None


def installed(venv: Path) -> str:
    """graphbuild as `pip install .` leaves it: byte-compiled at install and with none of the
    test suite's libraries. A sweep's start-up is part of what is measured, and an editable
    install under PYTHONDONTWRITEBYTECODE (set on some machines, this one included) compiles
    graphbuild's modules at every start, while the test extras' trio (selenium's) is imported
    by httpx's httpcore whenever it is installed: 0.2 s that users do not pay."""
    print("installing graphbuild into a fresh venv (pip install .) ...", file=sys.stderr)
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return str(venv / "bin" / "graphbuild")


def cell(value: float | None, count: bool = False) -> str:
    return "-" if value is None else f"{value:.0f}" if count else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="samples per case, small fleet")
    parser.add_argument(
        "--large-runs", type=int, default=2, help="samples per case, with --unrelated"
    )
    parser.add_argument("--unrelated", type=int, default=100, help="repositories; 0: none")
    parser.add_argument("--window", type=float, default=2.0, help="listen --window")
    parser.add_argument("--gate", type=float, default=2.0, help="seconds the gate sleeps")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="every sample as JSON, no table")
    parser.add_argument(
        "--graphbuild",
        metavar="EXE",
        help="the graphbuild to measure (default: one installed as users install it)",
    )
    opts = parser.parse_args()
    for tool in ("docker-registry", "buildah", "git"):
        shutil.which(tool) or sys.exit(f"{tool} is not installed")

    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="graphbuild-bench-latency-"))
    exe = opts.graphbuild or installed(root / "venv")
    fleet = Fleet(root, exe, opts.gate)
    results: dict[str, list[Sample]] = {}
    try:
        fleets = [("small", 0, opts.runs)]
        if opts.unrelated:
            fleets.append((f"+{opts.unrelated}", opts.unrelated, opts.large_runs))
        for label, unrelated, runs in fleets:
            if unrelated:
                fleet.add_unrelated(unrelated)
            fleet.write_config(False)
            start = time.monotonic()
            fleet.setup_sweep()
            print(
                f"set-up sweep ({label} fleet): {time.monotonic() - start:.0f} s", file=sys.stderr
            )
            for gated, during in ((False, False), (True, False), (True, True)):
                fleet.write_config(gated, during)
                suffix = f", gate {opts.gate:g} s" if gated else ""
                suffix += DURING if during else ""
                with listening(fleet, opts.window) as listener:
                    listener.once()  # warms the listener: not measured
                    for name, unrelated_pushes in (
                        ("listen", False),
                        ("listen + unrelated pushes", True),
                    ):
                        if gated and unrelated_pushes:
                            continue
                        key = f"{label}: {name}{suffix}"
                        results[key] = [
                            s for _ in range(runs) if (s := listener.once(unrelated_pushes))
                        ]
                        print(f"{key}: {cell(median(results[key], 'total'))} s", file=sys.stderr)
                key = f"{label}: sweep{suffix}"
                results[key] = [s for _ in range(runs) if (s := swept(fleet))]
                print(f"{key}: {cell(median(results[key], 'total'))} s", file=sys.stderr)
    finally:
        fleet.registry.stop()
        if opts.keep:
            print(f"work folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if opts.json:
        print(json.dumps({"window": opts.window, "gate": opts.gate, "cases": results}, indent=1))
        return
    report(results, opts)
    print(f"\n(took {time.monotonic() - began:.0f} s)")


def report(results: dict[str, list[Sample]], opts: argparse.Namespace) -> None:
    width = max(map(len, results)) + 2
    print(f"push -> first ring deployed, seconds (median; listen --window {opts.window:g})")
    print(f"{'case':<{width}}{'n':>3}" + "".join(f"{c:>9}" for c in COLUMNS))
    for key, samples in results.items():
        print(
            f"{key:<{width}}{len(samples):>3}"
            + "".join(f"{cell(median(samples, c), c == 'reqs'):>9}" for c in COLUMNS)
        )
    print(
        "t-build = total - builds: the same images are built in every case, and buildah's\n"
        "time varies by a second or more from one sample to the next on 2 cores, so the goals\n"
        "that compare cases compare t-build. reqs: graphbuild's registry requests.\n"
    )
    print("goals:")

    def of(key: str, column: str) -> float | None:
        return median(results.get(key, []), column)

    def verdict(ok: bool | None) -> str:
        return "unknown" if ok is None else ("met" if ok else "NOT met")

    for key in results:
        limit = 0.3 if key.startswith("small") else 0.5
        own = of(key, "own")
        print(f"  own time < {limit} s, {key}: {cell(own)} s: "
              f"{verdict(None if own is None else own < limit)}")  # fmt: skip
    gate = f", gate {opts.gate:g} s"
    for label in dict.fromkeys(k.split(":")[0] for k in results):
        for suffix in ("", gate):
            a, b = (
                of(f"{label}: listen{suffix}", "t-build"),
                of(f"{label}: sweep{suffix}", "t-build"),
            )
            if a is not None and b is not None:
                print(f"  listen not slower than a sweep at once, {label}{suffix}: t-build "
                      f"{a:.2f} vs {b:.2f} s: {verdict(a <= b)}")  # fmt: skip
            a = of(f"{label}: listen{suffix}", "t-window")
            if a is not None and b is not None:
                print(f"    the same but for listen's window: t-window {a:.2f} vs {b:.2f} s: "
                      f"{verdict(a <= b)}")  # fmt: skip
        plain, amid = f"{label}: listen", f"{label}: listen + unrelated pushes"
        if plain in results and amid in results:
            window = (of(amid, "window") or 0) - (of(plain, "window") or 0)
            rest = (of(amid, "t-build") or 0) - (of(plain, "t-build") or 0)
            ok = verdict(window < 0.2 and rest < 0.2)
            print(f"  unrelated pushes add no delay, {label}: window {window:+.2f} s, t-build "
                  f"{rest:+.2f} s: {ok} (both under 0.2 s)")  # fmt: skip
        for way in ("listen", "sweep"):
            for how in (gate, gate + DURING):
                a, b = of(f"{label}: {way}", "t-build"), of(f"{label}: {way}{how}", "t-build")
                if a is not None and b is not None:
                    print(f"  a {opts.gate:g} s gate adds about one gate time, {label}, {way}"
                          f"{how.removeprefix(gate)}: t-build {b - a:+.2f} s = "
                          f"{(b - a) / opts.gate:.1f} gate times: "
                          f"{verdict(b - a < 1.5 * opts.gate)} (under 1.5)")  # fmt: skip


if __name__ == "__main__":
    main()
