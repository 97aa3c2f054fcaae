"""The blocking module's scheduler: which pool thread reads, runs, writes or waits.

Leader/follower: a request should cost one thread wake-up (the read), as in a bare
``readline -> handle -> write`` loop, so the thread that reads a batch of requests runs
them itself, writes the answers and reads again, waking no other thread. Only when a
handler is slow -- work waits a whole tick while every thread that could do it is inside
a handler -- does the monitor wake (or start) another thread to read, run or write.

:class:`Pool` is the state and every decision, pure (no threads, clock or I/O; the caller
holds :attr:`Scheduler.lock`), tested step by step in ``tests/test_sync_scheduler.py``.
:class:`Scheduler` runs the threads: pool threads loop on :meth:`Pool.next`; the monitor
applies the source's deadlines and calls :meth:`Pool.check` every tick while there is
activity. The *source* (the module's session) owns the core and the output
(:class:`Source`).

Invariants (hold whenever :attr:`Scheduler.lock` is free)
---------------------------------------------------------
I1. ``running <= max_workers`` and ``threads <= max_workers + 1``: at most
    ``max_workers`` threads are inside jobs, and one more thread can always exist
    to read while they all are.
I2. At most one thread holds the read role (``reading``); only it reads input or
    takes events from the source.
I3. Jobs are taken from the source only while ``room() > 0``:
    ``running + len(ready) + reserved <= max_workers + max_queued + 1``. Past that,
    while every worker is busy (``running == max_workers``) the reader keeps reading
    and the source refuses new requests (503); otherwise it stops taking (the lines
    wait in the source, at most one read) until a worker frees room.
I4. ``idle`` counts threads waiting in the follow condition that nobody has
    notified yet; ``idle <= threads - running``.
I5. Output the source holds (``output`` > 0) is written by a thread with no ready
    work before it reads again, and by any thread once it passes the flush marks.
I6. Stall rule: if at two consecutive ticks the same work is waiting (ready jobs a
    worker could take, the read role free with input wanted, or output unwritten)
    and ``progress`` did not move, the monitor wakes or starts that many threads
    (within I1). Every job finished, read taken and flush done moves ``progress``.
I7. Once ``stopped``, no thread takes new work; idle threads exit; threads inside a
    job exit when it returns. ``running`` at that moment is the number of handler
    threads abandoned (daemon threads).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:
    from typing import Final, Protocol

    class Source(Protocol):
        """What the scheduler drives. ``lock`` is :attr:`Scheduler.lock`."""

        def read(self) -> bytes:
            """Block for the next chunk of input (lock NOT held); ``b""`` at its end."""

        def take(self, chunk: bytes | None, ready: deque[object], room: int, shed: bool) -> bool:
            """Feed ``chunk`` (``None``: nothing new; ``b""``: end of input) and handle its
            events (lock held): queue at most ``room`` jobs in ``ready``, then refuse
            requests (503) if ``shed``, else stop. Return True if it stopped for room."""

        def run(self, job: object) -> int:
            """Run ``job`` (lock NOT held); return holding the lock, with the size of the
            output it left (``-1``: none). Never raises."""

        def flush(self) -> None:
            """Write what the source holds (lock held on entry, released on return)."""

        def timer(self, now: float) -> tuple[float | None, bool]:
            """Apply the deadlines due at ``now`` (lock held); return when to call again at
            the latest (None: no deadline) and whether any fired."""


#: Monitor period, in seconds. A handler that blocks delays the work queued behind it on
#: its thread by one to two ticks before another thread takes it. Shorter ticks cost
#: wake-ups of the monitor (only while there is activity).
TICK: Final = 0.02
#: Ticks without any activity after which the monitor stops ticking until the next read.
IDLE_TICKS: Final = 50
#: Seconds a thread started by the monitor waits for work before it exits.
SPARE_IDLE: Final = 5.0
#: Answers a thread lets gather before it writes them although it has ready work left,
#: so the orchestrator works on the first half of a burst while the second half runs.
FLUSH_EVERY: Final = 32
#: Body bytes of answers a thread lets gather before it writes them (a pipe's capacity):
#: bounds the output the source holds unwritten.
FLUSH_AT: Final = 64 * 1024

# What Pool.next() tells a free thread to do.
RUN: Final = 1  # run the job returned with it
FLUSH: Final = 2  # call source.flush()
READ: Final = 3  # read a chunk, then source.take() it (read role taken)
TAKE: Final = 4  # source.take(None, ...): events are waiting in the source (read role taken)
WAIT: Final = 5  # wait to be woken (counted in idle)
EXIT: Final = 6  # stopped


class Pool:
    """Pure scheduling state (see the invariants at the top). Not thread-safe: every
    method is called with :attr:`Scheduler.lock` held."""

    def __init__(self, max_workers: int, max_queued: int) -> None:
        """An empty pool: no thread, nothing queued, input open (``max_workers`` >= 1 and
        ``max_queued`` >= 0, as :class:`~pywatt_sync.Module` checks)."""
        self.max_workers = max_workers
        self.capacity = max_workers + max_queued + 1  # running + waiting + the one being read
        self.ready: deque[object] = deque()  # jobs taken, not started
        self.running = 0  # threads inside a job
        self.threads = 0  # pool threads alive
        self.idle = 0  # threads waiting and not yet notified
        self.reading = False  # a thread holds the read role
        self.input_open = True  # end of input not seen
        self.core_more = False  # the source stopped taking for room: events are waiting
        self.reserved = 0  # other work counted against room (rotations)
        self.output = 0  # answers (or other lines) the source holds unwritten
        self.output_bytes = 0  # their body bytes
        self.urgent = False  # output to write before running more jobs (acks, 503s)
        self.stopped = False
        self.progress = 0  # jobs finished + reads taken + flushes done
        self.quiet = 0  # ticks in a row without activity
        self._sample: tuple[int, int, bool, bool] | None = None

    def room(self) -> int:
        """Jobs that may still be taken (I3)."""
        return self.capacity - self.running - len(self.ready) - self.reserved

    def all_busy(self) -> bool:
        """True while every worker is inside a job: new requests beyond room are refused."""
        return self.running >= self.max_workers

    def reader_wanted(self) -> bool:
        """True when nobody holds the read role and someone should take input."""
        return (
            not self.reading
            and not self.stopped
            and (self.core_more or self.input_open)
            and (self.room() > 0 or self.running >= self.max_workers)
        )

    def next(self) -> tuple[int, object]:
        """Choose what a free thread does next and record that it does it.

        Returns ``(RUN, job)`` (``running`` counted), ``(FLUSH, None)`` (the output
        counters reset), ``(READ | TAKE, None)`` (read role taken), ``(WAIT, None)``
        (counted in ``idle``: the waker uncounts it) or ``(EXIT, None)``.
        """
        if self.stopped:
            return EXIT, None
        if self.output and (
            self.urgent or self.output >= FLUSH_EVERY or self.output_bytes > FLUSH_AT
        ):
            return self._flush()
        if self.ready and self.running < self.max_workers:
            self.running += 1
            return RUN, self.ready.popleft()
        if self.output:
            return self._flush()
        if self.reader_wanted():
            self.reading = True
            return (TAKE if self.core_more else READ), None
        self.idle += 1
        return WAIT, None

    def _flush(self) -> tuple[int, object]:
        self.output = self.output_bytes = 0
        self.urgent = False
        return FLUSH, None

    def note_output(self, size: int, urgent: bool) -> None:
        """The source holds one more answer of ``size`` body bytes (``urgent``: write it
        before running more jobs)."""
        self.output += 1
        self.output_bytes += size
        if urgent:
            self.urgent = True

    def job_done(self, size: int) -> None:
        """A thread's job returned, leaving ``size`` bytes of output (-1: none)."""
        self.running -= 1
        self.progress += 1
        if size >= 0:
            self.output += 1
            self.output_bytes += size

    def flushed(self) -> None:
        """A flush ended."""
        self.progress += 1

    def taken(self, more: bool, end: bool) -> None:
        """The reader gave the read role back after ``source.take``: ``more`` events are
        waiting in the source; ``end``: the input is over."""
        self.reading = False
        self.core_more = more
        if end:
            self.input_open = False
        self.progress += 1

    def woken(self, wanted: int) -> tuple[int, int]:
        """Threads to notify and to start for ``wanted`` more threads at work (I1):
        idle ones first (uncounted here), new ones while ``threads`` allows."""
        notify = min(wanted, self.idle)
        self.idle -= notify
        start = max(0, min(wanted - notify, self.max_workers + 1 - self.threads))
        self.threads += start
        return notify, start

    def check(self) -> int:
        """One monitor tick (I6): return how many more threads should be at work."""
        ready = min(len(self.ready), self.max_workers - self.running) if self.ready else 0
        reader = self.reader_wanted()
        output = self.output > 0
        sample = (self.progress, ready, reader, output)
        last, self._sample = self._sample, sample
        busy = bool(self.running or self.ready or output) or last != sample
        self.quiet = 0 if busy else self.quiet + 1  # a reader blocked on input is not busy
        if last is None or last[0] != self.progress:
            return 0
        wanted = min(ready, last[1])
        if not wanted and ((reader and last[2]) or (output and last[3])):
            wanted = 1  # one at a time: it takes the ready work first, reads a tick later
        return wanted

    def discard(self, match: Callable[[object], bool]) -> bool:
        """Remove the first ready job ``match`` accepts (a request answered 504 while it
        waited: it no longer takes room); return whether one was removed."""
        for job in self.ready:
            if match(job):
                self.ready.remove(job)
                return True
        return False


def start_daemon(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


class Scheduler:
    """Pool threads and the monitor around a :class:`Pool`, driving ``source``.

    Args:
        source: the work (see :class:`Source`).
        max_workers: threads inside jobs at most.
        max_queued: jobs waiting for a thread before input stops (or is refused).
        start_thread: ``start_thread(target, name)`` starts a daemon thread (injected
            by tests).
        tick: monitor period in seconds.
    """

    def __init__(
        self,
        source: Source,
        *,
        max_workers: int,
        max_queued: int,
        start_thread: Callable[[Callable[[], None], str], None] = start_daemon,
        tick: float = TICK,
    ) -> None:
        self.pool = Pool(max_workers, max_queued)
        self.source = source
        self.tick = tick
        self._start = start_thread
        #: Guards the pool and the source's core.
        self.lock = threading.Lock()
        self._follow = threading.Condition(self.lock)  # idle pool threads
        self._room = threading.Condition(self.lock)  # submit() waiting for room
        self._wake = threading.Condition(self.lock)  # the monitor
        self._room_waiters = 0
        self._asleep = False  # the monitor waits without ticking
        self._wake_at = 0.0  # the monitor's next wake-up

    # ------------------------------------------------------------ lock held
    def start_locked(self) -> None:
        """Start the first pool thread (it reads at once)."""
        self._kick_locked(1)

    def stop_locked(self) -> None:
        """Stop (I7): idle threads and the monitor return, no new work is taken."""
        pool = self.pool
        pool.stopped = True
        self._follow.notify_all()
        self._room.notify_all()
        self._wake.notify()

    def wake_monitor_locked(self, deadline: float | None = None) -> None:
        """Wake the monitor now, or only if ``deadline`` is before its next wake-up."""
        if deadline is None or deadline < self._wake_at:
            self._wake.notify()

    def take_locked(self) -> None:
        """Take the events waiting in the source (not from a read: after deadlines, after
        the announce), within room; wake threads for the jobs."""
        pool = self.pool
        pool.core_more = self.source.take(None, pool.ready, pool.room(), pool.all_busy())
        if pool.ready and pool.running < pool.max_workers:
            self._kick_locked(min(len(pool.ready), pool.max_workers - pool.running))

    def unreserve_locked(self) -> None:
        """One reserved job (a rotation) ended: its room is free again."""
        self.pool.reserved -= 1
        if self._room_waiters:
            self._room.notify()

    def need_reader_locked(self) -> None:
        """Called before a job blocks on an answer that comes as input: have someone
        take input now rather than at the next tick."""
        if self.pool.reader_wanted():
            self._kick_locked(1)

    def _kick_locked(self, wanted: int) -> None:
        if self._asleep:
            self._wake.notify()
        notify, start = self.pool.woken(wanted)
        if notify:
            self._follow.notify(notify)
        for _ in range(start):
            self._start(self._thread, "pywatt-worker")

    # ------------------------------------------------------------ lock free
    def submit(self, job: object) -> bool:
        """Queue ``job`` from outside the pool (a channel reader): wait while there is
        no room, then wake a thread. Returns False if the scheduler stopped."""
        pool = self.pool
        with self.lock:
            while not pool.stopped and pool.room() <= 0:
                self._room_waiters += 1
                self._room.wait()
                self._room_waiters -= 1
            if pool.stopped:
                return False
            pool.ready.append(job)
            self._kick_locked(1)
            return True

    def _thread(self) -> None:
        """A pool thread: loop on :meth:`Pool.next` until stopped (or idle too long)."""
        pool, source, lock = self.pool, self.source, self.lock
        lock.acquire()
        try:
            while True:
                action, job = pool.next()
                if action == RUN:
                    lock.release()
                    size = source.run(job)  # returns holding the lock
                    pool.job_done(size)
                    if self._room_waiters:
                        self._room.notify()
                elif action == FLUSH:
                    source.flush()  # releases the lock
                    lock.acquire()
                    pool.flushed()
                elif action in (READ, TAKE):
                    chunk: bytes | None = None
                    if action == READ:
                        lock.release()
                        chunk = source.read()
                        lock.acquire()
                    if pool.stopped:
                        pool.reading = False
                        continue
                    more = source.take(chunk, pool.ready, pool.room(), pool.all_busy())
                    pool.taken(more, chunk == b"")
                    if self._asleep:
                        self._asleep = False
                        self._wake.notify()
                elif action == WAIT:
                    if self._follow.wait(SPARE_IDLE):
                        continue  # the waker uncounted us
                    pool.idle = max(0, pool.idle - 1)  # a racing notify may have done it
                    if not pool.stopped and pool.threads > 1 and not pool.reader_wanted():
                        pool.threads -= 1  # idle too long: one thread fewer
                        return
                else:  # EXIT
                    pool.threads -= 1
                    return
        finally:
            lock.release()

    def monitor(self) -> None:
        """Apply the source's deadlines and the stall rule until stopped (call it from
        the serving thread; returns with the lock free once ``stop_locked`` ran)."""
        pool, lock = self.pool, self.lock
        lock.acquire()
        try:
            next_tick = 0.0
            while not pool.stopped:
                now = time.monotonic()
                wake_at, fired = self.source.timer(now)
                if fired:  # 504s, secret failures: taken and written by the monitor
                    self.take_locked()
                if pool.output and fired:
                    pool.output = pool.output_bytes = 0
                    self.source.flush()
                    lock.acquire()
                    pool.flushed()
                    continue
                if now >= next_tick:
                    wanted = pool.check()
                    if wanted:
                        self._kick_locked(wanted)
                    next_tick = now + self.tick
                ticking = pool.quiet < IDLE_TICKS
                if ticking and (wake_at is None or next_tick < wake_at):
                    wake_at = next_tick
                self._wake_at = wake_at if wake_at is not None else float("inf")
                self._asleep = not ticking
                self._wake.wait(None if wake_at is None else max(0.0, wake_at - now))
                if self._asleep:
                    self._asleep = False
                    pool.quiet = 0
        finally:
            lock.release()
