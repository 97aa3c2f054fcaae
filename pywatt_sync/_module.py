"""``pywatt_sync.Module``: the decorator API over ``ModuleConnection``, with threads.

Same API as ``pywatt_asyncio.Module``, for blocking code (plain ``def`` handlers,
blocking database drivers, WSGI apps)::

    app = Module()

    @app.get("/hello")
    def hello(request):
        return {"message": "hello"}

    if __name__ == "__main__":
        app.run()

How it runs
-----------
Each :meth:`Module.serve_stdio` call builds one :class:`_Session`: the protocol core
(``ModuleConnection``), the ordered output (:class:`~pywatt_sync._stdio.OutputQueue`)
and a :class:`~pywatt_sync._scheduler.Scheduler`, which decides which thread reads,
runs handlers, writes or waits (leader/follower: a request is usually run by the
thread that read it; see that file for the model and its invariants). The session is
the scheduler's *source*: it reads stdin, feeds the core, turns core events into jobs
and answers. ``Module`` itself is the facade: registration, the services handlers
call (``secret``, ``send_message``, ``negotiate_port``) and ``run``/``serve_stdio``.

* Bounds: at most ``max_workers`` threads inside handlers (plus one more to read),
  ``max_queued`` requests waiting for one. While every worker is busy and the queue is
  full, stdin is still read -- heartbeats are acknowledged, ``secret`` answers arrive
  -- and new requests are answered ``503`` at once (as uvicorn's
  ``limit_concurrency``); a queued request the core answers ``504`` leaves the queue.
  Output waiting to be written is bounded by ``max_output_backlog``: above it nobody
  reads stdin until it is down to a sixteenth (the asyncio driver's marks).
* A handler's thread cannot be interrupted: past its ``504`` it still occupies its
  worker until it returns. At the end (shutdown or end of input, every request
  answered) such threads are abandoned (daemon threads) and ``serve_stdio`` returns
  :data:`EXIT_ABANDONED`.
* A handler that raises ``SystemExit`` or ``KeyboardInterrupt`` is answered ``500``
  at once and logged, like any other exception; the module goes on.
* Rotation callbacks run in order on their own thread (``pywatt-rotation``), so they
  run while every handler blocks; queued rotations count against the queue bound.
  on_startup hooks run on their own thread too.
* Framed channels offered by init (``tcp_channel`` / ``ipc_channel``) are connected
  with :class:`~pywatt_sync._channel.SyncChannel` (a reader thread each); their
  requests are queued with the stdio ones (the channel's reader waits while the
  queue is full) and answered on the channel. A required channel that cannot be
  connected stops the module with status 1.
* SIGTERM is a graceful shutdown, like the ``shutdown`` op.

The protocol (handshake, announce, heartbeat acks, 400/503/504 answers, secret
correlation, rotation acks) is the core's; this file only moves bytes and runs
callables.
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

from pywatt_proto._bodies import SkippedLineLog
from pywatt_proto._errors import ProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._hints import NOT_AN_INIT, rotation_failed, terminal_stdin
from pywatt_proto._lazylog import LazyLogger, basic_config
from pywatt_proto._messages import Init, PortResponse, RoutedModuleMessage
from pywatt_proto._module import (  # private modules: no package __init__ (start-up time)
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SECRET_TIMEOUT,
    EXT_BASE64_BODIES,
    Announced,
    BadLine,
    InitReceived,
    ModuleConnection,
    ModuleState,
    ReadyToAnnounce,
    RequestReceived,
    RequestTimedOut,
    ResponseTooLarge,
    RotationRequested,
    SecretFailed,
    SecretUnavailable,
    SecretUpdated,
    ShutdownRequested,
    forwarded_client_filler,
)
from pywatt_proto._router import Response, Router
from pywatt_proto._routes import RouteDecorators
from pywatt_proto._secrets import convert_secret, redact_secret
from pywatt_proto._serving import clear_serving, set_serving

from ._dispatch import dispatch
from ._scheduler import Scheduler
from ._stdio import READ_CHUNK, BlockingWriter, OutputQueue, guard_stdout

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:  # and imported lazily: most modules never negotiate a port or open a channel
    from concurrent.futures import Future
    from typing import Any, Final, TypeVar, overload

    from pywatt_proto._channel import ChannelEvent
    from pywatt_proto._messages import ServiceProviderInfo, ServiceType

    from ._channel import SyncChannel
    from ._ports import PortNegotiation, PortResult

    _F = TypeVar("_F", bound=Callable[..., Any])
    _T = TypeVar("_T")


_FILL_CLIENT = forwarded_client_filler(os.environ)  # run by ``pywatt run``

__all__ = [
    "DEFAULT_MAX_OUTPUT_BACKLOG",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_WORKERS",
    "EXIT_ABANDONED",
    "Module",
]

_log = LazyLogger("pywatt.module")  # loads logging for the first emitted record


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", fn))


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
#: Seconds serve_stdio waits at exit for the last output to be written (the asyncio
#: driver's flush_and_close waits as long): an orchestrator that no longer reads cannot
#: keep the module from exiting.
FINAL_FLUSH_TIMEOUT: Final = 5.0

#: serve_stdio's status when it stopped with handler threads still running (past
#: their 504; abandoned as daemon threads).
EXIT_ABANDONED: Final = 3

_CLOSED: Final = ModuleState.CLOSED
_OVERLOADED_HEADERS: Final = (("content-type", "application/json"),)
_OVERLOADED_BODY: Final = b'{"error":"every worker is busy"}'


def _handler_escaped(request_id: str, exc: BaseException, router: Router) -> Response:
    """Log what escaped dispatch (a handler's ``SystemExit`` or ``KeyboardInterrupt``:
    dispatch catches every ``Exception``) and return the 500 that answers it at once; the
    module goes on (a handler thread is not the process)."""
    _log.error(
        "request %s: handler raised %s; answered 500", request_id, type(exc).__name__, exc_info=exc
    )
    return router.error_response(exc)


class _SecretWait:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: str | None = None
        self.error: str | None = None


class _Session:
    """One ``serve_stdio`` call: core, output, scheduler; the scheduler's source.

    Everything mutable here is guarded by ``lock`` (the scheduler's) unless noted.
    """

    def __init__(self, module: Module, conn: ModuleConnection, out: OutputQueue, fd: int) -> None:
        self.module = module
        self.conn = conn
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
        self.skipped_lines = SkippedLineLog()
        self.secret_waits: dict[str, list[_SecretWait]] = {}
        # Module calls by call id, registry requests by ("registry", token).
        self.call_waiters: dict[object, Future[Any]] = {}
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
        conn = self.conn
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
                        _log.info("input closed; finishing %d in-flight request(s)", conn.in_flight)
                        summary = self.skipped_lines.flush(time.monotonic())
                        if summary is not None:
                            _log.warning("%s", summary)
                    break
                job = self.on_event(event)
                if job is not None:  # a routed-message handler to run
                    ready.append(job)
                    room -= 1
                elif type(event) is RotationRequested:  # reserved: same bound
                    room -= 1
        except ProtocolError as exc:
            if conn.init is None:
                _log.error("protocol failure: %s; %s", exc, NOT_AN_INIT)
            else:
                _log.error("protocol failure: %s", exc)
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
        except BaseException as exc:  # SystemExit/KeyboardInterrupt (dispatch catches the rest)
            response = _handler_escaped(rid, exc, self.router)
        self.lock.acquire()
        conn = self.conn
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
        first = out.claim(self.conn.data_to_send())
        self.lock.release()
        if first is not None and not out.drain(first):
            with self.lock:
                self.finish(1)

    def timer(self, now: float) -> tuple[float | None, bool]:
        conn = self.conn
        deadline = conn.get_timer()
        fired = deadline is not None and deadline <= now
        if fired:
            conn.handle_timer(now)
            deadline = conn.get_timer()
        if conn.state is ModuleState.CLOSED:
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

    def on_event(self, event: object) -> Callable[[], None] | None:
        """Act on one core event other than a request (lock held); return a job to queue
        (a routed-message handler), if any."""
        t = type(event)
        if t is RequestTimedOut:
            assert isinstance(event, RequestTimedOut)
            rid = event.request_id
            if self.pool.discard(lambda job: getattr(job, "request_id", None) == rid):
                _log.warning("request %s timed out waiting for a worker (answered 504)", rid)
            else:
                _log.warning("request %s timed out (answered 504)", rid)
        elif t is SecretUpdated:
            assert isinstance(event, SecretUpdated)
            redact_secret(event.value)  # kept out of every log record from now on
            for wait in self.secret_waits.pop(event.name, ()):
                wait.value = event.value
                wait.done.set()
        elif t is SecretFailed:
            assert isinstance(event, SecretFailed)
            waits = self.secret_waits.pop(event.name, ())
            if not waits:
                _log.error("secret %r unavailable: %s", event.name, event.reason)
            for wait in waits:
                wait.error = event.reason
                wait.done.set()
        elif t is RotationRequested:
            assert isinstance(event, RotationRequested)
            self.rotations.append((event.rotation_id, event.keys))
            self.pool.reserved += 1
            if not self.rotating:
                self.rotating = True
                threading.Thread(target=self.rotate, name="pywatt-rotation", daemon=True).start()
        elif t is ShutdownRequested:
            _log.info("shutdown requested; finishing %d in-flight request(s)", self.conn.in_flight)
            for ch in self.channels:
                ch.begin_shutdown()
        elif t is BadLine:
            assert isinstance(event, BadLine)
            for text in self.skipped_lines.skipped(time.monotonic(), event.line, str(event.error)):
                _log.warning("skipped input line: %s", text)
        elif t is ResponseTooLarge:
            assert isinstance(event, ResponseTooLarge)
            _log.warning("%s", event.describe())
        elif t is PortResponse:
            assert isinstance(event, PortResponse)
            for fn in list(self.module._port_listeners):
                fn(event)
        elif t is ReadyToAnnounce:
            threading.Thread(target=self.startup, name="pywatt-startup", daemon=True).start()
        elif t is Announced:
            assert isinstance(event, Announced)
            self.module._announced.set()
            _log.info("announced %d endpoint(s)", len(event.announce.endpoints))
        elif t is InitReceived:
            assert isinstance(event, InitReceived)
            _log.debug("init received")
            if EXT_BASE64_BODIES in event.extensions:  # bodies may be large from now on
                from pywatt_asyncio._guard import grow_pipes

                grow_pipes(*self.pipe_fds)
            init = event.init
            if init.tcp_channel is not None or init.ipc_channel is not None:
                threading.Thread(
                    target=self.open_channels, args=(init,), name="pywatt-channels", daemon=True
                ).start()
        elif t is RoutedModuleMessage:
            assert isinstance(event, RoutedModuleMessage)
            if self.module._routed_handlers:
                return partial(self.module._routed, event)
            _log.info("routed message from %s dropped (no handler)", event.source_module_id)
        elif not self.call_event(event):
            _log.debug("ignored message %s", t.__name__)
        return None

    def call_event(self, event: object) -> bool:
        """Resolve the waiter of a module-call / registry event (lock held); False if the
        event is not one of those."""
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
            fut = self.call_waiters.pop(event.request_id, None)
            if fut is not None and fut.set_running_or_notify_cancel():
                if isinstance(event, CallReplied):
                    fut.set_result(event.value)
                else:
                    fut.set_exception(event.error)
            return True
        if t is ServiceAnswered or t is ServiceFailed:
            assert isinstance(event, ServiceAnswered | ServiceFailed)
            fut = self.call_waiters.pop(("registry", event.token), None)
            if fut is not None and fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(service_result(event))
                except Exception as exc:
                    fut.set_exception(exc)
            return True
        return False

    def fail_call_waiters(self) -> None:
        """Fail every call still waiting (lock held): the module stopped."""
        if not self.call_waiters:
            return
        from pywatt_proto._calls import CallRejectedError

        for fut in self.call_waiters.values():
            if fut.set_running_or_notify_cancel():
                fut.set_exception(CallRejectedError("module stopped"))
        self.call_waiters.clear()

    def call_done(self, rid: str, fut: Future[Any]) -> None:
        """A call's future is done: a cancelled one is forgotten by the core too."""
        if fut.cancelled():
            with self.lock:
                if self.call_waiters.pop(rid, None) is not None and not self.pool.stopped:
                    self.conn.cancel_call(rid)

    # ------------------------------------------------------- own threads
    def startup(self) -> None:
        """Call the on_startup hooks (own thread), then announce; a failing hook stops the
        module with status 1."""
        for fn in list(self.module._startup_hooks):
            try:
                fn()
            except Exception:
                _log.exception("on_startup hook %s failed; exiting without announcing", _name(fn))
                with self.lock:
                    self.finish(1)
                return
        self.lock.acquire()
        conn = self.conn
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
                self.conn.ack_rotation(rotation_id, error=error)
            except ProtocolError as exc:
                _log.error("could not acknowledge rotation %s: %s", rotation_id, exc)
            self.flush()
            lock.acquire()
        self.rotating = False
        lock.release()

    def begin_shutdown(self) -> None:
        """Stop accepting requests (503) and finish in-flight ones, as ``shutdown`` does."""
        self.lock.acquire()
        conn = self.conn
        if conn.state is ModuleState.AWAITING_INIT:
            self.finish(0)
            self.lock.release()
            return
        _log.info("SIGTERM: finishing %d in-flight request(s)", conn.in_flight)
        try:
            conn.begin_shutdown()
        except ProtocolError:
            self.finish(0)
        for ch in self.channels:
            ch.begin_shutdown()
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
                with self.lock:
                    self.finish(1)
            else:
                _log.warning("%s could not be connected (%s); continuing on stdio", what, failure)

    def on_channel_event(self, channel: SyncChannel, event: ChannelEvent) -> None:
        """Handle one event of a channel (on its reader thread, channel lock not held)."""
        from pywatt_proto._channel import BadFrame

        t = type(event)
        if t is RequestReceived:
            assert isinstance(event, RequestReceived)
            with self.lock:
                self.channel_jobs += 1
            if not self.sched.submit(lambda: self.serve_channel(channel, event)):
                with self.lock:
                    self.channel_jobs -= 1
        elif t is RequestTimedOut:
            assert isinstance(event, RequestTimedOut)
            _log.warning("%s: request %s timed out (answered 504)", channel, event.request_id)
        elif t is ShutdownRequested:
            _log.info("shutdown requested on %s", channel.target.describe())
            self.begin_shutdown()
        elif t is BadFrame:
            assert isinstance(event, BadFrame)
            _log.warning("%s: skipped frame: %s", channel.target.describe(), event.error)
        else:
            self.lock.acquire()
            job = self.on_event(event)  # a request comes as RequestReceived
            self.flush()
            if job is not None:  # a routed-message handler
                self.sched.submit(job)

    def serve_channel(self, channel: SyncChannel, event: RequestReceived) -> None:
        try:
            try:
                response = dispatch(self.router, event.to_router_request(), time.monotonic)
            except BaseException as exc:  # SystemExit/KeyboardInterrupt from a handler
                response = _handler_escaped(event.request_id, exc, self.router)
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


class Module(RouteDecorators):
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
        self._port_listeners: list[Callable[[PortResponse], None]] = []
        self._negotiation: PortNegotiation | None = None
        self._serving = threading.Lock()  # guards _session being set and cleared
        self._session: _Session | None = None
        self._announced = threading.Event()
        self._startup_listen: str | None = None  # set_listen() during on_startup

    # ------------------------------------------------------------ registration
    # route/get/post/put/delete/patch/middleware/error_handler: RouteDecorators

    def set_listen(self, listen: str) -> None:
        """Announce ``listen`` (e.g. ``"127.0.0.1:8123"``) instead of the default (the
        constructor's ``listen``, else the init's). Call it from an ``on_startup`` hook.

        Raises:
            RuntimeError: called outside startup (use ``Module(listen=...)`` for a
                fixed address).
        """
        session = self._session
        if session is not None:
            with session.lock:
                if session.conn.state is ModuleState.STARTING:
                    self._startup_listen = listen
                    return
        raise RuntimeError("Module.set_listen() must be called from an on_startup hook")

    # --------------------------------------------------------------- services
    @property
    def connection(self) -> ModuleConnection | None:
        """The protocol core while serving (None otherwise). Guarded by the module's lock."""
        session = self._session
        return session.conn if session is not None else None

    @property
    def init(self) -> Init | None:
        """The orchestrator's init (set before ``on_startup`` hooks run; None otherwise)."""
        session = self._session
        return session.conn.init if session is not None else None

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
        session = self._serving_session("secret")
        session.lock.acquire()
        conn = session.conn
        try:
            value = conn.get_secret(name, time.monotonic())
        except BaseException:
            session.lock.release()
            raise
        if value is not None:
            session.lock.release()
            return value if type is None else convert_secret(name, value, type)
        if session.pool.stopped:
            session.lock.release()
            raise SecretUnavailable(f"{name}: module stopped")
        wait = _SecretWait()
        session.secret_waits.setdefault(name, []).append(wait)
        session.sched.wake_monitor_locked(conn.get_timer())
        session.sched.need_reader_locked()  # the answer comes on stdin: have someone read it
        session.flush()
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

        session = self._serving_session("call_module")
        session.lock.acquire()
        conn = session.conn
        try:
            rid = conn.start_call(module_id, endpoint, payload, time.monotonic(), timeout=timeout)
        except BaseException:
            session.lock.release()
            raise
        fut: Future[Any] = Future()
        session.call_waiters[rid] = fut
        fut.add_done_callback(partial(session.call_done, rid))
        session.sched.wake_monitor_locked(conn.get_timer())
        session.sched.need_reader_locked()  # the answer comes on stdin: have someone read it
        session.flush()
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

        session = self._session
        if session is None:
            raise RuntimeError("the service registry needs a running module (serve_stdio)")
        session.lock.acquire()
        conn = session.conn
        try:
            token = ("registry", conn.start_service_request(msg, time.monotonic()))
        except BaseException:
            session.lock.release()
            raise
        fut: Future[Any] = Future()
        session.call_waiters[token] = fut
        session.sched.wake_monitor_locked(conn.get_timer())
        session.sched.need_reader_locked()
        session.flush()
        return fut.result()

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
        session = self._session
        if session is None:
            raise RuntimeError("module is not serving")
        session.lock.acquire()
        try:
            session.conn.send(message)
        except BaseException:
            session.lock.release()
            raise
        session.sched.need_reader_locked()  # an answer may be awaited on stdin
        session.flush()

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
        return negotiate_port(negotiation, init=session.conn.init, specific_port=specific_port)

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        """Serve stdin/stdout until shutdown or end of input, then exit the process.

        Sets up stderr logging if none is configured (``logging`` itself is
        imported for the first record at or above the level, see
        :mod:`pywatt_proto._lazylog`). Exits with status 0 on a clean stop, 1 on
        a protocol failure, :data:`EXIT_ABANDONED` (3) when handler threads were
        still running past their 504, 130 on Ctrl-C.
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
            conn = ModuleConnection(
                endpoints=self.endpoints,  # asked at announce time
                prefetch=self._prefetch,
                listen=self._listen,
                max_in_flight=self._max_in_flight,
                request_timeout=self._request_timeout,
                secret_timeout=self._secret_timeout,
                hold_announce=bool(self._startup_hooks),
            )
            out = OutputQueue(BlockingWriter(write_fd, self._on_write_error))
            session = self._session = _Session(self, conn, out, read_fd)
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
            self._run_shutdown_hooks()
        if stuck and code == 0:
            _log.error("%d handler thread(s) still running past their 504: abandoned", stuck)
            code = EXIT_ABANDONED
        return code

    def _stop(self, session: _Session, *, drain: bool) -> int:
        """End ``session``: channels, last output, waiting secret() calls; return the
        number of threads still inside handlers."""
        session.close_channels(drain=drain)
        session.lock.acquire()
        session.flush()  # what the core still holds (the last responses)
        session.out.wait_idle(FINAL_FLUSH_TIMEOUT)  # let the flush under way finish
        with session.lock:
            session.sched.stop_locked()
            for waits in session.secret_waits.values():
                for wait in waits:
                    wait.error = "module stopped"
                    wait.done.set()
            session.fail_call_waiters()
            stuck = session.pool.running
        with self._serving:
            self._session = None
            self._startup_listen = None
        return stuck

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
            threading.Thread(
                target=session.begin_shutdown, name="pywatt-sigterm", daemon=True
            ).start()

        try:
            return signal.signal(signal.SIGTERM, on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - exotic embedding
            return None
