"""``ModuleConnection``: the module's side of the stdio link, as a pure state machine.

How a driver uses it
--------------------
A driver (``pywatt_asyncio.Module``, ``pywatt_sync.Module``, a test) owns exactly one
reader of stdin, one writer of stdout and a clock. Its loop is::

    conn = ModuleConnection(endpoints=router_endpoints, prefetch=["DB_URL"])
    while True:
        conn.receive_data(chunk, now)            # b"" is NOT EOF; call receive_eof()
        while (event := conn.next_event()) is not NEED_DATA:
            if event is END_OF_INPUT: ...        # stdin closed; finish in-flight work
            elif isinstance(event, RequestReceived):
                start handler -> later conn.send_response(event.request_id, status, hdrs, body)
            elif isinstance(event, RequestTimedOut): cancel that handler (already answered 504)
            elif isinstance(event, SecretUpdated | SecretFailed): wake waiters of event.name
            elif isinstance(event, RotationRequested):
                run callbacks -> conn.ack_rotation(event.rotation_id, error=None | "why")
            elif isinstance(event, ShutdownRequested): stop accepting, finish in-flight
            elif isinstance(event, BadLine): log it (already skipped / answered)
            elif isinstance(event, ReadyToAnnounce):    # only with hold_announce=True
                run startup work (may send port_request) -> conn.announce(listen)
            else: a plain orchestrator message (PortResponse, ServiceResponse, ...)
        write(conn.data_to_send())               # whole lines only; one writer
        arm a timer for conn.get_timer(); when it fires: conn.handle_timer(now)
        stop once conn.state is ModuleState.CLOSED

Automatic replies (``heartbeat_ack``, the core's 400/413/503/504 answers, the announce unless
``hold_announce``) are queued in ``data_to_send()`` without driver involvement. A driver that
stops on its own (SIGTERM) calls ``conn.begin_shutdown()``; one whose output broke calls
``conn.send_failed()``. Other outbound messages go through ``conn.send(message)``.

Theory of operation
-------------------
Input is parsed lazily: ``receive_data`` only buffers (bounded by the line decoder's limit),
and each ``next_event`` decodes as many lines as it takes to produce one event, so the input
held never exceeds one chunk plus one partial line. The per-request path (regular-expression
reader, the one acceptance check ``_accept``, trusted constructors, the one ``http_response``
encoder, the connection's header-text table) is described in ARCHITECTURE.md, "Hot path".

Every ``http_request`` is answered exactly once: by the driver (``send_response``), or by the
core itself (spec/limits.md section 3); a late ``send_response`` for a request already
answered 504 returns ``False`` and sends nothing. Line and body limits follow the negotiated
body form (spec/limits.md section 1.1): an answer too large for its line is replaced by a 500
(``ResponseTooLarge``), an over-long request line is answered 413.

Header join rule (the wire map is single-valued): repeated header names are joined with
``", "`` (RFC 9110 section 5.3), except ``set-cookie``, whose values are joined with ``"\\n"``
because cookie values may contain commas (``Expires``) while a newline can never occur inside
a header value; a receiver splits ``set-cookie`` on ``"\\n"``. Names are sent lower-cased.
"""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from ._bodies import (
    BASE64_LINE_LIMIT,
    MAX_BASE64_BODY,
    MAX_REFERENCE_BODY,
    SCAN_WINDOW,
    scan_request_id,
)
from ._bodies import EXT_BASE64_BODIES as _EXT_BASE64_BODIES
from ._codec import (
    _utf8,
    decode_init,
    decode_orchestrator_to_module,
    encode,
    encode_headers,
    http_response_line,
    http_response_text,
    read_http_request_line,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._framing import (
    DEFAULT_MAX_LINE_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    EndOfInput,
    LineDecoder,
    LineTooLong,
    NeedData,
    encode_line,
)
from ._fsm import Machine
from ._json import dump_str
from ._messages import (
    Announce,
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    Endpoint,
    GetSecret,
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Init,
    OrchestratorToModule,
    RegisterServiceProvider,
    RegisterServiceProviderResponse,
    Rotated,
    RotationAck,
    RoutedModuleResponse,
    Secret,
    Shutdown,
)
from ._records import record
from ._router import Request

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    import random
    from typing import Any, Final, TypeAlias

    from ._calls import (
        CallFailed,
        CallReplied,
        CallTracker,
        ServiceAnswered,
        ServiceFailed,
        ServiceRequests,
    )

# ============================================================================
# STATE TABLE -- everything that changes ModuleConnection.state lives here.
#   * AWAITING_INIT: the first line must be the init blob (bare or op-tagged).
#   * PREFETCHING: get_secret sent for every prefetch name; leaves when all are
#     answered or failed (SECRETS_READY is fed at once when there is nothing to
#     prefetch).
#   * STARTING: the announce is not sent yet; requests get 503 "module not ready"
#     as in PREFETCHING. ANNOUNCE sends it: fed at once by default (so STARTING
#     is never observed), or, with hold_announce=True, by the driver's
#     announce() after its ReadyToAnnounce event (startup work: bind, then
#     announce). announce() in any other state raises LocalProtocolError
#     and leaves the state unchanged (the driver may lose a race with shutdown).
#   * RUNNING: requests are accepted.
#   * CLOSING: shutdown or end of input seen; new requests get 503, in-flight
#     ones are still answered. DRAINED (no request in flight and no rotation
#     awaiting its ack) -> CLOSED.
#   * A (state, input) pair not in the table is a LocalProtocolError; any
#     uncaught error moves to ERROR, after which every call fails fast.
# ============================================================================


class ModuleState(enum.Enum):
    AWAITING_INIT = "awaiting_init"
    PREFETCHING = "prefetching"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"
    ERROR = "error"


class ModuleInput(enum.Enum):
    INIT = "init"
    SECRETS_READY = "secrets_ready"
    ANNOUNCE = "announce"
    SHUTDOWN = "shutdown"
    EOF = "eof"
    DRAINED = "drained"


_S = ModuleState
MODULE_MACHINE: Final[Machine[ModuleState, ModuleInput]] = Machine(
    "module link",
    {
        (_S.AWAITING_INIT, ModuleInput.INIT): _S.PREFETCHING,
        (_S.PREFETCHING, ModuleInput.SECRETS_READY): _S.STARTING,
        (_S.PREFETCHING, ModuleInput.SHUTDOWN): _S.CLOSING,
        (_S.PREFETCHING, ModuleInput.EOF): _S.CLOSING,
        (_S.STARTING, ModuleInput.ANNOUNCE): _S.RUNNING,
        (_S.STARTING, ModuleInput.SHUTDOWN): _S.CLOSING,
        (_S.STARTING, ModuleInput.EOF): _S.CLOSING,
        (_S.RUNNING, ModuleInput.SHUTDOWN): _S.CLOSING,
        (_S.RUNNING, ModuleInput.EOF): _S.CLOSING,
        (_S.CLOSING, ModuleInput.SHUTDOWN): _S.CLOSING,
        (_S.CLOSING, ModuleInput.EOF): _S.CLOSING,
        (_S.CLOSING, ModuleInput.DRAINED): _S.CLOSED,
        (_S.CLOSED, ModuleInput.EOF): _S.CLOSED,
        (_S.CLOSED, ModuleInput.SHUTDOWN): _S.CLOSED,
    },
)


# ---------------------------------------------------------------------------
# Limits and defaults
# ---------------------------------------------------------------------------

#: The reference's init-line limit (spec/reference.md R1): 1 MiB.
MAX_INIT_LINE: Final = 1024 * 1024
#: Longest line accepted after the handshake. The reference has none (spec/reference.md R7);
#: the framing default (16 MiB) admits a ~4 MiB body, since a body byte costs up to 4 JSON
#: bytes.
MAX_LINE: Final = DEFAULT_MAX_LINE_SIZE
#: Requests accepted but not yet answered; one more is answered 503. The reference's http_ipc
#: server allows 100 concurrent handlers; in-flight also counts queued ones, hence larger.
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: Seconds a request may take before the core answers 504 ([P] client timeout: 30 s).
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
#: Seconds to wait for a ``secret`` answer ([R] 5 s nominal timeout).
DEFAULT_SECRET_TIMEOUT: Final = 5.0
#: Distinct secret names with a get_secret outstanding; a misbehaving caller cannot grow the
#: pending table without bound.
MAX_PENDING_SECRETS: Final = 256
#: Rotations announced to the driver and not yet acknowledged (the reference's rotation
#: broadcast holds 10; acks are normally immediate).
MAX_PENDING_ROTATIONS: Final = 64
#: Ids of requests the core answered itself (504, or lost with a channel connection) whose
#: late result is dropped silently; older ones are forgotten (a late answer is then an error).
MAX_REMEMBERED_ANSWERED: Final = 4096
#: Cached secret values; beyond this the least recently stored one is evicted.
MAX_CACHED_SECRETS: Final = 1024
#: Distinct response header tuples whose wire text a connection remembers; the table is
#: emptied when full (router responses share a few constant tuples).
MAX_HEADER_TEXTS: Final = 256

EXT_HTTP_RESPONSE_OP: Final = "http_response_op"
EXT_HEARTBEAT_ACK: Final = "heartbeat_ack"
EXT_BASE64_BODIES: Final = _EXT_BASE64_BODIES
#: Extensions this implementation uses when the orchestrator lists them (identify is not
#: used: no known orchestrator expects it on stdio, spec/reference.md).
SUPPORTED_EXTENSIONS: Final = frozenset(
    {EXT_HTTP_RESPONSE_OP, EXT_HEARTBEAT_ACK, EXT_BASE64_BODIES}
)

# RFC 9110 section 5.6.2: token = 1*tchar; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" /
# "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. Methods are tokens (9.1).
_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_COMMON_METHODS: Final = frozenset(
    {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"}
)
_JSON_HEADERS_TEXT: Final = '{"content-type":"application/json"}'
_WHITESPACE: Final = frozenset(b" \t\r\n")


#: Set to ``1`` by ``pywatt run`` in each module's environment: every request reaches the
#: module through the front door, whose ``x-forwarded-for`` ends with the client address.
FORWARDED_CLIENT_ENV: Final = "PYWATT_FORWARDED_CLIENT"


def forwarded_client_filler(environ: Mapping[str, str]) -> Callable[[Request], None] | None:
    """Return the function filling ``request.client`` from ``x-forwarded-for``
    (:func:`pywatt_proto._proxy.fill_forwarded_client`) when ``environ`` says the module was
    started by ``pywatt run`` (:data:`FORWARDED_CLIENT_ENV` is ``1``), else None (the proxy
    code is then never imported)."""
    if environ.get(FORWARDED_CLIENT_ENV) != "1":
        return None
    from ._proxy import fill_forwarded_client

    return fill_forwarded_client


def valid_method(method: str) -> bool:
    """Return True if ``method`` is an RFC 9110 token (what a request method must be)."""
    return method in _COMMON_METHODS or (bool(method) and all(c in _TCHAR for c in method))


def _origin_form(uri: str) -> str | None:
    """Return the request target ``uri`` in origin-form (absolute-form reduced to its path and
    query, RFC 9112 section 3.2.2), ``*`` unchanged, or None when it is neither."""
    if uri[:1] != "/" and uri[:8].lower().startswith(("http://", "https://")):
        start = uri.find("//") + 2
        slash = uri.find("/", start)
        query_at = uri.find("?", start)
        if slash < 0 or (0 <= query_at < slash):
            return "/" + (uri[query_at:] if query_at >= 0 else "")
        return uri[slash:]
    return uri if uri[:1] == "/" or uri == "*" else None


def join_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fold header pairs into the single-valued wire map (rule in the module docstring).

    Returns a new dict with lower-cased names; repeated names are joined with ``", "``,
    ``set-cookie`` with ``"\\n"``. Never raises for well-typed input.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in out:
            out[key] = out[key] + ("\n" if key == "set-cookie" else ", ") + value
        else:
            out[key] = value
    return out


def checked_answer(
    status_code: object, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: object
) -> dict[str, str]:
    """Check an answer's status (0..65535) and body (bytes); return its headers folded by
    :func:`join_headers` (``headers`` itself when it is a dict of lower-case names).

    Raises LocalProtocolError naming the bad field (``status``, ``body``, ``headers``);
    header values are checked by the encoders. Used by both request links.
    """
    if type(status_code) is not int or not 0 <= status_code <= 65535:
        raise LocalProtocolError(f"status code {status_code!r} out of range", field="status")
    if type(body) is not bytes:
        raise LocalProtocolError("body must be bytes", field="body")
    try:
        if type(headers) is dict and all(k == k.lower() for k in headers):
            return headers
        return join_headers(headers)
    except (AttributeError, TypeError, ValueError):  # not pairs of strings
        raise LocalProtocolError("headers must be (str, str) pairs", field="headers") from None


# ---------------------------------------------------------------------------
# Events (what next_event returns besides plain OrchestratorToModule messages)
# ---------------------------------------------------------------------------


@record
class InitReceived:
    """The init blob arrived; ``extensions`` is what the module will use (already decided)."""

    init: Init
    extensions: frozenset[str]


@record
class ReadyToAnnounce:
    """Prefetch is done and the announce is held (``hold_announce=True``): run startup work,
    then call ``announce(listen)``. ``listen`` is what an ``announce()`` without one sends."""

    init: Init
    listen: str


@record
class Announced:
    """The announce was queued in ``data_to_send()``; the connection is now RUNNING."""

    announce: Announce


@record(frozen=False)
class RequestReceived:
    """An ``http_request`` to hand to the router; answer it with ``send_response``.

    A plain slotted class (one is built per request); the core never looks at it again.

    ``path`` and ``query`` are ``request.uri`` split at the first ``?`` (query without it,
    ``""`` when absent), still percent-encoded.
    """

    request_id: str
    request: HttpRequest
    path: str
    query: str

    def to_router_request(self) -> Request:
        """Return the router's :class:`Request` for this message (method upper-cased).

        Headers keep the wire's single values; a ``set-cookie``-style joined value is not
        split here (requests do not carry ``set-cookie``).
        """
        msg = self.request
        wire = msg.headers
        if type(wire) is not dict:  # a message built by hand with another mapping
            wire = dict(wire)
        return Request.from_wire(msg.method.upper(), self.path, self.query, wire, msg.body or b"")


@record
class RequestTimedOut:
    """The deadline of ``request_id`` passed; the core already answered 504."""

    request_id: str


@record
class SecretUpdated:
    """A ``secret`` arrived (answer or unsolicited push); the cache holds ``value``."""

    name: str
    value: str
    rotation_id: str | None


@record
class SecretFailed:
    """A ``get_secret`` for ``name`` got no answer in time (the protocol has no negative reply)."""

    name: str
    reason: str


@record
class RotationRequested:
    """``rotated``: stale cached values of ``keys`` were evicted; call ``ack_rotation``.

    Values pushed with the same ``rotation_id`` just before are kept (they are the new ones).
    """

    rotation_id: str
    keys: tuple[str, ...]


@record
class ShutdownRequested:
    """The orchestrator asked the module to stop; in-flight requests are still answered."""


@record
class ResponseTooLarge:
    """The answer to ``request_id`` did not fit a line (``size`` body bytes; bodies of up to
    ``limit`` bytes always fit); the core answered 500 in its place."""

    request_id: str
    size: int
    limit: int

    def describe(self) -> str:
        """Return the one-line text both drivers log for this event (no body content)."""
        return (
            f"response to {self.request_id}: a {self.size}-byte body does not fit a stdio line"
            f" (limit {self.limit}); answered 500"
        )


@record
class BadLine:
    """A line was skipped (malformed, or rejected); ``answered_status`` if the core replied."""

    line: bytes
    error: RemoteProtocolError
    answered_status: int | None = None


_BaseEvent: TypeAlias = (
    InitReceived
    | ReadyToAnnounce
    | Announced
    | RequestReceived
    | RequestTimedOut
    | SecretUpdated
    | SecretFailed
    | RotationRequested
    | ShutdownRequested
    | ResponseTooLarge
    | BadLine
    | OrchestratorToModule
)
if TYPE_CHECKING:
    # The module-call events (pywatt_proto._calls) are loaded with the first call, not at
    # start-up; at run time the alias names the events every module sees.
    ModuleEvent: TypeAlias = _BaseEvent | CallReplied | CallFailed | ServiceAnswered | ServiceFailed
else:
    ModuleEvent = _BaseEvent


class SecretUnavailable(LookupError):
    """Raised by drivers' ``secret(name)`` when the orchestrator did not answer in time."""


def error_body(message: str) -> bytes:
    """Return the body of an answer written by the core: ``{"error":"<short reason>"}``,
    naming no internal detail (spec/limits.md section 3)."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()


class ServingLink:
    """What the module's two request links share -- :class:`ModuleConnection` (stdio) and
    ``_channel.ChannelConnection`` (framed): the requests in flight with their deadlines, the
    one acceptance check, the core's own error answers, and the outbound queue.

    A subclass keeps ``_state``, names the state that accepts requests (``serving``) and
    those answered "module not ready" (``not_ready``; other states: "shutting down"), and
    writes ``_answer_error`` (an error answer in its own form) and ``_reject`` (the event
    reporting a refused request).
    """

    _state: enum.Enum

    def __init__(
        self,
        max_in_flight: int,
        request_timeout: float | None,
        serving: enum.Enum,
        not_ready: frozenset[enum.Enum] = frozenset(),
    ) -> None:
        if max_in_flight < 1:
            raise LocalProtocolError("max_in_flight must be at least 1")
        self._serving = serving
        self._not_ready = not_ready
        self._max_in_flight = max_in_flight
        self._request_timeout = request_timeout
        self._now = 0.0
        # Whole lines (frames) to write. The driver drains it after every call, so it holds
        # one call's output: at most one answer per input line, or per in-flight request
        # (handle_timer), both bounded.
        self._out: list[bytes] = []
        # Bounded by in-flight/pending limits: only timers and prefetch put more than one here.
        self._events: list[Any] = []
        # request_id -> deadline (insertion order == deadline order: constant timeout and
        # monotonic now, so the first entry is always the earliest).
        self._in_flight: dict[str, float] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered."""
        return len(self._in_flight)

    def data_to_send(self) -> bytes:
        """Return (and forget) every queued outbound byte: whole lines (frames), possibly b""."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def _answer_error(self, request_id: str, status: int, why: str) -> None:
        raise NotImplementedError

    def _reject(self, raw: Any, status: int | None, error: RemoteProtocolError) -> None:
        raise NotImplementedError

    def _on_http_request(self, msg: HttpRequest, raw: Any) -> None:
        event = self._accept(msg, raw)
        if event is not None:
            self._events.append(event)

    def _accept(self, msg: HttpRequest, raw: Any) -> RequestReceived | None:
        """The one acceptance check of an ``http_request``: return its event (not queued) when
        it is accepted, else answer it here (400/503) and return None.

        In order (spec/limits.md section 3): a duplicate of an id in flight -> 400 (the original
        keeps its answer); not serving -> 503; a method that is not a token -> 400;
        ``max_in_flight`` reached -> 503; a target that is not origin-form (absolute-form is
        reduced to its path and query) or ``*`` -> 400. The first test is the common request
        passing all of them.
        """
        rid = msg.request_id
        in_flight = self._in_flight
        uri = msg.uri
        if not (
            self._state is self._serving
            and rid not in in_flight
            and msg.method in _COMMON_METHODS
            and len(in_flight) < self._max_in_flight
            and uri[:1] == "/"
        ):
            target = self._refuse(msg, raw)
            if target is None:
                return None
            uri = target
        timeout = self._request_timeout
        in_flight[rid] = self._now + timeout if timeout is not None else float("inf")
        if self._answered:
            self._answered.pop(rid, None)
        path, _, query = uri.partition("?")
        return _request_received(rid, msg, path, query)

    def _refuse(self, msg: HttpRequest, raw: Any) -> str | None:
        """``_accept``'s checks one by one: answer the first that fails and return None, or
        return the request target to accept it with."""
        rid = msg.request_id
        err = None
        if rid in self._in_flight:
            status, why = 400, "duplicate request_id"  # the original keeps its own answer
            err = RemoteProtocolError(
                f"duplicate request_id {rid!r} while in flight", field="request_id"
            )
        elif self._state is not self._serving:
            status = 503
            why = "module not ready" if self._state in self._not_ready else "shutting down"
        elif not valid_method(msg.method):
            status, why = 400, "invalid method"
            err = RemoteProtocolError(f"invalid method {msg.method!r}", field="method")
        elif len(self._in_flight) >= self._max_in_flight:
            status, why = 503, "too many requests in flight"
        elif (uri := _origin_form(msg.uri)) is None:
            status, why = 400, "invalid uri"
            err = RemoteProtocolError(f"invalid uri {msg.uri!r}", field="uri")
        else:
            return uri
        self._answer_error(rid, status, why)
        if err is not None:
            self._reject(raw, status, err)
        return None

    def _skip_malformed(self, raw: Any, data: bytes, error: RemoteProtocolError) -> None:
        """Skip an undecodable line or frame (``data``: its bytes); answer 400 when the
        bounded scan of its first bytes finds ``"op":"http_request"`` and a plain
        ``request_id`` (spec/limits.md section 3, for stdio and, per spec/framed.md section
        7.3, for every channel), so deep nesting, huge numbers or bad UTF-8 elsewhere still
        get their 400."""
        rid = scan_request_id(data[:SCAN_WINDOW])
        self._reject(raw, self._answer_unreadable(rid, 400, "malformed request"), error)

    def _answer_unreadable(self, rid: str | None, status: int, why: str) -> int | None:
        """Answer ``status`` to an unreadable request whose id a scan found, unless that id
        is in flight (it keeps its own answer); return the status written, or None."""
        if rid is None or rid in self._in_flight:
            return None
        self._answer_error(rid, status, why)
        return status

    def _not_in_flight(self, request_id: str) -> bool:
        """For an answer to an id not in flight: False when the core already answered it
        (the late answer is dropped), else raise ``LocalProtocolError``."""
        if request_id in self._answered:
            return False
        raise LocalProtocolError(f"no request {request_id!r} in flight")

    def _restore_in_flight(self, request_id: str, deadline: float) -> None:
        """Put back a request whose answer was refused, keeping the table in deadline order
        (``get_timer``/``handle_timer`` read the earliest deadline first)."""
        in_flight = self._in_flight
        latest = next(reversed(in_flight.values()), None)
        in_flight[request_id] = deadline
        if latest is not None and latest > deadline:
            self._in_flight = dict(sorted(in_flight.items(), key=lambda item: item[1]))

    def _remember_answered(self, rid: str) -> None:
        answered = self._answered
        answered[rid] = None
        if len(answered) > MAX_REMEMBERED_ANSWERED:
            answered.popitem(last=False)

    def _first_deadline(self) -> float | None:
        """The earliest request deadline, or None (nothing in flight, or no timeout)."""
        first = next(iter(self._in_flight.values()), None)
        return None if first == float("inf") else first

    def _expire_requests(self, now: float) -> None:
        """Answer 504 to every request whose deadline is at or before ``now`` (one
        ``RequestTimedOut`` event each)."""
        in_flight = self._in_flight
        while in_flight:
            rid, deadline = next(iter(in_flight.items()))
            if deadline > now:
                break
            del in_flight[rid]
            self._remember_answered(rid)
            self._answer_error(rid, 504, "request timed out")
            self._events.append(RequestTimedOut(request_id=rid))


class ModuleConnection(ServingLink):
    """The module's side of the orchestrator link (see the module docstring for a driver loop).

    Args:
        endpoints: announced routes (``Endpoint(path, methods, auth)``), or a callable
            returning them, called once when the announce is sent.
        prefetch: secret names fetched after init and before the announce.
        listen: the ``listen`` announced; default: the init's ``listen``.
        max_in_flight: unanswered requests allowed; the next is answered 503.
        request_timeout: seconds before an unanswered request is answered 504
            (``None``: never).
        secret_timeout: seconds to wait for a ``secret`` answer.
        rng: randomness for the response wrapper's metadata ids (default: a fresh
            ``random.Random()``).
        hold_announce: with True, the announce is not sent when prefetch is done: the
            connection emits ``ReadyToAnnounce`` and stays STARTING (requests answered 503,
            ``send()`` and ``port_response`` events work) until ``announce()`` is called.
    """

    _state: ModuleState
    _events: list[ModuleEvent]

    def __init__(
        self,
        *,
        endpoints: Sequence[Endpoint] | Callable[[], Sequence[Endpoint]] = (),
        prefetch: Sequence[str] = (),
        listen: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        secret_timeout: float = DEFAULT_SECRET_TIMEOUT,
        rng: random.Random | None = None,
        hold_announce: bool = False,
    ) -> None:
        not_ready = frozenset({ModuleState.PREFETCHING, ModuleState.STARTING})
        super().__init__(max_in_flight, request_timeout, ModuleState.RUNNING, not_ready)
        # A callable is asked at announce time, so routes added after construction (an
        # app's routes registered after asgi_module(app), in a lifespan) are announced.
        self._endpoints: tuple[Endpoint, ...] | Callable[[], Sequence[Endpoint]] = (
            endpoints if callable(endpoints) else tuple(endpoints)
        )
        self._prefetch = tuple(dict.fromkeys(prefetch))
        self._listen = listen
        self._hold_announce = hold_announce
        self._secret_timeout = secret_timeout
        self._rng = rng  # made on first use when None (random is not needed to start)
        self._state = ModuleState.AWAITING_INIT
        # The init line is capped at MAX_INIT_LINE while it arrives (the reference fails at
        # byte 1,048,577), later lines at the negotiated form's line limit.
        self._decoder = LineDecoder(MAX_LINE, max_first_line_size=MAX_INIT_LINE)
        self._base64 = False  # base64_bodies in use
        self._line_limit = MAX_LINE
        self._init: Init | None = None
        self._extensions: frozenset[str] = frozenset()
        self._flat_responses = False
        self._source_json = '"unknown_module"'
        # Header tuple -> its wire text (router responses share a few constant tuples);
        # emptied when it reaches MAX_HEADER_TEXTS entries.
        self._header_json: dict[tuple[tuple[str, str], ...], str] = {}
        self._secrets: OrderedDict[str, str] = OrderedDict()
        self._pending_secrets: dict[str, float] = {}
        # name -> rotation_id of the cached value, when it arrived with one.
        self._secret_rotation: dict[str, str] = {}
        self._pending_rotations: set[str] = set()
        self._eof = False
        self._input_ended = False  # the last line before end of input was read
        # Module calls and registry requests (pywatt_proto._calls), made on first use.
        self._calls: CallTracker | None = None
        self._services: ServiceRequests | None = None

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> ModuleState:
        """The current state (see the table at the top of this file)."""
        return self._state

    @property
    def init(self) -> Init | None:
        """The init blob, once received."""
        return self._init

    @property
    def extensions(self) -> frozenset[str]:
        """Extensions in use (the subset of init's list this module supports)."""
        return self._extensions

    def _fire(self, inp: ModuleInput) -> None:
        try:
            self._state = MODULE_MACHINE.next(self._state, inp)
        except LocalProtocolError:
            self._state = ModuleState.ERROR  # an uncaught error moves to ERROR (table banner)
            raise

    def _check_alive(self) -> None:
        if self._state is ModuleState.ERROR:
            raise LocalProtocolError("connection is in the ERROR state")

    def _maybe_drained(self) -> None:
        if (
            self._state is ModuleState.CLOSING
            and not self._in_flight
            and not self._pending_rotations
        ):
            self._fire(ModuleInput.DRAINED)

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> None:
        """Buffer bytes read from stdin; ``now`` is their arrival time, from which the
        requests in them count their deadline (so drain ``next_event`` after every call).
        Lines, oversized ones included, are decoded and reported by ``next_event``.

        Raises ``LocalProtocolError`` after EOF or in the ERROR state.
        """
        self._check_alive()
        if self._eof:
            raise LocalProtocolError("receive_data after receive_eof")
        self._now = now
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Record that stdin is closed; ``next_event`` returns END_OF_INPUT after the last line."""
        self._check_alive()
        self._eof = True
        self._decoder.receive_eof()

    def next_event(self) -> ModuleEvent | NeedData | EndOfInput:
        """Return the next event, ``NEED_DATA``, or ``END_OF_INPUT`` (repeatedly, once closed).

        Raises ``RemoteProtocolError`` if the init line is invalid or input ends before it
        (state -> ERROR). Malformed later lines never raise: they become ``BadLine``.
        """
        if self._state is _ERROR:
            self._check_alive()  # raises
        events = self._events
        while not events:
            try:
                line = self._decoder.next_line()
            except RemoteProtocolError as exc:  # oversized line: reported, decoder resyncs
                if self._state is ModuleState.AWAITING_INIT:
                    self._state = ModuleState.ERROR
                    raise
                if isinstance(exc, LineTooLong):
                    return self._line_too_long(exc)
                return BadLine(line=b"", error=exc)
            if line is NEED_DATA:
                return NEED_DATA
            if line is END_OF_INPUT:
                return self._on_eof()
            assert isinstance(line, bytes)
            if self._state is _RUNNING:
                request = read_http_request_line(line, base64_bodies=self._base64)
                if request is not None:
                    event = self._accept(request, line)
                    if event is not None:
                        return event  # no other event is queued (loop condition)
                    continue  # refused and answered (events may be queued)
            try:
                self._handle_line(line)
            except RemoteProtocolError:
                self._state = ModuleState.ERROR
                raise
        return events.pop(0)

    def _on_eof(self) -> ModuleEvent | EndOfInput:
        if self._state is ModuleState.AWAITING_INIT:
            self._state = ModuleState.ERROR
            raise RemoteProtocolError("stdin closed before the init line")
        self._input_ended = True
        if self._state is not ModuleState.CLOSED:
            self._fire(ModuleInput.EOF)
            self._fail_secrets("input closed")
            for table in (self._calls, self._services):
                if table is not None:
                    self._events.extend(table.fail_all("input closed"))
            self._maybe_drained()
            if self._events:
                return self._events.pop(0)
        return END_OF_INPUT

    def _handle_line(self, line: bytes) -> None:
        if self._state is ModuleState.AWAITING_INIT:
            self._handle_init(line)
            return
        if line[0] in _WHITESPACE and not line.strip():
            return  # whitespace-only lines carry no message (JSON whitespace); skip quietly
        try:
            msg = decode_orchestrator_to_module(line, base64_bodies=self._base64)
        except RemoteProtocolError as exc:
            self._skip_malformed(line, line, exc)
            return
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            self._events.append(msg)  # port_response, service replies, routed messages, init
        else:
            handler(self, msg, line)

    def _handle_init(self, line: bytes) -> None:
        # (the decoder already refused an init line longer than MAX_INIT_LINE)
        init = decode_init(line)
        self._init = init
        self._extensions = frozenset(init.extensions) & SUPPORTED_EXTENSIONS
        self._flat_responses = EXT_HTTP_RESPONSE_OP in self._extensions
        if EXT_BASE64_BODIES in self._extensions:
            self._base64 = True
            self._line_limit = BASE64_LINE_LIMIT
            self._decoder.set_max_line_size(BASE64_LINE_LIMIT)
        self._source_json = dump_str(init.module_id or "unknown_module")
        self._fire(ModuleInput.INIT)
        self._events.append(InitReceived(init=init, extensions=self._extensions))
        for name in self._prefetch:  # (nothing is cached before init)
            self._request_secret(name)
        self._maybe_secrets_ready()

    def _maybe_secrets_ready(self) -> None:
        if self._state is ModuleState.PREFETCHING and not any(
            n in self._pending_secrets for n in self._prefetch
        ):
            self._fire(ModuleInput.SECRETS_READY)
            if self._hold_announce:
                init = self._init
                assert init is not None
                self._events.append(ReadyToAnnounce(init=init, listen=self._default_listen()))
            else:
                self._send_announce(None)

    def _default_listen(self) -> str:
        assert self._init is not None
        return self._listen if self._listen is not None else str(self._init.listen)

    def _send_announce(self, listen: str | None) -> None:
        endpoints = self._endpoints
        announce = Announce(
            listen=listen if listen is not None else self._default_listen(),
            endpoints=endpoints if isinstance(endpoints, tuple) else tuple(endpoints()),
            extensions=tuple(sorted(self._extensions)),
        )
        self._fire(ModuleInput.ANNOUNCE)
        self._send(announce)
        self._events.append(Announced(announce=announce))

    def announce(self, listen: str | None = None) -> None:
        """Send the held announce (``hold_announce=True``) and start accepting requests.

        ``listen``: the address announced (default: the constructor's ``listen``, else the
        init's). Queues the announce in ``data_to_send()`` and an ``Announced`` event; the
        state becomes RUNNING. Raises ``LocalProtocolError`` outside STARTING (before
        ``ReadyToAnnounce``, after the announce, or once shutdown or end of input arrived);
        the state is unchanged then.
        """
        self._check_alive()
        if not MODULE_MACHINE.allows(self._state, ModuleInput.ANNOUNCE):
            raise LocalProtocolError(f"cannot announce in state {self._state.name}")
        self._send_announce(listen)

    # ---------------------------------------------------------- per-op handlers
    def _on_secret(self, msg: Secret, line: bytes) -> None:
        self._store_secret(msg.name, msg.value)
        if msg.rotation_id is not None:
            self._secret_rotation[msg.name] = msg.rotation_id
        else:
            self._secret_rotation.pop(msg.name, None)
        self._pending_secrets.pop(msg.name, None)
        self._events.append(
            SecretUpdated(name=msg.name, value=msg.value, rotation_id=msg.rotation_id)
        )
        self._maybe_secrets_ready()

    def _on_rotated(self, msg: Rotated, line: bytes) -> None:
        for key in msg.keys:
            # A value pushed with this very rotation_id is already the new one (the
            # orchestrator sends `secret`s first, then `rotated`); anything else is stale.
            if self._secret_rotation.get(key) != msg.rotation_id:
                self._secrets.pop(key, None)
        if len(self._pending_rotations) >= MAX_PENDING_ROTATIONS:
            err = RemoteProtocolError("too many unacknowledged rotations", field="rotation_id")
            self._send(RotationAck(rotation_id=msg.rotation_id, status="error", message=str(err)))
            self._events.append(BadLine(line=line, error=err))
            return
        self._pending_rotations.add(msg.rotation_id)
        self._events.append(RotationRequested(rotation_id=msg.rotation_id, keys=tuple(msg.keys)))

    def _on_heartbeat(self, msg: Heartbeat, line: bytes) -> None:
        # Always answered: heartbeat_ack is a valid ModuleToOrchestrator op.
        self._out.append(_HEARTBEAT_ACK_LINE)

    def _on_shutdown(self, msg: Shutdown, line: bytes) -> None:
        if self._state is ModuleState.CLOSED:
            return
        self._fire(ModuleInput.SHUTDOWN)
        self._events.append(ShutdownRequested())
        self._maybe_drained()

    def begin_shutdown(self) -> None:
        """Stop accepting requests as if ``shutdown`` had arrived (e.g. on SIGTERM).

        New requests are answered 503; the state becomes CLOSING, and CLOSED once nothing
        is in flight. No event is emitted (the driver asked). No-op when already closing.
        Raises ``LocalProtocolError`` before init.
        """
        self._check_alive()
        if self._state in (ModuleState.CLOSING, ModuleState.CLOSED):
            return
        self._fire(ModuleInput.SHUTDOWN)
        self._maybe_drained()

    def _line_too_long(self, exc: LineTooLong) -> BadLine:
        """An over-long line (dropped by the decoder): answer 413 if it was a request."""
        rid = scan_request_id(exc.head, exc.tail)
        status = self._answer_unreadable(rid, 413, "request too large")
        return BadLine(line=exc.head, error=exc, answered_status=status)

    def _reject(self, raw: bytes, status: int | None, error: RemoteProtocolError) -> None:
        self._events.append(BadLine(line=raw, error=error, answered_status=status))

    # ----------------------------------------------------------------- output
    def _answer_error(self, request_id: str, status: int, why: str) -> None:
        body = error_body(why)
        try:
            self._out.append(self._response_line(request_id, status, _JSON_HEADERS_TEXT, body))
        except LocalProtocolError:  # a request id too long for a line: nothing can answer it
            return

    def _response_line(self, request_id: str, status: int, headers_json: str, body: bytes) -> bytes:
        """One answer line in the shape this connection writes (flat op or the wrapper), its
        body in the negotiated form. Raises LocalProtocolError (hint 413) past the line limit,
        or for a lone surrogate."""
        wrapper_id = None if self._flat_responses else self._wrapper_id()
        if len(body) < _SPLICE_MIN and not self._base64:
            line = http_response_text(
                dump_str(request_id), status, headers_json, body, wrapper_id, self._source_json
            )
            try:
                out = (line + "\n").encode()
            except UnicodeEncodeError:
                return _utf8(line)  # raises its LocalProtocolError
            if len(out) > self._line_limit:  # headers alone can be that large
                raise LocalProtocolError("response line too long", error_status_hint=413)
            return out
        return http_response_line(
            dump_str(request_id),
            status,
            headers_json,
            body,
            wrapper_id,
            self._source_json,
            base64_bodies=self._base64,
            max_line_size=self._line_limit,
        )

    def _wrapper_id(self) -> str:
        """A fresh UUID v4 text for the wrapper's ``metadata.id`` (as the reference's
        ``Uuid::new_v4``), drawn from the connection's random source; no ``uuid.UUID``."""
        rng = self._rng
        if rng is None:
            import random  # the first wrapped answer only (start-up time)

            rng = self._rng = random.Random()
        h = "%032x" % (rng.getrandbits(128) & _UUID_RANDOM_BITS | _UUID_V4_BITS)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def send_failed(self) -> None:
        """Record that the driver could not write (broken pipe, cancellation, ...).

        Moves to the ERROR state: every later call raises ``LocalProtocolError``, so a
        driver cannot keep using a connection whose output stream is gone. Returns None.
        """
        self._state = ModuleState.ERROR

    def send_response(
        self,
        request_id: str,
        status_code: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> bool:
        """Answer ``request_id``; headers are folded by :func:`join_headers`.

        Returns True if the response was queued, False if the core had already answered
        it (504) -- the late result is dropped. Raises ``LocalProtocolError`` for an id
        that was never received (or answered twice); the state is unchanged then.
        """
        if self._state is _ERROR:
            self._check_alive()  # raises
        deadline = self._in_flight.pop(request_id, None)
        if deadline is None:
            return self._not_in_flight(request_id)
        headers_json = None
        if type(headers) is tuple:
            # A router Response's header tuple (usually one of a few constants): rendered once.
            try:
                headers_json = self._header_json.get(headers)
            except TypeError:  # a pair that is not hashable (a list): not remembered
                headers_json = None
        if body is None:
            body = b""
        if (
            headers_json is None
            or type(status_code) is not int
            or not 0 <= status_code <= 65535
            or type(body) is not bytes
        ):
            try:
                headers_json = self._checked_headers(status_code, headers, body)
            except LocalProtocolError:
                self._restore_in_flight(request_id, deadline)  # as before the call
                raise
        try:
            out = self._response_line(request_id, status_code, headers_json, body)
        except LocalProtocolError as exc:
            if exc.error_status_hint != 413:
                self._restore_in_flight(request_id, deadline)
                raise
            # spec/limits.md 1.1: a response too large for the line is answered 500 instead.
            out = self._response_line(
                request_id, 500, _JSON_HEADERS_TEXT, error_body("response too large")
            )
            limit = MAX_BASE64_BODY if self._base64 else MAX_REFERENCE_BODY
            self._events.append(
                ResponseTooLarge(request_id=request_id, size=len(body), limit=limit)
            )
        self._out.append(out)
        if self._state is _CLOSING and not self._in_flight:
            self._maybe_drained()
        return True

    def _checked_headers(
        self,
        status_code: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: object,
    ) -> str:
        """Check an answer's fields; return the wire text of its headers folded by
        :func:`join_headers` (remembered in ``_header_json`` for a tuple of ``(str, str)``
        tuples, immutable throughout). Raises LocalProtocolError naming the bad field."""
        text = encode_headers(checked_answer(status_code, headers, body))
        if type(headers) is tuple and all(
            type(p) is tuple and len(p) == 2 and type(p[0]) is str and type(p[1]) is str
            for p in headers
        ):
            cache = self._header_json
            if len(cache) >= MAX_HEADER_TEXTS:
                cache.clear()
            cache[headers] = text
        return text

    def send(self, message: object) -> None:
        """Queue any other module->orchestrator message (port_request, service_request, ...).

        Raises ``LocalProtocolError`` for messages the connection manages itself
        (announce, http_response, rotation_ack, get_secret, heartbeat_ack) or before init.
        """
        self._check_alive()
        if isinstance(message, Announce | HttpResponse | RotationAck | GetSecret | HeartbeatAck):
            raise LocalProtocolError(f"{type(message).__name__} is sent by ModuleConnection itself")
        if self._state is ModuleState.AWAITING_INIT:
            raise LocalProtocolError("cannot send before the init line was received")
        self._send(message)

    def _send(self, message: object) -> None:
        self._out.append(self._line(message))

    def _line(self, message: object) -> bytes:
        """``message`` as a line in this connection's body form, length-checked (raises
        LocalProtocolError, hint 413, past the line limit)."""
        text = encode(message, base64_bodies=self._base64)  # type: ignore[arg-type]
        return encode_line(text, max_line_size=self._line_limit)

    # ---------------------------------------------------------------- secrets
    def get_secret(self, name: str, now: float) -> str | None:
        """Return the cached value of ``name``, or None with a ``get_secret`` outstanding.

        Concurrent callers share one round trip: the request is sent only if none is
        pending for ``name``. Answer: ``SecretUpdated``/``SecretFailed`` event.
        Raises ``SecretUnavailable`` once input has ended (no answer can come) and
        ``LocalProtocolError`` before init, past ``MAX_PENDING_SECRETS``, or for a name
        too large for a line (hint 413); nothing is sent or kept then.
        """
        self._check_alive()
        value = self._secrets.get(name)
        if value is not None:
            return value
        if self._state is ModuleState.AWAITING_INIT:
            raise LocalProtocolError("cannot request secrets before init")
        if self._input_ended:
            raise SecretUnavailable(f"{name}: input closed")
        if name not in self._pending_secrets:
            if len(self._pending_secrets) >= MAX_PENDING_SECRETS:
                raise LocalProtocolError("too many secret requests outstanding")
            self._now = max(self._now, now)
            self._request_secret(name)
        return None

    def cached_secret(self, name: str) -> str | None:
        """Return the cached value of ``name`` without asking the orchestrator."""
        return self._secrets.get(name)

    def _request_secret(self, name: str) -> None:
        self._send(GetSecret(name=name))  # first: a name too large for a line is not kept
        self._pending_secrets[name] = self._now + self._secret_timeout

    def _store_secret(self, name: str, value: str) -> None:
        secrets = self._secrets
        secrets.pop(name, None)
        secrets[name] = value
        if len(secrets) > MAX_CACHED_SECRETS:
            old, _ = secrets.popitem(last=False)
            self._secret_rotation.pop(old, None)

    def _fail_secrets(self, reason: str, now: float = float("inf")) -> None:
        """``SecretFailed`` for every pending secret whose deadline is at or before ``now``."""
        for name, deadline in list(self._pending_secrets.items()):
            if deadline <= now:
                del self._pending_secrets[name]
                self._events.append(SecretFailed(name=name, reason=reason))

    def ack_rotation(self, rotation_id: str, error: str | None = None) -> None:
        """Answer a ``RotationRequested``: ``status`` "success", or "error" with ``error``.

        Raises ``LocalProtocolError`` for a rotation id that is not awaiting an ack.
        """
        self._check_alive()
        try:
            self._pending_rotations.remove(rotation_id)
        except KeyError:
            raise LocalProtocolError(f"no rotation {rotation_id!r} awaiting an ack") from None
        status = "success" if error is None else "error"
        self._send(RotationAck(rotation_id=rotation_id, status=status, message=error))
        self._maybe_drained()

    # ------------------------------------------------- calls and the registry
    def _can_send_calls(self) -> None:
        self._check_alive()
        if self._state is ModuleState.AWAITING_INIT:
            raise LocalProtocolError("cannot call modules before the init line was received")

    def start_call(
        self,
        target: str,
        endpoint: str,
        value: object,
        now: float,
        *,
        timeout: float | None = None,
    ) -> str:
        """Call ``endpoint`` of module ``target`` with ``value`` (spec/modules.md); return the
        call's id. The ``route_to_module`` line is queued in ``data_to_send()``; the outcome
        arrives as ``CallReplied`` or ``CallFailed`` (at the latest at the deadline).

        Raises ``CallRejectedError`` after end of input or with too many calls in flight,
        ``LocalProtocolError`` before init, in ERROR, for bad arguments (see
        ``CallTracker.start``) or a line too large (hint 413). Nothing is sent or kept then.
        """
        from ._calls import CallRejectedError, CallTracker

        self._can_send_calls()
        if self._eof:
            raise CallRejectedError("input closed", target=target, endpoint=endpoint)
        if self._calls is None:
            self._calls = CallTracker(rng=self._rng)
        self._now = max(self._now, now)
        msg = self._calls.start(target, endpoint, value, self._now, timeout=timeout)
        try:
            self._send(msg)
        except LocalProtocolError:  # too large for a line: never sent, so nothing waits
            self._calls.cancel(str(msg.request_id))
            raise
        return str(msg.request_id)

    def cancel_call(self, request_id: str) -> bool:
        """Forget call ``request_id`` (its caller gave up); a later answer is dropped.
        Returns True if it was in flight."""
        return self._calls is not None and self._calls.cancel(request_id)

    @property
    def calls_in_flight(self) -> int:
        """Module calls started and not yet answered or failed."""
        return self._calls.in_flight if self._calls is not None else 0

    def start_service_request(
        self, message: RegisterServiceProvider | DiscoverServiceProviders, now: float
    ) -> int:
        """Send a registration or discovery request; return its token. The answer arrives as
        ``ServiceAnswered`` (paired first-in-first-out per op, spec/modules.md section 7) or
        ``ServiceFailed`` at the deadline.

        Raises ``LocalProtocolError`` before init, after end of input, in ERROR, or with
        too many requests of that op awaiting answers, or a line too large (hint 413).
        Nothing is sent or kept then.
        """
        from ._calls import ServiceRequests

        self._can_send_calls()
        if self._eof:
            raise LocalProtocolError("input closed")
        if not isinstance(message, RegisterServiceProvider | DiscoverServiceProviders):
            raise LocalProtocolError(f"{type(message).__name__} is not a registry request")
        if self._services is None:
            self._services = ServiceRequests()
        self._now = max(self._now, now)
        line = self._line(message)
        token = self._services.start(message, self._now)
        self._out.append(line)
        return token

    def _on_routed_response(self, msg: RoutedModuleResponse, line: bytes) -> None:
        # an unknown answer is handed on as the plain message (the driver logs it); a late
        # one (its caller already has its error) is dropped quietly
        event = self._calls.on_response(msg) if self._calls is not None else msg
        if event is not None:
            self._events.append(event)

    def _on_service_response(
        self, msg: RegisterServiceProviderResponse | DiscoverServiceProvidersResponse, line: bytes
    ) -> None:
        event = self._services.on_response(msg) if self._services is not None else None
        self._events.append(event if event is not None else msg)

    # ----------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        """Return the earliest deadline (same clock as ``now``), or None if nothing is timed."""
        best = self._first_deadline()
        for deadline in self._pending_secrets.values():
            if best is None or deadline < best:
                best = deadline
        for table in (self._calls, self._services):
            if table is not None:
                when = table.get_timer()
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def handle_timer(self, now: float) -> None:
        """Expire every deadline at or before ``now``.

        Overdue requests are answered 504 (``RequestTimedOut`` event each); overdue secret
        requests give ``SecretFailed``. Returns None; never raises except in ERROR state.
        """
        self._check_alive()
        self._now = max(self._now, now)
        self._expire_requests(now)
        self._fail_secrets("timed out", now)
        for table in (self._calls, self._services):
            if table is not None:
                self._events.extend(table.handle_timer(now))
        self._maybe_secrets_ready()
        self._maybe_drained()


_new_object = object.__new__
#: Bodies at least this long are spliced into their line as bytes (no str copy of the body).
_SPLICE_MIN: Final = 1024
# UUID v4 (RFC 9562 section 5.4): version nibble 4, variant bits 10, the rest random.
_UUID_V4_BITS: Final = (0x4 << 76) | (0x8 << 60)
_UUID_RANDOM_BITS: Final = ((1 << 128) - 1) ^ (0xF << 76) ^ (0xC << 60)
_RUNNING: Final = ModuleState.RUNNING
_CLOSING: Final = ModuleState.CLOSING
_ERROR: Final = ModuleState.ERROR


def _request_received(rid: str, msg: HttpRequest, path: str, query: str) -> RequestReceived:
    """``RequestReceived(request_id=rid, ...)`` from checked values, without the keyword
    call (the core builds one per request)."""
    event = _new_object(RequestReceived)
    event.request_id = rid
    event.request = msg
    event.path = path
    event.query = query
    return event


_HEARTBEAT_ACK_LINE: Final = encode_line(encode(HeartbeatAck()))

if TYPE_CHECKING:
    _Handler: TypeAlias = Callable[[ModuleConnection, Any, bytes], None]
_HANDLERS: Final[dict[type, _Handler]] = {
    HttpRequest: ModuleConnection._on_http_request,
    Secret: ModuleConnection._on_secret,
    Rotated: ModuleConnection._on_rotated,
    Heartbeat: ModuleConnection._on_heartbeat,
    Shutdown: ModuleConnection._on_shutdown,
    RoutedModuleResponse: ModuleConnection._on_routed_response,
    RegisterServiceProviderResponse: ModuleConnection._on_service_response,
    DiscoverServiceProvidersResponse: ModuleConnection._on_service_response,
}
