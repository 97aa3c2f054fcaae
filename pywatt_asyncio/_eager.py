"""Start an ``asyncio.Task`` and run its first step at once (an eagerly started task).

A handler's coroutine usually finishes without waiting; started eagerly it is done when
:meth:`EagerStarter.start` returns (no scheduled step, done callback or loop iteration),
and only one that suspends goes on as an ordinary task. The task is a real
``asyncio.Task`` from its first line (``asyncio.current_task()`` is stable across awaits,
as ``asyncio.timeout``, ``TaskGroup`` and anyio need; its context is its own copy).

* Python 3.12+: ``asyncio.Task(..., eager_start=True)``.
* Python 3.11: while the task is constructed the loop's ``call_soon`` is shadowed by an
  instance attribute that keeps the first step instead of scheduling it; the step is then
  run here, in the task's context, as the loop would (C and Python tasks both look the
  method up on the loop). docs/performance.md has what it buys.

Falls back to ``loop.create_task`` with a task factory, a loop without an instance
``__dict__``, or while another task is running.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, TypeVar

_T = TypeVar("_T")

_NATIVE = sys.version_info >= (3, 12)
_current_task = asyncio.current_task


class EagerStarter:
    """Start tasks on ``loop`` with their first step run before :meth:`start` returns."""

    __slots__ = ("_loop", "_patchable", "_step")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._step: tuple[Callable[..., object], tuple[Any, ...], Context | None] | None = None
        try:
            own = vars(loop)
        except TypeError:  # no instance __dict__ (a compiled loop): nothing to shadow
            own = None
        self._patchable = own is not None and "call_soon" not in own

    def _keep(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> None:
        self._step = (callback, args, context)

    def start(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Return a task running ``coro``, already stepped once when that was possible.

        ``task.done()`` right after the call means the coroutine finished without
        suspending. Exceptions other than ``Exception`` subclasses escaping the first step
        (``KeyboardInterrupt``, ``SystemExit``) propagate, as they do from the event loop.
        """
        loop = self._loop
        if loop.get_task_factory() is not None:
            return loop.create_task(coro)
        if _NATIVE:  # pragma: no cover - exercised on Python 3.12+
            return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
        if not self._patchable or _current_task(loop) is not None:
            return loop.create_task(coro)
        loop.call_soon = self._keep  # type: ignore[method-assign, assignment]
        try:
            task = asyncio.Task(coro, loop=loop)
        finally:
            del loop.call_soon
        step, self._step = self._step, None
        if step is not None:
            callback, args, context = step
            if context is None:
                callback(*args)
            else:
                context.run(callback, *args)
        return task
