"""``OrchestratorConnection``: the orchestrator's side of a module's stdio link (pure).

Theory of operation
-------------------
The orchestrator writes to the module's stdin and reads its stdout. A driver (the ``pywatt``
development orchestrator, a test) loops exactly like a module driver::

    conn = OrchestratorConnection(init=Init(...), secrets={"DB": "..."})
    conn.start(now)                                 # queues the init line (with extensions)
    write(conn.data_to_send())
    feed stdout bytes: conn.receive_data(chunk, now) / conn.receive_eof()
    drain conn.next_event() until NEED_DATA:
        AnnounceReceived            -> start forwarding HTTP: rid = conn.send_request(...)
        ResponseReceived     -> answer the client of rid
        RequestFailed        -> answer that client with event.status (502 crash, 504 timeout)
        PortRequested        -> allocate, then conn.answer_port(...)
        SecretRequested      -> (unknown names only; known ones were answered already)
        RotationAcknowledged, ModuleUnresponsive, AnnounceTimedOut, BadModuleLine, END_OF_INPUT
    arm conn.get_timer(); on expiry conn.handle_timer(now) (heartbeats, deadlines, grace)

Bodies and line limits follow the form the module selected (spec/limits.md section 1.1,
``max_body``). Responses are accepted in both shapes a module may write: the flat
``http_response`` op and the reference's ``{"content":...,"metadata":...}`` wrapper. Heartbeat
misses are only counted when the module announced ``heartbeat_ack`` (a reference Rust module
never acks on stdio, spec/reference.md R11); ``ModuleUnresponsive`` is emitted once when
``max_missed_heartbeats`` in a row go unanswered.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

from ._bodies import (
    BASE64_LINE_LIMIT,
    EXT_BASE64_BODIES,
    MAX_BASE64_BODY,
    MAX_REFERENCE_BODY,
    scan_request_id,
)
from ._codec import decode_module_line, encode, http_request_line
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
from ._messages import (
    Announce,
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
    GetSecret,
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Init,
    ModuleToOrchestrator,
    PortRequest,
    PortResponse,
    RegisterServiceProvider,
    RegisterServiceProviderResponse,
    Rotated,
    RotationAck,
    RoutedModuleMessage,
    RouteError,
    RouteToModule,
    Secret,
    Shutdown,
)
from ._records import record, replace
from ._routing import PendingCalls, call_answer, call_delivery, reply_from_http

if TYPE_CHECKING:
    import uuid

# ============================================================================
# STATE TABLE -- everything that changes OrchestratorConnection.state lives here.
#   * CREATED --start--> AWAITING_ANNOUNCE (init queued, announce deadline armed).
#   * AWAITING_ANNOUNCE --announce--> RUNNING; --deadline--> FAILED.
#   * RUNNING --shutdown()--> SHUTTING_DOWN (shutdown queued, grace deadline armed).
#   * module output ends (EOF) in any live state -> EXITED; every in-flight request
#     becomes RequestFailed(502) ("the module went away").
#   * SHUTTING_DOWN --grace expired--> EXITED as far as the protocol is concerned
#     (the driver then kills the process).
#   * A (state, input) pair not in the table is a LocalProtocolError.
# ============================================================================


class OrchestratorState(enum.Enum):
    CREATED = "created"
    AWAITING_ANNOUNCE = "awaiting_announce"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting_down"
    EXITED = "exited"
    FAILED = "failed"


class OrchestratorInput(enum.Enum):
    START = "start"
    ANNOUNCE = "announce"
    ANNOUNCE_DEADLINE = "announce_deadline"
    SHUTDOWN = "shutdown"
    EOF = "eof"
    GRACE_EXPIRED = "grace_expired"


_S = OrchestratorState
ORCHESTRATOR_MACHINE: Final[Machine[OrchestratorState, OrchestratorInput]] = Machine(
    "orchestrator link",
    {
        (_S.CREATED, OrchestratorInput.START): _S.AWAITING_ANNOUNCE,
        (_S.AWAITING_ANNOUNCE, OrchestratorInput.ANNOUNCE): _S.RUNNING,
        (_S.AWAITING_ANNOUNCE, OrchestratorInput.ANNOUNCE_DEADLINE): _S.FAILED,
        (_S.AWAITING_ANNOUNCE, OrchestratorInput.EOF): _S.EXITED,
        (_S.AWAITING_ANNOUNCE, OrchestratorInput.SHUTDOWN): _S.SHUTTING_DOWN,
        (_S.RUNNING, OrchestratorInput.SHUTDOWN): _S.SHUTTING_DOWN,
        (_S.RUNNING, OrchestratorInput.EOF): _S.EXITED,
        (_S.SHUTTING_DOWN, OrchestratorInput.EOF): _S.EXITED,
        (_S.SHUTTING_DOWN, OrchestratorInput.SHUTDOWN): _S.SHUTTING_DOWN,
        (_S.SHUTTING_DOWN, OrchestratorInput.GRACE_EXPIRED): _S.EXITED,
        (_S.FAILED, OrchestratorInput.EOF): _S.FAILED,
        (_S.FAILED, OrchestratorInput.SHUTDOWN): _S.FAILED,
        (_S.EXITED, OrchestratorInput.EOF): _S.EXITED,
        (_S.EXITED, OrchestratorInput.SHUTDOWN): _S.EXITED,
    },
)


#: Seconds the module has to announce after init (the reference has no such limit; 10 s
#: is long enough for a module that prefetches secrets with the 5 s secret timeout).
DEFAULT_ANNOUNCE_TIMEOUT: Final = 10.0
#: Seconds between heartbeats.
DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
#: Consecutive unanswered heartbeats before ModuleUnresponsive (only with heartbeat_ack).
DEFAULT_MAX_MISSED_HEARTBEATS: Final = 3
#: Seconds before a forwarded request is failed with 504 ([P] client timeout 30 s).
DEFAULT_ORCH_REQUEST_TIMEOUT: Final = 30.0
#: Seconds between shutdown and ShutdownGraceExpired (then the driver kills the process).
DEFAULT_SHUTDOWN_GRACE: Final = 5.0
#: Requests forwarded and not yet answered; send_request refuses more (hint 503) so the
#: correlation table stays bounded. Matches the module side's default.
DEFAULT_ORCH_MAX_IN_FLIGHT: Final = 1024
#: Unanswered port requests remembered (the module retries at most a few times).
MAX_PENDING_PORT_REQUESTS: Final = 64
#: Rotations sent and not yet acknowledged (the module side bounds the same at 64).
MAX_PENDING_ROTATIONS: Final = 64
#: Extensions the orchestrator offers in init.
ORCHESTRATOR_EXTENSIONS: Final = (EXT_BASE64_BODIES, "heartbeat_ack", "http_response_op")


@record
class AnnounceReceived:
    """The module announced; ``extensions`` = what it will use."""

    announce: Announce
    extensions: frozenset[str]


@record
class AnnounceTimedOut:
    """No announce within the deadline; the connection is FAILED."""


@record
class ResponseReceived:
    """The module answered ``request_id`` (flat op or wrapper)."""

    request_id: str
    response: HttpResponse


@record
class RequestFailed:
    """``request_id`` will never be answered: ``status`` 504 (deadline) or 502 (module gone)."""

    request_id: str
    status: int
    reason: str


@record
class PortRequested:
    """The module asked for a port; allocate one and call ``answer_port``."""

    request: PortRequest


@record
class SecretRequested:
    """``get_secret`` for a name not in the store (the protocol has no negative answer)."""

    name: str


@record
class RotationAcknowledged:
    """The module answered a rotation."""

    rotation_id: str
    status: str
    message: str | None


@record
class ModuleUnresponsive:
    """``missed`` heartbeats in a row went unanswered (emitted once per silence)."""

    missed: int


@record
class ShutdownGraceExpired:
    """The module did not exit within the grace period; the driver should kill it."""


@record
class BadModuleLine:
    """A module line was skipped (malformed, or an answer nobody is waiting for)."""

    line: bytes
    error: RemoteProtocolError


@record
class CallRequested:
    """The module called ``target_endpoint`` of ``target_module_id`` (spec/modules.md).

    Deliver it: POST ``target_endpoint`` with ``headers`` and ``body`` to the target, then
    ``answer_call(request_id, status, headers, body)`` -- or ``fail_call`` when the target is
    unknown or gone. The connection answers ``deadline`` by itself at ``deadline`` (and emits
    ``CallAbandoned``).
    """

    request_id: str
    target_module_id: str
    target_endpoint: str
    headers: dict[str, str]
    body: bytes
    deadline: float


@record
class CallAbandoned:
    """Call ``request_id`` was answered by the connection itself (its deadline passed, or the
    calling module went away): stop waiting for the target; a later answer is dropped."""

    request_id: str
    reason: str


@record
class ProviderRegistrationRequested:
    """``register_service_provider``: answer with ``answer_service`` (in order)."""

    request: RegisterServiceProvider


@record
class ProviderDiscoveryRequested:
    """``discover_service_providers``: answer with ``answer_service`` (in order)."""

    request: DiscoverServiceProviders


OrchestratorEvent: TypeAlias = (
    CallRequested
    | CallAbandoned
    | ProviderRegistrationRequested
    | ProviderDiscoveryRequested
    | AnnounceReceived
    | AnnounceTimedOut
    | ResponseReceived
    | RequestFailed
    | PortRequested
    | SecretRequested
    | RotationAcknowledged
    | ModuleUnresponsive
    | ShutdownGraceExpired
    | BadModuleLine
    | ModuleToOrchestrator
)


class OrchestratorConnection:
    """The orchestrator's side of one module (see the module docstring for a driver loop).

    Args:
        init: the init blob to send (its ``extensions`` default to ``ORCHESTRATOR_EXTENSIONS``
            when it has none).
        secrets: name -> value served to ``get_secret``; updated by ``rotate``.
        announce_timeout, heartbeat_interval, max_missed_heartbeats, request_timeout,
        shutdown_grace: seconds / counts, see the module constants. ``heartbeat_interval``
            ``None`` disables heartbeats.
        max_in_flight: forwarded requests awaiting an answer.
        extensions: the extensions offered in init, exactly (``()`` offers none and the init
            has no ``pywatt_extensions`` key, as from the reference orchestrator); ``None``
            keeps the init's own, or ``ORCHESTRATOR_EXTENSIONS`` when it has none.
    """

    def __init__(
        self,
        *,
        init: Init,
        secrets: Mapping[str, str] | None = None,
        announce_timeout: float = DEFAULT_ANNOUNCE_TIMEOUT,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        max_missed_heartbeats: int = DEFAULT_MAX_MISSED_HEARTBEATS,
        request_timeout: float = DEFAULT_ORCH_REQUEST_TIMEOUT,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        max_in_flight: int = DEFAULT_ORCH_MAX_IN_FLIGHT,
        extensions: tuple[str, ...] | None = None,
    ) -> None:
        if extensions is not None:
            init = replace(init, extensions=tuple(extensions))
        elif not init.extensions:
            init = replace(init, extensions=ORCHESTRATOR_EXTENSIONS)
        self._init = init
        self._secrets: dict[str, str] = dict(secrets or {})
        self._announce_timeout = announce_timeout
        self._heartbeat_interval = heartbeat_interval
        self._max_missed = max_missed_heartbeats
        self._request_timeout = request_timeout
        self._shutdown_grace = shutdown_grace
        self._max_in_flight = max_in_flight
        self._state = OrchestratorState.CREATED
        # Over-long lines are reported at their end, with their last bytes: the reference's
        # sorted stdout wrapper puts a response's request_id after its body.
        self._decoder = LineDecoder(DEFAULT_MAX_LINE_SIZE, oversized_tail=True)
        self._base64 = False  # the module selected base64_bodies
        self._line_limit = DEFAULT_MAX_LINE_SIZE
        # Whole lines for the module's stdin; the driver drains it after every call, so it
        # holds one call's output (at most max_in_flight requests' worth).
        self._out: list[bytes] = []
        self._events: list[OrchestratorEvent] = []  # bounded by in-flight + a few timers
        self._now = 0.0
        self._announce: Announce | None = None
        self._extensions: frozenset[str] = frozenset()
        self._announce_deadline: float | None = None
        self._grace_deadline: float | None = None
        self._next_heartbeat: float | None = None
        self._missed = 0
        self._unresponsive_reported = False
        self._next_id = 0
        # request_id -> deadline; insertion order is deadline order (constant timeout).
        self._in_flight: dict[str, float] = {}
        # The last max_in_flight ids given up (client gone, 504): a late answer says so.
        self._given_up: dict[str, None] = {}
        self._pending_ports: set[str] = set()
        self._pending_rotations: set[str] = set()
        self._calls = PendingCalls()  # module calls read from this module

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> OrchestratorState:
        """The current state (table at the top of this file)."""
        return self._state

    @property
    def announce(self) -> Announce | None:
        """The module's announce, once received."""
        return self._announce

    @property
    def extensions(self) -> frozenset[str]:
        """Extensions the module said it uses."""
        return self._extensions

    @property
    def in_flight(self) -> int:
        """Forwarded requests not yet answered or failed."""
        return len(self._in_flight)

    def _fire(self, inp: OrchestratorInput) -> None:
        self._state = ORCHESTRATOR_MACHINE.next(self._state, inp)

    # ----------------------------------------------------------------- output
    @property
    def max_body(self) -> int:
        """The largest request body :meth:`send_request` always forwards: 4,177,920 bytes in
        the reference form, 75,448,320 once the module selected ``base64_bodies``
        (spec/limits.md section 1.1). Larger bodies are refused (hint 413) only when the
        whole line does not fit, so this is the limit a front door announces."""
        return MAX_BASE64_BODY if self._base64 else MAX_REFERENCE_BODY

    def _send(self, msg: object) -> None:
        text = encode(msg, base64_bodies=self._base64)  # type: ignore[arg-type]
        self._out.append(encode_line(text, max_line_size=self._line_limit))

    def data_to_send(self) -> bytes:
        """Return (and forget) every queued byte for the module's stdin (whole lines)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def start(self, now: float) -> None:
        """Queue the init line and arm the announce deadline.

        Raises ``LocalProtocolError`` if already started.
        """
        self._fire(OrchestratorInput.START)
        self._now = now
        self._send(self._init)
        self._announce_deadline = now + self._announce_timeout

    def send_request(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        body: bytes | None,
        now: float,
        *,
        request_id: str | None = None,
    ) -> str:
        """Forward one HTTP request; return its ``request_id`` (``"r<n>"`` unless given).

        Raises ``LocalProtocolError`` if the module is not RUNNING (hint 503), the id is
        already in flight, or ``max_in_flight`` is reached (hint 503). State unchanged then.
        """
        if self._state is not OrchestratorState.RUNNING:
            raise LocalProtocolError(
                f"module is not running ({self._state.name})", error_status_hint=503
            )
        if len(self._in_flight) >= self._max_in_flight:
            raise LocalProtocolError("too many requests in flight", error_status_hint=503)
        if request_id is None:
            self._next_id += 1
            request_id = f"r{self._next_id}"
        elif request_id in self._in_flight:
            raise LocalProtocolError(f"request {request_id!r} already in flight")
        msg = HttpRequest(
            request_id=request_id, method=method, uri=uri, headers=dict(headers), body=body
        )
        # Length-checked (spec/limits.md 1.1): a request too large for the line raises its
        # LocalProtocolError (hint 413) here, before anything is queued or remembered.
        line = http_request_line(msg, base64_bodies=self._base64, max_line_size=self._line_limit)
        self._out.append(line)
        self._now = max(self._now, now)
        self._in_flight[request_id] = self._now + self._request_timeout
        return request_id

    def cancel_request(self, request_id: str) -> bool:
        """Forget ``request_id`` (its client went away); a later answer becomes a BadModuleLine.

        Returns True if it was in flight.
        """
        if self._in_flight.pop(request_id, None) is None:
            return False
        self._give_up(request_id)
        return True

    def _give_up(self, request_id: str) -> None:
        given_up = self._given_up
        given_up[request_id] = None
        if len(given_up) > self._max_in_flight:
            del given_up[next(iter(given_up))]

    def answer_port(
        self, request_id: str, *, port: int | None = None, error: str | None = None
    ) -> None:
        """Answer a ``PortRequested``: ``port`` on success, else ``error``.

        Raises ``LocalProtocolError`` for an unknown request id or when neither/both given.
        """
        if (port is None) == (error is None):
            raise LocalProtocolError("answer_port needs exactly one of port and error")
        try:
            self._pending_ports.remove(request_id)
        except KeyError:
            raise LocalProtocolError(f"no port request {request_id!r} pending") from None
        self._send(
            PortResponse(
                request_id=request_id, success=port is not None, port=port or 0, error_message=error
            )
        )

    def set_secret(self, name: str, value: str) -> None:
        """Add or change a served secret without telling the module."""
        self._secrets[name] = value

    def push_secret(self, name: str, value: str) -> None:
        """Store ``value`` and send it to the module unsolicited."""
        self._secrets[name] = value
        self._send(Secret(name=name, value=value, rotation_id=None))

    def rotate(self, values: Mapping[str, str], rotation_id: str) -> None:
        """Rotate secrets: store them, push each ``secret`` and then ``rotated``.

        The answer comes back as ``RotationAcknowledged``. Raises ``LocalProtocolError``
        (nothing sent) when ``MAX_PENDING_ROTATIONS`` rotations are still unacknowledged.
        """
        if len(self._pending_rotations) >= MAX_PENDING_ROTATIONS:
            raise LocalProtocolError("too many rotations awaiting an ack", error_status_hint=503)
        for name, value in values.items():
            self._secrets[name] = value
            self._send(Secret(name=name, value=value, rotation_id=rotation_id))
        self._pending_rotations.add(rotation_id)
        self._send(Rotated(keys=tuple(values), rotation_id=rotation_id))

    def shutdown(self, now: float) -> None:
        """Queue ``shutdown`` and arm the grace deadline (no-op when already stopping/gone)."""
        if self._state in (_S.EXITED, _S.FAILED, _S.SHUTTING_DOWN):
            return
        if self._state is OrchestratorState.CREATED:
            raise LocalProtocolError("shutdown before start")
        self._fire(OrchestratorInput.SHUTDOWN)
        self._send(Shutdown())
        self._grace_deadline = now + self._shutdown_grace

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> None:
        """Buffer bytes read from the module's stdout."""
        self._now = max(self._now, now)
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """The module's stdout closed (it exited or crashed)."""
        self._decoder.receive_eof()

    def next_event(self) -> OrchestratorEvent | NeedData | EndOfInput:
        """Return the next event, ``NEED_DATA`` or ``END_OF_INPUT``. Never raises for bad input."""
        events = self._events
        while not events:
            try:
                line = self._decoder.next_line()
            except LineTooLong as exc:
                return self._line_too_long(exc)
            except RemoteProtocolError as exc:
                return BadModuleLine(line=b"", error=exc)
            if line is NEED_DATA:
                return NEED_DATA
            if line is END_OF_INPUT:
                if self._state not in (OrchestratorState.EXITED, OrchestratorState.FAILED):
                    self._fire(OrchestratorInput.EOF)
                    self._fail_all(502, "module exited")
                    self._abandon_calls("calling module exited")
                    if events:
                        break
                return END_OF_INPUT
            assert isinstance(line, bytes)
            self._handle_line(line)
        return events.pop(0)

    def _line_too_long(self, exc: LineTooLong) -> BadModuleLine:
        self._fail_scanned(exc.head, exc.tail, "response too large")
        return BadModuleLine(line=exc.head, error=exc)

    def _fail_scanned(self, head: bytes, tail: bytes, reason: str) -> None:
        """A module line too long or undecodable: fail its request with 502 now, when its
        request_id is in the line's first or last bytes (spec/limits.md, "Bounded scan")."""
        rid = scan_request_id(head, tail, op="http_response")
        if rid is not None and self._in_flight.pop(rid, None) is not None:
            self._events.append(RequestFailed(request_id=rid, status=502, reason=reason))

    def _fail_all(self, status: int, reason: str) -> None:
        for rid in self._in_flight:
            self._events.append(RequestFailed(request_id=rid, status=status, reason=reason))
        self._in_flight.clear()

    def _handle_line(self, line: bytes) -> None:
        try:
            msg = decode_module_line(line, base64_bodies=self._base64)
        except RemoteProtocolError as exc:
            self._fail_scanned(line, line, "invalid response")
            self._events.append(BadModuleLine(line=line, error=exc))
            return
        match msg:
            case HttpResponse(request_id=rid):
                if self._in_flight.pop(rid, None) is not None:
                    self._events.append(ResponseReceived(request_id=rid, response=msg))
                elif rid in self._given_up:
                    del self._given_up[rid]
                    why = "given up: client gone or deadline passed"
                    self._bad_line(line, f"late response for request {rid!r} ({why})", "request_id")
                else:
                    self._bad_line(line, f"response for unknown request {rid!r}", "request_id")
            case HeartbeatAck():
                self._missed = 0
                self._unresponsive_reported = False
            case Announce():
                self._on_announce(msg, line)
            case GetSecret(name=name):
                value = self._secrets.get(name)
                if value is None:
                    self._events.append(SecretRequested(name=name))
                else:
                    self._send(Secret(name=name, value=value, rotation_id=None))
            case RotationAck(rotation_id=rotation_id):
                self._pending_rotations.discard(rotation_id)
                if "heartbeat_ack" not in self._extensions:
                    # A reference module reads one more stdin line after its ack and throws it
                    # away (spec/reference.md R10): give it a heartbeat, which it ignores.
                    self._send(Heartbeat())
                self._events.append(
                    RotationAcknowledged(
                        rotation_id=rotation_id, status=msg.status, message=msg.message
                    )
                )
            case RouteToModule():
                self._on_call(msg, line)
            case RegisterServiceProvider():
                self._events.append(ProviderRegistrationRequested(request=msg))
            case DiscoverServiceProviders():
                self._events.append(ProviderDiscoveryRequested(request=msg))
            case PortRequest():
                if len(self._pending_ports) >= MAX_PENDING_PORT_REQUESTS:
                    self._bad_line(line, "too many port requests pending", "request_id")
                else:
                    self._pending_ports.add(msg.request_id)
                    self._events.append(PortRequested(request=msg))
            case _:
                self._events.append(msg)

    def _bad_line(self, line: bytes, message: str, field: str) -> None:
        self._events.append(
            BadModuleLine(line=line, error=RemoteProtocolError(message, field=field))
        )

    def _on_announce(self, msg: Announce, line: bytes) -> None:
        if self._state is not OrchestratorState.AWAITING_ANNOUNCE:
            self._bad_line(line, "announce received twice", "op")
            return
        self._fire(OrchestratorInput.ANNOUNCE)
        self._announce = msg
        self._extensions = frozenset(msg.extensions or ()) & frozenset(self._init.extensions)
        if EXT_BASE64_BODIES in self._extensions:
            self._base64 = True
            self._line_limit = BASE64_LINE_LIMIT
            self._decoder.set_max_line_size(BASE64_LINE_LIMIT)
        self._announce_deadline = None
        if self._heartbeat_interval is not None:
            self._next_heartbeat = self._now + self._heartbeat_interval
        self._events.append(AnnounceReceived(announce=msg, extensions=self._extensions))

    # ----------------------------------------------------------- module calls
    def _on_call(self, msg: RouteToModule, line: bytes) -> None:
        rid = str(msg.request_id)
        try:
            headers, body, timeout_ms = call_delivery(
                msg.payload, source_module_id=self._init.module_id, request_id=rid
            )
        except RemoteProtocolError as exc:
            err = RouteError(kind="rejected", message=f"unusable payload: {exc.message}")
            self._send(call_answer(msg, err))
            self._events.append(BadModuleLine(line=line, error=exc))
            return
        entry = self._calls.admit(msg, self._now, timeout_ms)
        if isinstance(entry, RouteError):
            self._send(call_answer(msg, entry))
            return
        self._events.append(
            CallRequested(
                request_id=rid,
                target_module_id=msg.target_module_id,
                target_endpoint=msg.target_endpoint,
                headers=headers,
                body=body,
                deadline=entry.deadline,
            )
        )

    def answer_call(
        self, request_id: str, status: int, headers: Mapping[str, str], body: bytes | None
    ) -> bool:
        """Relay the target's HTTP answer to call ``request_id`` as ``routed_module_response``
        (2xx: the reply value; 404/405 ``unknown_endpoint``; else ``target_failed``).

        Returns False (nothing sent) when the call is no longer pending (deadline passed,
        answered already, or unknown). Never raises for a pending call.
        """
        entry = self._calls.pop(request_id)
        if entry is None:
            return False
        outcome = reply_from_http(
            status, headers, body, target=entry.target_module_id, endpoint=entry.target_endpoint
        )
        self._send(call_answer(entry, outcome))
        return True

    def fail_call(
        self, request_id: str, kind: str, message: str, *, status: int | None = None
    ) -> bool:
        """Answer call ``request_id`` with error ``kind`` (``unknown_module``,
        ``target_failed``, ...; spec/modules.md section 5) at once.

        Returns False (nothing sent) when the call is no longer pending. Raises
        ``LocalProtocolError`` for an empty kind or message.
        """
        err = RouteError(kind=kind, message=message, status=status)
        entry = self._calls.pop(request_id)
        if entry is None:
            return False
        self._send(call_answer(entry, err))
        return True

    @property
    def calls_pending(self) -> int:
        """Calls read from this module and not yet answered."""
        return len(self._calls)

    def _abandon_calls(self, reason: str) -> None:
        for _, entry in self._calls.clear():
            self._events.append(CallAbandoned(request_id=str(entry.request_id), reason=reason))

    def send_routed_message(
        self, source_module_id: str, request_id: uuid.UUID, payload: EncodedMessage
    ) -> None:
        """Queue a one-way ``routed_module_message`` (spec/modules.md section 6), as a
        reference orchestrator delivers one. Raises ``LocalProtocolError`` before start."""
        if self._state is OrchestratorState.CREATED:
            raise LocalProtocolError("send_routed_message before start")
        self._send(
            RoutedModuleMessage(
                source_module_id=source_module_id,
                original_request_id=request_id,
                payload=payload,
            )
        )

    def answer_service(
        self, response: RegisterServiceProviderResponse | DiscoverServiceProvidersResponse
    ) -> None:
        """Send the answer to the oldest unanswered registration / discovery of its kind
        (answers go in request order, spec/modules.md section 7)."""
        self._send(response)

    # ----------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        """Return the earliest deadline (heartbeat, announce, request, call, grace) or None."""
        timers = (
            self._announce_deadline,
            self._grace_deadline,
            self._next_heartbeat,
            next(iter(self._in_flight.values()), None),
            self._calls.get_timer(),
        )
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline at or before ``now`` (events are then in ``next_event``)."""
        self._now = max(self._now, now)
        if self._announce_deadline is not None and now >= self._announce_deadline:
            self._announce_deadline = None
            if self._state is OrchestratorState.AWAITING_ANNOUNCE:
                self._fire(OrchestratorInput.ANNOUNCE_DEADLINE)
                self._events.append(AnnounceTimedOut())
        in_flight = self._in_flight
        while in_flight:
            rid, deadline = next(iter(in_flight.items()))
            if deadline > now:
                break
            del in_flight[rid]
            self._give_up(rid)
            self._events.append(
                RequestFailed(request_id=rid, status=504, reason="module did not answer in time")
            )
        for _, entry in self._calls.expire(now):
            err = RouteError(kind="deadline", message="no answer within the deadline")
            self._send(call_answer(entry, err))
            self._events.append(CallAbandoned(request_id=str(entry.request_id), reason="deadline"))
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            if self._state is OrchestratorState.RUNNING:
                if "heartbeat_ack" in self._extensions:
                    # _missed = heartbeats sent since the last ack (i.e. unanswered so far).
                    if self._missed >= self._max_missed and not self._unresponsive_reported:
                        self._unresponsive_reported = True
                        self._events.append(ModuleUnresponsive(missed=self._missed))
                    self._missed += 1
                self._send(Heartbeat())
                assert self._heartbeat_interval is not None
                self._next_heartbeat = now + self._heartbeat_interval
            else:
                self._next_heartbeat = None
        if self._grace_deadline is not None and now >= self._grace_deadline:
            self._grace_deadline = None
            if self._state is OrchestratorState.SHUTTING_DOWN:
                self._fire(OrchestratorInput.GRACE_EXPIRED)
                self._fail_all(502, "module did not stop in time")
                self._events.append(ShutdownGraceExpired())
