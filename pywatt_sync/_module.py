"""``pywatt_sync.Module``: the decorator API over ``ModuleConnection``, with threads
(plain ``def`` handlers, blocking database drivers, WSGI apps; the same API as
``pywatt_asyncio.Module``).

Each :meth:`Module.serve_stdio` builds one :class:`_Session`: the core, the ordered output
(:class:`~pywatt_sync._stdio.OutputQueue`) and the :class:`~pywatt_sync._scheduler.Scheduler`
that decides which thread reads, runs handlers, writes or waits (leader/follower: a request
is usually run by the thread that read it). The session is the scheduler's *source*.

* At most ``max_workers`` threads are inside handlers (plus one to read) and
  ``max_queued`` requests wait for one; past both, stdin is still read (heartbeats,
  ``secret`` answers) and new requests are answered 503 at once (as uvicorn's
  ``limit_concurrency``). Above ``max_output_backlog`` unwritten bytes nobody reads
  stdin until it is down to a sixteenth (the asyncio driver's marks).
* A handler's thread cannot be interrupted: past its 504 it keeps its worker until it
  returns; at the end such threads are abandoned (daemon threads) and ``serve_stdio``
  returns :data:`EXIT_ABANDONED`. A handler raising ``SystemExit`` or
  ``KeyboardInterrupt`` is answered 500 and logged; the module goes on.
* Rotation callbacks run in order on their own thread (``pywatt-rotation``), counted
  against the queue bound; on_startup hooks on another. Framed channels offered by init
  get a :class:`~pywatt_sync._channel.SyncChannel` each (a reader thread) and share the
  queue; a required one that cannot be connected stops the module with status 1.
  SIGTERM is a graceful shutdown, like the ``shutdown`` op.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from pywatt_asyncio._guard import guard_stdout, run_until_exit
from pywatt_proto._bodies import SkippedLineLog
from pywatt_proto._driver import CoreEvents, ModuleBase, callable_name, channel_failed, escaped
from pywatt_proto._errors import ProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._hints import rotation_failed
from pywatt_proto._lazylog import LazyLogger
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
    SecretUnavailable,
    ShutdownRequested,
    forwarded_client_filler,
)
from pywatt_proto._router import Response, Router
from pywatt_proto._secrets import convert_secret
from pywatt_proto._serving import clear_serving, set_serving

from ._dispatch import dispatch
from ._scheduler import Scheduler, start_daemon
from ._stdio import READ_CHUNK, BlockingWriter, OutputQueue

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:  # and imported lazily: most modules never negotiate a port or open a channel
    from concurrent.futures import Future
    from typing import Any, Final, TypeVar, overload

    from pywatt_proto._channel import ChannelEvent
    from pywatt_proto._messages import (
        Init,
        RoutedModuleMessage,
        ServiceProviderInfo,
        ServiceType,
    )
    from pywatt_proto._ports import PortResult

    from ._channel import SyncChannel
    from ._ports import PortNegotiation

    _F = TypeVar("_F", bound=Callable[..., Any])
    _T = TypeVar("_T")


_FILL_CLIENT = forwarded_client_filler(os.environ)  # run by ``pywatt run``

_log = LazyLogger("pywatt.module")  # loads logging for the first emitted record

#: Threads inside handlers at most. Fast handlers all run on one thread (the one that
#: read them); more threads are started only while handlers block. Blocking handlers
#: spend most of their time waiting on I/O, so more threads than cores pays; but every
#: runnable thread also competes for the GIL. 16 keeps 16 blocking calls going at once.
DEFAULT_MAX_WORKERS: Final = 16
#: Requests read and waiting for a thread (beyond those inside handlers). A 64-request
#: burst fits; past it, while every worker is busy, new requests are answered 503.
DEFAULT_MAX_QUEUED: Final = 64
#: Output taken from the core but not yet written, in bytes, above which stdin is not
#: read until the backlog is down to a sixteenth of it. Same marks as the asyncio
#: driver's write buffer (16 MiB / 1 MiB): one maximal response line fits, and a
#: stalled orchestrator cannot make the module buffer without bound.
DEFAULT_MAX_OUTPUT_BACKLOG: Final = 16 * 1024 * 1024
#: Seconds without progress after which serve_stdio stops waiting at exit for the last
#: output to be written (status 1; the asyncio driver's flush_and_close waits as long):
#: an orchestrator that no longer reads cannot keep the module from exiting.
FINAL_FLUSH_TIMEOUT: Final = 5.0

#: serve_stdio's status when it stopped with handler threads still running (past
#: their 504; abandoned as daemon threads).
EXIT_ABANDONED: Final = 3

_CLOSED: Final = ModuleState.CLOSED
_OVERLOADED_HEADERS: Final = (("content-type", "application/json"),)
_OVERLOADED_BODY: Final = b'{"error":"every worker is busy"}'


class _SecretWait:
    """A ``secret()`` call waiting for its answer (``value``) or failure (``error``)."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class _Session(CoreEvents):
    """One ``serve_stdio`` call: core, output, scheduler; the scheduler's source.

    Everything mutable here is guarded by ``lock`` (the scheduler's) unless noted.
    """

    _conn: ModuleConnection

    def __init__(self, module: Module, conn: ModuleConnection, out: OutputQueue, fd: int) -> None:
        self.module = module
        self._conn = conn
        self.out = out
        self.fd = fd
        self.pipe_fds: tuple[int, ...] = (fd,)  # stdin and the protocol's stdout (serve_stdio)
        self.router = module.router
        self.sched = Scheduler(self, max_workers=module._max_workers, max_queued=module._max_queued)
        self.pool = self.sched.pool
        self.lock = self.sched.lock
        self.high_water = module._high_water
        self.low_water = module._high_water // 16
        timeouts = (module._request_timeout, module._secret_timeout)
        self.min_timeout = min(math.inf if t is None else t for t in timeouts)
        self.code: int | None = None
        self.paused = False  # the reader waits for the output backlog to drain (no lock)
        self.eof_logged = False
        # Skipped input lines: a few logged in full, then rate-limited summaries (issue 11.16).
        self._skipped_lines = SkippedLineLog()
        self._secret_waiters: dict[str, list[Any]] = {}
        self._call_waiters: dict[object, Any] = {}
        self._port_listeners = module._port_listeners
        self._routed_handlers = module._routed_handlers
        self.rotations: deque[tuple[str, tuple[str, ...]]] = deque()  # not yet run
        self.rotating = False  # the rotation thread is running
        self.channels: list[SyncChannel] = []
        self.channel_jobs = 0  # channel requests being handled
        self.draining = False  # serve_stdio waits for channel_jobs to reach 0
        self.drained = threading.Condition(self.lock)

    # ------------------------------------------------------- the scheduler's source
    def read(self) -> bytes:
        out = self.out
        if out.backlog > self.high_water:  # output is not draining: hold input
            self.paused = True
            out.wait_below(self.low_water)
            self.paused = False
        try:
            return os.read(self.fd, READ_CHUNK)
        except OSError:  # a read error counts as end of input
            return b""

    def take(self, chunk: bytes | None, ready: deque[object], room: int, shed: bool) -> bool:
        conn = self._conn
        more = False
        try:
            if chunk:
                conn.receive_data(chunk, time.monotonic())
            elif chunk is not None:
                conn.receive_eof()
            while True:
                if room <= 0 and not shed:
                    more = True  # the rest waits in the core until a worker frees room
                    break
                event = conn.next_event()
                if type(event) is RequestReceived:  # the usual event, first
                    if room > 0:
                        ready.append(event)
                        room -= 1
                    else:  # every worker busy, queue full: refuse now, keep reading
                        conn.send_response(
                            event.request_id, 503, _OVERLOADED_HEADERS, _OVERLOADED_BODY
                        )
                    continue
                if event is NEED_DATA:
                    break
                if event is END_OF_INPUT:
                    if not self.eof_logged:
                        self.eof_logged = True
                        self.input_closed(time.monotonic())
                    break
                job = self.on_event(event, time.monotonic())
                if job is not None:  # a routed-message handler to run
                    ready.append(job)
                    room -= 1
                elif type(event) is RotationRequested:  # reserved: same bound
                    room -= 1
        except ProtocolError as exc:
            self.protocol_failed(exc)
            self.finish(1)
            return False
        data = conn.data_to_send()
        if data:  # acks, 400s, 503s and any answers still in the core, in order
            self.out.append(data)
            self.pool.note_output(0, urgent=True)
        if conn.state is _CLOSED:
            self.finish(0)
        return more

    def run(self, job: object) -> int:
        if type(job) is not RequestReceived:  # a channel request (answers on its channel)
            try:
                job()  # type: ignore[operator]
            except BaseException:  # never raises; keep the thread alive regardless
                _log.exception("job failed")
            self.lock.acquire()
            return -1
        rid = job.request_id
        response: Response
        try:
            request = job.to_router_request()
            if _FILL_CLIENT is not None:  # run by ``pywatt run``: client from its proxy
                _FILL_CLIENT(request)
            response = dispatch(self.router, request, time.monotonic)
        except BaseException as exc:  # dispatch never raises; the thread must not either
            response = escaped(self.router, f"request {rid}", exc)
        self.lock.acquire()
        conn = self._conn
        try:
            if not conn.send_response(rid, response.status, response.headers, response.body):
                return -1  # answered 504 already: the late answer is dropped
        except ProtocolError as exc:
            _log.error("could not answer request %s: %s", rid, exc)
            return -1
        if conn.state is _CLOSED:
            self.finish(0)
        return len(response.body)

    def flush(self) -> None:
        out = self.out
        first = out.claim(self._conn.data_to_send())
        self.lock.release()
        if first is not None and not out.drain(first):
            with self.lock:
                self.finish(1)

    def timer(self, now: float) -> tuple[float | None, bool]:
        conn = self._conn
        deadline = conn.get_timer()
        fired = deadline is not None and deadline <= now
        if fired:
            conn.handle_timer(now)
            deadline = conn.get_timer()
        if conn.state is _CLOSED:
            self.finish(0)
        wake = now + self.min_timeout  # deadlines made later are never earlier than this
        if deadline is not None and deadline < wake:
            wake = deadline
        return (None if wake == math.inf else wake), fired

    # ------------------------------------------------------------------ events
    def finish(self, code: int) -> None:
        """Stop with ``code`` (the first one set wins); lock held."""
        if self.code is None:
            self.code = code
        self.sched.stop_locked()

    # CoreEvents hooks (lock held)
    def _settle(self, waiter: Any, value: object, error: BaseException | None) -> None:
        if type(waiter) is _SecretWait:
            waiter.value, waiter.error = value, error
            waiter.done.set()
        elif waiter.set_running_or_notify_cancel():  # a concurrent.futures.Future
            if error is None:
                waiter.set_result(value)
            else:
                waiter.set_exception(error)

    def _timed_out(self, request_id: str) -> None:
        if self.pool.discard(lambda job: getattr(job, "request_id", None) == request_id):
            _log.warning("request %s timed out waiting for a worker (answered 504)", request_id)
        else:
            _log.warning("request %s timed out (answered 504)", request_id)

    def _rotate(self, event: RotationRequested) -> None:
        self.rotations.append((event.rotation_id, event.keys))
        self.pool.reserved += 1
        if not self.rotating:
            self.rotating = True
            start_daemon(self.rotate, "pywatt-rotation")

    def _shutdown_channels(self) -> None:
        for ch in self.channels:
            ch.begin_shutdown()

    def _start_startup(self) -> None:
        start_daemon(self.startup, "pywatt-startup")

    def _announced(self) -> None:
        self.module._announced.set()

    def _init_received(self, init: Init, extensions: frozenset[str]) -> None:
        if EXT_BASE64_BODIES in extensions:  # bodies may be large from now on
            from pywatt_asyncio._guard import grow_pipes

            grow_pipes(*self.pipe_fds)
        if init.tcp_channel is not None or init.ipc_channel is not None:
            start_daemon(partial(self.open_channels, init), "pywatt-channels")

    def _run_routed(self, msg: RoutedModuleMessage) -> Callable[[], None]:
        return partial(self.module._routed, msg)

    # ------------------------------------------------------- asked by handlers
    def write(self) -> None:
        """Write what the core holds (from a thread outside the pool; lock free)."""
        self.lock.acquire()
        self.flush()

    def expect_answer_locked(self) -> None:
        """A message answered on stdin was queued: wake the monitor for its deadline and
        have someone read (a handler is about to block on the answer)."""
        self.sched.wake_monitor_locked(self._conn.get_timer())
        self.sched.need_reader_locked()

    def secret(self, name: str, timeout: float | None) -> str:
        """``Module.secret`` without the conversion."""
        with self.lock:
            value = self._conn.get_secret(name, time.monotonic())
            if value is not None:
                return value
            if self.pool.stopped:
                raise SecretUnavailable(f"{name}: module stopped")
            wait = _SecretWait()
            self._secret_waiters.setdefault(name, []).append(wait)
            self.expect_answer_locked()
        self.write()
        if not wait.done.wait(timeout):
            raise SecretUnavailable(f"{name}: timed out")
        if wait.error is not None:
            raise wait.error
        assert isinstance(wait.value, str)
        return wait.value

    def future(self, key: object) -> Future[Any]:
        """A future for the call or registry request ``key`` just started (lock held)."""
        from concurrent.futures import Future

        fut: Future[Any] = Future()
        self._call_waiters[key] = fut
        self.expect_answer_locked()
        return fut

    def call_done(self, rid: str, fut: Future[Any]) -> None:
        """A call's future is done: a cancelled one is forgotten by the core too."""
        if fut.cancelled():
            with self.lock:
                if self._call_waiters.pop(rid, None) is not None and not self.pool.stopped:
                    self._conn.cancel_call(rid)

    # ------------------------------------------------------- own threads
    def startup(self) -> None:
        """Call the on_startup hooks (own thread), then announce; a failing hook stops the
        module with status 1."""
        for fn in list(self.module._startup_hooks):
            try:
                fn()
            except Exception:
                _log.exception(
                    "on_startup hook %s failed; exiting without announcing", callable_name(fn)
                )
                with self.lock:
                    self.finish(1)
                return
        self.lock.acquire()
        conn = self._conn
        if conn.state is not ModuleState.STARTING or self.pool.stopped:
            self.lock.release()  # shutdown or end of input arrived meanwhile
            return
        conn.announce(self.module._startup_listen)
        self.sched.take_locked()
        self.flush()

    def rotate(self) -> None:
        """Run the queued rotations in order (own thread); end when none is left."""
        lock = self.lock
        lock.acquire()
        while self.rotations and not self.pool.stopped:
            rotation_id, keys = self.rotations.popleft()
            lock.release()
            error: str | None = None
            for fn in list(self.module._rotation_callbacks):
                try:
                    fn(keys)
                except Exception as exc:
                    _log.exception("rotation callback failed (rotation %s)", rotation_id)
                    error = rotation_failed(exc)
                    break
            lock.acquire()
            self.sched.unreserve_locked()
            try:
                self._conn.ack_rotation(rotation_id, error=error)
            except ProtocolError as exc:
                _log.error("could not acknowledge rotation %s: %s", rotation_id, exc)
            self.flush()
            lock.acquire()
        self.rotating = False
        lock.release()

    def begin_shutdown(self) -> None:
        """Stop accepting requests (503) and finish in-flight ones, as ``shutdown`` does."""
        self.lock.acquire()
        conn = self._conn
        if conn.state is ModuleState.AWAITING_INIT:
            self.finish(0)
            self.lock.release()
            return
        _log.info("SIGTERM: finishing %d in-flight request(s)", conn.in_flight)
        try:
            conn.begin_shutdown()
        except ProtocolError:
            self.finish(0)
        self._shutdown_channels()
        self.sched.wake_monitor_locked()
        self.flush()

    # ------------------------------------------------------- framed channels
    def open_channels(self, init: Init) -> None:
        """Connect the channels init offers (own thread); a required one that fails stops
        the module with status 1, an optional one is logged and skipped."""
        from pywatt_proto._channel import channel_targets

        from ._channel import SyncChannel

        channels = [
            SyncChannel(target, on_event=self.on_channel_event) for target in channel_targets(init)
        ]
        with self.lock:
            if self.pool.stopped:
                return
            self.channels.extend(channels)
        for ch in channels:
            failure = ch.start()
            if failure is not None and channel_failed(ch.target, ch.conn.attempts, failure):
                with self.lock:
                    self.finish(1)

    def on_channel_event(self, channel: SyncChannel, event: ChannelEvent) -> None:
        """Handle one event of a channel (on its reader thread, channel lock not held)."""
        from pywatt_proto._channel import BadFrame

        if isinstance(event, RequestReceived):
            with self.lock:
                self.channel_jobs += 1
            if not self.sched.submit(lambda: self.serve_channel(channel, event)):
                with self.lock:
                    self.channel_jobs -= 1
        elif isinstance(event, RequestTimedOut):
            _log.warning("%s: request %s timed out (answered 504)", channel, event.request_id)
        elif isinstance(event, ShutdownRequested):
            _log.info("shutdown requested on %s", channel.target.describe())
            self.begin_shutdown()
        elif isinstance(event, BadFrame):
            _log.warning("%s: skipped frame: %s", channel.target.describe(), event.error)
        else:
            self.lock.acquire()
            job = self.on_event(event, time.monotonic())  # a request comes as RequestReceived
            self.flush()
            if job is not None:  # a routed-message handler
                self.sched.submit(job)

    def serve_channel(self, channel: SyncChannel, event: RequestReceived) -> None:
        try:
            response = dispatch(self.router, event.to_router_request(), time.monotonic)
            channel.send_response(
                event.request_id, response.status, response.headers, response.body
            )
        finally:
            with self.lock:
                self.channel_jobs -= 1
                if self.draining and self.channel_jobs == 0:
                    self.drained.notify()

    def close_channels(self, *, drain: bool) -> None:
        """Stop the channels; with ``drain``, first let their in-flight handlers answer
        (up to the request timeout)."""
        with self.lock:
            channels, self.channels = self.channels, []
            if not channels:
                return
            for ch in channels:
                ch.begin_shutdown()
            if drain:
                self.draining = True
                limit = self.module._request_timeout
                give_up = time.monotonic() + (30.0 if limit is None else limit)
                while self.channel_jobs and time.monotonic() < give_up:
                    self.drained.wait(give_up - time.monotonic())
        for ch in channels:
            ch.close()


class Module(ModuleBase):
    """A PyWatt module served over the process's stdin/stdout with threads.

    Args:
        secrets: names fetched after init and before the announce.
        max_workers: threads inside handlers at most.
        max_queued: requests waiting for a thread; beyond, while every worker is
            busy, new requests are answered 503.
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
        self._high_water = max_output_backlog
        self._max_in_flight = max_in_flight
        self._request_timeout = request_timeout
        self._secret_timeout = secret_timeout
        self._listen = listen
        self._port_listeners = []
        self._negotiation: PortNegotiation | None = None
        self._serving = threading.Lock()  # guards _session being set and cleared
        self._session: _Session | None = None
        self._conn = None  # the session's, while serving
        self._announced = threading.Event()
        self._startup_listen = None

    # ------------------------------------- services (set_listen, connection, init: ModuleBase)
    @property
    def output_backlog(self) -> int:
        """Bytes of protocol output taken from the core and not yet handed to a write
        (the flusher writes at most 64 KiB per call)."""
        session = self._session
        return session.out.backlog if session is not None else 0

    @property
    def reading_paused(self) -> bool:
        """True while stdin reading is paused because output is not draining."""
        session = self._session
        return session is not None and session.paused and session.out.backlog > session.low_water

    def _serving_session(self, what: str) -> _Session:
        session = self._session
        if session is None:
            raise RuntimeError(f"Module.{what}() needs a running module (serve_stdio)")
        return session

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
        value = self._serving_session("secret").secret(name, timeout)
        return value if type is None else convert_secret(name, value, type)

    def submit_call(
        self, module_id: str, endpoint: str, payload: object = None, *, timeout: float | None = None
    ) -> Future[Any]:
        """Start a call like :meth:`call_module` without blocking; return a
        ``concurrent.futures.Future`` resolved with the reply or the call's ``CallError``.
        Many calls may be in flight from one thread. Cancelling the future forgets the call.

        Raises ``CallRejectedError`` (too many in flight, input closed), ``LocalProtocolError``
        for bad arguments and ``RuntimeError`` when the module is not serving.
        """
        session = self._serving_session("call_module")
        with session.lock:
            conn = session._conn
            rid = conn.start_call(module_id, endpoint, payload, time.monotonic(), timeout=timeout)
            fut = session.future(rid)
        fut.add_done_callback(partial(session.call_done, rid))
        session.write()
        return fut

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
        result = self._registry_request("register_service_provider", msg)
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
        result = self._registry_request("discover_service_providers", msg)
        assert isinstance(result, tuple)
        return result

    def _registry_request(self, what: str, msg: Any) -> object:
        session = self._serving_session(what)
        with session.lock:
            token = session._conn.start_service_request(msg, time.monotonic())
            fut = session.future(("registry", token))
        session.write()
        return fut.result()

    def _routed(self, msg: RoutedModuleMessage) -> None:
        message = self._routed_message(msg)
        if message is None:
            return
        for fn in list(self._routed_handlers):
            try:
                fn(message)
            except Exception:
                _log.exception("routed message handler %s failed", callable_name(fn))

    def send_message(self, message: object) -> None:
        """Send a module->orchestrator message (port_request, service_request, ...) now.

        Raises:
            RuntimeError: the module is not serving.
            LocalProtocolError: the core sends this kind of message itself.
        """
        session = self._serving_session("send_message")
        with session.lock:
            session._conn.send(message)
            session.sched.need_reader_locked()  # an answer may be awaited on stdin
        session.write()

    def negotiate_port(self, specific_port: int | None = None) -> PortResult:
        """Return the TCP port to serve on: the init's ``listen`` port, or one negotiated
        with ``port_request`` (see ``pywatt_sync.negotiate_port``). Blocks the calling
        thread; one negotiation state (breaker, back-off) is kept per module.

        Raises:
            PortNegotiationError: no port could be obtained.
            RuntimeError: the module is not serving.
        """
        from ._ports import PortNegotiation, negotiate_port

        session = self._serving_session("negotiate_port")
        with session.lock:
            if self._negotiation is None:
                self._negotiation = PortNegotiation(send=self.send_message)
                self.add_port_listener(self._negotiation.feed_response)
            negotiation = self._negotiation
        return negotiate_port(negotiation, init=session._conn.init, specific_port=specific_port)

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Serve stdin/stdout until shutdown or end of input, then exit the process.

        Sets up stderr logging if none is configured (``logging`` itself is
        imported for the first record at or above the level, see
        :mod:`pywatt_proto._lazylog`). Exits with status 0 on a clean stop, 1 on
        a protocol failure, :data:`EXIT_ABANDONED` (3) when handler threads were
        still running past their 504, 130 on Ctrl-C.
        """
        run_until_exit(self.serve_stdio)

    def serve_stdio(
        self, *, read_fd: int = 0, write_fd: int | None = None, guard: bool = True
    ) -> int:
        """Serve the protocol on ``read_fd``/``write_fd`` (default: stdin and the real stdout).

        With ``guard`` (default) and no ``write_fd``, fd 1 and ``sys.stdout``
        are redirected to stderr first. Blocks until the core is CLOSED
        (shutdown or end of input, every in-flight request answered or timed out)
        or the link fails. Returns 0 after a clean stop, 1 after a protocol or
        output failure, :data:`EXIT_ABANDONED` after a clean stop that leaves
        handler threads running (past their 504; daemon threads, abandoned).

        Raises:
            RuntimeError: the module is already serving.
        """
        with self._serving:
            if self._session is not None:
                raise RuntimeError("module is already serving")
            if write_fd is None:
                write_fd = guard_stdout() if guard else 1
            out = OutputQueue(BlockingWriter(write_fd, self._on_write_error))
            self._conn = self._new_core()
            session = self._session = _Session(self, self._conn, out, read_fd)
            session.pipe_fds = (read_fd, write_fd)
        previous = self._install_sigterm(session)
        set_serving(self)
        try:
            with session.lock:
                session.sched.start_locked()
            session.sched.monitor()
        finally:
            clear_serving(self)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            code = 1 if session.code is None else session.code
            stuck = self._stop(session, drain=code == 0)
            if session.code == 1:  # also: the last output could not be written
                code = 1
            self._run_shutdown_hooks()
        if stuck and code == 0:
            _log.error("%d handler thread(s) still running past their 504: abandoned", stuck)
            code = EXIT_ABANDONED
        return code

    def _stop(self, session: _Session, *, drain: bool) -> int:
        """End ``session``: channels, last output, waiting secret() calls; return the
        number of threads still inside handlers."""
        session.close_channels(drain=drain)
        session.write()  # what the core still holds (the last responses)
        if not session.out.wait_idle(FINAL_FLUSH_TIMEOUT):  # let the flush under way finish
            _log.error("protocol output stalled for %s s: answers dropped", FINAL_FLUSH_TIMEOUT)
            session.code = 1
        with session.lock:
            session.sched.stop_locked()
            session.fail_waiters()
            stuck = session.pool.running
        with self._serving:
            self._session = self._conn = None
            self._startup_listen = None
        return stuck

    def _run_shutdown_hooks(self) -> None:
        """Run the on_shutdown hooks in order; one that raises is logged, the rest run."""
        for fn in list(self._shutdown_hooks):
            try:
                fn()
            except Exception:
                _log.exception("on_shutdown hook %s failed", callable_name(fn))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the announce has been sent; return False on timeout."""
        return self._announced.wait(timeout)

    def _on_write_error(self, exc: OSError) -> None:
        # Runs on the flusher, without the lock: the flusher stops the session afterwards.
        _log.error("protocol output failed (%s); stopping", exc)

    # ------------------------------------------------------------- signals
    def _install_sigterm(self, session: _Session) -> Any:
        """Treat SIGTERM like ``shutdown``; return the previous handler (None if not set)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum: int, frame: object) -> None:
            # Runs in the main thread between bytecodes, possibly inside a lock wait: hand
            # the work to a thread so no lock is taken from the signal handler itself.
            start_daemon(session.begin_shutdown, "pywatt-sigterm")

        try:
            return signal.signal(signal.SIGTERM, on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - exotic embedding
            return None
