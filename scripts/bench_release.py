#!/usr/bin/env python3
"""How a release arrives: the time between the tag pushes of one multi-platform image.

`graphbuild listen` gathers pushes that arrive within `--window` seconds of each
other into one sweep. The window should be just long enough to take a whole
release: a shorter one sweeps on its first tag and again on the rest, a longer
one holds every lone push back for nothing. This measures a release: a
two-platform image (linux/amd64 and linux/arm64, FROM scratch with one 2 MB
layer, so no emulation is needed) built with buildah, then pushed to Debian's
docker-registry on a free loopback port under four tags (`1.2.N`, `1.2`, `1`,
`latest`) with `buildah manifest push --all`, one after another as release
tooling does. A registry sends a tag's push event when its manifest lands, so
the gaps between the pushes' ends are the gaps between the events.

Over a network each tag is a few more round trips (its blobs are already there:
a HEAD each, then the manifests), which this loopback figure does not include.

Usage: scripts/bench_release.py [--releases 5]
Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.oci import LocalRegistry  # noqa: E402 - the test suite's registry, reused

TAGS = ["1.2.{n}", "1.2", "1", "latest"]
PLATFORMS = ["linux/amd64", "linux/arm64"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        root = Path(tmp)
        buildah = ["buildah", "--storage-driver", "vfs", "--root", str(root / "store"),
                   "--runroot", str(root / "run")]  # fmt: skip
        context = root / "context"
        context.mkdir()
        (context / "blob").write_bytes(b"\0" * 2_000_000)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY blob release /\n")
        registry = LocalRegistry(root / "registry").start()
        spans, gaps = [], []
        try:
            for n in range(args.releases):
                (context / "release").write_text(str(n))  # a new digest each release
                name = f"release{n}"
                subprocess.run([*buildah, "manifest", "create", name], check=True,
                               capture_output=True)  # fmt: skip
                for platform in PLATFORMS:
                    subprocess.run([*buildah, "bud", "--isolation", "chroot", "--platform",
                                    platform, "--manifest", name, str(context)],
                                   check=True, capture_output=True)  # fmt: skip
                start, landed = time.monotonic(), []
                for tag in TAGS:
                    target = f"docker://{registry.host}/upstream/os:{tag.format(n=n)}"
                    subprocess.run([*buildah, "manifest", "push", "--all", "--tls-verify=false",
                                    name, target], check=True, capture_output=True)  # fmt: skip
                    landed.append(time.monotonic() - start)
                between = [b - a for a, b in itertools.pairwise(landed)]
                gaps += between
                spans.append(landed[-1] - landed[0])
                times = ", ".join(f"{t:.2f}" for t in landed)
                print(f"release {n}: tags landed at {times} s; first to last "
                      f"{spans[-1]:.2f} s, longest gap {max(between):.2f} s")  # fmt: skip
        finally:
            registry.stop()
    print(f"{args.releases} releases of {len(TAGS)} tags x {len(PLATFORMS)} platforms: "
          f"first to last tag {min(spans):.2f}-{max(spans):.2f} s, "
          f"longest gap between two tags {max(gaps):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
