"""``pywatt_sync.Module``: the decorator API over ``ModuleConnection``, with threads.

Same API as ``pywatt_asyncio.Module``, for blocking code (plain ``def`` handlers,
blocking database drivers, WSGI apps)::

    app = Module()

    @app.get("/hello")
    def hello(request):
        return {"message": "hello"}

    if __name__ == "__main__":
        app.run()

Threads and locks
-----------------
Leader/follower, so that a request costs one thread wake-up (the read), as in a
bare ``readline -> handle -> write`` loop:

* **pool threads** (one at the start, at most ``max_workers + 1``) take turns.
  The thread that reads stdin is the *leader*; there is at most one. After a
  read it feeds the core, moves the requests the core has ready to the
  ``_ready`` deque, gives up the leader role and runs them itself, inline, one
  after another. Their answers go into the core (its own output buffer);
  when the thread has no ready work left it writes everything the core holds
  in ONE write (earlier after :data:`_FLUSH_EVERY` answers or once their
  bodies pass :data:`_FLUSH_AT`), then reads again. While a thread is inside
  a handler it is not the leader, and no other thread is woken for that: the
  hand-off costs nothing unless a handler turns out to be slow.
* **the monitor** (the thread that called :meth:`Module.serve_stdio`) applies
  the core's deadlines (504s, secret timeouts) and, every :data:`TICK`
  seconds while there is activity, checks for stalls: the leader role free
  and input unread, or ready work not picked up, for a whole tick (between one
  and two ticks) -> it wakes an idle pool thread or starts one (up to
  ``max_workers + 1`` threads, at most ``max_workers`` of them inside handlers);
  output left in the core for a whole tick (behind a slow handler) -> it
  writes it. After :data:`_IDLE_TICKS` ticks without activity it sleeps until
  the next deadline; the next read wakes it. Threads started by it exit after
  :data:`SPARE_IDLE` seconds without work. ``secret()`` and ``send_message()``
  called from a handler wake a thread to read at once (their answer comes on
  stdin) instead of waiting for the tick.
* Back-pressure: a thread reads stdin only while the requests taken from the
  core and not finished (``_ready``, ``_rotations`` and those inside handlers)
  are fewer than ``max_workers + max_queued + 1``, and pulls no more than that
  from the core (lines beyond stay in the core's line buffer, at most one read).
  So when ``max_workers`` threads are inside handlers and the queue is full,
  nobody reads stdin: the orchestrator's pipe fills instead of requests being
  dropped (the core still answers 503 past ``max_in_flight``).
* Rotation callbacks run in order on their own thread (``pywatt-rotation``,
  started when a rotation arrives, gone when none is left), so they run even
  while every handler thread blocks; queued rotations count against the
  bound below. on_startup hooks run on their own thread too.
* ``_lock`` guards the core (a plain object, not thread-safe) and the pool
  state above; ``_follow_cond`` (idle pool threads), ``_room_cond`` (channel
  readers waiting for room) and ``_cond`` (the monitor) share it. Whoever
  writes moves the core's output, under ``_lock`` and so in the core's order,
  to a small output list guarded by ``_out_lock``. One thread at a time is
  the *flusher*: it writes that list through one :class:`BlockingWriter`,
  taking ``_out_lock`` only for the list operations and never ``_lock``, and
  loops until the list is empty; threads that queue output meanwhile leave it
  to that flusher. Lines therefore reach stdout in exactly the order the core
  produced them, each written whole and never interleaved, batched into one
  write per read (at most :data:`_FLUSH_EVERY` answers) under load. Lock
  order: ``_lock``, then ``_out_lock``.
* Every queue is bounded: ``_ready`` and ``_rotations`` by the sum above;
  answers left in the core by :data:`_FLUSH_AT` plus one answer; output by
  ``max_output_backlog`` -- above it nobody reads stdin until the backlog is
  down to a sixteenth (the asyncio driver's 16 MiB / 1 MiB marks), so a
  stalled orchestrator cannot make the module buffer without bound.

Framed channels offered by init (``tcp_channel`` / ``ipc_channel``) are
connected with :class:`~pywatt_sync._channel.SyncChannel` (its own reader
thread each); their requests are queued in ``_ready`` (the channel's reader
waits while it is full), run by the pool threads and answered on the channel.
A required channel that cannot be connected stops the module with status 1.
SIGTERM is a graceful shutdown, like the ``shutdown`` op (new requests 503,
in-flight ones answered), as in the asyncio driver.

The protocol (handshake, announce, heartbeat acks, 400/503/504 answers,
secret correlation, rotation acks) is the core's; this file only moves bytes
and runs callables.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from pywatt_proto._errors import ProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._hints import NOT_AN_INIT, rotation_failed, terminal_stdin
from pywatt_proto._lazylog import LazyLogger, basic_config
from pywatt_proto._messages import Endpoint, Init, PortResponse, RoutedModuleMessage
from pywatt_proto._module import (  # private modules: no package __init__ (start-up time)
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SECRET_TIMEOUT,
    Announced,
    BadLine,
    InitReceived,
    ModuleConnection,
    ModuleState,
    ReadyToAnnounce,
    RequestReceived,
    RequestTimedOut,
    RotationRequested,
    SecretFailed,
    SecretUnavailable,
    SecretUpdated,
    ShutdownRequested,
)
from pywatt_proto._router import Request, Response, Router
from pywatt_proto._routes import RouteDecorators
from pywatt_proto._secrets import convert_secret, redact_secret
from pywatt_proto._serving import clear_serving, set_serving

from ._dispatch import dispatch
from ._stdio import READ_CHUNK, BlockingWriter, guard_stdout

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:  # and imported lazily: most modules never negotiate a port or open a channel
    from concurrent.futures import Future
    from typing import Any, Final, TypeVar, overload

    from pywatt_proto._calls import RoutedMessage
    from pywatt_proto._channel import ChannelEvent
    from pywatt_proto._messages import ServiceProviderInfo, ServiceType

    from ._channel import SyncChannel
    from ._ports import PortNegotiation, PortResult

    _F = TypeVar("_F", bound=Callable[..., Any])
    _T = TypeVar("_T")
    RotationCallback = Callable[[tuple[str, ...]], Any]
    StartupHook = Callable[[], Any]
    RoutedHandler = Callable[[RoutedMessage], Any]
    _Job = Callable[[], None]

__all__ = ["DEFAULT_MAX_OUTPUT_BACKLOG", "DEFAULT_MAX_QUEUED", "DEFAULT_MAX_WORKERS", "Module"]

_log = LazyLogger("pywatt.module")  # loads logging for the first emitted record


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", fn))


#: Threads inside handlers at most. Fast handlers all run on one thread (the
#: one that read them); more threads are started only while handlers block
#: (see TICK). Blocking handlers spend most of their time waiting on I/O, so
#: more threads than cores pays; but every runnable thread also competes for
#: the GIL. 16 keeps 16 blocking calls going at once; raise it for handlers
#: that mostly wait.
DEFAULT_MAX_WORKERS: Final = 16
#: Requests read and waiting for a thread (beyond those inside handlers)
#: before stdin reading stops. A 64-request burst fits in one read, and the
#: number of accepted requests whose deadlines are already running stays
#: small (the core's own limit, max_in_flight, is 1024).
DEFAULT_MAX_QUEUED: Final = 64

#: Monitor period, in seconds. A handler that blocks delays the requests and
#: answers queued behind it on its thread by one to two ticks before another
#: thread takes them (or writes them): measured 40-41 ms for a fast request
#: sent together with a blocking one right after start-up (tests/
#: test_sync_leader.py's scenario, 10 runs each order). Shorter ticks cost
#: wake-ups of the monitor (1 / TICK per second, only while there is
#: activity): at 20 ms, 243 wake-ups and 20 ms of CPU (two clock ticks, so
#: roughly) during 60000 requests in 3.9 s at depth 1, about 0.5 % of a core.
#: The server's event threads use 50 ms; 20 ms keeps a blocked handler's
#: neighbours well inside usual request budgets.
TICK: Final = 0.02
#: Ticks without any activity (no read, no request running or queued, no
#: output pending) after which the monitor stops ticking until the next read.
_IDLE_TICKS: Final = 50
#: Seconds a pool thread started by the monitor waits for work before exiting.
SPARE_IDLE: Final = 5.0
#: Bytes per write call of the flusher (a pipe's capacity). The backlog counts what
#: has not been handed to a write call yet.
_WRITE_PIECE: Final = 64 * 1024
#: Body bytes of answers a thread lets gather in the core before it writes them
#: without waiting for the end of its batch (a pipe's capacity): bounds the
#: output not yet counted in the backlog.
_FLUSH_AT: Final = 64 * 1024
#: Answers a thread lets gather before it writes them mid-batch, so that the
#: orchestrator works on the first half of a burst while the second half runs.
#: bench_ipc-style A/B at 64 in flight (same core, 4 interleaved rounds each,
#: median ratio to floor-stdlib): one write per batch 0.77, every ~7 answers
#: 0.82, every ~16 0.86, every ~32 0.96; CPU per request 9.2 / 11.2 / 10.8 /
#: 8.7 us. Depth 1 is unaffected (one answer per batch).
_FLUSH_EVERY: Final = 32

#: Output taken from the core but not yet written, in bytes, above which the
#: reader stops taking input until the backlog is down to a sixteenth of it.
#: Same marks as the asyncio driver's write buffer (16 MiB / 1 MiB): one
#: maximal response line fits, and a stalled orchestrator cannot make the
#: module buffer without bound.
DEFAULT_MAX_OUTPUT_BACKLOG: Final = 16 * 1024 * 1024

#: Seconds serve_stdio waits at exit for the last output to be written (the
#: asyncio driver's flush_and_close waits as long): an orchestrator that no
#: longer reads cannot keep the module from exiting.
FINAL_FLUSH_TIMEOUT: Final = 5.0


class _SecretWait:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: str | None = None
        self.error: str | None = None


class Module(RouteDecorators):
    """A PyWatt module served over the process's stdin/stdout with threads.

    Args:
        secrets: names fetched after init and before the announce.
        max_workers: threads inside handlers at most.
        max_queued: requests waiting for a thread before stdin reading pauses.
        max_output_backlog: bytes of output waiting to be written above which
            stdin reading pauses (until it is down to a sixteenth).
        max_in_flight: requests accepted and unanswered (503 beyond).
        request_timeout: seconds before the core answers 504 (the handler's
            thread cannot be interrupted; its late result is dropped).
        secret_timeout: seconds to wait for each ``secret`` answer.
        router: an existing :class:`Router` (default: a new one).
        listen: the ``listen`` to announce (default: the init's).
        health: serve and announce ``GET /health`` (``True``) or that path (a str).
        metrics: serve the router's Prometheus text at ``/metrics`` (or that path).
        version: prefix every decorator-registered path with ``/<version>``.

    Raises:
        ValueError: ``max_workers`` < 1 or ``max_queued`` < 0.
        RouteDefinitionError: an invalid ``version``, ``health`` or ``metrics`` path.
    """

    _allow_async_handlers = False  # an ``async def`` handler is a registration error

    def __init__(
        self,
        *,
        secrets: Sequence[str] = (),
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_output_backlog: int = DEFAULT_MAX_OUTPUT_BACKLOG,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        secret_timeout: float = DEFAULT_SECRET_TIMEOUT,
        router: Router | None = None,
        listen: str | None = None,
        health: bool | str = False,
        metrics: bool | str = False,
        version: str | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_queued < 0:
            raise ValueError("max_queued must not be negative")
        self.router = router if router is not None else Router()
        self._configure_routes(health=health, metrics=metrics, version=version, clock=time.time)
        self._prefetch = tuple(secrets)
        self._max_workers = max_workers
        self._max_queued = max_queued
        self._capacity = max_workers + max_queued  # slots: running + waiting jobs
        self._high_water = max_output_backlog
        self._low_water = max_output_backlog // 16
        self._max_in_flight = max_in_flight
        self._request_timeout = request_timeout
        self._secret_timeout = secret_timeout
        self._min_timeout = min(
            math.inf if request_timeout is None else request_timeout, secret_timeout
        )
        self._listen = listen
        self._rotation_callbacks: list[RotationCallback] = []
        self._startup_hooks: list[StartupHook] = []
        self._port_listeners: list[Callable[[PortResponse], None]] = []
        self._routed_handlers: list[RoutedHandler] = []
        self._negotiation: PortNegotiation | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the monitor waits here
        self._follow_cond = threading.Condition(self._lock)  # idle pool threads wait here
        self._room_cond = threading.Condition(self._lock)  # channel readers wait for room
        # Output handed over by the core, not yet written: guarded by its own small lock so
        # the flusher never waits for _lock (held by the leader while it parses).
        # Lock order: _lock, then _out_lock.
        self._out_lock = threading.Lock()
        self._out_cond = threading.Condition(self._out_lock)  # backlog drained / flush ended
        self._reset()

    def _reset(self) -> None:
        self._conn: ModuleConnection | None = None
        self._writer: BlockingWriter | None = None
        # Pool state, all guarded by _lock (see "Threads and locks").
        # Taken from the core, not started: stdio requests as their events (no closure per
        # request), other work (channel requests) as callables.
        self._ready: deque[RequestReceived | _Job] = deque()
        self._in_handler = 0  # pool threads running a job
        self._threads = 0  # pool threads alive
        self._idle = 0  # pool threads waiting in _follow_cond and not yet notified
        self._reading = False  # a thread holds the leader role (reading or paused)
        self._input_done = False  # end of input fed to the core (or it cannot take more)
        self._core_more = False  # the core may hold events the bound kept us from pulling
        self._unflushed = False  # the core may hold output nobody is about to write
        self._unflushed_bytes = 0  # body bytes of the answers among it
        self._unflushed_count = 0  # answers among it
        self._room_waiters = 0  # channel readers waiting in _room_cond
        self._rotations: deque[_Job] = deque()  # rotation callbacks not yet run
        self._rotating = False  # the rotation thread is running
        self._monitor_asleep = False  # the monitor is not ticking (see _timer_loop)
        self._read_fd = 0
        # Progress counters the monitor compares from one tick to the next.
        self._reads = 0
        self._pops = 0
        self._flushes = 0
        self._secret_waits: dict[str, list[_SecretWait]] = {}
        # Module calls by call id, registry requests by ("registry", token); _lock.
        self._call_waiters: dict[object, Future[Any]] = {}
        self._wake_at = 0.0  # when the timer loop wakes at the latest (see _timer_loop)
        self._code: int | None = None
        self._flushing = False  # a thread is writing _out (see _flush_and_unlock); _out_lock
        self._out: list[bytes] = []  # taken from the core, not yet written; _out_lock
        self._out_waiters = 0  # threads waiting in _out_cond; _out_lock
        self._backlog = 0  # bytes in _out plus the chunk being written; _out_lock
        self._paused = False  # the leader waits for the backlog to drain
        self._channels: list[SyncChannel] = []  # framed channels offered by init
        self._channel_jobs = 0  # channel requests being handled; _lock
        self._stopping = False  # serve_stdio is draining channel requests; _lock
        self._eof_logged = False
        self._announced = threading.Event()
        self._startup_listen: str | None = None  # set_listen() during on_startup

    # ------------------------------------------------------------ registration
    # route/get/post/put/delete/patch/middleware/error_handler: RouteDecorators

    def on_rotation(self, fn: _F) -> _F:
        """Register ``fn(keys)``, called on the rotation thread when secrets are rotated.

        The rotation is acknowledged ``success`` when every callback returns,
        ``error`` (with the exception's message) when one raises.
        """
        self._rotation_callbacks.append(fn)
        return fn

    def on_routed_message(self, fn: _F) -> _F:
        """Register ``fn(message)`` for one-way ``routed_module_message``s (spec/modules.md
        section 6), run on a pool thread. ``message`` is a ``RoutedMessage`` with
        ``source_module_id``, ``request_id`` and the decoded ``value``; the return value is
        ignored and an exception is logged. Calls made with ``call_module`` are served by
        ordinary routes (``@app.post``), not by these handlers.
        """
        self._routed_handlers.append(fn)
        return fn

    def on_startup(self, fn: _F) -> _F:
        """Register ``fn()``, called after init and secret prefetch and before the
        announce, in registration order, on a dedicated thread (bind listeners here: bind,
        then announce).

        Inside, ``app.negotiate_port()``, ``app.secret(name)`` and ``app.init`` work, and
        ``app.set_listen("host:port")`` chooses the announced ``listen``; requests are
        answered 503 until every hook has returned. A hook that raises is logged and the
        module exits with status 1 without announcing. With no hook registered the
        announce is sent as soon as prefetch is done, as before.
        """
        self._startup_hooks.append(fn)
        return fn

    def set_listen(self, listen: str) -> None:
        """Announce ``listen`` (e.g. ``"127.0.0.1:8123"``) instead of the default (the
        constructor's ``listen``, else the init's). Call it from an ``on_startup`` hook.

        Raises:
            RuntimeError: called outside startup (use ``Module(listen=...)`` for a
                fixed address).
        """
        with self._lock:
            conn = self._conn
            if conn is None or conn.state is not ModuleState.STARTING:
                raise RuntimeError("Module.set_listen() must be called from an on_startup hook")
            self._startup_listen = listen

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Return the endpoints announced for the registered routes."""
        return self.router.announce_endpoints()

    # --------------------------------------------------------------- services
    @property
    def connection(self) -> ModuleConnection | None:
        """The protocol core while serving (None otherwise). Guarded by the module's lock."""
        return self._conn

    @property
    def init(self) -> Init | None:
        """The orchestrator's init (set before ``on_startup`` hooks run; None otherwise)."""
        conn = self._conn
        return conn.init if conn is not None else None

    @property
    def output_backlog(self) -> int:
        """Bytes of protocol output taken from the core and not yet handed to a write
        (the flusher writes at most 64 KiB per call)."""
        return self._backlog

    @property
    def reading_paused(self) -> bool:
        """True while stdin reading is paused because output is not draining."""
        return self._paused and self._backlog > self._low_water

    if TYPE_CHECKING:

        @overload
        def secret(self, name: str, timeout: float | None = None) -> str: ...
        @overload
        def secret(
            self, name: str, timeout: float | None = None, *, type: Callable[[str], _T]
        ) -> _T: ...

    def secret(
        self,
        name: str,
        timeout: float | None = None,
        *,
        type: Callable[[str], Any] | None = None,
    ) -> Any:
        """Return the value of secret ``name`` (cached, or fetched from the orchestrator),
        converted by ``type``: ``int``, ``float``, ``bool`` (true/false, 1/0, yes/no,
        on/off), ``SecretValue`` (masked ``repr``) or any callable (default: the text).

        Blocks the calling thread (call it from handlers or hooks, not from a port
        listener). Called from a handler, it wakes another thread to read the answer.
        Concurrent calls for one name share one round trip. The core's
        ``secret_timeout`` bounds the wait; ``timeout`` can shorten it.

        Raises:
            SecretUnavailable: no answer in time, or the module stopped.
            RuntimeError: the module is not serving.
            ValueError: the value does not convert to ``type`` (the message names the
                secret, never the value).
        """
        self._lock.acquire()
        conn = self._conn
        if conn is None:
            self._lock.release()
            raise RuntimeError("Module.secret() needs a running module (serve_stdio)")
        try:
            value = conn.get_secret(name, time.monotonic())
        except BaseException:
            self._lock.release()
            raise
        if value is not None:
            self._lock.release()
            return value if type is None else convert_secret(name, value, type)
        wait = _SecretWait()
        self._secret_waits.setdefault(name, []).append(wait)
        self._wake_timer_locked()
        self._need_reader_locked()  # the answer comes on stdin: have someone read it
        self._flush_and_unlock()
        if not wait.done.wait(timeout):
            raise SecretUnavailable(f"{name}: timed out")
        if wait.value is None:
            raise SecretUnavailable(f"{name}: {wait.error}")
        return wait.value if type is None else convert_secret(name, wait.value, type)

    def submit_call(
        self, module_id: str, endpoint: str, payload: object = None, *, timeout: float | None = None
    ) -> Future[Any]:
        """Start a call like :meth:`call_module` without blocking; return a
        ``concurrent.futures.Future`` resolved with the reply or the call's ``CallError``.
        Many calls may be in flight from one thread. Cancelling the future forgets the call.

        Raises ``CallRejectedError`` (too many in flight, input closed), ``LocalProtocolError``
        for bad arguments and ``RuntimeError`` when the module is not serving.
        """
        from concurrent.futures import Future

        self._lock.acquire()
        conn = self._conn
        if conn is None:
            self._lock.release()
            raise RuntimeError("Module.call_module() needs a running module (serve_stdio)")
        try:
            rid = conn.start_call(module_id, endpoint, payload, time.monotonic(), timeout=timeout)
        except BaseException:
            self._lock.release()
            raise
        fut: Future[Any] = Future()
        self._call_waiters[rid] = fut
        fut.add_done_callback(partial(self._call_done, conn, rid))
        self._wake_timer_locked()
        self._need_reader_locked()  # the answer comes on stdin: have someone read it
        self._flush_and_unlock()
        return fut

    def _call_done(self, conn: ModuleConnection, rid: str, fut: Future[Any]) -> None:
        if fut.cancelled():
            with self._lock:
                if self._call_waiters.pop(rid, None) is not None and self._conn is conn:
                    conn.cancel_call(rid)

    def call_module(
        self, module_id: str, endpoint: str, payload: object = None, *, timeout: float | None = None
    ) -> Any:
        """Call ``endpoint`` of module ``module_id`` through the orchestrator and block until
        the answer; return the decoded reply (a JSON value, or bytes for a non-JSON answer).
        spec/modules.md. ``payload``: a JSON value, or bytes (sent raw); ``timeout``: seconds
        (default 30).

        Raises (all ``CallError``): ``UnknownModuleError``, ``UnknownEndpointError``,
        ``TargetFailedError`` (``.status``), ``CallDeadlineError``, ``CallRejectedError``;
        ``LocalProtocolError`` for bad arguments, ``RuntimeError`` when not serving.
        """
        return self.submit_call(module_id, endpoint, payload, timeout=timeout).result()

    def register_service_provider(
        self,
        service_type: ServiceType,
        name: str,
        address: str,
        *,
        version: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Register a provider of ``service_type`` with the orchestrator and block until the
        answer; return its ``provider_id`` (spec/modules.md section 7).

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
        result = self._registry_request(msg)
        assert isinstance(result, str)
        return result

    def discover_service_providers(
        self, service_type: ServiceType, *, all_providers: bool = False
    ) -> tuple[ServiceProviderInfo, ...]:
        """Return the providers of ``service_type`` the orchestrator knows: the preferred
        healthy one (empty if none), or all of them with ``all_providers``. Blocks.

        Raises ``ServiceRegistryError``, ``RuntimeError`` as ``register_service_provider``.
        """
        from pywatt_proto._messages import DiscoverServiceProviders

        msg = DiscoverServiceProviders(service_type=service_type, all_providers=all_providers)
        result = self._registry_request(msg)
        assert isinstance(result, tuple)
        return result

    def _registry_request(self, msg: Any) -> object:
        from concurrent.futures import Future

        self._lock.acquire()
        conn = self._conn
        if conn is None:
            self._lock.release()
            raise RuntimeError("the service registry needs a running module (serve_stdio)")
        try:
            token = ("registry", conn.start_service_request(msg, time.monotonic()))
        except BaseException:
            self._lock.release()
            raise
        fut: Future[Any] = Future()
        self._call_waiters[token] = fut
        self._wake_timer_locked()
        self._need_reader_locked()
        self._flush_and_unlock()
        return fut.result()

    def _call_event_locked(self, event: object) -> bool:
        """Resolve the waiter of a module-call / registry event; False if not one of those."""
        from pywatt_proto._calls import (
            CallFailed,
            CallReplied,
            ServiceAnswered,
            ServiceFailed,
            service_result,
        )

        t = type(event)
        if t is CallReplied or t is CallFailed:
            assert isinstance(event, CallReplied | CallFailed)
            fut = self._call_waiters.pop(event.request_id, None)
            if fut is not None and fut.set_running_or_notify_cancel():
                if isinstance(event, CallReplied):
                    fut.set_result(event.value)
                else:
                    fut.set_exception(event.error)
            return True
        if t is ServiceAnswered or t is ServiceFailed:
            assert isinstance(event, ServiceAnswered | ServiceFailed)
            fut = self._call_waiters.pop(("registry", event.token), None)
            if fut is not None and fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(service_result(event))
                except Exception as exc:
                    fut.set_exception(exc)
            return True
        return False

    def _fail_call_waiters_locked(self) -> None:
        if not self._call_waiters:
            return
        from pywatt_proto._calls import CallRejectedError

        for fut in self._call_waiters.values():
            if fut.set_running_or_notify_cancel():
                fut.set_exception(CallRejectedError("module stopped"))
        self._call_waiters.clear()

    def _routed(self, msg: RoutedModuleMessage) -> None:
        from pywatt_proto._calls import routed_message

        try:
            message = routed_message(
                msg.source_module_id, str(msg.original_request_id), msg.payload
            )
        except ProtocolError as exc:
            _log.warning("routed message from %s dropped: %s", msg.source_module_id, exc)
            return
        for fn in list(self._routed_handlers):
            try:
                fn(message)
            except Exception:
                _log.exception("routed message handler %s failed", _name(fn))

    def add_port_listener(self, fn: Callable[[PortResponse], None]) -> Callable[[], None]:
        """Call ``fn`` (on the thread that read it) with every ``port_response``; return a
        remover."""
        self._port_listeners.append(fn)
        return lambda: self._port_listeners.remove(fn)

    def send_message(self, message: object) -> None:
        """Send a module->orchestrator message (port_request, service_request, ...) now.

        Raises:
            RuntimeError: the module is not serving.
            LocalProtocolError: the core sends this kind of message itself.
        """
        self._lock.acquire()
        if self._conn is None:
            self._lock.release()
            raise RuntimeError("module is not serving")
        try:
            self._conn.send(message)
        except BaseException:
            self._lock.release()
            raise
        if self._in_handler:  # from a handler: an answer may be awaited on stdin
            self._need_reader_locked()
        self._flush_and_unlock()

    def negotiate_port(self, specific_port: int | None = None) -> PortResult:
        """Return the TCP port to serve on: the init's ``listen`` port, or one negotiated
        with ``port_request`` (see ``pywatt_sync.negotiate_port``). Blocks the calling
        thread; one negotiation state (breaker, back-off) is kept per module.

        Raises:
            PortNegotiationError: no port could be obtained.
            RuntimeError: the module is not serving.
        """
        from ._ports import PortNegotiation, negotiate_port

        conn = self._conn
        if conn is None:
            raise RuntimeError("Module.negotiate_port() needs a running module")
        with self._lock:
            if self._negotiation is None:
                self._negotiation = PortNegotiation(send=self.send_message)
                self.add_port_listener(self._negotiation.feed_response)
            negotiation = self._negotiation
        return negotiate_port(negotiation, init=conn.init, specific_port=specific_port)

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Serve stdin/stdout until shutdown or end of input, then exit the process.

        Sets up stderr logging if none is configured (``logging`` itself is
        imported for the first record at or above the level, see
        :mod:`pywatt_proto._lazylog`). Exits with status 0 on a clean stop, 1 on
        a protocol failure, 130 on Ctrl-C.
        """
        if os.isatty(0):  # a person started it by hand: say how to run it instead of waiting
            print(terminal_stdin(sys.argv[0] or "FILE"), file=sys.stderr)
            sys.exit(2)
        basic_config(
            level=os.environ.get("PYWATT_LOG_LEVEL", "INFO").upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        try:
            code = self.serve_stdio()
        except KeyboardInterrupt:
            code = 130
        sys.exit(code)

    def serve_stdio(
        self, *, read_fd: int = 0, write_fd: int | None = None, guard: bool = True
    ) -> int:
        """Serve the protocol on ``read_fd``/``write_fd`` (default: stdin and the real stdout).

        With ``guard`` (default) and no ``write_fd``, fd 1 and ``sys.stdout``
        are redirected to stderr first. Blocks until the core is CLOSED
        (shutdown or end of input, every in-flight request answered) or the
        link fails. Returns 0 after a clean stop, 1 after a protocol or output
        failure. Handler threads still running (past their 504) are abandoned
        (daemon threads).

        Raises:
            RuntimeError: the module is already serving.
        """
        with self._lock:
            if self._conn is not None:
                raise RuntimeError("module is already serving")
            if write_fd is None:
                write_fd = guard_stdout() if guard else 1
            self._conn = ModuleConnection(
                endpoints=self.endpoints,  # asked at announce time
                prefetch=self._prefetch,
                listen=self._listen,
                max_in_flight=self._max_in_flight,
                request_timeout=self._request_timeout,
                secret_timeout=self._secret_timeout,
                hold_announce=bool(self._startup_hooks),
            )
            self._writer = BlockingWriter(write_fd, self._on_write_error)
            self._read_fd = read_fd
            self._start_thread_locked(spare=False)
        previous = self._install_sigterm()
        set_serving(self)
        code = 1
        try:
            code = self._timer_loop()
            return code
        finally:
            clear_serving(self)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._close_channels(drain=code == 0)
            self._lock.acquire()
            self._flush_and_unlock()  # what the core still holds (the last responses)
            with self._out_lock:  # let the flush under way finish
                give_up = time.monotonic() + FINAL_FLUSH_TIMEOUT
                while self._flushing and time.monotonic() < give_up:
                    self._out_waiters += 1
                    self._out_cond.wait(give_up - time.monotonic())
                    self._out_waiters -= 1
            with self._lock:
                self._follow_cond.notify_all()  # pool threads see the module stopped and exit
                self._room_cond.notify_all()
                for waits in self._secret_waits.values():
                    for wait in waits:
                        wait.error = "module stopped"
                        wait.done.set()
                self._fail_call_waiters_locked()
                self._reset()
            self._run_shutdown_hooks()

    def _run_shutdown_hooks(self) -> None:
        """Run the on_shutdown hooks in order; one that raises is logged, the rest run."""
        for fn in list(self._shutdown_hooks):
            try:
                fn()
            except Exception:
                _log.exception("on_shutdown hook %s failed", _name(fn))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the announce has been sent; return False on timeout."""
        return self._announced.wait(timeout)

    # ----------------------------------------------------------- core driving
    def _timer_loop(self) -> int:
        """The monitor: deadlines, stalls, exit; return the exit code.

        Every deadline the core creates is an arrival time plus a fixed
        timeout (``request_timeout`` or ``secret_timeout``), so one created
        after this loop looked is never earlier than "now + the smaller
        timeout". Waking at that time at the latest is therefore early enough,
        and adding a deadline almost never needs a wake-up.

        While there is activity it also wakes every :data:`TICK` seconds and
        compares the pool's progress counters with the previous tick's (see
        "Threads and locks"): a condition seen at two ticks in a row with no
        progress in between has lasted at least a tick.
        """
        lock = self._lock
        lock.acquire()
        last_at = -math.inf
        last: tuple[int, int, int, bool, bool, bool] | None = None
        quiet = 0
        try:
            while True:
                conn = self._conn
                assert conn is not None
                if self._code is not None:
                    return self._code
                if conn.state is ModuleState.CLOSED:
                    return 0
                now = time.monotonic()
                deadline = conn.get_timer()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now)
                    self._pump_locked()
                    if self._ready:
                        self._kick_locked(len(self._ready))
                    self._flush_and_unlock()
                    lock.acquire()
                    continue
                if now - last_at >= TICK * 0.9:
                    free = self._reader_wanted_locked()
                    sample = (
                        self._reads,
                        self._pops,
                        self._flushes,
                        free,
                        bool(self._ready),
                        self._unflushed,
                    )
                    busy = last is None or sample != last or bool(self._in_handler)
                    stale_output = False
                    if last is not None:
                        reads, pops, flushes, was_free, had_ready, had_output = last
                        wanted = 0
                        if had_ready and self._ready and pops == self._pops:
                            wanted = min(len(self._ready), self._max_workers - self._in_handler)
                        if not wanted and was_free and free and reads == self._reads:
                            # Only when no ready work is stalled too: a thread started for
                            # it takes the job first, and one thread at a time starting
                            # (all take _lock at once) keeps hand-offs few; the reader
                            # follows at the next tick if still wanted.
                            wanted = 1
                        if wanted > 0:
                            self._kick_locked(wanted)
                        stale_output = had_output and self._unflushed and flushes == self._flushes
                    last, last_at = sample, now
                    quiet = 0 if busy else quiet + 1
                    if stale_output:  # answers stuck behind a slow handler on their thread
                        self._flush_and_unlock()
                        lock.acquire()
                        continue
                ticking = quiet < _IDLE_TICKS
                wake_at = now + self._min_timeout
                if deadline is not None and deadline < wake_at:
                    wake_at = deadline
                if ticking and last_at + TICK < wake_at:
                    wake_at = last_at + TICK
                self._wake_at = wake_at
                self._monitor_asleep = not ticking
                self._cond.wait(None if wake_at == math.inf else max(0.0, wake_at - now))
                if self._monitor_asleep:
                    self._monitor_asleep = False
                    quiet = 0
        finally:
            lock.release()

    def _wake_timer_locked(self) -> None:
        """Wake the monitor if the core stopped or has a deadline before its wake-up."""
        conn = self._conn
        if conn is None:
            return
        if self._code is not None or conn.state is ModuleState.CLOSED:
            self._cond.notify()
            return
        deadline = conn.get_timer()
        if deadline is not None and deadline < self._wake_at:
            self._cond.notify()

    def _finish_locked(self, code: int) -> None:
        if self._code is None:
            self._code = code
        self._cond.notify()

    # ------------------------------------------------------------ pool threads
    def _room_locked(self) -> int:
        """Requests that may still be taken from the core (see "Threads and locks")."""
        return self._capacity + 1 - self._in_handler - len(self._ready) - len(self._rotations)

    def _reader_wanted_locked(self) -> bool:
        """True when nobody takes input (reads stdin, or pulls lines already read from
        the core) but someone should."""
        return (
            not self._reading
            and (self._core_more or not self._input_done)
            and self._code is None
            and self._room_locked() > 0
        )

    def _need_reader_locked(self) -> None:
        """Called before blocking on an answer that comes on stdin: wake a reader."""
        if self._reader_wanted_locked():
            self._kick_locked(1)

    def _kick_locked(self, wanted: int) -> None:
        """Wake up to ``wanted`` idle pool threads, starting new ones if too few are idle
        (at most ``max_workers + 1`` threads in all); wake a sleeping monitor."""
        if self._monitor_asleep:
            self._cond.notify()
        woken = min(wanted, self._idle)
        if woken:
            self._idle -= woken
            self._follow_cond.notify(woken)
        for _ in range(min(wanted - woken, self._max_workers + 1 - self._threads)):
            self._start_thread_locked(spare=True)

    def _start_thread_locked(self, *, spare: bool) -> None:
        conn = self._conn
        assert conn is not None
        self._threads += 1
        threading.Thread(
            target=self._pool,
            args=(conn, self._read_fd, spare),
            name=f"pywatt-{'spare' if spare else 'leader'}",
            daemon=True,
        ).start()

    def _pool(self, conn: ModuleConnection, fd: int, spare: bool) -> None:
        """A pool thread: run ready work, else write pending output, else lead (read
        stdin), else wait. Returns when the module stops (or, for a spare, when idle)."""
        lock = self._lock
        lock.acquire()
        try:
            while self._conn is conn:
                ready = self._ready
                if ready and self._in_handler < self._max_workers:
                    job = ready.popleft()
                    self._pops += 1
                    self._in_handler += 1
                    lock.release()
                    if type(job) is RequestReceived:
                        try:
                            self._serve(conn, job)  # returns holding _lock
                        except BaseException:  # raised before it took the lock
                            _log.exception("request %s failed", job.request_id)
                            lock.acquire()
                    else:
                        try:
                            job()  # type: ignore[operator]  # not a RequestReceived
                        except BaseException:  # a job never raises; keep the thread alive
                            _log.exception("job failed")
                        finally:
                            lock.acquire()
                    if self._conn is not conn:
                        return
                    self._in_handler -= 1
                    if self._room_waiters:
                        self._room_cond.notify()
                    if self._unflushed_bytes > _FLUSH_AT or self._unflushed_count >= _FLUSH_EVERY:
                        self._flush_and_unlock()  # bounds the core's output buffer
                        lock.acquire()
                    continue
                if self._unflushed:  # no more ready work: write before taking more input
                    self._flush_and_unlock()
                    lock.acquire()
                    continue
                if self._reader_wanted_locked():
                    if self._backlog > self._high_water:
                        self._reading = True
                        self._hold_input_and_unlock()
                        lock.acquire()
                        if self._conn is not conn:
                            return
                        self._reading = False
                    elif self._core_more:  # lines already read, left by the bound
                        self._pump_locked()
                    else:
                        self._reading = True
                        self._read_locked(conn, fd)
                        if self._conn is not conn:
                            return
                        self._reading = False
                    continue
                self._idle += 1
                if self._follow_cond.wait(SPARE_IDLE if spare else None):
                    continue  # the notifier took us off _idle
                # Timed out (a notify racing with the time-out may have counted us
                # already: never below zero; an undercount only starts a thread more).
                self._idle = max(0, self._idle - 1)
                if (
                    self._conn is conn
                    and not self._ready
                    and not self._unflushed
                    and not self._reader_wanted_locked()
                ):
                    self._threads -= 1  # an idle spare exits
                    return
        finally:
            lock.release()

    def _hold_input_and_unlock(self) -> None:
        """Output is not draining: keep the leader role without reading until the
        backlog is down to the low-water mark. Releases ``_lock``."""
        self._paused = True
        self._lock.release()
        with self._out_lock:
            while self._backlog > self._low_water and self._flushing:
                self._out_waiters += 1
                self._out_cond.wait()
                self._out_waiters -= 1
        self._paused = False

    def _read_locked(self, conn: ModuleConnection, fd: int) -> None:
        """Read one chunk of stdin (``_lock`` released meanwhile), feed it to the core and
        pull the ready events. Called and returns with ``_lock`` held."""
        self._reads += 1
        self._lock.release()
        try:
            chunk = os.read(fd, READ_CHUNK)
        except OSError:  # a read error counts as end of input
            chunk = b""
        self._lock.acquire()
        if self._conn is not conn:  # this serve_stdio call is over: drop the input
            return
        try:
            if chunk:
                conn.receive_data(chunk, time.monotonic())
            else:
                self._input_done = True
                conn.receive_eof()
        except ProtocolError:  # in ERROR: nothing more to feed
            self._input_done = True
            return
        self._pump_locked()
        # New deadlines are at least _min_timeout away: a ticking monitor wakes in
        # time on its own (no get_timer() per read); a sleeping one is woken here.
        if self._monitor_asleep:
            self._monitor_asleep = False
            self._cond.notify()
        elif self._min_timeout < TICK:
            self._wake_timer_locked()

    def _submit_external(self, conn: ModuleConnection, job: _Job) -> bool:
        """Queue a job from outside the pool (a channel reader): wait while there is no
        room (back-pressure on that channel), then wake a thread. False: module stopped."""
        with self._lock:
            while self._conn is conn and self._room_locked() <= 0:
                self._room_waiters += 1
                self._room_cond.wait()
                self._room_waiters -= 1
            if self._conn is not conn:
                return False
            self._ready.append(job)
            self._kick_locked(1)
            return True

    def _pump_locked(self) -> None:
        """Handle the core's events; queue the jobs (requests, rotations) in ``_ready``.

        Takes at most :meth:`_room_locked` jobs; ``_core_more`` records whether
        it stopped for that reason (rather than because the core needs data).
        """
        conn = self._conn
        assert conn is not None
        ready = self._ready
        limit = self._room_locked()
        more = True
        try:
            while limit > 0:
                event = conn.next_event()
                if type(event) is RequestReceived:  # the usual event, first
                    ready.append(event)
                    limit -= 1
                    continue
                if event is NEED_DATA:
                    more = False
                    break
                if event is END_OF_INPUT:
                    if not self._eof_logged:
                        self._eof_logged = True
                        _log.info("input closed; finishing %d in-flight request(s)", conn.in_flight)
                    more = False
                    break
                job = self._handle_event_locked(conn, event)
                if job is not None:
                    ready.append(job)
                    limit -= 1
                elif type(event) is RotationRequested:  # queued in _rotations: same bound
                    limit -= 1
        except ProtocolError as exc:
            if conn.init is None:
                _log.error("protocol failure: %s; %s", exc, NOT_AN_INIT)
            else:
                _log.error("protocol failure: %s", exc)
            self._finish_locked(1)
            more = False
        self._core_more = more
        self._unflushed = True  # heartbeat acks, 400/503 answers, ...
        if conn.state is ModuleState.CLOSED:
            self._cond.notify()

    def _handle_event_locked(
        self, conn: ModuleConnection, event: object
    ) -> RequestReceived | _Job | None:
        """Act on one core event; return it if it is a request to run (or a job for it)."""
        t = type(event)
        if t is RequestReceived:
            assert isinstance(event, RequestReceived)
            return event
        if t is SecretUpdated:
            assert isinstance(event, SecretUpdated)
            redact_secret(event.value)  # kept out of every log record from now on
            for wait in self._secret_waits.pop(event.name, ()):
                wait.value = event.value
                wait.done.set()
        elif t is SecretFailed:
            assert isinstance(event, SecretFailed)
            waits = self._secret_waits.pop(event.name, ())
            if not waits:
                _log.error("secret %r unavailable: %s", event.name, event.reason)
            for wait in waits:
                wait.error = event.reason
                wait.done.set()
        elif t is RotationRequested:
            assert isinstance(event, RotationRequested)
            self._rotations.append(partial(self._rotate, conn, event))
            if not self._rotating:
                self._rotating = True
                threading.Thread(
                    target=self._rotation_thread, args=(conn,), name="pywatt-rotation", daemon=True
                ).start()
        elif t is RequestTimedOut:
            assert isinstance(event, RequestTimedOut)
            _log.warning("request %s timed out (answered 504)", event.request_id)
        elif t is ShutdownRequested:
            assert self._conn is not None
            _log.info("shutdown requested; finishing %d in-flight request(s)", self._conn.in_flight)
            self._shutdown_channels()
        elif t is BadLine:
            assert isinstance(event, BadLine)
            _log.warning("skipped input line: %s", event.error)
        elif t is PortResponse:
            assert isinstance(event, PortResponse)
            for fn in list(self._port_listeners):
                fn(event)
        elif t is ReadyToAnnounce:
            threading.Thread(target=self._startup, name="pywatt-startup", daemon=True).start()
        elif t is Announced:
            assert isinstance(event, Announced)
            self._announced.set()
            _log.info("announced %d endpoint(s)", len(event.announce.endpoints))
        elif t is InitReceived:
            assert isinstance(event, InitReceived)
            _log.debug("init received")
            init = event.init
            if init.tcp_channel is not None or init.ipc_channel is not None:
                threading.Thread(
                    target=self._open_channels,
                    args=(event.init,),
                    name="pywatt-channels",
                    daemon=True,
                ).start()
        elif t is RoutedModuleMessage:
            assert isinstance(event, RoutedModuleMessage)
            if self._routed_handlers:
                return partial(self._routed, event)
            _log.info("routed message from %s dropped (no handler)", event.source_module_id)
        elif not self._call_event_locked(event):
            _log.debug("ignored message %s", t.__name__)
        return None

    def _flush_and_unlock(self) -> None:
        """Move the core's output to ``_out`` and write it, in order; releases ``_lock``.

        The bytes are taken from the core and appended to ``_out`` under
        ``_lock`` (so in the core's order). One thread at a time is the
        *flusher*: it writes ``_out`` holding only ``_out_lock`` for the list
        operations, never ``_lock``, and loops until ``_out`` is empty;
        threads that queue output meanwhile leave it to that flusher.
        ``_backlog`` counts the bytes not yet written.
        """
        conn, writer = self._conn, self._writer
        data = conn.data_to_send() if conn is not None else b""
        self._unflushed = False
        self._unflushed_bytes = 0
        self._unflushed_count = 0
        self._flushes += 1
        out_lock = self._out_lock
        out_lock.acquire()
        if data:
            self._backlog += len(data)
            if not self._flushing and not self._out and writer is not None:
                self._flushing = True  # the usual case: write this chunk straight away
                out_lock.release()
                self._lock.release()
                self._write_out(writer, data)
                return
            self._out.append(data)
        flusher = bool(self._out) and not self._flushing and writer is not None
        if flusher:
            self._flushing = True
        out_lock.release()
        self._lock.release()
        if flusher:
            assert writer is not None
            self._write_out(writer, None)

    def _write_out(self, writer: BlockingWriter, chunk: bytes | None) -> None:
        """The flusher's loop: write ``chunk`` (if any), then ``_out`` until it is empty
        (or the output failed). Only the flusher writes, so writes never overlap."""
        out_lock = self._out_lock
        out_lock.acquire()
        try:
            while True:
                if chunk is not None:
                    # In pieces of at most a pipe's capacity; each piece leaves the backlog
                    # as it is handed to the kernel, so a paused leader resumes before the
                    # last bytes reach the orchestrator, not after.
                    size = len(chunk)
                    view = memoryview(chunk) if size > _WRITE_PIECE else chunk
                    for start in range(0, size, _WRITE_PIECE):
                        piece = view[start : start + _WRITE_PIECE]
                        self._backlog -= len(piece)
                        if self._out_waiters:  # a paused leader may resume
                            self._out_cond.notify_all()
                        out_lock.release()
                        writer.write_locked(piece)  # only the flusher writes: no writer lock
                        out_lock.acquire()
                        if writer.failed:
                            break
                out = self._out
                if not out or writer.failed:
                    break
                chunk = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
            failed = writer.failed
            if failed:
                self._out.clear()
                self._backlog = 0
            self._flushing = False
            if self._out_waiters:  # a paused reader, or serve_stdio waiting for the end
                self._out_cond.notify_all()
        finally:
            out_lock.release()
        if failed:
            with self._lock:
                self._finish_locked(1)

    def _on_write_error(self, exc: OSError) -> None:
        # Runs under the writer's lock, without _lock: the flusher reports it afterwards.
        _log.error("protocol output failed (%s); stopping", exc)

    # ------------------------------------------------------------- signals
    def _install_sigterm(self) -> Any:
        """Treat SIGTERM like ``shutdown``; return the previous handler (None if not set)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.signal(signal.SIGTERM, self._on_sigterm_signal)
        except (ValueError, OSError):  # pragma: no cover - exotic embedding
            return None

    def _on_sigterm_signal(self, signum: int, frame: object) -> None:
        # Runs in the main thread between bytecodes, possibly inside a lock wait: hand the
        # work to a thread so no lock is taken from the signal handler itself.
        threading.Thread(target=self._begin_shutdown, name="pywatt-sigterm", daemon=True).start()

    def _begin_shutdown(self) -> None:
        """Stop accepting requests (503) and finish in-flight ones, as ``shutdown`` does."""
        self._lock.acquire()
        conn = self._conn
        if conn is None or conn.state is ModuleState.AWAITING_INIT:
            if conn is not None:
                self._finish_locked(0)
            self._lock.release()
            return
        _log.info("SIGTERM: finishing %d in-flight request(s)", conn.in_flight)
        try:
            conn.begin_shutdown()
        except ProtocolError:
            self._finish_locked(0)
        self._shutdown_channels()
        self._wake_timer_locked()
        self._flush_and_unlock()

    # ------------------------------------------------------- framed channels
    def _open_channels(self, init: Any) -> None:
        """Connect the channels init offers (own thread); a required one that fails stops
        the module with status 1, an optional one is logged and skipped."""
        from pywatt_proto._channel import channel_targets

        from ._channel import SyncChannel

        channels = [
            SyncChannel(target, on_event=self._on_channel_event) for target in channel_targets(init)
        ]
        with self._lock:
            if self._conn is None:
                return
            self._channels.extend(channels)
        for ch in channels:
            failure = ch.start()
            if failure is None:
                continue
            what = ch.target.describe()
            if ch.target.required:
                _log.critical(
                    "required %s could not be connected after %d attempt(s): %s; exiting",
                    what,
                    ch.conn.attempts,
                    failure,
                )
                with self._lock:
                    self._finish_locked(1)
            else:
                _log.warning("%s could not be connected (%s); continuing on stdio", what, failure)

    def _on_channel_event(self, channel: SyncChannel, event: ChannelEvent) -> None:
        """Handle one event of a channel (on its reader thread, channel lock not held)."""
        from pywatt_proto._channel import BadFrame

        t = type(event)
        if t is RequestReceived:
            assert isinstance(event, RequestReceived)
            with self._lock:
                conn = self._conn
                if conn is None:
                    return
                self._channel_jobs += 1
            if not self._submit_external(conn, lambda: self._serve_channel(channel, event)):
                with self._lock:
                    self._channel_jobs -= 1
        elif t is RequestTimedOut:
            assert isinstance(event, RequestTimedOut)
            _log.warning("%s: request %s timed out (answered 504)", channel, event.request_id)
        elif t is ShutdownRequested:
            _log.info("shutdown requested on %s", channel.target.describe())
            self._begin_shutdown()
        elif t is BadFrame:
            assert isinstance(event, BadFrame)
            _log.warning("%s: skipped frame: %s", channel.target.describe(), event.error)
        else:
            self._lock.acquire()
            conn = self._conn
            if conn is not None:
                job = self._handle_event_locked(conn, event)  # requests: RequestReceived
                if job is not None and not isinstance(job, RequestReceived):
                    self._ready.append(job)  # a routed-message handler
                    self._kick_locked(1)
            self._flush_and_unlock()

    def _serve_channel(self, channel: SyncChannel, event: RequestReceived) -> None:
        try:
            try:
                response = dispatch(self.router, event.to_router_request(), time.monotonic)
            except Exception as exc:  # dispatch never raises; belt and braces
                _log.exception("request %s failed", event.request_id, exc_info=exc)
                response = self.router.error_response(exc)
            channel.send_response(
                event.request_id, response.status, response.headers, response.body
            )
        finally:
            with self._lock:
                self._channel_jobs -= 1
                if self._stopping and self._channel_jobs == 0:
                    self._cond.notify()

    def _shutdown_channels(self) -> None:
        for ch in self._channels:
            ch.begin_shutdown()

    def _close_channels(self, *, drain: bool) -> None:
        """Stop the channels; with ``drain``, first let their in-flight handlers answer
        (up to the request timeout)."""
        with self._lock:
            channels, self._channels = self._channels, []
            if not channels:
                return
            for ch in channels:
                ch.begin_shutdown()
            if drain:
                self._stopping = True
                limit = self._request_timeout if self._request_timeout is not None else 30.0
                give_up = time.monotonic() + limit
                while self._channel_jobs and time.monotonic() < give_up:
                    self._cond.wait(give_up - time.monotonic())
        for ch in channels:
            ch.close()

    # ------------------------------------------------------------------- jobs
    def _serve(self, conn: ModuleConnection, event: RequestReceived) -> None:
        """Run one stdio request (``_lock`` not held); return holding ``_lock``.

        The answer stays in the core until the thread (or the monitor) writes
        the core's output.
        """
        rid = event.request_id
        try:
            request: Request = event.to_router_request()
            response: Response = dispatch(self.router, request, time.monotonic)
        except Exception as exc:  # dispatch never raises; belt and braces
            _log.exception("request %s failed", rid, exc_info=exc)
            response = self.router.error_response(exc)
        self._lock.acquire()
        if self._conn is not conn:
            return
        try:
            conn.send_response(rid, response.status, response.headers, response.body)
        except ProtocolError as exc:
            _log.error("could not answer request %s: %s", rid, exc)
        self._unflushed = True
        self._unflushed_bytes += len(response.body)
        self._unflushed_count += 1
        if conn.state is ModuleState.CLOSED:
            self._cond.notify()

    def _startup(self) -> None:
        """Call the on_startup hooks (own thread), then announce; a failing hook stops the
        module with status 1."""
        for fn in list(self._startup_hooks):
            try:
                fn()
            except Exception:
                _log.exception("on_startup hook %s failed; exiting without announcing", _name(fn))
                with self._lock:
                    self._finish_locked(1)
                return
        self._lock.acquire()
        conn = self._conn
        if conn is None or conn.state is not ModuleState.STARTING:
            self._lock.release()  # shutdown or end of input arrived meanwhile
            return
        conn.announce(self._startup_listen)
        self._pump_locked()
        if self._ready:
            self._kick_locked(len(self._ready))
        self._wake_timer_locked()
        self._flush_and_unlock()

    def _rotation_thread(self, conn: ModuleConnection) -> None:
        """Run the queued rotation callbacks in order; end when none is left."""
        with self._lock:
            while self._conn is conn and self._rotations:
                job = self._rotations.popleft()
                self._lock.release()
                try:
                    job()
                except BaseException:  # _rotate never raises; keep going regardless
                    _log.exception("rotation failed")
                finally:
                    self._lock.acquire()
            if self._conn is conn:
                self._rotating = False

    def _rotate(self, conn: ModuleConnection, event: RotationRequested) -> None:
        error: str | None = None
        for fn in list(self._rotation_callbacks):
            try:
                fn(event.keys)
            except Exception as exc:
                _log.exception("rotation callback failed (rotation %s)", event.rotation_id)
                error = rotation_failed(exc)
                break
        self._lock.acquire()
        if self._conn is not conn:
            self._lock.release()
            return
        try:
            conn.ack_rotation(event.rotation_id, error=error)
        except ProtocolError as exc:
            _log.error("could not acknowledge rotation %s: %s", event.rotation_id, exc)
        self._flush_and_unlock()
