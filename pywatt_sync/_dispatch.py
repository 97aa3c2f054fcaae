"""Run one request through a :class:`pywatt_proto.Router` with blocking calls.

The router decides everything (route, 404/405, auth, conversions, error
answers, HEAD, metrics); this loop only calls the user's callables. A handler
that returns an awaitable (an ``async def`` handler) is a programming error in
this driver: it is closed and answered with 500. So is a ``SystemExit`` or
``KeyboardInterrupt`` from a handler: its thread is not the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pywatt_proto._driver import escaped, unhandled_error
from pywatt_proto._lazylog import LazyLogger
from pywatt_proto._router import Plan, Request, Response, Router

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:
    from typing import Any

_log = LazyLogger("pywatt.http")  # loads logging for the first emitted record
# Router metrics are plain counters; finish() is serialised so threads do not lose counts.
_metrics_lock = threading.Lock()


def dispatch(router: Router, request: Request, now_fn: Callable[[], float]) -> Response:
    """Return the response for ``request``; never raises.

    ``now_fn`` is the driver's monotonic clock in seconds.
    """
    with _metrics_lock:
        plan = router.plan(request, now_fn())
    route = plan.route
    if route is not None and plan.response is None and not plan.middleware:
        # The common case, _step's last level inlined (one frame less per request).
        request = plan.request
        try:
            request = router.enter(plan, request)
            result = route.handler(request)
            if type(result) not in _PLAIN_TYPES:
                result = _plain(result)
            response = router.to_response(result)
        except Exception as exc:
            response = _recover(router, request, exc)
        except BaseException as exc:
            response = escaped(router, f"{request.method} {request.path}", exc)
    else:
        try:
            response = _step(router, plan, 0, plan.request)
        except Exception as exc:
            response = _recover(router, plan.request, exc)
        except BaseException as exc:
            response = escaped(router, f"{request.method} {request.path}", exc)
    end = now_fn()
    with _metrics_lock:
        return router.finish(plan, response, end)


# What handlers usually return: never awaitable, so no inspect.isawaitable() call (about
# 1 us a request) for these exact types.
_PLAIN_TYPES = frozenset({Response, dict, str, bytes, list, tuple, int, float, bool, type(None)})


def _plain(result: Any) -> Any:
    if type(result) in _PLAIN_TYPES:
        return result
    import inspect  # only for other results (start-up time)

    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError("async handler or middleware used with the blocking driver")
    return result


def _step(router: Router, plan: Plan, index: int, request: Request) -> Response:
    if index < len(plan.middleware):

        def call_next(req: Request) -> Response:
            return _step(router, plan, index + 1, req)

        return router.to_response(_plain(plan.middleware[index](request, call_next)))
    if plan.response is not None:
        return plan.response
    try:
        request = router.enter(plan, request)
        result = _plain(plan.route.handler(request))  # type: ignore[union-attr]  # enter() checked
        return router.to_response(result)
    except Exception as exc:
        return _recover(router, request, exc)


def _recover(router: Router, request: Request, exc: Exception) -> Response:
    handler = router.error_handler_for(exc)
    if handler is not None:
        try:
            return router.to_response(_plain(handler(request, exc)))
        except Exception as second:
            _log.exception("error handler failed", exc_info=second)
            exc = second
    return unhandled_error(router, request, exc)
