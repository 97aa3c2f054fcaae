"""Run one request through a :class:`pywatt_proto.Router` on asyncio.

The router decides everything (route, 404/405, auth, conversions, error
answers, HEAD, metrics); this loop only calls the user's callables and awaits
them when they return awaitables. Synchronous handlers run inline on the loop. A handler
raising ``SystemExit`` or ``KeyboardInterrupt`` is answered 500 and logged.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import Any

from pywatt_proto._driver import escaped, unhandled_error
from pywatt_proto._router import Plan, Request, Response, Router

# Result types that are certainly not awaitable (skips inspect.isawaitable).
_PLAIN = frozenset({dict, list, str, bytes, type(None), Response, tuple})

_log = logging.getLogger("pywatt.http")
# Not Exceptions, but a handler raising them is not the server stopping (uvicorn and the
# blocking driver agree): answered 500 and logged. CancelledError is not caught.
_LEFT = (SystemExit, KeyboardInterrupt)


async def dispatch(router: Router, request: Request, now_fn: Callable[[], float]) -> Response:
    """Return the response for ``request``; never raises (except cancellation).

    ``now_fn`` is the driver's monotonic clock in seconds; the router measures
    latency and passes ``now`` to the authenticator with it.
    """
    ready = dispatch_eager(router, request, now_fn)
    return ready if isinstance(ready, Response) else await ready


def dispatch_eager(
    router: Router, request: Request, now_fn: Callable[[], float]
) -> Response | Coroutine[Any, Any, Response]:
    """Return the response if it is ready without waiting, else a coroutine to await.

    The same contract as :func:`dispatch`; servers use it so that a plain ``def`` handler
    costs no task and no extra coroutine. An ``async def`` handler's coroutine is not
    started here: the returned coroutine runs all of it, so a task awaiting it is the
    handler's ``asyncio.current_task()`` from its first line (``asyncio.timeout`` needs one).
    """
    plan = router.plan(request, now_fn())
    route = plan.route
    if plan.middleware or route is None or route.auth is not None:
        return _dispatch_plan(router, plan, now_fn)
    try:
        result: Any = route.handler(plan.request)
        if type(result) is CoroutineType or (
            type(result) not in _PLAIN and inspect.isawaitable(result)
        ):
            return _finish_later(router, plan, result, now_fn)
        response = router.to_response(result)
    except Exception as exc:
        return _finish_error(router, plan, exc, now_fn)
    except _LEFT as exc:
        response = escaped(router, f"{request.method} {request.path}", exc)
    return router.finish(plan, response, now_fn())


async def _dispatch_plan(router: Router, plan: Plan, now_fn: Callable[[], float]) -> Response:
    try:
        response = await _step(router, plan, 0, plan.request)
    except Exception as exc:
        response = await _recover(router, plan.request, exc)
    return router.finish(plan, response, now_fn())


async def _finish_later(
    router: Router, plan: Plan, pending: Awaitable[Any], now_fn: Callable[[], float]
) -> Response:
    try:
        response = router.to_response(await pending)
    except Exception as exc:
        response = await _recover(router, plan.request, exc)
    except _LEFT as exc:
        response = escaped(router, f"{plan.request.method} {plan.request.path}", exc)
    return router.finish(plan, response, now_fn())


async def _finish_error(
    router: Router, plan: Plan, exc: Exception, now_fn: Callable[[], float]
) -> Response:
    response = await _recover(router, plan.request, exc)
    return router.finish(plan, response, now_fn())


async def _step(router: Router, plan: Plan, index: int, request: Request) -> Response:
    if index < len(plan.middleware):

        async def call_next(req: Request) -> Response:
            return await _step(router, plan, index + 1, req)

        result: Any = plan.middleware[index](request, call_next)
        if inspect.isawaitable(result):
            result = await result
        return router.to_response(result)
    if plan.response is not None:
        return plan.response
    try:
        request = router.enter(plan, request)
        result = plan.route.handler(request)  # type: ignore[union-attr]  # enter() checked
        if inspect.isawaitable(result):
            result = await result
        return router.to_response(result)
    except Exception as exc:
        return await _recover(router, request, exc)
    except _LEFT as exc:
        return escaped(router, f"{request.method} {request.path}", exc)


async def _recover(router: Router, request: Request, exc: Exception) -> Response:
    handler = router.error_handler_for(exc)
    if handler is not None:
        try:
            result: Any = handler(request, exc)
            if inspect.isawaitable(result):
                result = await result
            return router.to_response(result)
        except Exception as second:
            _log.exception("error handler failed", exc_info=second)
            exc = second
    return unhandled_error(router, request, exc)
