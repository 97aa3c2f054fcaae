"""The route-registration half of a module's public API, shared by both drivers.

Both ``Module`` classes inherit :class:`RouteDecorators` (``@app.get``, ``@app.route``,
``@app.middleware``, the lifecycle hooks) and the options ``health``, ``metrics`` and
``version``; each decides how handlers are *called* (:meth:`RouteDecorators._wrap_handler`).
Registration checks (:mod:`pywatt_proto._route_checks`) run when a decorator is applied.

Built-in routes (the Rust module macro's options): ``health=True`` serves and announces
``GET /health`` (or ``health="/path"``) answering ``{"status":"OK","timestamp":<unix
seconds>}``; ``metrics=True`` serves ``GET /metrics`` with the router's Prometheus text;
``version="v1"`` prefixes every path registered through the module's decorators and the
built-in routes with ``/v1`` (``"/"`` becomes ``"/v1"``, as axum's ``nest`` does), served
and announced. Routes added on ``module.router`` directly are taken as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._route_checks import RouteDefinitionError, check_handler, check_pattern
from ._router import MethodDecorators, Request, Response, Router, json_response, text_response

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from typing import Any, TypeVar

    from ._messages import Endpoint

    _F = TypeVar("_F", bound=Callable[..., Any])

#: Path of ``Module(health=True)`` (the Rust macro's default).
DEFAULT_HEALTH_PATH = "/health"
#: Path of ``Module(metrics=True)``.
DEFAULT_METRICS_PATH = "/metrics"
#: Content type of the Prometheus text exposition format 0.0.4.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def version_prefix(version: str | None) -> str:
    """Return the path prefix for ``version`` (``"v1"`` or ``"/v1"`` -> ``"/v1"``; None -> "").

    Raises:
        RouteDefinitionError: ``version`` is empty, has a ``/`` inside, or a parameter.
    """
    if version is None:
        return ""
    text = version.strip("/")
    if not text or "/" in text or "{" in text or "}" in text or "?" in text:
        raise RouteDefinitionError(f"version must be one path segment such as 'v1': {version!r}")
    return "/" + text


def health_handler(clock: Callable[[], float]) -> Callable[[Request], Response]:
    """Return a handler answering ``{"status":"OK","timestamp":<int(clock())>}``.

    ``clock`` is wall-clock time in seconds (the driver passes ``time.time``; the core
    reads no clock).
    """

    def health(request: Request) -> Response:
        return json_response({"status": "OK", "timestamp": int(clock())})

    return health


def metrics_handler(router: Router) -> Callable[[Request], Response]:
    """Return a handler answering ``router.metrics`` in the Prometheus text format."""

    def metrics(request: Request) -> Response:
        text = router.metrics.render_prometheus()
        return text_response(text, content_type=PROMETHEUS_CONTENT_TYPE)

    return metrics


class RouteDecorators(MethodDecorators):
    """Mixin: route decorators that register on ``self.router`` (set, and
    :meth:`_configure_routes` called, by the constructor); each returns the function unchanged.
    """

    router: Router
    #: False on the blocking driver: an ``async def`` handler is a registration error.
    _allow_async_handlers: bool = True
    _path_prefix: str = ""
    _shutdown_hooks: list[Callable[[], Any]]
    _startup_hooks: list[Callable[[], Any]]
    _rotation_callbacks: list[Callable[[tuple[str, ...]], Any]]
    _routed_handlers: list[Callable[[Any], Any]]

    def _configure_routes(
        self,
        *,
        health: bool | str = False,
        metrics: bool | str = False,
        version: str | None = None,
        clock: Callable[[], float],
    ) -> None:
        """Apply the module options: path prefix, then the built-in routes.

        Raises:
            RouteDefinitionError: an invalid ``version`` or built-in path.
        """
        self._path_prefix = version_prefix(version)
        self._shutdown_hooks = []
        self._startup_hooks = []
        self._rotation_callbacks = []
        self._routed_handlers = []
        if health:
            path = health if isinstance(health, str) else DEFAULT_HEALTH_PATH
            self.router.add_route(self._full_path(path), health_handler(clock), ("GET",))
        if metrics:
            path = metrics if isinstance(metrics, str) else DEFAULT_METRICS_PATH
            self.router.add_route(self._full_path(path), metrics_handler(self.router), ("GET",))

    def _full_path(self, path: str) -> str:
        prefix = self._path_prefix
        if not prefix:
            return path
        return prefix if path == "/" else prefix + path

    def _check(self, fn: Callable[..., Any], what: str, call: tuple[str, ...]) -> None:
        check_handler(fn, allow_async=self._allow_async_handlers, what=what, call=call)

    def _wrap_handler(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return the callable the router calls for handler ``fn`` (``fn`` itself here)."""
        return fn

    def route(
        self, path: str, methods: Iterable[str] = ("GET",), *, auth: str | None = None
    ) -> Callable[[_F], _F]:
        """Return a decorator registering a handler for ``methods`` on ``path``; ``auth``
        (the authentication the route requires) is announced in the endpoint's ``auth``.

        Raises:
            RouteDefinitionError: here for a pattern in another framework's spelling; when
                applied, as :meth:`Router.add_route` raises it (``async def`` refused on the
                blocking Module). The message starts with the decorator's file and line.
        """
        check_pattern(path)
        full = self._full_path(path)
        meths = tuple(methods)

        def deco(fn: _F) -> _F:
            self._check(fn, "handler", ("request",))
            name = str(getattr(fn, "__name__", ""))
            self.router.add_route(full, self._wrap_handler(fn), meths, auth=auth, name=name)
            return fn

        return deco

    def middleware(self, fn: _F) -> _F:
        """Register ``fn(request, call_next)`` as middleware (outermost first).

        Raises:
            RouteDefinitionError: ``fn`` cannot take ``(request, call_next)`` (or is
                ``async def`` on the blocking Module); names the decorator's line.
        """
        self._check(fn, "middleware", ("request", "call_next"))
        self.router.middleware(fn)
        return fn

    def error_handler(self, key: int | type[BaseException]) -> Callable[[_F], _F]:
        """Decorator registering ``fn(request, exc)`` for a status code or exception type.

        Raises:
            RouteDefinitionError: when applied to a function that cannot take
                ``(request, exc)`` (or an ``async def`` on the blocking Module).
        """

        def deco(fn: _F) -> _F:
            self._check(fn, "error handler", ("request", "exc"))
            self.router.add_error_handler(key, fn)
            return fn

        return deco

    def on_shutdown(self, fn: _F) -> _F:
        """Register ``fn()``, called once serving has ended (after the last answer was
        written, before ``serve_stdio`` returns), in registration order, as
        ``on_startup`` hooks are: close clients and databases here.

        On ``pywatt_asyncio`` it may be ``async def`` (awaited) or a plain ``def``; on
        ``pywatt_sync`` a plain ``def``. A hook that raises is logged and the next one
        still runs; the exit status is unchanged. Hooks run whether or not startup
        completed (a hook must tolerate what startup did not open).
        """
        self._shutdown_hooks.append(fn)
        return fn

    def on_startup(self, fn: _F) -> _F:
        """Register ``fn()``, called after init and secret prefetch and before the
        announce, in registration order (bind listeners here: bind, then announce).

        On ``pywatt_asyncio`` it is ``async def`` and awaited; on ``pywatt_sync`` a plain
        ``def`` run on a dedicated thread. Inside, ``app.negotiate_port()``,
        ``app.secret(name)`` (awaited on asyncio) and ``app.init`` work, and
        ``app.set_listen("host:port")`` chooses the announced ``listen``; requests are
        answered 503 until every hook has returned. A hook that raises is logged and the
        module exits with status 1 without announcing. With no hook registered the
        announce is sent as soon as prefetch is done.
        """
        self._startup_hooks.append(fn)
        return fn

    def on_rotation(self, fn: _F) -> _F:
        """Register ``fn(keys)``, called when secrets are rotated (on ``pywatt_asyncio``
        sync or async, on the loop; on ``pywatt_sync`` on the rotation thread).

        The rotation is acknowledged ``success`` when every callback returns, ``error``
        (with the exception's message) when one raises.
        """
        self._rotation_callbacks.append(fn)
        return fn

    def on_routed_message(self, fn: _F) -> _F:
        """Register ``fn(message)`` for one-way ``routed_module_message``s (spec/modules.md
        section 6): sync or async on ``pywatt_asyncio``, run on a pool thread on
        ``pywatt_sync``. ``message`` is a ``RoutedMessage`` with ``source_module_id``,
        ``request_id`` and the decoded ``value``; the return value is ignored and an
        exception is logged. Calls made with ``call_module`` are served by ordinary routes
        (``@app.post``), not by these handlers.
        """
        self._routed_handlers.append(fn)
        return fn

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Return the endpoints announced for the registered routes."""
        return self.router.announce_endpoints()
