#!/usr/bin/env python3
"""Benchmark the web view on the synthetic fleet of scripts/bench_index.py.

Generates the fleet (10,000 Dockerfiles in 1,000 repositories by default), syncs it,
stores a check's answer for every node in state.db (as a sweep leaves it: the image
page and the graph read it), starts `graphbuild serve`, then measures:

  server  each page and its JSON twin, from the request sent to the last byte read,
          over loopback (median of --runs): the search for the most used base, the
          image page of an image at the deepest level, the graph around a node
  browser a neighbourhood of about --nodes nodes drawn by a real headless Chromium
          (Debian's chromium and chromium-driver, through Selenium: the test extras):
          from navigation start to the load event, and from the last byte to the load
          event (parsing, style, layout of the inline SVG), median of --runs

Usage: scripts/bench_web.py [--repos 1000] [--dockerfiles 10000] [--nodes 500] [--runs 9]
Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import generate

STATUSES = ("up-to-date",) * 8 + ("stale", "unknown")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
)  # fmt: skip


def checked(config: Path) -> None:
    """A check's answer for every node, as `pipeline.check` stores it."""
    code = f"""
import random
from pathlib import Path
from graphbuild import config, indexdb, queries
from graphbuild.state import Freshness, State, now
rng, at = random.Random(1), now()
c = config.load(Path({str(config)!r}))
db = queries.open_index(c)
rows = [Freshness(n, a["kind"], rng.choice({STATUSES!r}) if a["kind"] == "image" else "unchanged",
                  "", "", [], None, None, at) for n, a in indexdb.nodes(db)]
with State(c.workspace) as s:
    s.record_freshness(rows)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def serve(exe: str, config: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [exe, "--config", str(config), "serve", "--port", "0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if found := re.search(r"on (http://127\.0\.0\.1:\d+)/", line):
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, found.group(1)
    sys.exit(f"serve did not start (exit {process.wait()})")


def fetch(url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 - loopback
        body = answer.read()
    return time.perf_counter() - start, body


def server_times(url: str, paths: dict[str, str], runs: int) -> None:
    width = max(map(len, paths)) + 1
    for label, path in paths.items():
        fetch(url + path)  # the first read of the stores warms the page cache
        seconds = statistics.median(fetch(url + path)[0] for _ in range(runs))
        size = len(fetch(url + path)[1])
        print(f"{label + ':':{width}} {seconds * 1000:7.1f} ms  ({size:,} bytes; median of {runs})")


def neighbourhood(url: str, focuses: list[str], nodes: int) -> tuple[str, int, int]:
    """The focus and depth whose neighbourhood is nearest `nodes` nodes (at least 80%)."""
    best: tuple[int, str, int, int] | None = None
    for focus in focuses:
        for depth in (1, 2, 3, 4):
            body = fetch(f"{url}/api/graph?{urlencode({'focus': focus, 'depth': depth})}")[1]
            count = len(json.loads(body)["nodes"])
            if count >= 0.8 * nodes and (best is None or abs(count - nodes) < best[0]):
                best = (abs(count - nodes), focus, depth, count)
    if best is None:
        sys.exit(f"no neighbourhood of {nodes} nodes in this fleet")
    return best[1], best[2], best[3]


def browser_times(url: str, path: str, runs: int, profile: Path) -> tuple[float, float, int]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or sys.exit("chromium is not installed")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        totals, draws = [], []
        for _ in range(runs + 1):
            driver.get(url + path)
            timing = driver.execute_script(
                "const t = performance.getEntriesByType('navigation')[0];"
                "return [t.loadEventEnd - t.startTime, t.loadEventEnd - t.responseEnd];"
            )
            totals.append(timing[0] / 1000)
            draws.append(timing[1] / 1000)
        drawn = driver.execute_script("return document.querySelectorAll('svg g.node').length")
    finally:
        driver.quit()
    return statistics.median(totals[1:]), statistics.median(draws[1:]), drawn


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--dockerfiles", type=int, default=10000)
    parser.add_argument("--nodes", type=int, default=500, help="the neighbourhood's size")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()

    exe = shutil.which("graphbuild") or sys.exit("graphbuild is not on PATH (pip install -e .)")
    root = Path(tempfile.mkdtemp(prefix="graphbuild-bench-web-"))
    process = None
    try:
        config, base, image = generate(root, opts.repos, opts.dockerfiles, opts.seed, False)
        subprocess.run([exe, "--config", str(config), "sync"], check=True, capture_output=True)
        checked(config)
        process, url = serve(exe, config)
        rng = random.Random(opts.seed)
        images = json.loads(fetch(url + "/api/bases")[1])
        focuses = [b["id"] for b in images] + rng.sample(
            [n["id"] for n in json.loads(fetch(url + "/api/graph")[1])["nodes"]], 20
        )
        focus, depth, count = neighbourhood(url, focuses, opts.nodes)
        graph = f"/graph?{urlencode({'focus': focus, 'depth': depth})}"
        print(f"repos={opts.repos} dockerfiles={opts.dockerfiles}")
        server_times(url, {
            f"search page, uses {base}": f"/?{urlencode({'ref': base})}",
            "its twin /api/uses": f"/api/uses?{urlencode({'ref': base})}",
            f"image page {image}": f"/image?{urlencode({'ref': image})}",
            "its twin /api/image": f"/api/image?{urlencode({'ref': image})}",
            f"graph page, {count} nodes ({focus} depth {depth})": graph,
        }, opts.runs)  # fmt: skip
        total, draw, drawn = browser_times(url, graph, opts.runs, root / "profile")
        print(
            f"browser, graph page of {drawn} nodes: {total * 1000:.0f} ms to the load event, "
            f"{draw * 1000:.0f} ms of it after the last byte (median of {opts.runs})"
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
