"""``pywatt_asyncio.Module``: the decorator API over :class:`pywatt_proto.ModuleConnection`.

The protocol lives in the core; this file is the asyncio loop around it: read stdin into the
core, run the handlers it names (at most ``max_concurrency`` at once, the rest queued in
arrival order; the core answers 503 beyond ``max_in_flight``), write what it hands back with
the single writer, and arm the one timer it asks for.

Example::

    app = Module()

    @app.get("/hello")
    async def hello(request):
        return {"message": "hello"}

    if __name__ == "__main__":
        app.run()
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from pywatt_proto._bodies import SkippedLineLog
from pywatt_proto._driver import CoreEvents, ModuleBase, callable_name, channel_failed
from pywatt_proto._errors import ProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._hints import rotation_failed
from pywatt_proto._module import (  # private modules: no package __init__ (start-up time)
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SECRET_TIMEOUT,
    EXT_BASE64_BODIES,
    ModuleConnection,
    ModuleState,
    RequestReceived,
    RequestTimedOut,
    RotationRequested,
    ShutdownRequested,
    forwarded_client_filler,
)
from pywatt_proto._route_checks import is_async_handler
from pywatt_proto._router import Response, Router
from pywatt_proto._secrets import convert_secret
from pywatt_proto._serving import clear_serving, set_serving

from ._dispatch import dispatch, dispatch_eager
from ._eager import EagerStarter
from ._guard import grow_pipes, guard_stdout, run_until_exit
from ._stdio import PipeLink

if TYPE_CHECKING:  # imported lazily: most modules never negotiate a port or open a channel
    from concurrent.futures import ThreadPoolExecutor

    from pywatt_proto._channel import ChannelEvent
    from pywatt_proto._messages import (
        Init,
        PortResponse,
        RoutedModuleMessage,
        ServiceProviderInfo,
        ServiceType,
    )
    from pywatt_proto._ports import PortResult

    from ._channel import AsyncChannel
    from ._ports import PortNegotiation


_FILL_CLIENT = forwarded_client_filler(os.environ)  # run by ``pywatt run``

_log = logging.getLogger("pywatt.module")


#: Handlers running at once; further requests wait in arrival order (bounded by the core's
#: max_in_flight). The reference http_ipc server uses 100; 64 keeps latency predictable.
DEFAULT_MAX_CONCURRENCY = 64
#: Threads running plain ``def`` handlers at once (anyio's default thread limiter, which
#: Starlette/FastAPI use for theirs, is 40 as well). Calls beyond it wait for a thread;
#: they are bounded by ``max_concurrency`` (each is one handler task).
DEFAULT_MAX_THREADS = 40

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
#: A request waiting for a handler slot: from stdio, or from a framed channel.
_Pending: TypeAlias = "RequestReceived | tuple[AsyncChannel, RequestReceived]"


class Module(ModuleBase, CoreEvents):
    """A PyWatt module served over the process's stdin/stdout with asyncio.

    Args:
        secrets: names fetched after init and before the announce.
        max_concurrency: handlers running at once.
        max_in_flight: requests accepted and unanswered (503 beyond).
        request_timeout: seconds before the core answers 504 and the handler is cancelled.
        secret_timeout: seconds to wait for each ``secret`` answer.
        router: an existing :class:`Router` (default: a new one).
        listen: the ``listen`` to announce (default: the init's).
        max_threads: threads running plain ``def`` handlers at once (see below).
        health: serve and announce ``GET /health`` (``True``) or that path (a str).
        metrics: serve the router's Prometheus text at ``/metrics`` (or that path).
        version: prefix every decorator-registered path with ``/<version>``.

    Plain ``def`` handlers run in a thread pool of ``max_threads`` threads, as
    Starlette/FastAPI run them, so a blocking handler never stalls the event loop
    (heartbeats, other requests, the 504 deadline); ``async def`` handlers run on the
    loop. A handler answered 504 is cancelled; a thread cannot be interrupted, so a
    ``def`` handler runs to its end and its result is dropped. Middleware and error
    handlers always run on the loop.

    Raises:
        ValueError: ``max_concurrency`` or ``max_threads`` < 1.
        RouteDefinitionError: an invalid ``version``, ``health`` or ``metrics`` path.
    """

    def __init__(
        self,
        *,
        secrets: Sequence[str] = (),
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        secret_timeout: float = DEFAULT_SECRET_TIMEOUT,
        router: Router | None = None,
        listen: str | None = None,
        max_threads: int = DEFAULT_MAX_THREADS,
        health: bool | str = False,
        metrics: bool | str = False,
        version: str | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.router = router if router is not None else Router()
        self._max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None
        self._configure_routes(health=health, metrics=metrics, version=version, clock=time.time)
        self._prefetch = tuple(secrets)
        self._max_concurrency = max_concurrency
        self._max_in_flight = max_in_flight
        self._request_timeout = request_timeout
        self._secret_timeout = secret_timeout
        self._listen = listen
        self._reset()

    def _reset(self) -> None:
        self._conn = None
        self._pipe_fds: tuple[int, ...] = ()
        # Skipped input lines: a few logged in full, then rate-limited summaries (issue 11.16).
        self._skipped_lines = SkippedLineLog()
        self._link: PipeLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eager: EagerStarter | None = None
        # Handler tasks: stdio requests by request_id, channel requests by (channel, id).
        self._tasks: dict[object, asyncio.Task[Any]] = {}
        self._waiting: deque[_Pending] = deque()  # bounded by the cores' max_in_flight
        self._channels: list[AsyncChannel] = []
        self._secret_waiters: dict[str, list[asyncio.Future[str]]] = {}
        # Module calls by call id, registry requests by token (pywatt_proto._calls).
        self._call_waiters: dict[object, asyncio.Future[Any]] = {}
        self._port_listeners: list[Callable[[PortResponse], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._processing = False  # inside _process: it writes the output at its end
        self._done: asyncio.Future[int] | None = None
        self._ready = asyncio.Event()  # binds to a loop on first wait (3.10+)
        self._bg: set[asyncio.Task[Any]] = set()
        self._negotiation: PortNegotiation | None = None
        self._startup_listen = None

    # ------------------------------------------------------------ registration
    # route/get/post/put/delete/patch/middleware/error_handler: RouteDecorators

    def _wrap_handler(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``fn`` for an ``async def`` handler, else a coroutine function running
        ``fn`` in this module's thread pool (so it never blocks the loop)."""
        if is_async_handler(fn):
            return fn
        run = self._run_in_thread

        async def in_thread(request: Any) -> Any:
            return await run(fn, request)

        in_thread.__name__ = str(getattr(fn, "__name__", "handler"))
        in_thread.__qualname__ = str(getattr(fn, "__qualname__", in_thread.__name__))
        return in_thread

    async def _run_in_thread(self, fn: Callable[[Any], Any], request: Any) -> Any:
        """Return ``fn(request)`` run on a pool thread, in a copy of the current context."""
        executor = self._executor
        if executor is None:
            from concurrent.futures import ThreadPoolExecutor

            executor = self._executor = ThreadPoolExecutor(
                max_workers=self._max_threads, thread_name_prefix="pywatt-handler"
            )
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(executor, ctx.run, fn, request)

    # ------------------------------------- services (set_listen, connection, init: ModuleBase)
    def _serving(self, what: str) -> tuple[ModuleConnection, asyncio.AbstractEventLoop]:
        conn, loop = self._conn, self._loop
        if conn is None or loop is None:
            raise RuntimeError(f"Module.{what}() needs a running module (serve_stdio)")
        return conn, loop

    if TYPE_CHECKING:

        @overload
        async def secret(self, name: str) -> str: ...
        @overload
        async def secret(self, name: str, *, type: Callable[[str], _T]) -> _T: ...

    async def secret(self, name: str, *, type: Callable[[str], Any] | None = None) -> Any:
        """Return the value of secret ``name`` (cached, or fetched from the orchestrator),
        converted by ``type``: ``int``, ``float``, ``bool`` (true/false, 1/0, yes/no,
        on/off), ``SecretValue`` (masked ``repr``) or any callable (default: the text).

        Concurrent calls for one name share a single round trip. Raises
        ``SecretUnavailable`` if no answer arrives within ``secret_timeout``,
        ``RuntimeError`` when the module is not serving and ``ValueError`` when the
        value does not convert (naming the secret, never the value).
        """
        conn, loop = self._serving("secret")
        value = conn.get_secret(name, loop.time())
        if value is None:
            fut: asyncio.Future[str] = loop.create_future()
            self._secret_waiters.setdefault(name, []).append(fut)
            self._flush()
            self._arm_timer()
            value = await fut
        return value if type is None else convert_secret(name, value, type)

    async def call_module(
        self, module_id: str, endpoint: str, payload: object = None, *, timeout: float | None = None
    ) -> Any:
        """Call ``endpoint`` of module ``module_id`` through the orchestrator; return the
        decoded reply (a JSON value, or bytes for a non-JSON answer). spec/modules.md.

        ``payload``: a JSON value, or bytes (sent raw). ``timeout``: seconds (default 30).
        Many calls may be in flight at once; cancelling the awaiting task forgets the call.

        Raises (all ``CallError``): ``UnknownModuleError``, ``UnknownEndpointError``,
        ``TargetFailedError`` (``.status``), ``CallDeadlineError``, ``CallRejectedError``;
        ``LocalProtocolError`` for bad arguments, ``RuntimeError`` when not serving.
        """
        conn, loop = self._serving("call_module")
        rid = conn.start_call(module_id, endpoint, payload, loop.time(), timeout=timeout)
        fut: asyncio.Future[Any] = loop.create_future()
        self._call_waiters[rid] = fut
        self._flush()
        self._arm_timer()
        try:
            return await fut
        finally:
            if self._call_waiters.pop(rid, None) is not None and self._conn is conn:
                conn.cancel_call(rid)  # cancelled: a late answer is dropped

    async def register_service_provider(
        self,
        service_type: ServiceType,
        name: str,
        address: str,
        *,
        version: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Register a provider of ``service_type`` with the orchestrator; return its
        ``provider_id`` (spec/modules.md section 7).

        Raises ``ServiceRegistryError`` (refused, or no answer in 30 s), ``LocalProtocolError``
        for invalid fields, ``RuntimeError`` when not serving.
        """
        from pywatt_proto._messages import RegisterServiceProvider

        msg = RegisterServiceProvider(
            service_type=service_type,
            name=name,
            version=version,
            address=address,
            metadata=metadata,
        )
        result = await self._registry_request("register_service_provider", msg)
        assert isinstance(result, str)
        return result

    async def discover_service_providers(
        self, service_type: ServiceType, *, all_providers: bool = False
    ) -> tuple[ServiceProviderInfo, ...]:
        """Return the providers of ``service_type`` the orchestrator knows: the preferred
        healthy one (empty if none), or all of them with ``all_providers``.

        Raises ``ServiceRegistryError``, ``RuntimeError`` as ``register_service_provider``.
        """
        from pywatt_proto._messages import DiscoverServiceProviders

        msg = DiscoverServiceProviders(service_type=service_type, all_providers=all_providers)
        result = await self._registry_request("discover_service_providers", msg)
        assert isinstance(result, tuple)
        return result

    async def _registry_request(self, what: str, msg: Any) -> object:
        conn, loop = self._serving(what)
        token = ("registry", conn.start_service_request(msg, loop.time()))
        fut: asyncio.Future[Any] = loop.create_future()
        self._call_waiters[token] = fut
        self._flush()
        self._arm_timer()
        try:
            return await fut
        finally:
            self._call_waiters.pop(token, None)

    async def _routed(self, msg: RoutedModuleMessage) -> None:
        message = self._routed_message(msg)
        if message is None:
            return
        for fn in list(self._routed_handlers):
            try:
                result = fn(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("routed message handler %s failed", callable_name(fn))

    def send_message(self, message: object) -> None:
        """Send a module->orchestrator message (port_request, service_request, ...) now."""
        self._serving("send_message")[0].send(message)
        self._flush()

    async def negotiate_port(self, specific_port: int | None = None) -> PortResult:
        """Return the TCP port to serve on: the init's ``listen`` port, or one negotiated
        with ``port_request`` (see ``pywatt_asyncio.negotiate_port``).

        Raises ``PortNegotiationError`` when no port could be obtained and
        ``RuntimeError`` when the module is not serving.
        """
        conn, _ = self._serving("negotiate_port")
        from ._ports import PortNegotiation, negotiate_port

        if self._negotiation is None:
            self._negotiation = PortNegotiation(send=self.send_message)
            self.add_port_listener(self._negotiation.feed_response)
        return await negotiate_port(self._negotiation, init=conn.init, specific_port=specific_port)

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Serve stdin/stdout until shutdown or end of input, then exit the process.

        Sets up stderr logging if none is configured. Exits with status 0 on a clean stop,
        1 on a protocol failure.
        """
        run_until_exit(lambda: asyncio.run(self.serve_stdio()))

    async def serve_stdio(
        self, *, read_fd: int = 0, write_fd: int | None = None, guard: bool = True
    ) -> int:
        """Serve the protocol on ``read_fd``/``write_fd`` (default: stdin and the real stdout).

        With ``guard`` (default) and no ``write_fd``, fd 1 and ``sys.stdout`` are redirected
        to stderr first (see ``guard_stdout``). Returns 0 after a clean stop (shutdown or end
        of input, in-flight requests answered), 1 after a protocol failure.
        """
        if self._conn is not None:
            raise RuntimeError("module is already serving")
        if write_fd is None:
            write_fd = guard_stdout() if guard else 1
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._eager = EagerStarter(loop)
        self._done = loop.create_future()
        self._conn = self._new_core()
        self._pipe_fds = (read_fd, write_fd)
        self._link = PipeLink(
            read_fd,
            write_fd,
            on_data=self._on_data,
            on_eof=self._on_eof,
            on_write_error=self._on_write_error,
        )
        stop_signal = self._install_sigterm(loop)
        set_serving(self)
        if os.isatty(read_fd):
            _log.warning("waiting for the init line on a terminal; run modules with `pywatt run`")
        try:
            await self._link.start()
            code = await self._done
            await self._close_channels(drain=code == 0)
            if not await self._link.flush_and_close():
                code = 1  # answers were lost: not a clean stop
            return code
        finally:
            clear_serving(self)
            if stop_signal:
                loop.remove_signal_handler(signal.SIGTERM)
            await self._close_channels(drain=False)
            self._cancel_all()
            if self._timer is not None:
                self._timer.cancel()
            self._reset()
            await self._run_shutdown_hooks()
            executor, self._executor = self._executor, None
            if executor is not None:  # threads still in handlers past their 504 finish alone
                executor.shutdown(wait=False, cancel_futures=True)

    async def _run_shutdown_hooks(self) -> None:
        """Run the on_shutdown hooks in order; one that raises is logged, the rest run."""
        for fn in list(self._shutdown_hooks):
            try:
                result = fn()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("on_shutdown hook %s failed", callable_name(fn))

    def _install_sigterm(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Treat SIGTERM like ``shutdown`` (finish in-flight work); False if not possible."""
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def _on_sigterm(self) -> None:
        conn = self._conn
        if conn is not None and conn.state is not ModuleState.AWAITING_INIT:
            _log.info("SIGTERM: finishing %d in-flight request(s)", conn.in_flight)
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        """Answer new requests 503 and finish the in-flight ones, as ``shutdown`` does."""
        conn = self._conn
        if conn is None or conn.state is ModuleState.ERROR:
            self._finish(0)
            return
        try:
            conn.begin_shutdown()
        except ProtocolError:  # before init: nothing to drain
            self._finish(0)
        self._shutdown_channels()
        self._process()

    async def wait_ready(self) -> None:
        """Wait until the announce has been sent (useful for startup work in tasks)."""
        await self._ready.wait()

    # ----------------------------------------------------------- core driving
    def _finish(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def _on_data(self, data: bytes) -> None:
        conn, loop = self._conn, self._loop
        if conn is None or loop is None:
            return
        try:
            conn.receive_data(data, loop.time())
        except ProtocolError:
            return  # after EOF/ERROR: nothing more to read
        self._process()

    def _on_eof(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.receive_eof()
        except ProtocolError:
            return
        self._process()

    def _on_write_error(self, exc: BaseException) -> None:
        _log.error("protocol output failed (%s); stopping", exc)
        if self._conn is not None:
            self._conn.send_failed()
        self._finish(1)

    def _process(self) -> None:
        """Drain every event the core has, then write and re-arm the timer."""
        conn = self._conn
        assert conn is not None
        self._processing = True
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is RequestReceived:
                    # Started once the chunk's lines are all read, so what the core queued
                    # for those lines (heartbeat acks, 503s) is written before the answers.
                    self._waiting.append(event)
                elif event is END_OF_INPUT:
                    self.input_closed(time.monotonic())
                    break
                else:
                    self.on_event(event, time.monotonic())
            if self._waiting:
                self._start_waiting()
        except ProtocolError as exc:
            self.protocol_failed(exc)
            self._flush()
            self._finish(1)
            return
        finally:
            self._processing = False
        self._flush()
        self._arm_timer()
        if conn.state is ModuleState.CLOSED:
            self._finish(0)

    # ------------------------------------------------- CoreEvents hooks
    def _settle(self, waiter: Any, value: object, error: BaseException | None) -> None:
        if not waiter.done():
            if error is None:
                waiter.set_result(value)
            else:
                waiter.set_exception(error)

    def _timed_out(self, request_id: str) -> None:
        self._forget(request_id)
        _log.warning("request %s timed out (answered 504)", request_id)

    def _rotate(self, event: RotationRequested) -> None:
        self._spawn(self._rotation(event))

    def _start_startup(self) -> None:
        self._spawn(self._startup())

    def _announced(self) -> None:
        self._ready.set()

    def _init_received(self, init: Init, extensions: frozenset[str]) -> None:
        if EXT_BASE64_BODIES in extensions:  # bodies may be large from now on
            grow_pipes(*self._pipe_fds)
        if init.tcp_channel is not None or init.ipc_channel is not None:
            self._spawn(self._open_channels(init))

    def _run_routed(self, msg: RoutedModuleMessage) -> None:
        self._spawn(self._routed(msg))

    # ------------------------------------------------------ request tasks
    def _start(self, item: _Pending) -> None:
        loop = self._loop
        assert loop is not None
        if isinstance(item, RequestReceived):
            # A plain ``def`` handler runs at once and is answered here, with no task; an
            # ``async def`` one (or middleware, auth) runs in a task from its first line, so
            # it has a current task (asyncio.timeout, cancellation by the 504). That task is
            # started eagerly: a coroutine that finishes without suspending is answered
            # here too, and only one that really waits is left running.
            rid = item.request_id
            try:
                request = item.to_router_request()
                if _FILL_CLIENT is not None:  # run by ``pywatt run``: client from its proxy
                    _FILL_CLIENT(request)
                ready = dispatch_eager(self.router, request, loop.time)
            except Exception as exc:  # dispatch never raises; belt and braces
                _log.exception("request %s failed", rid, exc_info=exc)
                ready = self.router.error_response(exc)
            if isinstance(ready, Response):
                self._answer(rid, ready)
                return
            eager = self._eager
            task = eager.start(ready) if eager is not None else loop.create_task(ready)
            if task.done():
                self._answer_task(rid, task)
                return
            self._tasks[rid] = task
            task.add_done_callback(partial(self._on_served, rid))
        else:
            channel, event = item
            key = (channel, event.request_id)
            self._tasks[key] = loop.create_task(self._serve_channel(channel, event))

    def _forget(self, key: object) -> None:
        """``key``'s request was answered 504: cancel its task, or drop it from the queue
        (keys: a stdio request's id, ``(channel, id)`` for a channel's)."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            self._start_waiting()
        else:
            self._waiting = deque(
                r
                for r in self._waiting
                if (r.request_id if isinstance(r, RequestReceived) else (r[0], r[1].request_id))
                != key
            )

    def _start_waiting(self) -> None:
        while self._waiting and len(self._tasks) < self._max_concurrency:
            self._start(self._waiting.popleft())

    def _on_served(self, rid: str, task: asyncio.Task[Response]) -> None:
        """A suspended handler's task ended: answer unless it was cancelled (504, stop)."""
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
            self._answer_task(rid, task)
        if self._waiting:
            self._start_waiting()

    def _answer_task(self, rid: str, task: asyncio.Task[Response]) -> None:
        """Answer ``rid`` from its finished task (nothing if the task was cancelled)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._answer(rid, task.result())
        else:  # dispatch never raises; belt and braces
            _log.exception("request %s failed", rid, exc_info=exc)
            self._answer(rid, self.router.error_response(exc))

    def _answer(self, rid: str, response: Response) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send_response(rid, response.status, response.headers, response.body)
        except ProtocolError as exc:  # output already failed (ERROR state)
            _log.debug("response to %s not sent: %s", rid, exc)
            return
        if self._processing:
            pass  # _process writes everything the chunk produced in one write
        elif self._tasks:
            self._schedule_flush()  # more answers are coming: one write for all
        else:
            self._flush()  # nothing else running: answer now (latency at depth 1)
        if conn.state is ModuleState.CLOSED:
            self._finish(0)

    # ------------------------------------------------------ framed channels
    async def _open_channels(self, init: Init) -> None:
        """Connect the channels init offers; a required one that fails stops the module."""
        from pywatt_proto._channel import ChannelConnection, channel_targets

        from ._channel import AsyncChannel

        channels = [
            AsyncChannel(
                target,
                on_event=self._on_channel_event,
                # the same per-request rules as stdio: this module's limits
                conn=ChannelConnection(
                    kind=target.kind,
                    max_in_flight=self._max_in_flight,
                    request_timeout=self._request_timeout,
                ),
            )
            for target in channel_targets(init)
        ]
        self._channels.extend(channels)
        failures = await asyncio.gather(*(ch.start() for ch in channels))
        for ch, failure in zip(channels, failures, strict=True):
            if failure is not None and channel_failed(ch.target, ch.conn.attempts, failure):
                self._finish(1)

    def _on_channel_event(self, channel: AsyncChannel, event: ChannelEvent) -> None:
        from pywatt_proto._channel import BadFrame

        if isinstance(event, RequestReceived):
            if len(self._tasks) < self._max_concurrency:
                self._start((channel, event))
            else:
                self._waiting.append((channel, event))
        elif isinstance(event, RequestTimedOut):
            self._forget((channel, event.request_id))
            _log.warning("%s: request %s timed out (answered 504)", channel, event.request_id)
        elif isinstance(event, ShutdownRequested):
            _log.info("shutdown requested on %s", channel.target.describe())
            self._begin_shutdown()
        elif isinstance(event, BadFrame):
            _log.warning("%s: skipped frame: %s", channel.target.describe(), event.error)
        else:
            self.on_event(event, time.monotonic())  # plain orchestrator messages

    async def _serve_channel(self, channel: AsyncChannel, event: RequestReceived) -> None:
        key = (channel, event.request_id)
        loop = self._loop
        assert loop is not None
        try:
            try:
                response = await dispatch(self.router, event.to_router_request(), loop.time)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # dispatch never raises; belt and braces
                _log.exception("request %s failed", event.request_id, exc_info=exc)
                response = self.router.error_response(exc)
            if self._tasks.pop(key, None) is not None:
                await channel.send_response(
                    event.request_id, response.status, response.headers, response.body
                )
        finally:
            self._tasks.pop(key, None)
            if self._waiting:
                self._start_waiting()

    def _shutdown_channels(self) -> None:
        for ch in self._channels:
            ch.begin_shutdown()

    async def _close_channels(self, *, drain: bool) -> None:
        """Stop the channels; with ``drain``, first let their in-flight handlers answer
        (up to the request timeout)."""
        channels, self._channels = self._channels, []
        if not channels:
            return
        for ch in channels:
            ch.begin_shutdown()
        pending = [t for k, t in self._tasks.items() if isinstance(k, tuple)]
        if drain and pending:
            await asyncio.wait(pending, timeout=self._request_timeout)
        await asyncio.gather(*(ch.aclose() for ch in channels), return_exceptions=True)

    async def _startup(self) -> None:
        """Await the on_startup hooks, then announce; a failing hook stops the module (1)."""
        for fn in list(self._startup_hooks):
            try:
                await fn()
            except Exception:
                _log.exception(
                    "on_startup hook %s failed; exiting without announcing", callable_name(fn)
                )
                self._finish(1)
                return
        conn = self._conn
        if conn is None or conn.state is not ModuleState.STARTING:
            return  # shutdown or end of input arrived meanwhile: nothing to announce
        conn.announce(self._startup_listen)
        self._process()

    async def _rotation(self, event: RotationRequested) -> None:
        error: str | None = None
        for fn in list(self._rotation_callbacks):
            try:
                result = fn(event.keys)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                _log.exception("rotation callback failed (rotation %s)", event.rotation_id)
                error = rotation_failed(exc)
                break
        conn = self._conn
        if conn is not None and conn.state is not ModuleState.ERROR:
            conn.ack_rotation(event.rotation_id, error=error)
            self._flush()
            if conn.state is ModuleState.CLOSED:
                self._finish(0)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        conn, link = self._conn, self._link
        if conn is None or link is None:
            return
        data = conn.data_to_send()
        if data:
            link.write(data)

    def _arm_timer(self) -> None:
        conn, loop = self._conn, self._loop
        if conn is None or loop is None:
            return
        when = conn.get_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        fired_at = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        conn, loop = self._conn, self._loop
        if conn is None or loop is None:
            return
        # asyncio may run a timer up to one clock resolution early.
        conn.handle_timer(max(loop.time(), fired_at))
        self._process()

    def _cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._bg):
            task.cancel()
        self.fail_waiters()
