"""The package side of the vulnerability tests: a loopback package server, an installer in
the image, and a base image made with real buildah whose layers hold a package database.

A fleet image installs a package in its own layer with one Dockerfile line:

    FROM 127.0.0.1:PORT/external/base@sha256:...   # a base made by make_base
    RUN pkg-install openssl

`/bin/pkg-install NAME...` (busybox sh) downloads `http://SERVER/packages/NAME.tar` with
busybox wget, unpacks it into /, and rewrites `/lib/apk/db/installed` so that NAME's block
holds the version the package carries (an upgrade replaces the old block). SERVER is
`$PKG_SERVER` if set, else the address make_base wrote into the base's `/etc/pkg-server`;
so a Dockerfile needs no ARG, and `ARG PKG_SERVER` (a build arg) can point it elsewhere.

`RUN` under `buildah --isolation chroot` shares the host's network namespace, so the build
reaches the server on 127.0.0.1 (checked with buildah 1.28). A rebuild with --no-cache runs
the RUN again and so fetches the version the server hands out now (`PackageServer.publish`).

buildah's vfs store finds a layer's changes by comparing each file's size and mtime with the
layer below, and a pulled layer's mtimes are whole seconds: a database rewritten to the same
size within the same second as the one below was left out of the layer (an upgrade 1.0 ->
1.2 in the tests). The installer therefore waits for the next second before writing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

from .servers import _Quiet, _Server
from .site import require

SCANNER = Path(__file__).with_name("scanner.py")
# the OCI runtime under buildah RUN sometimes fails to seal its own memfd copy (EBUSY) on a
# busy machine; nothing about the build: it is run again once
_BUSY = "sealing memfd copy: Device or resource busy"
_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]*")
_VERSION = re.compile(r"[0-9][0-9a-z._]*(-r[0-9]+)?")

INSTALLER = r"""#!/bin/sh
# pkg-install NAME...: each package from the test's package server, unpacked into /, and
# recorded in /lib/apk/db/installed (an upgrade replaces the package's block).
set -eu
server="${PKG_SERVER:-$(cat /etc/pkg-server)}"
db=/lib/apk/db/installed
mkdir -p /lib/apk/db /tmp
[ -f "$db" ] || : > "$db"
# buildah's vfs store (as docker's naive diff) takes a file of the same size whose mtime has
# the same second as a lower layer's whole-second one for unchanged: write in a later second
while [ "$(date +%s)" -le "$(stat -c %Y "$db")" ]; do sleep 0.2; done
for name in "$@"; do
    wget -q -O /tmp/pkg.tar "http://$server/packages/$name.tar"
    tar -x -m -f /tmp/pkg.tar -C /
    rm -f /tmp/pkg.tar
    version="$(cat "/usr/share/pkgs/$name")"
    awk -v name="$name" 'BEGIN { RS = ""; ORS = "\n\n" }
        { keep = 1; n = split($0, lines, "\n")
          for (i = 1; i <= n; i++) if (lines[i] == "P:" name) keep = 0
          if (keep) print }' "$db" > "$db.new"
    printf 'P:%s\nV:%s\nA:x86_64\n\n' "$name" "$version" >> "$db.new"
    mv "$db.new" "$db"
    echo "pkg-install: $name $version"
done
"""


class PackageServer(_Server):
    """Hands out `/packages/NAME.tar`, the version last published; counts downloads."""

    def __init__(self) -> None:
        super().__init__(_PackageHandler)
        self.lock = threading.Lock()
        self.packages: dict[str, bytes] = {}
        self.versions: dict[str, str] = {}
        self.downloads: Counter[str] = Counter()  # package name -> tars served

    def publish(self, name: str, version: str) -> None:
        """From now on `name` is `version`: its tar holds usr/share/pkgs/NAME = version."""
        if not _NAME.fullmatch(name) or not _VERSION.fullmatch(version):
            raise ValueError(f"bad package {name!r} {version!r}")
        with self.lock:
            self.packages[name] = package_tar(name, version)
            self.versions[name] = version


class _PackageHandler(_Quiet):
    def do_GET(self) -> None:
        server: PackageServer = self.server.owner  # type: ignore[attr-defined]
        match = re.fullmatch(r"/packages/([^/]+)\.tar", self.path)
        with server.lock:
            body = server.packages.get(match[1]) if match else None
            if body is not None:
                server.downloads[match[1]] += 1  # type: ignore[index]
        if body is None:
            self.reply(404, b"no such package\n")
            return
        self.reply(200, body, {"Content-Type": "application/x-tar"})


def package_tar(name: str, version: str) -> bytes:
    """A package: its directories, and a file whose content is its version (so the layer
    that installs it changes with the version)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for folder in ("usr", "usr/share", "usr/share/pkgs"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = f"{version}\n".encode()
        info = tarfile.TarInfo(f"usr/share/pkgs/{name}")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def database(packages: dict[str, str]) -> str:
    """An apk `installed` database listing `packages`."""
    return "".join(f"P:{name}\nV:{version}\nA:x86_64\n\n" for name, version in packages.items())


def buildah(workdir: Path, *args: str) -> str:
    """buildah on a vfs store under `workdir`, as the tests run it; its stdout."""
    store = workdir / "buildah"
    argv = ["buildah", "--storage-driver", "vfs", "--root", str(store / "root"),
            "--runroot", str(store / "run"), *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and _BUSY in done.stderr:  # the runtime's memfd copy, once in a while
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {done.stderr}{done.stdout}")
    return done.stdout


def build_image(
    registry, repo_tag: str, context: Path, workdir: Path, *args: str, no_cache: bool = False
) -> str:
    """`context` (its Dockerfile) built by buildah and pushed as host/REPO_TAG: its digest.
    `args` go to `buildah bud` (e.g. --build-arg)."""
    require("buildah")
    ref = f"{registry.host}/{repo_tag}"
    buildah(workdir, "bud", "--isolation", "chroot", "--quiet", "--tls-verify=false",
            *(["--no-cache"] if no_cache else []), *args, "-t", ref, str(context))  # fmt: skip
    digestfile = workdir / "digest"
    buildah(workdir, "push", "--tls-verify=false", "--quiet", "--digestfile", str(digestfile),
            ref, f"docker://{ref}")  # fmt: skip
    return digestfile.read_text().strip()


def make_base(
    registry,
    repo_tag: str,
    packages: dict[str, str],
    workdir: Path,
    server: str | None = None,
    release: str = "3.20.3",
) -> str:
    """A base image FROM scratch, one layer: busybox (its applets linked in /bin), the
    installer, an Alpine release file and a package database listing `packages`; pushed
    as host/REPO_TAG, its digest. `server` (host:port) is where pkg-install fetches from."""
    require("busybox")
    context = workdir / f"base-{re.sub(r'[^a-z0-9]+', '-', repo_tag)}"
    root = context / "root"
    (root / "lib/apk/db").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy(shutil.which("busybox") or "", root / "bin/busybox")
    (root / "bin/pkg-install").write_text(INSTALLER)
    (root / "bin/pkg-install").chmod(0o755)
    (root / "lib/apk/db/installed").write_text(database(packages))
    (root / "etc/alpine-release").write_text(f"{release}\n")
    if server:
        (root / "etc/pkg-server").write_text(f"{server}\n")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY root/ /\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    return build_image(registry, repo_tag, context, workdir)


def scanner_argv(fmt: str, advisories: Path) -> list[str]:
    """The scanner as graphbuild runs it (vulnerabilities.scanner / a scan gate's argv)."""
    return [sys.executable, str(SCANNER), "--format", fmt, "--advisories", str(advisories),
            "{image}", "{report}"]  # fmt: skip


def write_advisories(path: Path, entries: list[dict[str, str]]) -> Path:
    """The advisory file the scanner judges against: [{id, package, severity, fixed}, ...]."""
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return path
