"""Marks shared by builds, gates and a test, for ordering without clocks.

A build's RUN (buildah's chroot shares the host's network) cannot see the host's
files, so marks live behind a loopback HTTP server: `GET /mark/NAME` sets mark NAME,
`GET /has/NAME` answers 200 once it is set and 404 before. Gates, being host
commands, set and read the same marks as files in `folder`.

GATE is a test gate's script (`sh -c GATE sh {repository} FOLDER`): it writes
`start NAME EPOCH` and `end NAME EPOCH` to FOLDER/gates.log from the command's own
clock, sets mark `gate-NAME` as it starts, and then, per image NAME, as files in
FOLDER say: `on-gate-NAME` (a mark to set as it starts), `wait-NAME` (a mark to wait
for, up to 60 s), `sleep-NAME` (seconds to sleep) and `fail-NAME` (exit 1).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .servers import _Quiet, _Server

GATE = r"""
n=$(basename "$1"); d="$2"
echo "start $n $(date +%s.%N)" >> "$d/gates.log"
touch "$d/marks/gate-$n"
if [ -f "$d/on-gate-$n" ]; then touch "$d/marks/$(cat "$d/on-gate-$n")"; fi
if [ -f "$d/wait-$n" ]; then
    i=0
    until [ -f "$d/marks/$(cat "$d/wait-$n")" ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
fi
if [ -f "$d/sleep-$n" ]; then sleep "$(cat "$d/sleep-$n")"; fi
echo "end $n $(date +%s.%N)" >> "$d/gates.log"
[ ! -f "$d/fail-$n" ]
"""


def wait_for(mark: str, address: str) -> str:
    """A Dockerfile RUN (busybox) that waits for a mark, up to 60 s, then goes on."""
    return (f"RUN i=0; until wget -q -O /dev/null http://{address}/has/{mark}"
            " || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done\n")  # fmt: skip


def set_mark(mark: str, address: str) -> str:
    """A Dockerfile RUN (busybox) that sets a mark."""
    return f"RUN wget -q -O /dev/null http://{address}/mark/{mark}\n"


class _Marks(_Quiet):
    def do_GET(self) -> None:
        folder: Path = self.server.owner.folder
        verb, _, name = self.path.strip("/").partition("/")
        if not name or "/" in name or name.startswith("."):
            self.reply(400)
        elif verb == "mark":
            (folder / name).touch()
            self.reply(200, b"set\n")
        elif verb == "has":
            self.reply(200 if (folder / name).exists() else 404, b"")
        else:
            self.reply(404)


class Marks(_Server):
    """The marks of one test, in `root`/marks."""

    def __init__(self, root: Path) -> None:
        super().__init__(_Marks)
        self.root = root
        self.folder = root / "marks"
        self.folder.mkdir(parents=True, exist_ok=True)

    def stamps(self) -> list[tuple[str, str, float]]:
        """(start|end, image name, epoch seconds) as the gate commands wrote them."""
        log = self.root / "gates.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [(kind, name, float(at)) for kind, name, at in (line.split() for line in lines)]

    def first(self, kind: str, name: str) -> float:
        return next(at for k, n, at in self.stamps() if (k, n) == (kind, name))


def epoch(stored: str) -> float:
    """A time state.db stored (ISO 8601, UTC), in epoch seconds."""
    return datetime.fromisoformat(stored).timestamp()
