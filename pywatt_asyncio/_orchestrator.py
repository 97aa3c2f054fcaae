"""Development orchestrator on asyncio: module child processes.

:class:`ModuleProcess` starts a module as a child, drives
:class:`pywatt_proto.OrchestratorConnection` over the child's stdin/stdout (its stderr passes
through to ours) and turns forwarded requests into awaitables. The HTTP front door that feeds
it lives in :mod:`pywatt_asyncio._frontdoor`.

Answers :meth:`ModuleProcess.request` makes itself: 502 when the module exits or crashes with
the request in flight (or is not running), 504 past the request deadline. The deadline counts
from the moment the request is handed over, whatever the pipe does: a module that stopped
reading its stdin holds back new requests (they wait for the pipe before being written, so
the write buffer stays bounded) but never holds back their 504.

A failure of this side itself (an unexpected exception while handling the module's output or
a timer) is logged with its traceback, fails every request in flight with 502, kills the
child and is kept in :attr:`ModuleProcess.failure` so the host can stop with a non-zero status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pywatt_proto._bodies import SkippedLineLog
from pywatt_proto._errors import LocalProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Endpoint, HttpResponse, Init, TcpListen
from pywatt_proto._orchestrator import (
    DEFAULT_ANNOUNCE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_ORCH_REQUEST_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
    AnnounceReceived,
    AnnounceTimedOut,
    BadModuleLine,
    CallAbandoned,
    CallRequested,
    ModuleUnresponsive,
    OrchestratorConnection,
    OrchestratorEvent,
    OrchestratorState,
    PortRequested,
    ProviderDiscoveryRequested,
    ProviderRegistrationRequested,
    RequestFailed,
    ResponseReceived,
    RotationAcknowledged,
    SecretRequested,
    ShutdownGraceExpired,
)

_log = logging.getLogger("pywatt.orchestrator")


def _note(text: str) -> None:
    """Write one operator-facing line to stderr (never stdout: it may be a protocol channel)."""
    print(text, file=sys.stderr, flush=True)


#: Requests forwarded to the module at once; more wait for a slot (the module answers 503
#: only beyond its own bound, which is the same number by default).
MAX_PENDING_HTTP: Final = 1024
#: Bytes read from the child's stdout per call.
READ_CHUNK: Final = 256 * 1024
#: A child's stderr line longer than this is passed on in pieces of this size (each with the
#: module's prefix), so the relay holds at most this much of an unfinished line.
STDERR_LINE_PIECE: Final = 64 * 1024
#: Seconds the relay of a child's stderr may go on after the child exited (a grandchild may
#: hold the pipe open).
_STDERR_LINGER: Final = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PortPolicy:
    """How ``port_request`` is answered: after ``delay`` seconds, refused if ``refuse``."""

    delay: float = 0.0
    refuse: bool = False


def _synth(request_id: str, status: int, message: str) -> HttpResponse:
    body = ('{"error":"' + message.replace('"', "'") + '"}').encode()
    return HttpResponse(
        request_id=request_id,
        status_code=status,
        headers={"content-type": "application/json"},
        body=body,
    )


def _answer(outcome: HttpResponse | RequestFailed) -> HttpResponse:
    if isinstance(outcome, RequestFailed):
        return _synth(outcome.request_id, outcome.status, outcome.reason)
    return outcome


class CallRouter(Protocol):
    """What a host plugs into ``ModuleProcess.network`` to route module calls."""

    def on_event(self, source: ModuleProcess, event: OrchestratorEvent) -> None:
        """Act on a call or registry event read from ``source``."""


_CALL_EVENTS: Final = (
    CallRequested,
    CallAbandoned,
    ProviderRegistrationRequested,
    ProviderDiscoveryRequested,
)


def _refuse_call_event(conn: OrchestratorConnection, event: OrchestratorEvent) -> None:
    """Answer a call / registry request when no host routes them (a lone ModuleProcess)."""
    from pywatt_proto._messages import (
        DiscoverServiceProvidersResponse,
        RegisterServiceProviderResponse,
    )

    if isinstance(event, CallRequested):
        conn.fail_call(event.request_id, "unknown_module", "this orchestrator routes no calls")
    elif isinstance(event, ProviderRegistrationRequested):
        conn.answer_service(
            RegisterServiceProviderResponse(success=False, provider_id=None, error="no registry")
        )
    elif isinstance(event, ProviderDiscoveryRequested):
        conn.answer_service(
            DiscoverServiceProvidersResponse(success=False, providers=(), error="no registry")
        )


def allocate_port(specific: int | None, host: str = "127.0.0.1") -> int:
    """Return a free TCP port (``specific`` if it is free, else any). Raises ``OSError``."""
    for candidate in ([specific] if specific else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            port: int = s.getsockname()[1]
            return port
    raise OSError("no free port")


class ModuleProcess:
    """A module child process and the orchestrator side of its stdio link."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        module_id: str = "module",
        orchestrator_api: str = "http://127.0.0.1:0",
        secrets: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        init_env: Mapping[str, str] | None = None,
        request_timeout: float = DEFAULT_ORCH_REQUEST_TIMEOUT,
        announce_timeout: float = DEFAULT_ANNOUNCE_TIMEOUT,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        port_policy: PortPolicy = PortPolicy(),
        extensions: Sequence[str] | None = None,
        stderr_prefix: str | None = None,
    ) -> None:
        """Prepare (not start) the child ``argv``.

        ``env`` is the child's whole environment (None: ours); ``init_env`` the init's ``env``
        map. ``extensions``: offered in init exactly (``()``: none, as the reference
        orchestrator; None: every one pywatt knows). ``stderr_prefix``: the child's stderr
        is relayed line by line with this prefix (None: it writes to ours directly).
        """
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._port_policy = port_policy
        self._request_timeout = request_timeout
        self._stderr_prefix = stderr_prefix
        self.module_id = module_id
        init = Init(
            orchestrator_api=orchestrator_api,
            module_id=module_id,
            env=dict(init_env or {}),
            listen=TcpListen(host="127.0.0.1", port=0),
        )
        self.conn = OrchestratorConnection(
            init=init,
            secrets=secrets,
            announce_timeout=announce_timeout,
            heartbeat_interval=heartbeat_interval,
            request_timeout=request_timeout,
            shutdown_grace=shutdown_grace,
            max_in_flight=MAX_PENDING_HTTP,
            extensions=None if extensions is None else tuple(extensions),
        )
        self._proc: asyncio.subprocess.Process | None = None
        self._waiters: dict[str, asyncio.Future[HttpResponse | RequestFailed]] = {}
        #: The host's call router (``pywatt_asyncio._network.ModuleNetwork``), if any.
        self.network: CallRouter | None = None
        self._slots = asyncio.Semaphore(MAX_PENDING_HTTP)
        self._announced: asyncio.Future[None] | None = None
        self._exited = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Skipped module lines: a few logged in full, then rate-limited summaries.
        self._skipped_lines = SkippedLineLog()
        self.returncode: int | None = None
        #: The unexpected exception that broke this side of the link (then the child was
        #: killed and every request in flight answered 502), else None.
        self.failure: BaseException | None = None
        #: True once the child had to be killed (grace expired, or a failure of this side).
        self.killed = False
        #: ``loop.time()`` when the module announced (None before).
        self.announced_at: float | None = None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints the module announced (empty before the announce)."""
        announce = self.conn.announce
        return tuple(announce.endpoints) if announce is not None else ()

    @property
    def running(self) -> bool:
        """True while requests can be forwarded (announced, not stopping, not exited)."""
        return self.conn.state is OrchestratorState.RUNNING and not self._exited.is_set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`shutdown` or :meth:`kill` was called."""
        return self._stopping

    @property
    def body_limit(self) -> int:
        """The largest request body always forwarded to this module: it follows the body form
        the module negotiated (spec/limits.md section 1.1). A larger one is answered 413."""
        return self.conn.max_body

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the child, send init and wait for the announce.

        Raises ``RuntimeError`` if the module exits or does not announce in time (the child
        is killed then).
        """
        loop = asyncio.get_running_loop()
        self._announced = loop.create_future()
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None if self._stderr_prefix is None else asyncio.subprocess.PIPE,
            env=self._env,
            # Own process group: a terminal's Ctrl-C reaches only us, and we stop the module
            # gracefully with `shutdown` instead of it dying mid-request on SIGINT.
            start_new_session=True,
        )
        if self._stderr_prefix is not None:
            self._stderr_task = asyncio.ensure_future(self._relay_stderr(self._stderr_prefix))
        self.conn.start(loop.time())
        self.flush()
        self._reader = asyncio.ensure_future(self._read_loop())
        try:
            await self._announced
        except BaseException:
            await self.kill()
            raise

    async def _relay_stderr(self, prefix: str) -> None:
        """Copy the child's stderr to ours, each line prefixed (pieces of a long line too)."""
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        head = prefix.encode("utf-8", "replace")
        out = sys.stderr.buffer
        rest = b""
        while True:
            try:
                chunk = await proc.stderr.read(STDERR_LINE_PIECE)
            except (OSError, ValueError):
                break
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            while len(rest) >= STDERR_LINE_PIECE:
                lines.append(rest[:STDERR_LINE_PIECE])
                rest = rest[STDERR_LINE_PIECE:]
            if lines:
                with contextlib.suppress(OSError, ValueError):
                    out.write(b"".join(head + line + b"\n" for line in lines))
                    out.flush()
        if rest:
            with contextlib.suppress(OSError, ValueError):
                out.write(head + rest + b"\n")
                out.flush()

    async def _read_loop(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await proc.stdout.read(READ_CHUNK)
                if not data:
                    break
                self.conn.receive_data(data, loop.time())
                self._process()
        except (OSError, ValueError) as exc:
            _log.error("reading module output failed: %s", exc)
        except Exception as exc:
            self._broken(exc)
        self.conn.receive_eof()
        self.returncode = await proc.wait()
        if self._stderr_task is not None:
            # The child's last words (a traceback) come before our report of its exit.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), _STDERR_LINGER)
        self._process()
        summary = self._skipped_lines.flush(loop.time())
        if summary is not None:
            _log.warning("bad lines from module: %s", summary)
        if not self._stopping:
            code = self.returncode
            _note(f"pywatt: {self.module_id}: module exited unexpectedly with status {code}")
        if self._announced is not None and not self._announced.done():
            self._announced.set_exception(
                RuntimeError(f"module exited (status {self.returncode}) before announcing")
            )
        self._fail_waiters("module exited")
        if self._timer is not None:
            self._timer.cancel()
        self._exited.set()

    def _fail_waiters(self, reason: str) -> None:
        for rid, fut in list(self._waiters.items()):
            if not fut.done():
                fut.set_result(RequestFailed(request_id=rid, status=502, reason=reason))
        self._waiters.clear()

    def _process(self) -> None:
        if self.failure is not None:
            return
        try:
            conn = self.conn
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is END_OF_INPUT:
                    break
                self._handle(event)
            self.flush()
        except Exception as exc:  # a defect on our side: never let it pass silently
            self._broken(exc)

    def _broken(self, exc: BaseException) -> None:
        """This side of the link failed: log it, answer 502, kill the child, remember it."""
        if self.failure is not None:
            return
        self.failure = exc
        _log.error(
            "internal error in the link to module %s; killing it", self.module_id, exc_info=exc
        )
        self._fail_waiters("orchestrator failure")
        if self._announced is not None and not self._announced.done():
            self._announced.set_exception(RuntimeError(f"orchestrator failure: {exc!r}"))
        self._kill_child()

    def _kill_child(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def _handle(self, event: OrchestratorEvent) -> None:
        if isinstance(event, ResponseReceived | RequestFailed):
            fut = self._waiters.pop(event.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event.response if isinstance(event, ResponseReceived) else event)
            if isinstance(event, RequestFailed) and event.status == 504:
                _log.warning("request %s: %s (504)", event.request_id, event.reason)
        elif isinstance(event, AnnounceReceived):
            self.announced_at = asyncio.get_running_loop().time()
            if self._announced is not None and not self._announced.done():
                self._announced.set_result(None)
            paths = ", ".join(f"{'/'.join(e.methods)} {e.path}" for e in event.announce.endpoints)
            _log.info(
                "module %s announced: %s (listen %s)",
                self.module_id,
                paths or "(no endpoints)",
                event.announce.listen,
            )
        elif isinstance(event, AnnounceTimedOut):
            if self._announced is not None and not self._announced.done():
                self._announced.set_exception(RuntimeError("module did not announce in time"))
        elif isinstance(event, PortRequested):
            self._spawn(self._answer_port(event))
        elif isinstance(event, SecretRequested):
            _log.warning("module asked for unknown secret %r (not answered)", event.name)
        elif isinstance(event, RotationAcknowledged):
            _log.info("rotation %s acknowledged: %s", event.rotation_id, event.status)
        elif isinstance(event, ModuleUnresponsive):
            _log.error("module missed %d heartbeats", event.missed)
        elif isinstance(event, ShutdownGraceExpired):
            _note(
                f"pywatt: {self.module_id}: module did not stop within the grace period; killing it"
            )
            self.killed = True
            self._spawn(self.kill())
        elif isinstance(event, BadModuleLine):
            now = asyncio.get_running_loop().time()
            for text in self._skipped_lines.skipped(now, event.line, str(event.error)):
                _log.warning("bad line from module: %s", text)
        elif isinstance(event, _CALL_EVENTS):
            if self.network is not None:
                self.network.on_event(self, event)
            else:
                _refuse_call_event(self.conn, event)
        else:
            _log.info("module sent %s (not handled by the dev orchestrator)", type(event).__name__)

    async def _answer_port(self, event: PortRequested) -> None:
        policy = self._port_policy
        if policy.delay:
            await asyncio.sleep(policy.delay)
        rid = event.request.request_id
        try:
            if policy.refuse:
                self.conn.answer_port(rid, error="port allocation refused (--port-refuse)")
            else:
                try:
                    port = allocate_port(event.request.specific_port)
                except OSError as exc:
                    self.conn.answer_port(rid, error=str(exc))
                else:
                    self.conn.answer_port(rid, port=port)
        except Exception as exc:  # the connection went away meanwhile
            _log.debug("port answer dropped: %s", exc)
            return
        self._process()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def flush(self) -> None:
        """Write what the connection queued (e.g. after ``conn.answer_call``) and re-arm its
        timer."""
        data = self.conn.data_to_send()
        proc = self._proc
        if data and proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # reader sees EOF
                proc.stdin.write(data)
        when = self.conn.get_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        fired = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        if self.failure is not None:
            return
        try:
            self.conn.handle_timer(max(asyncio.get_running_loop().time(), fired))
        except Exception as exc:
            self._broken(exc)
            return
        self._process()

    async def request(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse:
        """Forward one request; return the module's response or a synthesized 502/503/504.

        The answer comes by the request deadline (``request_timeout`` from this call) even
        when the module has stopped reading its stdin.
        """
        return _answer(await self.exchange(method, uri, headers, body))

    async def exchange(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse | RequestFailed:
        """Forward one request; return the module's response, or why there is none
        (``RequestFailed``: 502 module gone or not running, 503 not started, 504 deadline).
        Cancelling the caller forgets the request (a late answer is dropped)."""
        outcome = await self._forward(method, uri, headers, body)
        if outcome is None:
            status = 502 if self._exited.is_set() or self.failure is not None else 503
            return RequestFailed(request_id="", status=status, reason="module is not running")
        return outcome

    async def send(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse | None:
        """Like :meth:`request`, but return None (nothing was sent) when the module is not
        running, so a host can hand the request to the module's next process instead."""
        outcome = await self._forward(method, uri, headers, body)
        return None if outcome is None else _answer(outcome)

    async def _forward(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse | RequestFailed | None:
        """Send one request and await its outcome by the deadline; None: not running."""
        loop = asyncio.get_running_loop()
        rid: str | None = None
        try:
            async with asyncio.timeout_at(loop.time() + self._request_timeout):
                async with self._slots:
                    if not self.running:
                        return None
                    await self._writable()  # back-pressure: wait while the pipe is full
                    if not self.running:
                        return None
                    try:
                        rid = self.conn.send_request(method, uri, headers, body, loop.time())
                    except LocalProtocolError as exc:  # too large for the module's line
                        if exc.error_status_hint != 413:
                            raise
                        return RequestFailed(request_id="", status=413, reason="request too large")
                    fut: asyncio.Future[HttpResponse | RequestFailed] = loop.create_future()
                    self._waiters[rid] = fut
                    self.flush()
                    return await fut
        except TimeoutError:
            if rid is not None:
                self._waiters.pop(rid, None)
                self.conn.cancel_request(rid)
            _log.warning("request %s %s: module did not answer in time (504)", method, uri)
            return RequestFailed(
                request_id=rid or "", status=504, reason="module did not answer in time"
            )
        except asyncio.CancelledError:
            if rid is not None and self._waiters.pop(rid, None) is not None:
                self.conn.cancel_request(rid)
            raise

    async def _writable(self) -> None:
        """Return once the child's stdin buffer is below its high-water mark."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):  # the reader reports the exit
            await proc.stdin.drain()

    def rotate(self, values: Mapping[str, str], rotation_id: str) -> None:
        """Push new secret values and a ``rotated`` notice to the module.

        Raises ``LocalProtocolError`` (nothing sent) when too many rotations are unanswered.
        """
        self.conn.rotate(values, rotation_id)
        self._process()

    async def wait(self) -> int:
        """Wait for the child to exit; return its status."""
        await self._exited.wait()
        return self.returncode if self.returncode is not None else -1

    async def shutdown(self) -> int:
        """Send ``shutdown``, wait for the exit (the grace timer kills it if needed)."""
        self._stopping = True
        if not self._exited.is_set():
            loop = asyncio.get_running_loop()
            self.conn.shutdown(loop.time())
            self.flush()
        return await self.wait()

    async def kill(self) -> None:
        """Kill the child now (no-op if it already exited); sets :attr:`killed` if it did."""
        self._kill_child()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a Python child's environment: ``base`` (default: ours) with the current
    directory importable (for ``pkg.mod`` targets) and unbuffered output."""
    env = dict(os.environ if base is None else base)
    cwd = os.getcwd()
    env["PYTHONPATH"] = cwd + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
