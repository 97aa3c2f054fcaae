"""The blocking module's scheduler on its own (pywatt_sync/_scheduler.py).

``Pool`` is pure (no threads, clock or I/O), so its decisions are tested step by step,
and its invariants (I1-I4 in the file's docstring) under random interleavings of
simulated threads. ``Scheduler`` is then run with real threads over a fake source, with
the thread starter injected to count and name the threads it starts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_sync import Module
from pywatt_sync._scheduler import (
    EXIT,
    FLUSH,
    FLUSH_EVERY,
    READ,
    RUN,
    TAKE,
    WAIT,
    Pool,
    Scheduler,
)

WAIT_S = 20.0  # failure bound only


def test_the_thread_that_reads_runs_what_it_read_then_writes_then_reads() -> None:
    pool = Pool(max_workers=4, max_queued=8)
    assert pool.next() == (READ, None)
    pool.ready.extend(["a", "b"])
    pool.taken(more=False, end=False)
    assert pool.next() == (RUN, "a")
    pool.job_done(10)
    assert pool.next() == (RUN, "b")  # the same thread, no hand-off
    pool.job_done(10)
    assert pool.next() == (FLUSH, None)  # answers written once, for the whole batch
    pool.flushed()
    assert pool.next() == (READ, None)


def test_output_made_by_taking_input_is_written_before_the_jobs() -> None:
    # Heartbeat acks, 400s and 503s do not wait behind a slow handler.
    pool = Pool(max_workers=4, max_queued=8)
    assert pool.next() == (READ, None)
    pool.ready.append("a")
    pool.note_output(0, urgent=True)
    pool.taken(more=False, end=False)
    assert pool.next() == (FLUSH, None)
    assert pool.next() == (RUN, "a")


def test_answers_are_written_mid_batch_every_flush_every() -> None:
    pool = Pool(max_workers=1, max_queued=2 * FLUSH_EVERY)
    pool.ready.extend(range(FLUSH_EVERY + 5))
    for i in range(FLUSH_EVERY):
        assert pool.next() == (RUN, i)
        pool.job_done(1)
    assert pool.next() == (FLUSH, None)
    assert pool.next() == (RUN, FLUSH_EVERY)


def test_a_late_answer_is_no_output() -> None:
    pool = Pool(max_workers=1, max_queued=1)
    pool.ready.append("a")
    assert pool.next() == (RUN, "a")
    pool.job_done(-1)  # answered 504 already: dropped
    assert pool.next() == (READ, None)


def test_room_bounds_what_is_taken_until_every_worker_is_busy() -> None:
    pool = Pool(max_workers=2, max_queued=3)
    assert pool.room() == 6  # workers + queued + the one taken with the read
    pool.ready.extend(range(6))
    assert pool.room() == 0 and not pool.reader_wanted()  # workers free: they take the jobs
    assert pool.next() == (RUN, 0)
    assert pool.next() == (RUN, 1)
    assert pool.room() == 0 and pool.all_busy()
    assert pool.reader_wanted()  # every worker busy: read on, refusing what has no room
    assert pool.next() == (READ, None)
    assert pool.next() == (WAIT, None)  # the reader is taken, the workers are busy
    assert pool.idle == 1


def test_a_request_timed_out_in_the_queue_gives_its_room_back() -> None:
    pool = Pool(max_workers=1, max_queued=1)
    pool.ready.extend(["a", "b"])
    assert pool.room() == 1
    assert pool.discard(lambda job: job == "b")
    assert not pool.discard(lambda job: job == "b")
    assert pool.room() == 2 and list(pool.ready) == ["a"]


def test_events_left_in_the_source_are_taken_without_a_read() -> None:
    pool = Pool(max_workers=1, max_queued=0)
    assert pool.next() == (READ, None)
    pool.ready.extend(["a", "b"])
    pool.taken(more=True, end=False)
    assert pool.next() == (RUN, "a")
    pool.job_done(-1)
    assert pool.next() == (RUN, "b")
    pool.job_done(-1)
    assert pool.next() == (TAKE, None)


def test_end_of_input_stops_reading() -> None:
    pool = Pool(max_workers=1, max_queued=0)
    assert pool.next() == (READ, None)
    pool.taken(more=False, end=True)
    assert not pool.reader_wanted()
    assert pool.next() == (WAIT, None)


def test_stall_rule_needs_two_ticks_without_progress() -> None:
    pool = Pool(max_workers=4, max_queued=8)
    assert pool.next() == (READ, None)
    pool.ready.extend(["slow", "x", "y"])
    pool.taken(more=False, end=False)
    assert pool.next() == (RUN, "slow")  # the reader is now inside a handler
    assert pool.check() == 0  # first sample
    assert pool.check() == 2  # x and y waited a whole tick: two threads
    assert pool.woken(2) == (0, 2) and pool.threads == 2
    assert pool.next() == (RUN, "x")
    pool.job_done(1)  # progress
    assert pool.check() == 0


def test_stall_rule_wakes_a_reader_one_tick_after_the_ready_work() -> None:
    pool = Pool(max_workers=4, max_queued=8)
    pool.threads = 1
    assert pool.next() == (READ, None)
    pool.ready.append("slow")
    pool.taken(more=False, end=False)
    assert pool.next() == (RUN, "slow")
    assert pool.reader_wanted()
    assert pool.check() == 0
    assert pool.check() == 1  # input unread for a tick
    assert pool.woken(1) == (0, 1)


def test_stall_rule_writes_answers_left_behind_a_slow_handler() -> None:
    pool = Pool(max_workers=1, max_queued=8)
    pool.ready.extend(["fast", "slow"])
    pool.input_open = False
    assert pool.next() == (RUN, "fast")
    pool.job_done(5)
    assert pool.next() == (RUN, "slow")  # its answer is left in the source
    assert pool.check() == 0
    assert pool.check() == 1
    assert pool.next() == (FLUSH, None)  # the thread woken for it writes first


def test_monitor_goes_quiet_without_activity() -> None:
    pool = Pool(max_workers=1, max_queued=0)
    assert pool.next() == (READ, None)  # blocked on input: not activity
    for _ in range(5):
        assert pool.check() == 0
    assert pool.quiet == 4


def test_woken_threads_stay_within_the_cap() -> None:
    pool = Pool(max_workers=2, max_queued=0)
    assert pool.woken(10) == (0, 3)
    assert pool.woken(10) == (0, 0)
    pool.idle = 1
    assert pool.woken(10) == (1, 0) and pool.idle == 0


def test_stopped_pool_hands_out_no_work() -> None:
    pool = Pool(max_workers=1, max_queued=1)
    pool.ready.append("a")
    pool.stopped = True
    assert pool.next() == (EXIT, None)
    assert not pool.reader_wanted()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers must be at least 1"):
        Module(max_workers=0)
    with pytest.raises(ValueError, match="max_queued must not be negative"):
        Module(max_queued=-1)


# -- invariants under random interleavings ---------------------------------------------

_FREE, _RUNNING, _READING, _IDLE = "free", "running", "reading", "idle"


@given(
    st.integers(1, 4),
    st.integers(0, 4),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10)), max_size=200),
)
def test_invariants_hold_under_any_interleaving(
    max_workers: int, max_queued: int, steps: list[tuple[int, int]]
) -> None:
    pool = Pool(max_workers, max_queued)
    threads: list[str] = []  # the simulated threads' states
    notify, start = pool.woken(1)
    threads += [_FREE] * start
    pending_requests = 0
    for kind, arg in steps:
        free = [i for i, s in enumerate(threads) if s == _FREE]
        if kind == 0 and free:  # a free thread asks what to do
            i = free[arg % len(free)]
            action, _job = pool.next()
            threads[i] = {RUN: _RUNNING, READ: _READING, TAKE: _READING, WAIT: _IDLE}.get(
                action, _FREE
            )
            if action == FLUSH:
                pool.flushed()
        elif kind == 1 and _RUNNING in threads:  # a job returns
            threads[threads.index(_RUNNING)] = _FREE
            pool.job_done(arg - 1)
        elif kind == 2 and _READING in threads:  # the reader takes what fits, sheds the rest
            pending_requests += arg
            shed = pool.all_busy()
            taken = min(pending_requests, max(0, pool.room()))
            pool.ready.extend(range(taken))
            pending_requests = 0 if shed else pending_requests - taken
            threads[threads.index(_READING)] = _FREE
            pool.taken(more=pending_requests > 0, end=False)
        elif kind == 3:  # a monitor tick
            notify, start = pool.woken(pool.check())
            for _ in range(notify):
                threads[threads.index(_IDLE)] = _FREE
            threads += [_FREE] * start
        elif kind == 4 and pool.ready:  # a queued request times out
            pool.discard(lambda job: True)
        elif kind == 5 and _IDLE in threads and pool.idle > 0:  # an idle thread's wait ends
            pool.idle -= 1  # by timing out (nobody notified it)
            threads[threads.index(_IDLE)] = _FREE
        # I1-I4
        assert pool.running == threads.count(_RUNNING) <= max_workers
        assert pool.threads == len(threads) <= max_workers + 1
        assert threads.count(_READING) == int(pool.reading) <= 1
        assert pool.running + len(pool.ready) + pool.reserved <= pool.capacity
        assert pool.idle == threads.count(_IDLE)


# -- the threaded scheduler over a fake source ------------------------------------------


class FakeSource:
    """Input from a queue of chunks; each chunk is a list of job names; records who ran
    each job and who read it."""

    def __init__(self, chunks: list[list[str]], block: set[str]) -> None:
        self.chunks: deque[list[str]] = deque(chunks)
        self.more = threading.Condition()
        self.block = block
        self.release = threading.Event()
        self.read_by: dict[str, int] = {}
        self.ran_by: dict[str, int] = {}
        self.all_done = threading.Event()
        self.expected = sum(len(c) for c in chunks)
        self.pending: list[str] = []
        self.sched: Scheduler | None = None

    def read(self) -> bytes:
        with self.more:
            while not self.chunks:
                self.more.wait()
            chunk = self.chunks.popleft()
        me = threading.get_ident()
        for name in chunk:
            self.read_by[name] = me
        self.pending.extend(chunk)
        return b"x" if chunk else b""

    def take(self, chunk: bytes | None, ready: deque[object], room: int, shed: bool) -> bool:
        while self.pending and room > 0:
            ready.append(self.pending.pop(0))
            room -= 1
        return bool(self.pending)

    def run(self, job: object) -> int:
        assert isinstance(job, str)
        self.ran_by[job] = threading.get_ident()
        if job in self.block:
            assert self.release.wait(WAIT_S)
        assert self.sched is not None
        self.sched.lock.acquire()
        if len(self.ran_by) == self.expected:
            self.all_done.set()
        return 1

    def flush(self) -> None:
        assert self.sched is not None
        self.sched.lock.release()

    def timer(self, now: float) -> tuple[float | None, bool]:
        return None, False


def _scheduler(
    source: FakeSource, tick: float, **options: int
) -> tuple[Scheduler, list[str], Callable[[], None]]:
    started: list[str] = []

    def start_thread(target: Callable[[], None], name: str) -> None:
        started.append(name)
        threading.Thread(target=target, name=name, daemon=True).start()

    sched = Scheduler(source, start_thread=start_thread, tick=tick, **options)
    source.sched = sched
    monitor = threading.Thread(target=sched.monitor, daemon=True)
    monitor.start()

    def stop() -> None:
        with sched.lock:
            sched.stop_locked()
        with source.more:
            source.chunks.append([])
            source.more.notify_all()
        monitor.join(WAIT_S)
        assert not monitor.is_alive()

    return sched, started, stop


def test_fast_jobs_run_on_the_thread_that_read_them() -> None:
    source = FakeSource([["a", "b", "c"], ["d"]], block=set())
    # A tick longer than the test: only the stall rule could start a second thread.
    sched, started, stop = _scheduler(source, tick=3600.0, max_workers=4, max_queued=8)
    with sched.lock:
        sched.start_locked()
    assert source.all_done.wait(WAIT_S)
    stop()
    assert started == ["pywatt-worker"]
    assert all(source.ran_by[name] == source.read_by[name] for name in "abcd")


def test_a_blocked_job_gets_its_neighbours_run_by_another_thread() -> None:
    source = FakeSource([["slow", "x", "y"]], block={"slow"})
    sched, started, stop = _scheduler(source, tick=0.005, max_workers=4, max_queued=8)
    with sched.lock:
        sched.start_locked()
    for _ in range(2000):  # x and y are run while "slow" still blocks
        if {"x", "y"} <= set(source.ran_by):
            break
        threading.Event().wait(0.005)
    assert {"x", "y"} <= set(source.ran_by)
    assert source.ran_by["x"] != source.ran_by["slow"]
    source.release.set()
    assert source.all_done.wait(WAIT_S)
    stop()
    assert 2 <= len(started) <= 5  # max_workers + 1 at most
