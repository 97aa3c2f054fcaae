"""What both drivers' ``Module`` do that is not I/O: :class:`ModuleBase` (the core of a
``serve_stdio``, port listeners, routed messages), :class:`CoreEvents` (the reaction to
every core event but ``RequestReceived``; what needs a task or a thread is a hook),
:class:`AppRoutes` (the ASGI and WSGI adapters' catch-all routes and announce), and the
log lines both drivers write for an unhandled error and a channel that cannot connect."""

from __future__ import annotations

from ._errors import AuthError
from ._hints import NOT_AN_INIT
from ._lazylog import LazyLogger
from ._messages import Endpoint, PortResponse, RoutedModuleMessage
from ._module import (
    Announced,
    BadLine,
    InitReceived,
    ModuleConnection,
    ModuleState,
    ReadyToAnnounce,
    RequestTimedOut,
    ResponseTooLarge,
    RotationRequested,
    SecretFailed,
    SecretUnavailable,
    SecretUpdated,
    ShutdownRequested,
)
from ._routes import RouteDecorators
from ._secrets import redact_secret

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Callable, Iterable
    from typing import Any, Final

    from ._bodies import SkippedLineLog
    from ._calls import RoutedMessage
    from ._channel import ChannelTarget
    from ._messages import Init
    from ._router import Request, Response, Router

_log = LazyLogger("pywatt.module")  # loads logging for the first emitted record
_http_log = LazyLogger("pywatt.http")


def callable_name(fn: object) -> str:
    """The name a log line gives a user's callable (its ``__qualname__``)."""
    return str(getattr(fn, "__qualname__", fn))


def unhandled_error(router: Router, request: Request, exc: Exception) -> Response:
    """The router's answer to ``exc`` that no error handler took, logged with its traceback
    when it is a 5xx -- but an ``AuthError``: the authenticator logged that refusal (the
    JWT ones: INFO, and WARNING once per cause of a 503)."""
    response = router.error_response(exc)
    if response.status >= 500 and not isinstance(exc, AuthError):
        _http_log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return response


def escaped(router: Router, what: str, exc: BaseException) -> Response:
    """Log what escaped a handler (``SystemExit``, ``KeyboardInterrupt``: not an
    ``Exception``) and return the 500 that answers it at once."""
    _http_log.error("%s: handler raised %s; answered 500", what, type(exc).__name__, exc_info=exc)
    return router.error_response(exc)


def refused_answer(router: Router, request: Request, exc: Exception) -> Response:
    """The 500 that replaces a handler's answer the HTTP core refused to send (``exc``: a
    Content-Length its body does not have, a header h11 refuses), logged as an error."""
    _http_log.error(
        "%s %s: the handler's answer is not valid HTTP (%s); answered 500",
        request.method,
        request.path,
        exc,
    )
    return router.error_response(exc)


def channel_failed(target: ChannelTarget, attempts: int, failure: str) -> bool:
    """Log that the channel to ``target`` could not be connected; return True if it was
    required (the module then stops with status 1)."""
    what = target.describe()
    if target.required:
        _log.critical(
            "required %s could not be connected after %d attempt(s): %s; exiting",
            what,
            attempts,
            failure,
        )
    else:
        _log.warning("%s could not be connected (%s); continuing on stdio", what, failure)
    return target.required


class ModuleBase(RouteDecorators):
    """What both ``Module`` classes keep beyond the routes: the options the core is built
    from, the core while serving (``_conn``) and the port listeners."""

    _conn: ModuleConnection | None
    _startup_listen: str | None  # set_listen() during on_startup
    _prefetch: tuple[str, ...]
    _listen: str | None
    _max_in_flight: int
    _request_timeout: float | None
    _secret_timeout: float
    _port_listeners: list[Callable[[PortResponse], None]]

    def _new_core(self) -> ModuleConnection:
        """The protocol core of one ``serve_stdio`` (it asks for the endpoints when it
        announces)."""
        return ModuleConnection(
            endpoints=self.endpoints,
            prefetch=self._prefetch,
            listen=self._listen,
            max_in_flight=self._max_in_flight,
            request_timeout=self._request_timeout,
            secret_timeout=self._secret_timeout,
            hold_announce=bool(self._startup_hooks),
        )

    @property
    def connection(self) -> ModuleConnection | None:
        """The protocol core while serving (None otherwise; on ``pywatt_sync`` guarded by
        the module's lock)."""
        return self._conn

    @property
    def init(self) -> Init | None:
        """The orchestrator's init (set before ``on_startup`` hooks run; None otherwise)."""
        return self._conn.init if self._conn is not None else None

    def set_listen(self, listen: str) -> None:
        """Announce ``listen`` (e.g. ``"127.0.0.1:8123"``) instead of the default (the
        constructor's ``listen``, else the init's). Call it from an ``on_startup`` hook.

        Raises:
            RuntimeError: called outside startup (use ``Module(listen=...)`` for a fixed
                address).
        """
        conn = self._conn
        if conn is None or conn.state is not ModuleState.STARTING:
            raise RuntimeError("Module.set_listen() must be called from an on_startup hook")
        self._startup_listen = listen

    def add_port_listener(self, fn: Callable[[PortResponse], None]) -> Callable[[], None]:
        """Call ``fn`` with every ``port_response`` (on the loop, or on the thread that read
        it); return a function removing it."""
        self._port_listeners.append(fn)
        return lambda: self._port_listeners.remove(fn)

    @staticmethod
    def _routed_message(msg: RoutedModuleMessage) -> RoutedMessage | None:
        """The message the ``on_routed_message`` handlers receive; None (logged) when its
        payload cannot be decoded."""
        from ._calls import routed_message
        from ._errors import ProtocolError

        try:
            return routed_message(msg.source_module_id, str(msg.original_request_id), msg.payload)
        except ProtocolError as exc:
            _log.warning("routed message from %s dropped: %s", msg.source_module_id, exc)
            return None


#: Methods the adapters' catch-all routes accept on the app's behalf (HEAD and OPTIONS
#: included: the app answers them itself, as behind uvicorn or gunicorn).
ADAPTER_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_CATCH_ALL: Final = ("/", "/{path:path}")
#: Announced when the app's routes cannot be listed: every path, every adapter method.
CATCH_ALL_ENDPOINTS: Final = tuple(Endpoint(path=p, methods=ADAPTER_METHODS) for p in _CATCH_ALL)


class AppRoutes(ModuleBase):
    """Base of ``AsgiModule``/``WsgiModule``: every path and every method in
    :data:`ADAPTER_METHODS` goes to the app through catch-all routes (so the app answers
    its own 404/405); routes added with the decorators win over them."""

    _app_endpoints: tuple[Endpoint, ...] | None

    def _mount_app(
        self, handle: Callable[[Any], Any], name: str, endpoints: Iterable[Endpoint] | None
    ) -> None:
        self._app_endpoints = None if endpoints is None else tuple(endpoints)
        for pattern in _CATCH_ALL:
            self.router.add_route(pattern, handle, ADAPTER_METHODS, name=name)

    def _listed_endpoints(self) -> tuple[Endpoint, ...] | None:
        """The app's own routes, if its framework can list them."""
        raise NotImplementedError

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Return the announced endpoints: those added with decorators, then the app's --
        ``endpoints`` if given, else its own routes (read on every call: routes added to the
        app later are announced), else :data:`CATCH_ALL_ENDPOINTS`."""
        own = tuple(e for e in super().endpoints() if e.path not in _CATCH_ALL)
        app = self._app_endpoints
        if app is None:
            app = self._listed_endpoints() or CATCH_ALL_ENDPOINTS
        return own + tuple(e for e in app if e not in own)


class CoreEvents:
    """Mixin: act on the core's events; the driver supplies the attributes and hooks below
    (``_secret_waiters`` and ``_call_waiters`` hold its futures, resolved by ``_settle``)."""

    _conn: ModuleConnection | None
    _skipped_lines: SkippedLineLog
    _secret_waiters: dict[str, list[Any]]
    _call_waiters: dict[object, Any]  # call id, or ("registry", token)
    _port_listeners: list[Callable[[PortResponse], None]]
    _routed_handlers: list[Callable[[Any], Any]]

    # Hooks the driver implements (the blocking driver's run with its lock held):
    _settle: Callable[[Any, object, BaseException | None], None]  # resolve a waiter (if not done)
    _timed_out: Callable[[str], None]  # the core answered 504: forget the job, log it
    _rotate: Callable[[RotationRequested], None]  # run the callbacks, then ack_rotation
    _shutdown_channels: Callable[[], None]
    _start_startup: Callable[[], None]  # run the on_startup hooks, then announce
    _announced: Callable[[], None]  # wait_ready() returns from now on
    _init_received: Callable[[Init, frozenset[str]], None]  # grow pipes, connect channels
    _run_routed: Callable[[RoutedModuleMessage], object]  # returns a job to queue, or None

    # ---------------------------------------------------------------- events
    def on_event(self, event: object, now: float) -> object:
        """Act on one core event other than ``RequestReceived``; return what
        :meth:`_run_routed` returned for a routed message, else None."""
        if isinstance(event, SecretUpdated):
            redact_secret(event.value)  # kept out of every log record from now on
            for waiter in self._secret_waiters.pop(event.name, ()):
                self._settle(waiter, event.value, None)
        elif isinstance(event, SecretFailed):
            waiters = self._secret_waiters.pop(event.name, ())
            if not waiters:
                _log.error("secret %r unavailable: %s", event.name, event.reason)
            for waiter in waiters:
                self._settle(waiter, None, SecretUnavailable(f"{event.name}: {event.reason}"))
        elif isinstance(event, RequestTimedOut):
            self._timed_out(event.request_id)
        elif isinstance(event, RotationRequested):
            self._rotate(event)
        elif isinstance(event, ShutdownRequested):
            in_flight = self._conn.in_flight if self._conn is not None else 0
            _log.info("shutdown requested; finishing %d in-flight request(s)", in_flight)
            self._shutdown_channels()
        elif isinstance(event, BadLine):
            for text in self._skipped_lines.skipped(now, event.line, str(event.error)):
                _log.warning("skipped input line: %s", text)
        elif isinstance(event, ResponseTooLarge):
            _log.warning("%s", event.describe())
        elif isinstance(event, PortResponse):
            for fn in list(self._port_listeners):
                fn(event)
        elif isinstance(event, ReadyToAnnounce):
            self._start_startup()
        elif isinstance(event, Announced):
            self._announced()
            _log.info("announced %d endpoint(s)", len(event.announce.endpoints))
        elif isinstance(event, InitReceived):
            _log.debug("init received")
            self._init_received(event.init, event.extensions)
        elif isinstance(event, RoutedModuleMessage):
            if self._routed_handlers:
                return self._run_routed(event)
            _log.info("routed message from %s dropped (no handler)", event.source_module_id)
        elif not self._call_event(event):
            _log.debug("ignored message %s", type(event).__name__)
        return None

    def _call_event(self, event: object) -> bool:
        """Resolve the waiter of a module-call / registry event; False if not one of those."""
        from ._calls import CallFailed, CallReplied, ServiceAnswered, ServiceFailed, service_result

        if isinstance(event, CallReplied | CallFailed):
            waiter = self._call_waiters.pop(event.request_id, None)
            if waiter is not None:
                if isinstance(event, CallReplied):
                    self._settle(waiter, event.value, None)
                else:
                    self._settle(waiter, None, event.error)
            return True
        if isinstance(event, ServiceAnswered | ServiceFailed):
            waiter = self._call_waiters.pop(("registry", event.token), None)
            if waiter is not None:
                try:
                    self._settle(waiter, service_result(event), None)
                except Exception as exc:
                    self._settle(waiter, None, exc)
            return True
        return False

    def input_closed(self, now: float) -> None:
        """Log the end of input (and the skipped-lines summary still owed)."""
        in_flight = self._conn.in_flight if self._conn is not None else 0
        _log.info("input closed; finishing %d in-flight request(s)", in_flight)
        summary = self._skipped_lines.flush(now)
        if summary is not None:
            _log.warning("%s", summary)

    def protocol_failed(self, exc: Exception) -> None:
        """Log the protocol failure that stops the module (with a hint before an init)."""
        if self._conn is None or self._conn.init is None:
            _log.error("protocol failure: %s; %s", exc, NOT_AN_INIT)
        else:
            _log.error("protocol failure: %s", exc)

    def fail_waiters(self) -> None:
        """Fail every ``secret()`` and call still waiting: the module stopped."""
        for name, waiters in self._secret_waiters.items():
            for waiter in waiters:
                self._settle(waiter, None, SecretUnavailable(f"{name}: module stopped"))
        self._secret_waiters.clear()
        if self._call_waiters:
            from ._calls import CallRejectedError

            for waiter in self._call_waiters.values():
                self._settle(waiter, None, CallRejectedError("module stopped"))
            self._call_waiters.clear()
