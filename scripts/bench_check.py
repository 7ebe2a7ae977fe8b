#!/usr/bin/env python3
"""Benchmark `graphbuild check` against a loopback docker-registry: concurrency 1 vs 16.

Starts Debian's docker-registry on a free 127.0.0.1 port, pushes N images
(`base:t0` … `base:tN-1`, distinct manifests), writes a fleet of N Dockerfiles
each built on one of them, syncs, then times `graphbuild check` (the CLI
process, wall time) at --concurrency 1 and 16. Each check asks the registry
about 2N unique references: N bases (HEAD) and the N fleet images (GET; they
were never pushed, so each answers 404 quickly, as a first sweep would see).

With --latency S, every request first crosses a proxy that waits S seconds,
as a registry across a network would: that is where concurrency pays.

Usage: scripts/bench_check.py [--refs 1000] [--runs 3] [--latency 0.03]
Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.oci import LocalRegistry  # noqa: E402 - the test suite's registry, reused
from tests.servers import FaultProxy  # noqa: E402


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--refs", type=int, default=1000, help="unique base references")
    parser.add_argument("--runs", type=int, default=3, help="checks per concurrency; median shown")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    opts = parser.parse_args()
    exe = shutil.which("graphbuild") or sys.exit("graphbuild is not on PATH (pip install -e .)")
    shutil.which("docker-registry") or sys.exit("docker-registry is not installed")

    root = Path(tempfile.mkdtemp(prefix="graphbuild-bench-check-"))
    registry = LocalRegistry(root / "registry").start()
    proxy = FaultProxy(registry.host, latency=opts.latency).start() if opts.latency else None
    host = proxy.address if proxy else registry.host
    try:
        start = time.perf_counter()
        for n in range(opts.refs):
            registry.image("base", f"t{n}", content="shared layer", labels={"n": str(n)})
        print(f"pushed {opts.refs} images in {time.perf_counter() - start:.1f} s")
        for n in range(opts.refs):
            folder = root / "fleet" / f"i{n:05d}"
            folder.mkdir(parents=True)
            (folder / "Dockerfile").write_text(f"FROM {host}/base:t{n}\n")
        config = root / "repos.yaml"
        config.write_text(
            f'registries:\n  "{host}": {{insecure: true}}\n'
            "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
            f'      - {{image: "{host}/app/{{dir}}", dockerfile: "*/Dockerfile"}}\n'
        )
        cmd = [exe, "--config", str(config)]
        timed([*cmd, "sync"])
        results = {}
        for concurrency in (1, 16):
            before = registry.requests()
            args = [*cmd, "check", "--json", "--concurrency", str(concurrency)]
            times = [timed(args) for _ in range(opts.runs)]
            per_check = (registry.requests() - before) // opts.runs
            results[concurrency] = statistics.median(times)
            print(
                f"concurrency {concurrency:>2}: {results[concurrency]:6.2f} s per check "
                f"({per_check} registry requests, median of {opts.runs})"
            )
        where = f"with {opts.latency * 1000:.0f} ms per request" if opts.latency else "on loopback"
        print(f"speed-up 16 vs 1 {where}: {results[1] / results[16]:.1f}x")
    finally:
        if proxy:
            proxy.stop()
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
