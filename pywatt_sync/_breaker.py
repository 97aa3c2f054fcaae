"""Blocking wrapper around the pure :class:`pywatt_proto.CircuitBreaker` (spec/breaker.md §1.5).

The core decides; this file reads the clock, runs the protected function and reports its
outcome, holding a lock around each core call so threads can share one breaker. The lock
is *not* held while the protected function runs (pybreaker holds its RLock for the whole
call, which serialises every protected call).

    breaker = Breaker(CircuitBreaker(failure_threshold=3, reset_timeout=10.0))

    @breaker
    def fetch() -> bytes: ...

    with breaker.guard():
        ...

    breaker.call(fetch)

Each raises :class:`pywatt_proto.CircuitOpenError` instead of calling while the breaker
is open.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from pywatt_proto._breaker import REJECTED, CircuitBreaker

P = ParamSpec("P")
R = TypeVar("R")


class Breaker:
    """A thread-safe, blocking circuit breaker.

    Args:
        core: the pure breaker holding the policy and state (a default
            ``CircuitBreaker()`` -- 5 failures, 60 s -- when omitted).
        clock: monotonic seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_core", "_lock_ops")

    def __init__(
        self, core: CircuitBreaker | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._core = core if core is not None else CircuitBreaker()
        self._clock = clock
        lock = threading.Lock()
        self._lock_ops = (lock.acquire, lock.release)

    @property
    def core(self) -> CircuitBreaker:
        """The pure breaker (read its ``state`` and ``counters`` here)."""
        return self._core

    # Explicit acquire/release: `with lock:` costs ~3x more per use (spec/breaker.md §1.7).
    def _admit(self) -> int:
        acquire, release = self._lock_ops
        acquire()
        try:
            ticket = self._core.acquire(self._clock())
            if ticket == REJECTED:
                raise self._core.refusal(self._clock())
        finally:
            release()
        return ticket

    def _record(self, ticket: int, exc: BaseException | None) -> None:
        acquire, release = self._lock_ops
        acquire()
        try:
            self._core.record_outcome(ticket, exc, self._clock())
        finally:
            release()

    def call(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``func(*args, **kwargs)`` through the breaker and return its result.

        Raises:
            CircuitOpenError: the breaker refused the call; ``func`` was not called.
            BaseException: whatever ``func`` raised, after recording it (an
                excluded type counts as a success, a non-``Exception`` such as
                ``KeyboardInterrupt`` as an abandoned call).
        """
        core, clock = self._core, self._clock
        acquire, release = self._lock_ops  # _admit and _record inlined: the fast path
        acquire()
        try:
            ticket = core.acquire(clock())
            if ticket == REJECTED:
                raise core.refusal(clock())
        finally:
            release()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._record(ticket, exc)
            raise
        acquire()
        try:
            core.record_success(ticket, clock())
        finally:
            release()
        return result

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``func`` so every call goes through :meth:`call`.

        Raises:
            TypeError: ``func`` is a coroutine function (use ``pywatt_asyncio.Breaker``).
        """
        if inspect.iscoroutinefunction(func):
            raise TypeError("pywatt_sync.Breaker cannot guard a coroutine function")
        core, clock, record = self._core, self._clock, self._record
        acquire, release = self._lock_ops

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:  # call(), inlined
            acquire()
            try:
                ticket = core.acquire(clock())
                if ticket == REJECTED:
                    raise core.refusal(clock())
            finally:
                release()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                record(ticket, exc)
                raise
            acquire()
            try:
                core.record_success(ticket, clock())
            finally:
                release()
            return result

        return guarded

    def guard(self) -> BreakerGuard:
        """Return a one-use context manager protecting the ``with`` block.

        ``__enter__`` raises :class:`CircuitOpenError` when the call is refused
        (the block does not run); ``__exit__`` records the outcome and never
        suppresses the exception.
        """
        return BreakerGuard(self)

    def __repr__(self) -> str:
        return f"Breaker({self._core!r})"


class BreakerGuard:
    """One protected ``with`` block (see :meth:`Breaker.guard`)."""

    __slots__ = ("_breaker", "_ticket")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._ticket = REJECTED

    def __enter__(self) -> BreakerGuard:
        if self._ticket != REJECTED:
            raise RuntimeError("a BreakerGuard can only be entered once at a time")
        self._ticket = self._breaker._admit()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket, self._ticket = self._ticket, REJECTED
        self._breaker._record(ticket, exc)
