"""A `command` builder for tests: it pushes, as an image, a listing of the build context it
was given (every path: a folder, a file's mode and sha256, a symlink's target), so a test
sees exactly what graphbuild sent a builder.

    context_builder.py TAG DIGESTFILE CONTEXT CONTROL

It appends `pid pgid context` to CONTROL/started. With CONTROL/hold present, a helper in
its process group does the push, once CONTROL/release exists: a builder still at work when
graphbuild is killed, which pushes over the tag if nothing stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.oci import LocalRegistry


def listing(context: Path) -> dict[str, list[str]]:
    """What a builder that sends the whole folder would send, never following a link."""
    found: dict[str, list[str]] = {}
    for base, dirs, files in os.walk(context):
        for name in dirs + files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, context)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ["link", os.readlink(full)]
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ["dir"]
            elif stat.S_ISREG(st.st_mode):
                data = Path(full).read_bytes()
                found[rel] = ["file", oct(st.st_mode & 0o777), hashlib.sha256(data).hexdigest()]
            else:
                found[rel] = ["special"]
    return found


def push(tag: str, digestfile: str, context: str) -> None:
    host, rest = tag.split("/", 1)
    repo, name = rest.rsplit(":", 1)
    registry = LocalRegistry(Path(os.devnull), port=int(host.rsplit(":", 1)[1]))
    content = json.dumps(listing(Path(context)), sort_keys=True)
    Path(digestfile).write_text(registry.image(repo, name, content=content) + "\n")


def main(argv: list[str]) -> int:
    if argv[0] == "--helper":
        tag, digestfile, context, control = argv[1:5]
        (Path(control) / "helper").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        while not (Path(control) / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        push(tag, digestfile, context)
        return 0
    tag, digestfile, context, control = argv[:4]
    with (Path(control) / "started").open("a") as out:
        out.write(f"{os.getpid()} {os.getpgrp()} {context}\n")
    if (Path(control) / "hold").exists():
        helper = [sys.executable, __file__, "--helper", tag, digestfile, context, control]
        return subprocess.call(helper)
    push(tag, digestfile, context)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
