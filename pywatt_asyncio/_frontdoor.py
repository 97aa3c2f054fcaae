"""The development host's HTTP/1.1 front door.

:func:`serve_http` accepts HTTP clients and hands each parsed request, as a
:class:`FrontRequest`, to an :class:`Upstream` (in ``pywatt run``, the host's module router),
then writes the answer back.

Each connection is the ``serve()`` driver (:class:`~pywatt_asyncio._server.ConnectionDriver`
around :class:`pywatt_proto.HttpServerConnection`, which owns the limits, deadlines and error
answers) with another handler. Particular to a front door:

* each request's body limit is the upstream's (:meth:`Upstream.body_limit`);
* targets a reference module would refuse are answered 400 here, absolute-form is forwarded
  as origin-form, ``OPTIONS *`` is answered here (:func:`pywatt_proto._proxy.forward_target`);
* ``x-forwarded-for`` / ``x-forwarded-proto`` are set (:func:`pywatt_proto._proxy.forwarding`),
  hop-by-hop headers dropped, and the module's answer re-framed: no ``content-length`` on
  1xx/204/304, 502 for an answer that is not valid HTTP/1.1;
* our own accept loop answers 503 at once past ``max_connections`` (kept below the
  descriptor limit, leaving descriptors for the modules) and logs accept errors a few at a
  time;
* one access-log line per answer on the ``pywatt.access`` logger.

Every limit is in :class:`FrontDoorLimits` and in spec/limits.md ("Front door").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pywatt_proto._bodies import MAX_REFERENCE_BODY, LogThrottle
from pywatt_proto._errors import LocalProtocolError, RemoteProtocolError
from pywatt_proto._http import HttpServerConnection, ServerLimits, busy_response
from pywatt_proto._messages import HttpResponse
from pywatt_proto._module import join_headers
from pywatt_proto._proxy import TrustedProxies, access_line, forward_target, forwarding
from pywatt_proto._router import Request, Response, api_error

from ._orchestrator import _synth
from ._server import ConnectionDriver, _DateCache

_log = logging.getLogger("pywatt.orchestrator")
_access = logging.getLogger("pywatt.access")

#: Largest HTTP request body forwarded to a module that uses the reference body form: the
#: largest body that always fits a 16 MiB stdio line (spec/limits.md section 1.1). A module
#: that negotiated base64_bodies takes more (``ModuleProcess.body_limit``).
MAX_HTTP_BODY: Final = MAX_REFERENCE_BODY
#: Listen backlog of the HTTP front door (1,000 clients may connect at once).
HTTP_BACKLOG: Final = 2048
#: Request headers not forwarded (RFC 9110 section 7.6.1: connection-specific fields; the
#: forwarding headers are set by the front door itself).
_REQUEST_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-for",
        "x-forwarded-proto",
    }
)
#: Response headers the front door recomputes instead of forwarding.
_RESPONSE_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "date", "content-length"}
)
#: Methods listed in the answer to ``OPTIONS *``.
_ALLOW: Final = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
_BUSY: Final = busy_response(retry_after=1)
#: Largest header block (names, values, ``": "`` and CRLF) of a module's answer passed on;
#: larger is 502 (nginx refuses past 4-8 KiB, curl past 100 KiB).
MAX_RESPONSE_HEAD: Final = 64 * 1024
#: Seconds the accept loop waits after an accept error (EMFILE: a descriptor must free up).
_ACCEPT_RETRY: Final = 0.1
#: Log at most this many accept errors (or cap refusals) per period, then one summary.
_LOG_BURST: Final = 3
_LOG_PERIOD: Final = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontRequest:
    """One request as the front door forwards it.

    ``target`` is origin-form (``/path?query``); ``headers`` are joined into the wire map
    (:func:`pywatt_proto._module.join_headers`) with ``x-forwarded-for`` and
    ``x-forwarded-proto`` already set; ``body`` is None when the request had none;
    ``client`` is the client's address: the peer's, or (port 0) the one a trusted proxy
    forwarded, as in the last ``x-forwarded-for`` entry; None if unknown;
    ``http_version`` is ``"1.1"`` or ``"1.0"``.
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None
    client: tuple[str, int] | None
    http_version: str


class Upstream(Protocol):
    """Where the front door sends requests (one module, or the host's router)."""

    def body_limit(self, method: str, target: str) -> int:
        """Return the largest body the module that would serve this request accepts; the
        front door answers 413 before reading a larger declared body."""
        ...

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        """Return the answer and the id of the module that served it (None: the host
        answered itself). Never raises for module failures (it answers 502/503/504)."""
        ...


def _descriptor_limit() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontDoorLimits:
    """Limits and deadlines of the front door (times in seconds; spec/limits.md).

    ``max_header_bytes``: request line plus headers (h11's default, 16 KiB), 431 beyond.
    ``read_timeout``: longest wait for each read while a request arrives, and longest time
    an answer may go without a byte leaving (send timeout); ``request_timeout``: the whole
    arrival of one request; both end in 408 and close. ``keepalive_timeout``: idle time
    between requests, then a quiet close. ``max_connections``: open client connections,
    503 beyond; None derives it from the descriptor limit (``RLIMIT_NOFILE`` minus
    ``reserved_descriptors``, at most 4,096). ``max_pending_bytes``: pipelined bytes read
    ahead while a request is forwarded.

    Raises:
        ValueError: a limit is not positive.
    """

    max_header_bytes: int = 16 * 1024
    read_timeout: float = 10.0
    request_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_connections: int | None = None
    reserved_descriptors: int = 256
    max_pending_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        self.server_limits()  # checks the limits it shares with ServerLimits
        if self.reserved_descriptors <= 0:
            raise ValueError("reserved_descriptors must be > 0")
        if self.max_connections is not None and self.max_connections <= 0:
            raise ValueError("max_connections must be > 0")

    def connection_cap(self) -> int:
        """Return ``max_connections``, or the one derived from the descriptor limit."""
        if self.max_connections is not None:
            return self.max_connections
        limit = _descriptor_limit()
        if limit is None:
            return 1024
        return max(1, min(4096, limit - self.reserved_descriptors))

    def server_limits(self) -> ServerLimits:
        """Return the :class:`ServerLimits` of each connection (body limit: the upstream's,
        :data:`MAX_HTTP_BODY` for bodies a bodyless method did not declare)."""
        return ServerLimits(
            max_header_bytes=self.max_header_bytes,
            max_body_bytes=MAX_HTTP_BODY,
            max_pending_bytes=self.max_pending_bytes,
            read_timeout=self.read_timeout,
            request_timeout=self.request_timeout,
            keepalive_timeout=self.keepalive_timeout,
        )


class _Throttle:
    """Accept-error warnings, rate-limited as :class:`pywatt_proto._bodies.LogThrottle`
    (``_LOG_BURST`` in full, then a summary at most every ``_LOG_PERIOD`` s); a timer
    logs the summary still owed when the errors stop."""

    __slots__ = ("_log", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self._loop = loop
        summary = "{count} more " + what + " in the last {span:.0f} s"
        self._log = LogThrottle(summary, burst=_LOG_BURST, interval=_LOG_PERIOD)
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, message: str) -> None:
        for text in self._log.note(self._loop.time(), message):
            _log.warning("%s", text)
        due = self._log.due
        if due is not None and self._timer is None:
            self._timer = self._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now, due = self._loop.time(), self._log.due
        if due is not None and now < due:
            self._timer = self._loop.call_at(due, self._flush)
        elif due is not None:
            _log.warning("%s", self._log.flush(now))


class FrontDoor:
    """The running front door (from :func:`serve_http`); ``refused`` counts clients answered
    503 at the cap."""

    def __init__(
        self,
        upstream: Upstream,
        sockets: list[socket.socket],
        *,
        limits: FrontDoorLimits,
        access_log: bool,
        trusted: TrustedProxies,
    ) -> None:
        self.upstream = upstream
        self.limits = limits
        self.server_limits = limits.server_limits()
        self.cap = limits.connection_cap()
        self.access_log = access_log
        self.trusted = trusted
        self.loop = asyncio.get_running_loop()
        self.date = _DateCache()
        self.refused = 0
        self._sockets = sockets
        self._open: set[_FrontConnection] = set()
        self._closing = False
        self._accept_errors = _Throttle(self.loop, "accept errors")
        self._cap_notes = _Throttle(self.loop, "connections refused at the cap")
        self._tasks = [self.loop.create_task(self._accept(sock)) for sock in sockets]

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    @property
    def connections(self) -> int:
        """Return the number of open client connections."""
        return len(self._open)

    async def _accept(self, sock: socket.socket) -> None:
        loop = self.loop
        while not self._closing:
            try:
                conn, _addr = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self._closing:
                    return
                self._accept_errors.warn(f"accept failed: {exc}")
                await asyncio.sleep(_ACCEPT_RETRY)
                continue
            if len(self._open) >= self.cap or self._closing:
                self.refused += 1
                self._cap_notes.warn(f"{len(self._open)} connections open (the cap): 503")
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(_BUSY)
                conn.close()
                continue
            protocol = _FrontConnection(self)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.connect_accepted_socket(protocol.itself, conn)
            except OSError:
                conn.close()

    def opened(self, conn: _FrontConnection) -> None:
        """Count ``conn`` as open (called from ``connection_made``)."""
        self._open.add(conn)

    def done(self, conn: _FrontConnection) -> None:
        """Forget ``conn`` (called from ``connection_lost``)."""
        self._open.discard(conn)

    def close(self) -> None:
        """Stop accepting; idle connections close at once, busy ones after their answer."""
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for conn in list(self._open):
            conn.shutdown()


class _FrontConnection(ConnectionDriver):
    """One client connection: feeds the core, forwards requests, writes answers."""

    __slots__ = ("_door",)

    def __init__(self, door: FrontDoor) -> None:
        super().__init__(door.loop, door.limits.read_timeout)
        self._door = door

    def itself(self) -> _FrontConnection:
        """Return ``self`` (the protocol factory given to ``connect_accepted_socket``)."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        door = self._door
        self._core = HttpServerConnection(
            door.server_limits,
            self._now(),
            client=self.peer(transport),
            body_limit=door.upstream.body_limit,
            date=door.date.get,
        )
        door.opened(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:  # the client left: stop waiting for the module
            self._task.cancel()
        super().connection_lost(exc)
        self._door.done(self)

    # -- requests ------------------------------------------------------------------------------

    def _request(self, request: Request, start: float) -> Coroutine[Any, Any, None] | None:
        """Answer here what the front door answers itself (``OPTIONS *``, a target a module
        would refuse), else return the forwarding; each request is timed from now."""
        now = self._loop.time()
        if request.path == "*":  # the core lets only OPTIONS through in asterisk-form
            answer = Response(status=200, headers=(("allow", _ALLOW),), body=b"")
        else:
            try:
                target = forward_target(request.path, request.query_string)
            except RemoteProtocolError as exc:
                answer = api_error(str(exc), exc.error_status_hint)
            else:
                return self._forward(request, target, now)
        self._send(request, answer, now, None)
        return None

    async def _forward(self, request: Request, target: str, start: float) -> None:
        core = self._core
        assert core is not None
        door = self._door
        headers = join_headers(
            (name, value) for name, value in request.headers.items() if name not in _REQUEST_HOP
        )
        body = bytes(request.body) if request.body else None  # h11 may hand a bytearray
        if body is not None and "content-length" not in headers:  # it came chunked
            headers["content-length"] = str(len(body))
        client = core.client
        host, xff, proto = forwarding(
            client[0] if client else None,
            request.headers.get("x-forwarded-for"),
            request.headers.get("x-forwarded-proto"),
            door.trusted,
        )
        if xff is not None:
            headers["x-forwarded-for"] = xff
        headers["x-forwarded-proto"] = proto
        front = FrontRequest(
            method=request.method,
            target=target,
            headers=headers,
            body=body,
            client=(host, 0) if host is not None and client and host != client[0] else client,
            http_version=core.http_version,
        )
        try:
            reply, module_id = await door.upstream.forward(front)
        except asyncio.CancelledError:
            raise
        except Exception:  # Upstream.forward must not raise; answer 502 and go on
            _log.exception("forwarding %s %s failed", request.method, front.target)
            reply, module_id = _synth("", 502, "bad gateway"), None
        self._task = None
        self._busy = False
        if not self._lost:
            self._send(request, self._response(request, reply), start, module_id)
            self._drive(self._now())

    def _response(self, request: Request, reply: HttpResponse) -> Response:
        """Return the module's answer re-framed for the client (see the module docstring)."""
        status = reply.status_code
        head = request.method == "HEAD"
        bodyless = status < 200 or status in (204, 304)
        headers: list[tuple[str, str]] = []
        for name, value in reply.headers.items():
            lname = name.lower()
            if lname in _RESPONSE_HOP:
                # HEAD: the length the GET would have had (RFC 9110 section 8.6)
                if lname == "content-length" and head and not bodyless:
                    headers.append((name, value))
                continue
            if lname == "set-cookie":
                headers.extend((name, v) for v in value.split("\n"))
            else:
                headers.append((name, value))
        body = b"" if head or bodyless else reply.body or b""
        try:
            size = sum(len(name) + len(value) + 4 for name, value in headers)
            if size > MAX_RESPONSE_HEAD:
                raise LocalProtocolError(f"headers of {size} bytes (over {MAX_RESPONSE_HEAD})")
            return Response(status=status, headers=tuple(headers), body=body)
        except LocalProtocolError as exc:
            return _invalid_answer(request, exc)

    def _send(
        self, request: Request, response: Response, start: float, module_id: str | None
    ) -> None:
        core = self._core
        transport = self._transport
        assert core is not None and transport is not None
        door = self._door
        try:
            core.send_response(response, start, date=door.date.get())
        except LocalProtocolError as exc:  # a 1xx, a header h11 refuses, non-latin-1
            response = _invalid_answer(request, exc)
            core.send_response(response, start, date=door.date.get())
        out = core.data_to_send()
        if out:
            transport.write(out)
        if door.access_log and _access.isEnabledFor(logging.INFO):
            took = self._loop.time() - start
            line = access_line(
                core.client,
                request.method,
                request.target,
                core.http_version,
                response.status,
                took,
                module_id,
            )
            _access.info("%s", line)


def _invalid_answer(request: Request, exc: LocalProtocolError) -> Response:
    _log.warning("invalid response from module for %s: %s", request.target, exc)
    return api_error("invalid response from module", 502)


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bind every address ``host`` resolves to, all on one port; return the sockets."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # every address on the port the first got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(HTTP_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve_http(
    upstream: Upstream,
    host: str,
    port: int,
    *,
    limits: FrontDoorLimits = FrontDoorLimits(),
    access_log: bool = True,
    forwarded_allow_ips: Iterable[str] | str = (),
) -> FrontDoor:
    """Start the HTTP/1.1 front door passing every request to ``upstream``; return it.

    ``access_log``: one line per answer on the ``pywatt.access`` logger (INFO; configure or
    silence it through ``logging``). ``forwarded_allow_ips``: peers whose
    ``x-forwarded-for`` / ``x-forwarded-proto`` are kept (``"*"``, addresses, networks);
    by default nobody's, and the front door sets both from the peer itself.

    Raises:
        OSError: the address cannot be bound. ValueError: an entry of
            ``forwarded_allow_ips`` is not an address or network.
    """
    trusted = TrustedProxies(forwarded_allow_ips)
    sockets = _listen(host, port)
    return FrontDoor(upstream, sockets, limits=limits, access_log=access_log, trusted=trusted)
