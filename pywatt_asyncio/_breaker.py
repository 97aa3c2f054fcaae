"""asyncio wrapper around the pure :class:`pywatt_proto.CircuitBreaker` (spec/breaker.md §1.5).

The core decides; this file reads the clock, awaits the protected coroutine and reports
its outcome. Core calls never await, so on one event loop they are atomic and need no
lock: use one ``Breaker`` per loop (share a core across threads through
``pywatt_sync.Breaker``). A cancelled call is recorded as abandoned.

    breaker = Breaker(CircuitBreaker(failure_threshold=3, reset_timeout=10.0))

    @breaker
    async def fetch() -> bytes: ...

    async with breaker.guard():
        ...

    await breaker.call(fetch)

Each raises :class:`pywatt_proto.CircuitOpenError` instead of calling while the breaker
is open.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from pywatt_proto._breaker import REJECTED, CircuitBreaker

P = ParamSpec("P")
R = TypeVar("R")


class Breaker:
    """A circuit breaker for coroutines on one event loop.

    Args:
        core: the pure breaker holding the policy and state (a default
            ``CircuitBreaker()`` -- 5 failures, 60 s -- when omitted).
        clock: monotonic seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_core")

    def __init__(
        self, core: CircuitBreaker | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._core = core if core is not None else CircuitBreaker()
        self._clock = clock

    @property
    def core(self) -> CircuitBreaker:
        """The pure breaker (read its ``state`` and ``counters`` here)."""
        return self._core

    def _admit(self) -> int:
        ticket = self._core.acquire(self._clock())
        if ticket == REJECTED:
            raise self._core.refusal(self._clock())
        return ticket

    async def call(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``func(*args, **kwargs)`` through the breaker and return its result.

        Raises:
            CircuitOpenError: the breaker refused the call; ``func`` was not called.
            BaseException: whatever the awaitable raised, after recording it.
        """
        ticket = self._admit()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            self._core.record_exception(ticket, exc, self._clock())
            raise
        self._core.record_success(ticket, self._clock())
        return result

    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate the coroutine function ``func`` so every call goes through :meth:`call`.

        Raises:
            TypeError: ``func`` is not a coroutine function (use ``pywatt_sync.Breaker``).
        """
        if not inspect.iscoroutinefunction(func):
            raise TypeError("pywatt_asyncio.Breaker can only guard coroutine functions")
        core, clock, admit = self._core, self._clock, self._admit

        @functools.wraps(func)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:  # call(), inlined
            ticket = admit()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                core.record_exception(ticket, exc, clock())
                raise
            core.record_success(ticket, clock())
            return result

        return guarded

    def guard(self) -> AsyncBreakerGuard:
        """Return a one-use async context manager protecting the ``async with`` block.

        ``__aenter__`` raises :class:`CircuitOpenError` when the call is refused
        (the block does not run); ``__aexit__`` records the outcome and never
        suppresses the exception.
        """
        return AsyncBreakerGuard(self)

    def __repr__(self) -> str:
        return f"Breaker({self._core!r})"


class AsyncBreakerGuard:
    """One protected ``async with`` block (see :meth:`Breaker.guard`)."""

    __slots__ = ("_breaker", "_ticket")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._ticket = REJECTED

    async def __aenter__(self) -> AsyncBreakerGuard:
        if self._ticket != REJECTED:
            raise RuntimeError("an AsyncBreakerGuard can only be entered once at a time")
        self._ticket = self._breaker._admit()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        b = self._breaker
        ticket, self._ticket = self._ticket, REJECTED
        b._core.record_outcome(ticket, exc, b._clock())
