"""HTTP/1.1 over TCP: the parts h11 does not do (limits, time, keep-alive, error answers),
the same for both drivers.

* :class:`HttpServerConnection` wraps one server-side ``h11.Connection``: the driver feeds
  bytes (``receive_data(data, now)``, ``b""`` for EOF) and acts on ``next_event(now)``: a
  complete :class:`~pywatt_proto.Request` (answer it with ``send_response``), ``NEED_DATA``
  (read more, or wait for ``get_timer()``) or ``END_OF_INPUT`` (send ``data_to_send()`` and
  close). A plain keep-alive answer is written in h11's exact bytes without h11
  (``_write_direct``: h11's send path costs as much as parsing the request).
* Client side: URLs and query strings, :class:`ClientExchange` (one request/response with a
  response-size limit), :class:`RetryPolicy` and :class:`ConnectionPool`.

Server phases and the deadline each one arms (``get_timer``)::

    IDLE      -- before a request's first byte: keep-alive timeout, then close quietly.
    RECEIVING -- head/body arriving: min(last read + read_timeout, request start +
                 request_timeout), then 408 and close (slow-client protection).
    HANDLING  -- the driver runs the handler: no deadline.
    CLOSING   -- an answer that ends the connection is queued; next_event is END_OF_INPUT.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Self, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import h11

from ._breaker import BreakerState, CircuitOpenError
from ._errors import LocalProtocolError, RemoteProtocolError
from ._framing import END_OF_INPUT, NEED_DATA, EndOfInput, NeedData
from ._proxy import log_safe
from ._router import Headers, Request, Response, api_error, reason_phrase

if TYPE_CHECKING:
    from ._backoff import Backoff
    from ._random_source import RandomSource

# Request line + headers. h11's own default (16 KiB) -- nginx uses 8 KiB per
# line / 32 KiB total, Node 16 KiB; beyond it we answer 431 and close.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# Request body. 1 MiB is nginx's client_max_body_size; modules that take
# uploads raise it. Beyond it we answer 413 and close (body left unread).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Bytes a client may send ahead (pipelining) while a request is being handled.
# Above it the driver stops reading from the socket until the core catches up.
DEFAULT_MAX_PENDING_BYTES = 64 * 1024
# Response body a client accepts before raising HTTPProtocolError (64 MiB,
# the reference's advertised maximum message size on TCP).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Methods safe to retry after a failure (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_REASON_BYTES = {code: reason_phrase(code).encode("ascii") for code in (200, 201, 204, 404)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """Server limits; times in seconds.

    ``read_timeout`` bounds each read while a request arrives and the time a blocked answer
    may go without a byte leaving (:class:`SendProgress`); ``request_timeout`` the whole
    arrival of one request (the slow-loris bound); ``keepalive_timeout`` the idle time
    between requests (uvicorn's default is 5 s). ``max_requests_per_connection`` closes a
    connection after that many answers (0 = unlimited). Raises ``ValueError`` for a limit
    that is not positive.
    """

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    read_timeout: float = 10.0
    request_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_requests_per_connection: int = 0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_body_bytes", "max_pending_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("read_timeout", "request_timeout", "keepalive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_requests_per_connection < 0:
            raise ValueError("max_requests_per_connection must be >= 0")


class ServerPhase(enum.Enum):
    """Where a server connection is; see the module docstring."""

    IDLE = "idle"
    RECEIVING = "receiving"
    HANDLING = "handling"
    CLOSING = "closing"


ServerEvent = Request | NeedData | EndOfInput


class SendProgress:
    """The send timeout of a blocked answer: time *without progress* (nginx's
    ``send_timeout``), so a slow but steady download is never cut off.

    The driver creates one when its writes block (``pending`` = bytes still queued), calls
    :meth:`update` at least every :meth:`check_interval` seconds and drops the connection
    once :meth:`expired` (between ``timeout`` and ``1.25 * timeout`` after the last byte left).
    """

    __slots__ = ("_pending", "_since", "timeout")

    def __init__(self, timeout: float, pending: int, now: float) -> None:
        self.timeout = timeout
        self._pending = pending
        self._since = now

    def update(self, pending: int, now: float) -> None:
        """Record the bytes still queued at ``now``; fewer than last time is progress."""
        if pending < self._pending:
            self._since = now
        self._pending = pending

    def expired(self, now: float) -> bool:
        """Return True when nothing was sent for ``timeout`` seconds up to ``now``."""
        return now - self._since >= self.timeout

    def check_interval(self) -> float:
        """Return how often (seconds) the driver should look at its queue."""
        return self.timeout / 4


# --------------------------------------------------------------------------- dates / logs

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(epoch_seconds: float) -> str:
    """Return the IMF-fixdate for a Unix time (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    secs = int(epoch_seconds)
    days, rem = divmod(secs, 86400)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (index 3)
    # civil_from_days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms")
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    clock = f"{hh:02d}:{mm:02d}:{ss:02d}"
    return f"{_DAYS[weekday]}, {day:02d} {_MONTHS[month - 1]} {year:04d} {clock} GMT"


def _closing_answer(
    resp: Response, head: list[str], tail: list[str], *, with_body: bool = True
) -> bytes:
    """Return ``resp`` written with ``content-length`` and ``connection: close`` (its own
    framing headers dropped), ``head`` header lines before its own, ``tail`` after: without
    h11, which refuses to send after a peer's error or a failed answer. Raises
    UnicodeEncodeError for a header that is not latin-1."""
    lines = [f"HTTP/1.1 {resp.status} {reason_phrase(resp.status)}", *head]
    lines += [f"{k}: {v}" for k, v in resp.headers if k.lower() not in _FRAMING]
    lines += [f"content-length: {len(resp.body)}", "connection: close", *tail, "", ""]
    return "\r\n".join(lines).encode("latin-1") + (resp.body if with_body else b"")


_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def busy_response(retry_after: int | None = None) -> bytes:
    """Return the raw answer a server writes to a connection it will not serve (over its
    connection cap) before closing it: 503 with the API's JSON error body and
    ``connection: close``, plus ``retry-after`` (seconds) when given."""
    tail = [] if retry_after is None else [f"retry-after: {retry_after:d}"]
    return _closing_answer(api_error("Service Unavailable", 503), [], tail)


def format_access_log(
    client: tuple[str, int] | None, request: Request, status: int, size: int, duration: float
) -> str:
    """Return one access-log line (no newline): client, request line (the target as
    :func:`~pywatt_proto._proxy.log_safe` writes it), status, size, ms."""
    who = f"{client[0]}:{client[1]}" if client else "-"
    target = log_safe(request.target)
    return f'{who} "{request.method} {target}" {status} {size} {duration * 1000.0:.2f}ms'


# --------------------------------------------------------------------------- server


# Methods whose requests normally carry no body: their Content-Length is not
# pre-checked (a body, if any, is still bounded by max_body_bytes while read)
# unless the head also has a Transfer-Encoding (checked for every request: CL+TE).
_BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS"})
_TRANSFER_ENCODING = b"transfer-encoding"
_NAME = itemgetter(1)


def _has_transfer_encoding(headers: Any) -> bool:
    """Return True if an h11 head has a Transfer-Encoding header.

    Scans h11's private ``(raw name, lower-case name, value)`` triples (the public sequence
    builds a tuple per header); the public API if h11 ever renames the attribute.
    """
    items = getattr(headers, "_full_items", None)
    if items is None:
        return any(name == _TRANSFER_ENCODING for name, _ in headers)
    return _TRANSFER_ENCODING in map(_NAME, items)


# Encoded forms of recently used response header tuples: handlers mostly return
# the same few constant header sets. Cleared when it reaches this many entries.
_HEADER_CACHE_SIZE = 256


class _EncodedHeaders(NamedTuple):
    pairs: list[tuple[bytes, bytes]]  # h11 byte pairs, framing and Connection dropped
    framed: bool  # the handler set Content-Length or asked for chunked framing
    # The pairs as h11 writes them (``name: value\r\n`` each), when h11 accepts them
    # and they carry no framing: the direct writer in send_response uses it. None
    # sends the answer through h11, which raises for headers it refuses.
    block: bytes | None


_header_cache: dict[tuple[tuple[str, str], ...], _EncodedHeaders] = {}


def _encode_headers(headers: tuple[tuple[str, str], ...]) -> _EncodedHeaders:
    """Return the headers as h11 byte pairs (framing headers dropped), whether the
    framing is set: a Content-Length, or a Transfer-Encoding asking for chunked output
    (h11 then writes the body as a chunk), and the pre-written block (see
    :class:`_EncodedHeaders`)."""
    pairs: list[tuple[bytes, bytes]] = []
    has_length = False
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            has_length = True
        elif lname == "transfer-encoding":
            has_length = True  # the handler asked for chunked framing: h11 writes it
            continue
        elif lname == "connection":
            continue  # keep-alive is ours to decide
        pairs.append((lname.encode("ascii"), value.encode("latin-1")))
    block: bytes | None = None
    if not has_length and all(name != b"host" for name, _ in pairs):  # h11 writes Host first
        try:
            h11.Response(status_code=200, headers=pairs)  # h11's own header validation
        except h11.LocalProtocolError:
            pass
        else:
            block = b"".join(b"%s: %s\r\n" % pair for pair in pairs)
    if len(_header_cache) >= _HEADER_CACHE_SIZE:
        _header_cache.clear()
    result = _header_cache[headers] = _EncodedHeaders(pairs, has_length, block)
    return result


class HttpServerConnection:
    """One server-side HTTP/1.1 connection (Sans-IO). See the module docstring.

    After any method raises, the connection is unusable; ``next_event`` never
    raises for bad peer input (it queues the answer and returns END_OF_INPUT).
    """

    __slots__ = (
        "_body",
        "_body_limit",
        "_body_size",
        "_client",
        "_conn",
        "_date",
        "_deadline_read",
        "_deadline_request",
        "_fed",
        "_fresh",
        "_head",
        "_idle_since",
        "_limits",
        "_max_body",
        "_out",
        "_pending",
        "_pending_size",
        "_phase",
        "_served",
        "_shutdown",
    )

    def __init__(
        self,
        limits: ServerLimits,
        now: float,
        *,
        client: tuple[str, int] | None = None,
        body_limit: Callable[[str, str], int] | None = None,
        date: Callable[[], bytes] | None = None,
    ) -> None:
        """Start a connection in phase IDLE at time ``now``.

        ``body_limit(method, target)``, when given, is asked for each request that may
        carry a body and replaces ``limits.max_body_bytes`` for it (a front door whose
        upstreams accept different sizes). ``date()`` returns the current Date value for
        the error answers the connection writes itself (none when omitted).
        """
        self._limits = limits
        self._client = client
        self._body_limit = body_limit
        self._max_body = limits.max_body_bytes
        self._date = date
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._phase = ServerPhase.IDLE
        self._out: list[bytes] = []
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._idle_since = now
        self._deadline_read = 0.0
        self._deadline_request = 0.0
        self._served = 0
        self._shutdown = False
        self._fed = 0  # bytes handed to h11 since the current request head began
        self._fresh = True  # self._conn is new and has been fed nothing

    # -- state views -------------------------------------------------------------------

    @property
    def phase(self) -> ServerPhase:
        """Return the current phase."""
        return self._phase

    @property
    def client(self) -> tuple[str, int] | None:
        """Return the peer address given at construction."""
        return self._client

    @property
    def http_version(self) -> str:
        """Return the HTTP version of the request last returned (``"1.1"`` before any)."""
        head = self._head
        return head.http_version.decode("ascii") if head is not None else "1.1"

    @property
    def wants_data(self) -> bool:
        """Return False when the driver should pause reading (pending bytes over the bound)."""
        return self._pending_size < self._limits.max_pending_bytes

    def get_timer(self) -> float | None:
        """Return the time at which :meth:`handle_timer` must run, or None."""
        if self._phase is ServerPhase.IDLE:
            return self._idle_since + self._limits.keepalive_timeout
        if self._phase is ServerPhase.RECEIVING:
            return min(self._deadline_read, self._deadline_request)
        return None

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> bool:
        """Buffer bytes from the peer (``b""`` means the peer closed its side).

        Returns :attr:`wants_data`: False when the driver should pause reading.
        """
        self._pending.append(data)
        self._pending_size += len(data)
        phase = self._phase
        if phase is ServerPhase.IDLE and data:
            self._start_request(now)
        elif phase is ServerPhase.RECEIVING:
            self._deadline_read = now + self._limits.read_timeout
        return self._pending_size < self._limits.max_pending_bytes

    def _start_request(self, now: float) -> None:
        self._phase = ServerPhase.RECEIVING
        self._deadline_read = now + self._limits.read_timeout
        self._deadline_request = now + self._limits.request_timeout

    def next_event(self, now: float) -> ServerEvent:
        """Return the next thing the driver must act on.

        ``Request``: dispatch it and call :meth:`send_response`. ``NEED_DATA``:
        read more (or wait for ``get_timer()``). ``END_OF_INPUT``: send
        :meth:`data_to_send` and close.
        """
        conn = self._conn
        while True:
            if self._phase is ServerPhase.CLOSING:
                return END_OF_INPUT
            if self._phase is ServerPhase.HANDLING:
                raise LocalProtocolError("next_event() while a response is owed")
            if self._pending:
                pending = self._pending
                if len(pending) == 1:
                    conn.receive_data(pending[0])
                else:
                    conn.receive_data(b"".join(pending))
                    if not pending[-1]:  # b"" (EOF) came after data: h11 must see it too
                        conn.receive_data(b"")
                self._fed += self._pending_size
                pending.clear()
                self._pending_size = 0
                self._fresh = False
            elif self._fresh and not self._shutdown:
                return NEED_DATA  # what h11 says for a new connection fed nothing
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint)
                continue
            if event is h11.NEED_DATA:
                if self._shutdown and self._phase is ServerPhase.IDLE:
                    self._phase = ServerPhase.CLOSING
                    continue
                return NEED_DATA
            etype = type(event)
            if etype is h11.Request:
                if self._phase is ServerPhase.IDLE:  # the whole head came with one read
                    self._start_request(now)
                self._head = event  # type: ignore[assignment]
                self._body_size = 0
                self._max_body = self._limits.max_body_bytes
                fed, self._fed = self._fed, 0
                if (
                    fed > self._limits.max_header_bytes
                    or event.method not in _BODYLESS  # type: ignore[union-attr]
                    or conn.client_is_waiting_for_100_continue
                    or self._body_limit is not None
                    or _has_transfer_encoding(event.headers)  # type: ignore[union-attr]
                ):
                    self._check_head(event, fed)  # type: ignore[arg-type]
            elif etype is h11.Data:
                self._body.append(event.data)  # type: ignore[union-attr]
                self._body_size += len(event.data)  # type: ignore[union-attr]
                if self._body_size > self._max_body:
                    self._fail(413)
            elif etype is h11.EndOfMessage:
                request = self._complete()
                if request is not None:
                    return request
            else:  # ConnectionClosed, or PAUSED after a protocol switch we never accept
                self._phase = ServerPhase.CLOSING

    def _check_head(self, head: h11.Request, fed: int) -> None:
        """Check a head that may be too large, be ambiguously framed or announce a body
        (431 / 400 / 413 / 100 Continue)."""
        # h11 only bounds *incomplete* heads; a complete one that arrived in a single
        # read is measured here (cheaply skipped when fewer bytes than the limit came in).
        if fed > self._limits.max_header_bytes:
            size = len(head.target) + sum(len(k) + len(v) + 4 for k, v in head.headers.raw_items())
            if size > self._limits.max_header_bytes:
                self._fail(431)
                return
        length: int | None = None
        chunked = False
        for name, value in head.headers.raw_items():
            lname = name.lower()
            if lname == b"content-length":
                length = int(value)  # h11 checked it is one decimal number
            elif lname == b"transfer-encoding":
                chunked = True
        if length is not None and chunked:
            # RFC 9112 section 6.1: "A server MAY reject a request that contains both
            # Content-Length and Transfer-Encoding [...] Regardless, the server MUST close
            # the connection after responding to such a request". Rejecting (h11 would read
            # it as chunked) means no body is ever framed two ways.
            self._fail(400)
            return
        if self._body_limit is not None:
            self._max_body = self._body_limit(
                head.method.decode("ascii"), head.target.decode("latin-1")
            )
        if length is not None and length > self._max_body:
            self._fail(413)  # refuse before reading (and before any 100 Continue)
            return
        if self._conn.they_are_waiting_for_100_continue:
            self._out.append(
                self._conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )

    def _complete(self) -> Request | None:
        head = self._head
        assert head is not None
        self._phase = ServerPhase.HANDLING
        parts = self._body
        if not parts:
            body = b""
        else:
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._body = []
        target = head.target.decode("latin-1")
        headers = Headers.from_raw(head.headers)
        method = head.method.decode("ascii")
        if target[:1] == "/" and "#" not in target:  # origin-form: the common case
            path, _, query = target.partition("?")
            return Request(method=method, path=path, query_string=query, headers=headers,
                           body=body, client=self._client)  # fmt: skip
        try:
            return Request.from_target(method, target, headers, body, client=self._client)
        except RemoteProtocolError:
            # h11 accepts any target; ours must be origin- or absolute-form.
            self._fail(400, "Bad Request")
            return None

    def _fail(self, status: int, message: str | None = None) -> None:
        """Queue an error answer (if no response has started) and close."""
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            head = [] if self._date is None else [f"date: {self._date().decode('latin-1')}"]
            answer = api_error(message or reason_phrase(status), status)
            self._out.append(_closing_answer(answer, head, []))
        self._phase = ServerPhase.CLOSING

    # -- timers / shutdown ----------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Apply expired deadlines: IDLE -> close quietly; RECEIVING -> 408 and close."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        if self._phase is ServerPhase.IDLE:
            self._phase = ServerPhase.CLOSING
        else:
            self._fail(408)

    def start_shutdown(self) -> None:
        """Stop keep-alive: an idle connection closes, a busy one answers with ``close``."""
        self._shutdown = True
        if self._phase is ServerPhase.IDLE and not self._pending:
            self._phase = ServerPhase.CLOSING

    def send_failed(self) -> None:
        """Tell the core the driver could not write: the connection is over."""
        self._phase = ServerPhase.CLOSING

    # -- output ---------------------------------------------------------------------------

    def send_response(self, response: Response, now: float, *, date: bytes | None = None) -> None:
        """Queue ``response`` for the request last returned by :meth:`next_event`; keep the
        connection alive unless the client, HTTP/1.0, the request limit or a shutdown says not.

        Raises:
            LocalProtocolError: no request is waiting for an answer, or the answer cannot
                be written as HTTP/1.1 (a 1xx status, a header h11 refuses, a value that is
                not latin-1, a body its status, the request or its Content-Length forbids):
                then nothing was queued and another answer (a 502) may be sent; when h11
                had taken the failed answer's head, that one closes the connection.
        """
        if self._phase is not ServerPhase.HANDLING:
            raise LocalProtocolError(f"send_response() in phase {self._phase.value}")
        served = self._served
        try:
            self._send_response(response, now, date)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            self._served = served
            raise LocalProtocolError(f"cannot send response: {exc}") from exc

    def _send_response(self, response: Response, now: float, date: bytes | None) -> None:
        self._served += 1
        limit = self._limits.max_requests_per_connection
        close = self._shutdown or (limit > 0 and self._served >= limit)
        body = response.body
        status = response.status
        encoded = _header_cache.get(response.headers) or _encode_headers(response.headers)
        reason = _REASON_BYTES.get(status)
        if reason is None:
            reason = reason_phrase(status).encode("ascii")
        conn = self._conn
        if (
            encoded.block is not None
            and not close
            and status >= 200
            and status not in (204, 304)
            and conn.their_state is h11.DONE  # a whole keep-alive request, no upgrade
            and conn.our_state is h11.SEND_RESPONSE
            and self._head is not None
            and self._head.method != b"HEAD"
            and conn.next_event() is h11.NEED_DATA  # nothing pipelined, no EOF yet
        ):
            self._write_direct(status, reason, encoded.block, body, date, now)
            return
        headers = [(b"date", date), *encoded.pairs] if date is not None else list(encoded.pairs)
        if not encoded.framed and status >= 200 and status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        if close:
            headers.append((b"connection", b"close"))
        if conn.our_state is h11.ERROR:  # an answer failed after h11 took its head
            with_body = self._head is None or self._head.method != b"HEAD"
            dated = [] if date is None else [f"date: {date.decode('latin-1')}"]
            self._out.append(_closing_answer(response, dated, [], with_body=with_body))
            self._phase = ServerPhase.CLOSING
            return
        head = h11.Response(status_code=status, headers=headers, reason=reason)  # may raise
        parts = [conn.send(head) or b""]  # queued only once h11 took all of it
        if body:
            parts.append(conn.send(h11.Data(data=body)) or b"")
        parts.append(conn.send(h11.EndOfMessage()) or b"")
        self._out += parts
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._next_cycle(now)
        else:
            self._phase = ServerPhase.CLOSING

    def _write_direct(
        self, status: int, reason: bytes, block: bytes, body: bytes, date: bytes | None, now: float
    ) -> None:
        """Write a keep-alive answer in the bytes h11 would, then take a fresh h11 connection.

        Only when h11's part is trivial: the request was read whole, nothing follows it,
        ``block`` was validated by h11, Content-Length framing. The finished connection holds
        no state a fresh one lacks (its receive buffer is empty).
        """
        dated = b"date: %s\r\n" % date if date is not None else b""
        self._out.append(
            b"HTTP/1.1 %d %s\r\n%s%scontent-length: %d\r\n\r\n%s"
            % (status, reason, dated, block, len(body), body)
        )
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes
        )
        self._fresh = True
        self._next_cycle(now)

    def _next_cycle(self, now: float) -> None:
        self._phase = ServerPhase.IDLE
        self._idle_since = now
        if self._pending:
            self._start_request(now)

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte queued for the peer (``b""`` if none)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data


# --------------------------------------------------------------------------- client errors


class HTTPClientError(Exception):
    """Root of the HTTP client's errors; ``url`` is the request URL when known."""

    url: str | None

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectError(HTTPClientError):
    """The TCP (or TLS) connection could not be established; nothing was sent."""


class HTTPTimeoutError(HTTPClientError, TimeoutError):
    """A client deadline passed (also a builtin ``TimeoutError``)."""


class ConnectTimeout(HTTPTimeoutError):
    """Connecting took longer than the connect timeout; nothing was sent."""


class ReadTimeout(HTTPTimeoutError):
    """No byte of the response arrived within the read timeout."""


class TotalTimeout(HTTPTimeoutError):
    """The whole exchange (retries included) exceeded the total timeout."""


class HTTPProtocolError(HTTPClientError, RemoteProtocolError):
    """The server broke HTTP/1.1 (bad framing, oversize response, early close)."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        RemoteProtocolError.__init__(self, message, error_status_hint=502)
        self.url = url


class ClientCircuitOpenError(CircuitOpenError, HTTPClientError):
    """The client's breaker refused the call; nothing was sent.

    Both a :class:`~pywatt_proto.CircuitOpenError` (``name``, ``state``,
    ``remaining``) and an :class:`HTTPClientError` (``url``), so ``except
    HTTPClientError`` covers it. ``__cause__`` is the failure that opened the
    breaker (a ``ReadTimeout``, a ``ConnectError``, or an :class:`HTTPStatusError`
    for a 5xx answer), when it is known.
    """

    def __init__(
        self, *, name: str | None, state: BreakerState, remaining: float, url: str | None
    ) -> None:
        CircuitOpenError.__init__(self, name=name, state=state, remaining=remaining)
        self.url = url


class HTTPStatusError(HTTPClientError):
    """Raised by :meth:`ClientResponse.raise_for_status` for 4xx/5xx answers."""

    response: ClientResponse

    def __init__(self, message: str, *, response: ClientResponse) -> None:
        super().__init__(message, url=response.url)
        self.response = response


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Scheme, host and port of a URL: the key of the connection pool."""

    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        """Return the ``Host`` header value (port omitted when it is the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> tuple[Origin, str]:
    """Return the origin of an absolute ``http(s)`` URL and its request target.

    Raises:
        LocalProtocolError: not an absolute http/https URL, or a bad port.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise LocalProtocolError(f"not an absolute http(s) URL: {url!r}", field="url")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise LocalProtocolError(f"bad port in {url!r}", field="url") from exc
    target = quote(parts.path or "/", safe="/:@!$&'()*+,;=-._~%")
    if parts.query:
        target += "?" + parts.query
    return Origin(scheme=scheme, host=parts.hostname, port=port), target


def join_url(base: str | None, url: str) -> str:
    """Return ``url`` resolved against ``base``.

    Absolute ``http(s)://`` URLs are returned unchanged. Otherwise ``base`` is a
    prefix (as in httpx and the reference client): its path and ``url`` are
    joined with exactly one ``/``, so ``("http://h/api", "/users")`` gives
    ``http://h/api/users``.

    Raises:
        LocalProtocolError: a relative ``url`` without a ``base``.
    """
    if url.lower().startswith(("http://", "https://")):
        return url
    if not base:
        raise LocalProtocolError(f"relative URL {url!r} needs a base URL", field="url")
    if not url:
        return base
    if url.startswith("?"):
        return base + url
    return base.rstrip("/") + "/" + url.lstrip("/")


QueryValue = str | int | float | bool | None
QueryParamsArg = Mapping[str, QueryValue | Sequence[QueryValue]] | Iterable[tuple[str, QueryValue]]


def _qv(value: QueryValue) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _query_pairs(params: QueryParamsArg) -> list[tuple[str, QueryValue]]:
    """Return the ``(key, value)`` pairs of ``params``, a list or tuple value repeating the key."""
    items: Iterable[tuple[str, Any]] = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, QueryValue]] = []
    for key, value in items:
        if isinstance(value, list | tuple):
            pairs.extend((key, v) for v in value)
        else:
            pairs.append((key, value))
    return pairs


def encode_query(params: QueryParamsArg) -> str:
    """Return ``params`` percent-encoded (RFC 3986: space is ``%20``); ``None`` values
    are skipped, sequences repeat the key, booleans are ``true``/``false``."""
    pairs = [(k, _qv(v)) for k, v in _query_pairs(params) if v is not None]
    return urlencode(pairs, quote_via=quote, safe="-._~")


def add_query(url: str, params: QueryParamsArg) -> str:
    """Return ``url`` with ``params`` appended to its query string."""
    encoded = encode_query(params)
    if not encoded:
        return url
    base, hash_mark, fragment = url.partition("#")
    sep = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        sep = ""
    return base + sep + encoded + (hash_mark + fragment)


# --------------------------------------------------------------------------- client exchange


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResponse:
    """A complete response as the client returns it."""

    status: int
    headers: Headers
    body: bytes
    url: str
    reason: str = ""
    http_version: str = "1.1"

    @property
    def is_success(self) -> bool:
        """Return whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """Return the body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Return the body parsed as JSON (raises ``ValueError`` if it is not JSON, or is
        nested too deeply to parse)."""
        import json

        try:
            return json.loads(self.body)
        except RecursionError as exc:
            raise ValueError("JSON body nested too deeply") from exc

    def raise_for_status(self) -> ClientResponse:
        """Return ``self`` for 1xx-3xx.

        Raises:
            HTTPStatusError: the status is 4xx or 5xx.
        """
        if self.status >= 400:
            raise HTTPStatusError(f"HTTP {self.status} for {self.url}", response=self)
        return self


ClientEvent = ClientResponse | NeedData


class ClientExchange:
    """One request and its response over a client-side ``h11.Connection`` (Sans-IO).

    ``bytes_to_send()`` gives the request; feed the answer with ``receive_data`` (``b""``
    on EOF) until ``next_event()`` returns the :class:`ClientResponse` (or raises
    :class:`HTTPProtocolError`: malformed answer, early close, a body over
    ``max_response_bytes``, a protocol switch); ``reusable`` then says whether the
    connection may serve another.
    """

    __slots__ = ("_body", "_conn", "_head", "_method", "_out", "_size", "_url", "max_bytes")

    def __init__(
        self,
        conn: h11.Connection,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"",
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        origin, target = split_url(url)
        self._conn = conn
        self._method = method.upper()
        self._url = url
        self.max_bytes = max_response_bytes
        hdrs: list[tuple[bytes, bytes]] = []
        seen: set[str] = set()
        for name, value in headers:
            lname = name.lower()
            seen.add(lname)
            hdrs.append((lname.encode("ascii"), value.encode("latin-1")))
        if "host" not in seen:
            hdrs.insert(0, (b"host", origin.host_header.encode("ascii")))
        framed = "content-length" in seen or "transfer-encoding" in seen
        if not framed and (body or self._method in ("POST", "PUT", "PATCH")):
            hdrs.append((b"content-length", str(len(body)).encode("ascii")))
        try:
            out = [conn.send(h11.Request(method=self._method, target=target, headers=hdrs)) or b""]
            if body:
                out.append(conn.send(h11.Data(data=body)) or b"")
            out.append(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"cannot send request: {exc}", field="request") from exc
        self._out = b"".join(out)
        self._head: h11.Response | None = None
        self._body: list[bytes] = []
        self._size = 0

    def bytes_to_send(self) -> bytes:
        """Return (and forget) the request bytes."""
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server (``b""`` when it closed)."""
        self._conn.receive_data(data)

    @property
    def started(self) -> bool:
        """Return whether the response head has arrived."""
        return self._head is not None

    def next_event(self) -> ClientEvent:
        """Return the response once complete, or ``NEED_DATA``."""
        conn = self._conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HTTPProtocolError(f"bad response: {exc}", url=self._url) from exc
            if event is h11.NEED_DATA:
                return NEED_DATA
            if event is h11.PAUSED:  # a 101 to an Upgrade request or a 2xx to CONNECT
                raise HTTPProtocolError("server switched protocols (not supported)", url=self._url)
            etype = type(event)
            if etype is h11.Response:
                self._head = event  # type: ignore[assignment]
            elif etype is h11.Data:
                self._size += len(event.data)  # type: ignore[union-attr]
                if self._size > self.max_bytes:
                    raise HTTPProtocolError("response body too large", url=self._url)
                self._body.append(event.data)  # type: ignore[union-attr]
            elif etype is h11.EndOfMessage:
                head = self._head
                assert head is not None
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                return ClientResponse(
                    status=head.status_code,
                    headers=Headers.from_raw(head.headers),
                    body=b"".join(self._body),
                    url=self._url,
                    reason=head.reason.decode("latin-1"),
                    http_version=head.http_version.decode("ascii"),
                )
            elif etype is h11.ConnectionClosed:
                raise HTTPProtocolError("server closed the connection early", url=self._url)
            # InformationalResponse (100 Continue etc.): skip

    @property
    def reusable(self) -> bool:
        """Return whether the connection is ready for another request."""
        return self._conn.our_state is h11.IDLE and self._conn.their_state is h11.IDLE


# --------------------------------------------------------------------------- retries and pool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Which failed attempts the client repeats, and after how long.

    Connect failures are retried for every method (nothing reached the server);
    other errors and ``retry_statuses`` answers only for ``methods`` (idempotent
    by default). Delays come from ``backoff`` (its ``max_attempts`` counts the
    first try); a ``Retry-After`` in seconds is honoured up to ``backoff.cap``.
    """

    backoff: Backoff
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    methods: frozenset[str] = IDEMPOTENT_METHODS

    def next_delay(
        self,
        *,
        method: str,
        attempts: int,
        rng: RandomSource,
        status: int | None = None,
        error: BaseException | None = None,
        retry_after: str | None = None,
    ) -> float | None:
        """Return the wait before the next attempt, or None to stop.

        ``attempts`` is the number made so far; give either the answer's
        ``status`` (with its ``Retry-After`` value) or the ``error`` raised.
        """
        if not self.backoff.allows(attempts):
            return None
        if error is not None:
            if not isinstance(error, ConnectError | ConnectTimeout) and method not in self.methods:
                return None
            if isinstance(error, HTTPStatusError | TotalTimeout | LocalProtocolError):
                return None
        elif status is None or status not in self.retry_statuses or method not in self.methods:
            return None
        delay = self.backoff.delay(attempts, rng)
        seconds = (retry_after or "").strip()
        if seconds.isascii() and seconds.isdigit():  # not "\xb2", which isdigit() accepts
            delay = max(delay, min(float(seconds), self.backoff.cap))
        return delay


C = TypeVar("C")


class ConnectionPool(Generic[C]):
    """Idle keep-alive connections per :class:`Origin` (Sans-IO bookkeeping).

    Holds at most ``max_per_host`` idle connections per origin, each for at most
    ``idle_timeout`` seconds. The driver bounds *active* connections per host
    with its own semaphore of the same size.
    """

    __slots__ = ("_idle", "idle_timeout", "max_per_host")

    def __init__(self, *, max_per_host: int = 10, idle_timeout: float = 30.0) -> None:
        if max_per_host < 1 or not idle_timeout > 0:
            raise ValueError("max_per_host must be >= 1 and idle_timeout > 0")
        self.max_per_host = max_per_host
        self.idle_timeout = idle_timeout
        self._idle: dict[Origin, list[tuple[float, C]]] = {}

    def take(self, origin: Origin, now: float) -> tuple[C | None, list[C]]:
        """Return the most recently used live idle connection (or None) and the
        expired ones the driver must close."""
        stack = self._idle.get(origin, [])
        expired = [c for t, c in stack if now - t >= self.idle_timeout]
        stack[:] = [(t, c) for t, c in stack if now - t < self.idle_timeout]
        return (stack.pop()[1] if stack else None), expired

    def put(self, origin: Origin, conn: C, now: float) -> bool:
        """Store ``conn`` as idle; return False (caller closes it) when the origin is full."""
        stack = self._idle.setdefault(origin, [])
        if len(stack) >= self.max_per_host:
            return False
        stack.append((now, conn))
        return True

    def idle_count(self, origin: Origin) -> int:
        """Return the number of idle connections kept for ``origin``."""
        return len(self._idle.get(origin, ()))

    def drain(self) -> list[C]:
        """Remove and return every idle connection (to close them)."""
        out = [c for stack in self._idle.values() for _, c in stack]
        self._idle.clear()
        return out


# --------------------------------------------------------------------------- request builder


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSpec:
    """An immutable description of one client request, built fluently.

    Every method returns a new spec; drivers subclass it to add ``send()``.
    ``url`` may be relative (joined to the client's base URL when sent).
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, QueryValue], ...] = ()
    body: bytes = b""
    timeout: float | None = None

    def header(self, name: str, value: str) -> Self:
        """Return a copy with header ``name: value`` added (repeats allowed)."""
        return replace(self, headers=(*self.headers, (name, value)))

    def with_headers(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Self:
        """Return a copy with all ``headers`` added."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        return replace(self, headers=(*self.headers, *items))

    def bearer(self, token: str) -> Self:
        """Return a copy with ``Authorization: Bearer <token>``."""
        return self.header("authorization", f"Bearer {token}")

    def query(
        self, params: QueryParamsArg | None = None, **more: QueryValue | Sequence[QueryValue]
    ) -> Self:
        """Return a copy with query parameters added (percent-encoded when sent);
        a list value repeats the key."""
        pairs = _query_pairs(params) if params is not None else []
        return replace(self, params=(*self.params, *pairs, *_query_pairs(more)))

    def content(self, body: bytes, content_type: str | None = None) -> Self:
        """Return a copy with a raw body (and ``Content-Type`` when given)."""
        new = replace(self, body=bytes(body))
        return new.header("content-type", content_type) if content_type else new

    def json(self, value: object) -> Self:
        """Return a copy with a compact JSON body and ``Content-Type: application/json``."""
        import json

        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return self.content(data.encode(), "application/json")

    def text(self, value: str) -> Self:
        """Return a copy with a UTF-8 text body."""
        return self.content(value.encode(), "text/plain; charset=utf-8")

    def form(self, fields: QueryParamsArg) -> Self:
        """Return a copy with an ``application/x-www-form-urlencoded`` body."""
        return self.content(encode_query(fields).encode(), "application/x-www-form-urlencoded")

    def with_timeout(self, total: float) -> Self:
        """Return a copy whose whole exchange (retries included) must end within ``total`` s."""
        return replace(self, timeout=total)

    def resolve(self, base_url: str | None) -> str:
        """Return the absolute URL with the query parameters appended.

        Raises:
            LocalProtocolError: a relative URL without base URL, or not http(s).
        """
        url = join_url(base_url, self.url)
        return add_query(url, self.params) if self.params else url
