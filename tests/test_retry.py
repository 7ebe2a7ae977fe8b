"""retry: the one loop for trying again, and the waits between tries; no clock is read here,
the waits are recorded by an injected sleep and the deadline is checked on an injected clock."""

import threading

import pytest

from graphbuild import retry
from graphbuild.retry import Again, Backoff


def test_backoff_grows_by_its_factor_up_to_its_most():
    waits = Backoff(0.5, factor=2, most=3)
    assert [waits.wait(n) for n in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    assert [Backoff(3, factor=1.5, most=15).wait(n) for n in range(6)] == [
        3, 4.5, 6.75, 10.125, 15, 15]  # fmt: skip


def test_backoff_stays_at_its_most_however_many_waits():
    assert Backoff(3, factor=1.5, most=15).wait(5000) == 15


def test_backoff_jitter_spreads_each_wait_by_its_fraction():
    waits = Backoff(1, jitter=0.5)
    assert waits.wait(2, rand=lambda: 0.0) == 2.0  # 4 * 0.5
    assert waits.wait(2, rand=lambda: 0.5) == 4.0
    assert waits.wait(2, rand=lambda: 0.999) == pytest.approx(5.996)
    assert Backoff(1, jitter=0.5, most=3).wait(2, rand=lambda: 0.999) == 3  # capped after


class Flaky:
    """Fails with Again `fails` times, then answers; records each try's number."""

    def __init__(self, fails: int, wait: float | None = None) -> None:
        self.fails, self.hint, self.tries = fails, wait, []

    def __call__(self, n: int) -> str:
        self.tries.append(n)
        if len(self.tries) <= self.fails:
            raise Again(f"failure {len(self.tries)}", wait=self.hint, value=len(self.tries))
        return "answer"


def test_tries_again_after_each_wait_until_an_answer():
    slept: list[float] = []
    flaky = Flaky(2)
    assert retry.call(flaky, tries=5, backoff=Backoff(1), sleep=slept.append) == "answer"
    assert flaky.tries == [0, 1, 2]
    assert slept == [1, 2]


def test_gives_up_after_its_tries_with_the_last_failure():
    slept: list[float] = []
    flaky = Flaky(10)
    with pytest.raises(Again, match="failure 3") as last:
        retry.call(flaky, tries=3, backoff=Backoff(1), sleep=slept.append)
    assert last.value.value == 3
    assert flaky.tries == [0, 1, 2]
    assert slept == [1, 2]  # none after the last try


def test_one_try_is_no_retry():
    slept: list[float] = []
    with pytest.raises(Again):
        retry.call(Flaky(1), tries=1, backoff=Backoff(1), sleep=slept.append)
    assert slept == []


def test_other_errors_are_not_retried():
    tries: list[int] = []

    def broken(n: int) -> None:
        tries.append(n)
        raise ValueError("not a passing failure")

    with pytest.raises(ValueError):
        retry.call(broken, tries=5, backoff=Backoff(1), sleep=lambda s: None)
    assert tries == [0]


def test_the_failures_own_wait_replaces_the_backoff_but_not_its_most():
    slept: list[float] = []
    retry.call(Flaky(2, wait=7), tries=5, backoff=Backoff(1, most=5), sleep=slept.append)
    assert slept == [5, 5]
    slept.clear()
    retry.call(Flaky(1, wait=0.25), tries=5, backoff=Backoff(1), sleep=slept.append)
    assert slept == [0.25]


def test_each_retry_is_told_before_its_wait():
    told: list[tuple[str, float]] = []
    retry.call(Flaky(2), tries=5, backoff=Backoff(1), sleep=lambda s: None,
               on_retry=lambda again, wait: told.append((again.why, wait)))  # fmt: skip
    assert told == [("failure 1", 1), ("failure 2", 2)]


def test_a_wait_that_would_end_past_the_deadline_is_not_waited():
    slept: list[float] = []
    flaky = Flaky(10)
    with pytest.raises(retry.Late) as late:
        retry.call(flaky, tries=10, backoff=Backoff(1), until=103.5, clock=lambda: 100.0,
                   sleep=slept.append)  # fmt: skip
    assert slept == [1, 2]  # 100 + 4 >= 103.5: the third wait is not begun
    assert late.value.last.why == "failure 3"
    assert flaky.tries == [0, 1, 2]


def test_a_cancel_ends_the_wait_and_is_raised():
    cancel = threading.Event()
    cancel.set()  # set already: the wait returns at once
    flaky = Flaky(10)
    with pytest.raises(retry.Cancelled) as cancelled:
        retry.call(flaky, tries=5, backoff=Backoff(3600), cancel=cancel)
    assert cancelled.value.last.why == "failure 1"
    assert flaky.tries == [0]


def test_with_a_cancel_not_set_the_wait_is_the_events():
    class Event(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float | None] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout)
            return False

    cancel = Event()
    assert retry.call(Flaky(2), tries=5, backoff=Backoff(2), cancel=cancel) == "answer"
    assert cancel.waits == [2, 4]
