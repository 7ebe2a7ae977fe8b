from __future__ import annotations

import subprocess
import sys
import time

from graphbuild import filelock

HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_holder_waits_for_the_first(tmp_path):
    lock = tmp_path / "sync.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), "1.0"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    waited = []
    start = time.monotonic()
    with filelock.exclusive(lock, lambda: waited.append(True)):
        acquired = time.monotonic() - start
    assert waited == [True]
    assert acquired > 0.8, "the lock was taken while the other process held it"
    holder.wait()


def test_an_uncontended_lock_does_not_wait(tmp_path):
    waited = []
    with filelock.exclusive(tmp_path / "deep" / "sync.lock", lambda: waited.append(True)):
        pass
    with filelock.exclusive(tmp_path / "deep" / "sync.lock", lambda: waited.append(True)):
        pass
    assert waited == []
