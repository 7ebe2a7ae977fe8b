#!/usr/bin/env python3
"""Benchmark indexing and queries on a synthetic fleet.

Generates N repositories holding D Dockerfiles in chains 1-6 deep (each image
built on an image one level up, often in another repository; multi-stage
files, ARG-templated FROMs, COPY --from and RUN --mount images mixed in), then
times, as a user would see them (wall time of the CLI process):

  cold   `graphbuild sync` with an empty workspace: parse everything, link, store
  first  the first `graphbuild sync` after that, nothing changed
  warm   `graphbuild sync` again, nothing changed (median of several runs)
  uses, parents, images, bases
         the queries on the stored graph, `--json` (median of several runs)

With --explicit, repos.yaml lists every image on its own (~60,000 lines for
10,000 Dockerfiles) instead of one glob entry per repository.

Usage: scripts/bench_index.py [--repos 1000] [--dockerfiles 10000] [--kind path|git]
                              [--explicit]
Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXTERNAL = [f"debian:{v}" for v in ("12-slim", "12", "13-slim")] + [
    f"python:3.{m}-slim" for m in range(9, 14)
] + [f"node:{v}-alpine" for v in (18, 20, 22)] + [f"alpine:3.{m}" for m in range(17, 22)] + [
    "golang:1.22", "golang:1.23", "eclipse-temurin:21-jre", "ubuntu:24.04", "nginx:1.27",
    "mcr.microsoft.com/dotnet/runtime:8.0", "gcr.io/distroless/static:nonroot",
]  # fmt: skip
TOOLS = ["ghcr.io/astral-sh/uv:0.4", "busybox:1.36", "docker.io/tonistiigi/xx:1.5"]
REGISTRY = "bench.registry.test"


def generate(
    root: Path, repos: int, dockerfiles: int, seed: int, explicit: bool
) -> tuple[Path, str, str]:
    """Write the fleet and its repos.yaml; return the config, a base worth querying for
    `uses` and an image at the deepest level for `parents`."""
    rng = random.Random(seed)
    per_repo = max(1, dockerfiles // repos)
    levels: list[list[str]] = [[] for _ in range(6)]
    lines = ["repos:"]
    count = 0
    for r in range(repos):
        name = f"r{r:04d}"
        repo = root / "repos" / name
        # every repository sits at one level of the chain, so most FROMs cross repositories
        level = min(5, int(rng.expovariate(0.9)))
        while level > 0 and not levels[level - 1]:
            level -= 1
        for i in range(per_repo):
            folder = repo / "images" / f"img{i:02d}"
            folder.mkdir(parents=True)
            parent = rng.choice(levels[level - 1]) if level else rng.choice(EXTERNAL)
            (folder / "Dockerfile").write_text(_dockerfile(rng, parent, i))
            levels[level].append(f"{REGISTRY}/{name}/img{i:02d}:1")
            count += 1
        lines += [
            f"  - name: {name}",
            f"    path: repos/{name}",
            "    images:",
        ]
        if not explicit:
            lines += [
                f"      - image: {REGISTRY}/{name}/{{dir}}",
                "        dockerfile: images/*/Dockerfile",
                '        tags: ["1", latest]',
            ]
            continue
        for i in range(per_repo):  # what the glob above finds, one entry each
            lines += [
                f"      - image: {REGISTRY}/{name}/img{i:02d}",
                f"        dockerfile: images/img{i:02d}/Dockerfile",
                f"        context: images/img{i:02d}",
                "        tags:",
                '          - "1"',
                "          - latest",
            ]
    config = root / "repos.yaml"
    config.write_text("\n".join(lines) + "\n")
    print(f"generated {repos} repositories, {count} Dockerfiles, {len(lines)} lines of "
          f"repos.yaml; images per level: {[len(level) for level in levels]}")  # fmt: skip
    deepest = next(level for level in reversed(levels) if level)
    return config, "debian:12-slim", deepest[0]


def _dockerfile(rng: random.Random, parent: str, i: int) -> str:
    kind = rng.random()
    if kind < 0.4:
        return f'# syntax=docker/dockerfile:1\nFROM {parent}\nRUN echo {i}\nCMD ["app"]\n'
    if kind < 0.7:
        name, _, tag = parent.rpartition(":")
        return (
            f"ARG BASE={name}\nARG TAG={tag}\nFROM ${{BASE}}:${{TAG}} AS base\n"
            f"RUN --mount=from={rng.choice(TOOLS)},source=/x,target=/x true\n"
            "FROM base AS final\nCOPY . /app\n"
        )
    return (
        f"FROM {rng.choice(EXTERNAL)} AS build\nWORKDIR /src\nCOPY . .\nRUN make\n"
        f"FROM {parent}\nCOPY --from=build /src/out /app\n"
        f"COPY --from={rng.choice(TOOLS)} /bin/tool /usr/local/bin/tool\n"
    )


def to_git(root: Path) -> None:
    """Turn every repository folder into a bare git remote and point repos.yaml at it."""
    who = {"NAME": "bench", "EMAIL": "bench@example.invalid"}
    env = {**os.environ, **{f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER")
                            for k, v in who.items()}}  # fmt: skip
    for repo in sorted((root / "repos").iterdir()):
        bare = root / "remotes" / f"{repo.name}.git"
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", "x"], check=True, env=env)
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, env=env)
    config = root / "repos.yaml"
    config.write_text(config.read_text().replace("path: repos/", "url: remotes/").replace(
        "\n    images:", ".git\n    images:"))  # fmt: skip


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--dockerfiles", type=int, default=10000)
    parser.add_argument("--kind", choices=("path", "git"), default="path")
    parser.add_argument("--explicit", action="store_true", help="list every image in repos.yaml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--runs", type=int, default=5, help="runs of each warm command; the median is shown"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated fleet")
    opts = parser.parse_args()

    exe = shutil.which("graphbuild") or sys.exit("graphbuild is not on PATH (pip install -e .)")
    root = Path(tempfile.mkdtemp(prefix="graphbuild-bench-"))
    try:
        config, base, image = generate(root, opts.repos, opts.dockerfiles, opts.seed, opts.explicit)
        if opts.kind == "git":
            to_git(root)
        cmd = [exe, "--config", str(config)]
        cold = timed([*cmd, "sync"], root)
        first = timed([*cmd, "sync"], root)
        warm = statistics.median(timed([*cmd, "sync"], root) for _ in range(opts.runs))
        queries = {
            f"uses {base} --json (all levels)": ["uses", base, "--json"],
            f"uses {base} --direct": ["uses", base, "--direct"],
            f"parents {image.split('/', 1)[1]} --json": ["parents", image, "--json"],
            "images --json": ["images", "--json"],
            "bases --json": ["bases", "--json"],
        }
        times = {
            label: statistics.median(timed([*cmd, *args], root) for _ in range(opts.runs))
            for label, args in queries.items()
        }
        shape = "explicit" if opts.explicit else "glob"
        print(f"kind={opts.kind} repos={opts.repos} dockerfiles={opts.dockerfiles} "
              f"repos.yaml={shape}")  # fmt: skip
        width = max(len(label) for label in times) + 1
        print(f"{'cold sync (parse + graph):':{width + 1}} {cold:6.2f} s")
        print(f"{'first sync after (no change):':{width + 1}} {first:6.2f} s")
        print(f"{'warm sync (no change):':{width + 1}} {warm:6.2f} s (median of {opts.runs})")
        for label, seconds in times.items():
            print(f"{label + ':':{width + 1}} {seconds:6.3f} s (median of {opts.runs})")
    finally:
        if opts.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
