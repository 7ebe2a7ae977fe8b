from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from graphbuild import filelock

HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    if len(sys.argv) > 3:
        open(sys.argv[3], "w").write("done")  # still holding the lock
"""


def test_a_second_holder_waits_for_the_first(tmp_path):
    lock = tmp_path / "sync.lock"
    done = tmp_path / "done"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), "0.5", str(done)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    waited = []
    with filelock.exclusive(lock, lambda holder: waited.append(holder)):
        finished = done.exists()  # written by the holder just before it let go
    assert waited == ["another process"]  # the holder wrote nothing: it is not graphbuild
    assert finished, "the lock was taken while the other process held it"
    holder.wait()


def test_an_uncontended_lock_does_not_wait(tmp_path):
    waited = []
    with filelock.exclusive(tmp_path / "deep" / "sync.lock", lambda holder: waited.append(holder)):
        pass
    with filelock.exclusive(tmp_path / "deep" / "sync.lock", lambda holder: waited.append(holder)):
        pass
    assert waited == []


def test_not_waiting_names_the_holder(tmp_path):
    lock = tmp_path / "sweep.lock"
    with filelock.exclusive(lock):
        holder = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]);"
             "from graphbuild import filelock as f\n"
             "try:\n with f.exclusive(__import__('pathlib').Path(sys.argv[1]), wait=False): pass\n"
             "except f.Locked as e: print(e)", str(lock), str(Path(filelock.__file__).parents[1])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    assert f"{lock} is held by pid {os.getpid()} since " in holder.stdout
    assert lock.read_text() == ""  # released: the holder line is cleared
