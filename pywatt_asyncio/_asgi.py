"""Serve any ASGI 3 application (FastAPI, Starlette, ...) as a PyWatt module.

``asgi_module(app).run()`` is all a user writes (or ``pywatt run pkg.mod:app``). The
conversion rules (scope fields, response ordering, size bound) live in
:mod:`pywatt_proto._gateway`; this file runs the app's coroutines: the lifespan
(:meth:`AsgiApp.startup` / :meth:`AsgiApp.shutdown`, bounded by :data:`LIFESPAN_TIMEOUT`;
an app that raises or returns before answering startup has no lifespan, per the ASGI
lifespan spec, and ``state`` is shallow-copied into every request scope) and one call
per request (:meth:`AsgiApp.handle`). An app exception or an oversized body becomes a
plain-text 500 (502 for oversize), logged to stderr; the module keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from pywatt_proto._driver import ADAPTER_METHODS, AppRoutes
from pywatt_proto._errors import LocalProtocolError
from pywatt_proto._gateway import (
    ASGI_VERSION,
    MAX_RESPONSE_BODY,
    ResponseCollector,
    asgi_http_scope,
    error_response,
)
from pywatt_proto._messages import Endpoint
from pywatt_proto._router import Request, Response

from ._module import Module

_log = logging.getLogger("pywatt.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Seconds to wait for the app to answer ``lifespan.startup`` or
#: ``lifespan.shutdown``. Uvicorn has no default bound; a module that hangs in
#: startup would never announce, so we stop waiting after this long and fail.
LIFESPAN_TIMEOUT: Final = 60.0

# Lifespan receive queue: the server sends exactly two events (startup,
# shutdown), so two slots never block.
_LIFESPAN_QUEUE: Final = 2


class LifespanFailed(Exception):
    """The app answered ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``
    (or did not answer within :data:`LIFESPAN_TIMEOUT`); ``args[0]`` is its message."""


class AsgiApp:
    """Runs one ASGI 3 application: its lifespan and one call per request.

    ``scheme``/``root_path``/``server`` fill the corresponding scope keys
    (``server`` defaults to the request's ``Host``); ``max_body`` bounds each
    response body; ``lifespan`` is ``"auto"`` (use it when supported),
    ``"on"`` (an app that does not support it is an error) or ``"off"``.
    """

    __slots__ = (
        "_app",
        "_lifespan_mode",
        "_lifespan_queue",
        "_lifespan_task",
        "_max_body",
        "_root_path",
        "_scheme",
        "_server",
        "_shutdown_done",
        "_startup_done",
        "state",
    )

    def __init__(
        self,
        app: ASGIApplication,
        *,
        scheme: str = "http",
        root_path: str = "",
        server: tuple[str, int] | None = None,
        max_body: int = MAX_RESPONSE_BODY,
        lifespan: str = "auto",
    ) -> None:
        """Wrap ``app``; nothing runs until :meth:`startup` / :meth:`handle`.

        Raises:
            ValueError: ``lifespan`` is not ``"auto"``, ``"on"`` or ``"off"``.
        """
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', got {lifespan!r}")
        self._app = app
        self._scheme = scheme
        self._root_path = root_path
        self._server = server
        self._max_body = max_body
        self._lifespan_mode = lifespan
        self._lifespan_queue: asyncio.Queue[Message] | None = None
        self._lifespan_task: asyncio.Task[None] | None = None
        self._startup_done: asyncio.Future[str] | None = None
        self._shutdown_done: asyncio.Future[str] | None = None
        #: Lifespan state (``scope["state"]``), or None when lifespan is not in use.
        self.state: dict[str, Any] | None = None

    # -- lifespan --------------------------------------------------------------

    async def _run_lifespan(self, scope: Scope) -> None:
        assert self._lifespan_queue is not None
        queue = self._lifespan_queue

        async def receive() -> Message:
            return await queue.get()

        async def send(message: Message) -> None:
            kind = message.get("type")
            text = str(message.get("message", ""))
            if kind == "lifespan.startup.complete" and self._startup_done is not None:
                _set(self._startup_done, "")
            elif kind == "lifespan.startup.failed" and self._startup_done is not None:
                _set(self._startup_done, "failed: " + text)
            elif kind == "lifespan.shutdown.complete" and self._shutdown_done is not None:
                _set(self._shutdown_done, "")
            elif kind == "lifespan.shutdown.failed" and self._shutdown_done is not None:
                _set(self._shutdown_done, "failed: " + text)
            else:
                raise LocalProtocolError(f"unexpected lifespan message {kind!r}")

        try:
            await self._app(scope, receive, send)
        except BaseException as exc:
            started = self._startup_done is not None and self._startup_done.done()
            if started:
                _log.exception("ASGI lifespan task raised after startup")
            else:
                _log.info("ASGI lifespan unsupported by the app (%s)", type(exc).__name__)
            if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt, SystemExit
                raise
        finally:
            for fut in (self._startup_done, self._shutdown_done):
                if fut is not None:
                    _set(fut, "returned")

    async def startup(self) -> None:
        """Run the app's lifespan startup; return once it completed.

        Returns normally, without lifespan, when the app does not support it
        (mode ``"auto"``) or lifespan is ``"off"``.

        Raises:
            LifespanFailed: the app sent ``lifespan.startup.failed``, did not
                answer within :data:`LIFESPAN_TIMEOUT`, or (mode ``"on"``) does
                not support lifespan.
        """
        if self._lifespan_mode == "off" or self._lifespan_task is not None:
            return
        loop = asyncio.get_running_loop()
        self._lifespan_queue = asyncio.Queue(maxsize=_LIFESPAN_QUEUE)
        self._startup_done = loop.create_future()
        state: dict[str, Any] = {}
        scope: Scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": state}
        self._lifespan_task = asyncio.create_task(self._run_lifespan(scope))
        await self._lifespan_queue.put({"type": "lifespan.startup"})
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(self._startup_done), timeout=LIFESPAN_TIMEOUT
            )
        except TimeoutError:
            await self._cancel_lifespan()
            raise LifespanFailed("lifespan startup timed out") from None
        if outcome == "":
            self.state = state
            return
        self._lifespan_task = None
        if outcome == "returned" and self._lifespan_mode == "auto":
            return  # lifespan unsupported: carry on without it (ASGI lifespan spec)
        raise LifespanFailed(outcome if outcome != "returned" else "lifespan unsupported")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app to finish it.

        Does nothing when lifespan is not in use or startup never completed.

        Raises:
            LifespanFailed: the app sent ``lifespan.shutdown.failed`` or did not
                answer within :data:`LIFESPAN_TIMEOUT` (its task is cancelled).
        """
        task, queue = self._lifespan_task, self._lifespan_queue
        if task is None or queue is None or self.state is None:
            return
        self._shutdown_done = asyncio.get_running_loop().create_future()
        if task.done():
            _set(self._shutdown_done, "returned")
        await queue.put({"type": "lifespan.shutdown"})
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(self._shutdown_done), timeout=LIFESPAN_TIMEOUT
            )
        except TimeoutError:
            outcome = "failed: lifespan shutdown timed out"
        await self._cancel_lifespan()
        if outcome.startswith("failed"):
            raise LifespanFailed(outcome)

    async def _cancel_lifespan(self) -> None:
        task, self._lifespan_task = self._lifespan_task, None
        if task is not None:
            task.cancel()  # nothing if it is done
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- requests --------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Call the app for one request and return its whole response.

        Never raises for app errors: an exception from the app, a protocol
        misuse (bad message order, bad types) or an oversized body gives a
        plain-text 500/502 response and a log line on stderr. Cancellation
        propagates.

        Raises:
            RemoteProtocolError: the request has an invalid header (hint 400;
                the router answers it before the app is called).
        """
        scope = asgi_http_scope(
            request, scheme=self._scheme, root_path=self._root_path, server=self._server
        )  # raises RemoteProtocolError (400) for invalid headers
        if self.state is not None:
            scope["state"] = dict(self.state)
        collector = ResponseCollector(max_body=self._max_body)
        finished = asyncio.Event()
        body_given = False

        async def receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if finished.is_set():
                raise OSError("ASGI send() after the response was complete")
            if collector.asgi_send(message):
                finished.set()

        try:
            await self._app(scope, receive, send)
        except Exception as exc:
            _log.exception("ASGI app failed on %s %s", request.method, request.path)
            if collector.done and not collector.failed:
                return collector.finish()  # the answer was complete before the error
            hint = exc.error_status_hint if isinstance(exc, LocalProtocolError) else 500
            return error_response(hint if collector.failed else 500)
        finally:
            finished.set()
        if not collector.done:
            _log.error("ASGI app returned without completing the response")
            return error_response(500)
        return collector.finish()


def _set(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)


# -- serving an ASGI app as a module ----------------------------------------------


def starlette_endpoints(app: object) -> tuple[Endpoint, ...] | None:
    """Return the endpoints of a Starlette/FastAPI app (its ``routes``), or None.

    Route patterns use the same ``{name}`` / ``{name:type}`` syntax as the
    router. ``HEAD`` is dropped where ``GET`` is present (as the router does);
    a mounted app without a route list becomes ``<mount>/{path:path}``;
    websocket routes are skipped. Returns None when ``app`` has no ``routes``.
    """
    routes = getattr(app, "routes", None)
    if not isinstance(routes, list):
        return None
    found: dict[str, list[str]] = {}
    _walk_routes(routes, "", found)
    return tuple(Endpoint(path=p, methods=tuple(ms)) for p, ms in found.items())


def _walk_routes(routes: list[Any], prefix: str, found: dict[str, list[str]]) -> None:
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        methods = getattr(route, "methods", None)
        if methods:
            names = sorted(str(m).upper() for m in methods)
            if "GET" in names and "HEAD" in names:
                names.remove("HEAD")
            bucket = found.setdefault(prefix + path or "/", [])
            bucket.extend(m for m in names if m not in bucket)
        elif hasattr(route, "app") and hasattr(route, "routes"):  # Mount
            sub = route.routes
            if sub:
                _walk_routes(list(sub), prefix + path, found)
            else:
                found.setdefault(prefix + path + "/{path:path}", list(ADAPTER_METHODS))


class AsgiModule(AppRoutes, Module):
    """A :class:`Module` whose requests are served by an ASGI application, through
    catch-all routes (:class:`~pywatt_proto._driver.AppRoutes`: the app answers its own
    404/405/422; a decorator route such as a ``/health`` the app lacks wins). The announce
    lists ``endpoints`` if given, else the app's routes (:func:`starlette_endpoints`).

    Lifespan: startup runs after init and the secret prefetch, before the
    announce (so the app reads orchestrator secrets there, and routes it adds are
    announced); ``lifespan.startup.failed`` makes :meth:`serve_stdio` return 1
    without announcing; shutdown runs after the last response was written.
    """

    def __init__(
        self,
        app: ASGIApplication,
        *,
        endpoints: Iterable[Endpoint] | None = None,
        scheme: str = "http",
        root_path: str = "",
        lifespan: str = "auto",
        max_body: int = MAX_RESPONSE_BODY,
        **module_options: Any,
    ) -> None:
        """Wrap ``app``; ``module_options`` go to :class:`Module` (``secrets``, ...).

        Raises:
            ValueError: invalid ``lifespan`` mode or module option.
        """
        super().__init__(**module_options)
        self.asgi = AsgiApp(
            app, scheme=scheme, root_path=root_path, lifespan=lifespan, max_body=max_body
        )
        self._app = app
        self._mount_app(self.asgi.handle, "asgi", endpoints)
        # The app's lifespan startup runs after init and the secret prefetch, before the
        # announce: the first on_startup hook (so secrets are readable in it, and routes
        # it adds are announced).
        self._startup_hooks.append(self._lifespan_startup)

    async def _lifespan_startup(self) -> None:
        try:
            await self.asgi.startup()
        except LifespanFailed as exc:
            raise LifespanFailed(f"ASGI lifespan startup failed: {exc}") from None

    def _listed_endpoints(self) -> tuple[Endpoint, ...] | None:
        return starlette_endpoints(self._app)  # read after the lifespan startup

    async def serve_stdio(
        self, *, read_fd: int = 0, write_fd: int | None = None, guard: bool = True
    ) -> int:
        """Serve like :meth:`Module.serve_stdio`, running the app's lifespan around it.

        Lifespan startup runs once init and the prefetched secrets are in (an
        ``on_startup`` hook, the first one), before the announce: secrets are readable
        there (``pywatt_asyncio.secrets``). Shutdown runs after the last response was
        written. Returns 0 after a clean stop, 1 after a protocol failure or a failed
        lifespan startup (no announce then) or shutdown.
        """
        code = 1
        try:
            code = await super().serve_stdio(read_fd=read_fd, write_fd=write_fd, guard=guard)
        finally:
            try:
                await self.asgi.shutdown()
            except LifespanFailed as exc:
                _log.error("ASGI lifespan shutdown failed: %s", exc)
                code = 1
        return code


def asgi_module(app: ASGIApplication, **options: Any) -> AsgiModule:
    """Return a module serving the ASGI application ``app`` (see :class:`AsgiModule`).

    ``options``: ``endpoints``, ``scheme``, ``root_path``, ``lifespan``
    (``"auto"``/``"on"``/``"off"``), ``max_body`` and every :class:`Module`
    option (``secrets``, ``max_concurrency``, ``request_timeout``, ...).
    ``asgi_module(app).run()`` serves stdin/stdout and exits the process.
    """
    return AsgiModule(app, **options)
