"""Trying again: the waits between tries, and the one loop that tries, waits and gives up.

A registry's 503, a push that lost a race, a scanner's network hiccup: each
may pass if tried again a little later. The try says so by raising `Again`;
everything else it raises is final. The waits grow (`Backoff`), never past a
deadline, and a cancel ends them. The scheduler, which must not hold a worker
while it waits, takes only the `Backoff`.

Not tenacity: each caller decides in its own terms what is worth another try
(a status code, a transient exit, git's words for a lost race), so what is
shared is this loop and the waits, a few dozen lines; a dependency for it
would cost more than it saves.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits that grow: `first`, then `factor` times longer each time, never over `most`.
    `jitter` spreads each wait by up to that fraction either way, so that many clients
    turned away at once do not all come back at once."""

    first: float
    factor: float = 2.0
    most: float = math.inf
    jitter: float = 0.0

    def wait(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before retry number `retry` (0 for the first)."""
        try:
            seconds = self.first * self.factor**retry
        except OverflowError:  # a poll that has waited its most a thousand times
            seconds = math.inf
        if self.jitter:
            seconds *= 1 - self.jitter + 2 * self.jitter * rand()
        return min(seconds, self.most)


class Again(Exception):
    """Raised by a try that may pass if tried again: `why` it failed, the `wait` the other
    side asked for (a Retry-After), and a `value` for the caller should it give up."""

    def __init__(self, why: str, *, wait: float | None = None, value: Any = None) -> None:
        super().__init__(why)
        self.why, self.wait, self.value = why, wait, value


class Late(Exception):
    """The next try would begin past the deadline: not waited for. `last` is the last try's
    failure."""

    def __init__(self, last: Again) -> None:
        super().__init__(last.why)
        self.last = last


class Cancelled(Exception):
    """The cancel was set while waiting for the next try. `last` is the last try's failure."""

    def __init__(self, last: Again) -> None:
        super().__init__(last.why)
        self.last = last


def call(
    attempt: Callable[[int], T],
    *,
    tries: int,
    backoff: Backoff,
    cancel: threading.Event | None = None,
    until: float | None = None,
    on_retry: Callable[[Again, float], object] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """What `attempt(n)` returns, n being 0 for the first try, 1 for the second, and so on.

    An `Again` is tried again after a wait (the backoff's, or the one it asks for; never
    over `backoff.most`), at most `tries` tries in all; the last one's `Again` is raised.
    A wait that would end at or past `until` (on `clock`) raises `Late` without waiting;
    a `cancel` set during a wait raises `Cancelled`. `on_retry(again, wait)` is told of
    each retry before its wait.
    """
    n = 0
    while True:
        try:
            return attempt(n)
        except Again as again:
            if n + 1 >= tries:
                raise
            wait = backoff.wait(n) if again.wait is None else min(again.wait, backoff.most)
            if until is not None and clock() + wait >= until:
                raise Late(again) from None
            if on_retry is not None:
                on_retry(again, wait)
            if cancel is None:
                sleep(wait)
            elif cancel.wait(wait):
                raise Cancelled(again) from None
        n += 1


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), None if none."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
