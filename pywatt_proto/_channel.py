"""``ChannelConnection``: the module's side of one framed TCP / Unix-socket channel.

How a driver uses it
--------------------
The init object may offer ``tcp_channel`` and/or ``ipc_channel``; :func:`channel_targets`
lists them. A driver keeps one ``ChannelConnection`` per target for the module's whole life
(across reconnects) and runs::

    conn = ChannelConnection(kind=target.kind)
    while True:
        conn.start_connect(now)                      # IDLE / BACKING_OFF -> CONNECTING
        try: open the socket (bounded by DEFAULT_CONNECT_TIMEOUT)
        except OSError as exc:
            retry_at = conn.connect_failed(now, str(exc))     # None: FAILED, give up
            sleep until retry_at; continue
        conn.connected(now)                          # -> OPEN, fresh frame decoder
        read loop:
            conn.receive_data(chunk, now)  /  conn.receive_eof()
            while (ev := conn.next_event()) not in (NEED_DATA, END_OF_INPUT):
                RequestReceived  -> run the router -> conn.send_response(...)
                ShutdownRequested-> begin the module's graceful close
                RequestTimedOut  -> cancel that handler (already answered 504)
                BadFrame         -> log it (skipped; maybe answered 400)
                anything else    -> a plain orchestrator message
            write(conn.data_to_send())               # whole frames; one writer
            arm a timer for conn.get_timer(); when it fires: conn.handle_timer(now)
        retry_at = conn.connection_lost(now, reason)  # None: CLOSED / FAILED, stop

``next_event`` raises :class:`~pywatt_proto.FrameTooLarge` or
:class:`~pywatt_proto.InvalidFormatCode` when the peer sends a header that cannot be
trusted; the channel is then FAILED for good (``error`` holds the exception) and the driver
closes the socket without reconnecting: a peer that framed one message wrongly will do so
again, and nothing after a bad header is aligned.

Theory of operation
-------------------
The two directions are asymmetric (``spec/framed.md`` section 3): the orchestrator sends a
*bare* message object, the module answers with the ``Message`` envelope
``{"id":<uuid v4>,"content":<message>,"metadata":{}}``. As the spec recommends, the reader
also accepts an envelope, and (section 5) JSON bytes labelled Binary or Base64.

Automatic replies are queued in ``data_to_send()``: an enveloped ``heartbeat_ack`` for every
``heartbeat``, and the core's own 400/503/504 answers (the request rules are the stdio link's,
``_module.ServingLink``). Requests in flight when a connection is lost cannot be answered any
more; a later ``send_response`` for them returns False.

Reconnecting (the reference retries forever without jitter, spec/reference.md R17) follows
``connect_backoff`` until the first connection, then ``reconnect_backoff``; when the attempts
are used up the channel is FAILED and the module carries on with stdio alone. Input is decoded
lazily, one frame per ``next_event`` call.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Callable, Iterable, Mapping

from ._backoff import Backoff, RetryState
from ._codec import decode_envelope, decode_orchestrator_to_module, encode_envelope
from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    EndOfInput,
    Frame,
    FrameDecoder,
    NeedData,
    TruncatedInput,
    encode_frame,
)
from ._fsm import Machine
from ._messages import (
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Init,
    Message,
    MessageMetadata,
    ModuleToOrchestrator,
    OrchestratorToModule,
    Shutdown,
    TcpListen,
)
from ._module import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT,
    RequestReceived,
    RequestTimedOut,
    ServingLink,
    ShutdownRequested,
    checked_answer,
    error_body,
)
from ._payload import convert_payload
from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not loaded at run time (start-up time)
    from typing import Final, TypeAlias

# ============================================================================
# STATE TABLE -- everything that changes ChannelConnection.state lives here.
#   * IDLE: created, never connected.  CONNECTING: the driver is opening a socket.
#   * OPEN: frames flow both ways.  BACKING_OFF: waiting for the next attempt.
#   * CLOSING: shutdown received (or the module is stopping): the connection stays
#     up so in-flight requests are answered, new requests get 503; a lost
#     connection is not re-opened.
#   * CLOSED: stopped on purpose.  FAILED: attempts used up, or a fatal framing
#     error (``error`` says which). Both are terminal.
#   * A (state, input) pair not in the table is a LocalProtocolError naming both.
# ============================================================================


class ChannelState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing_off"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class ChannelInput(enum.Enum):
    CONNECT = "connect"
    CONNECTED = "connected"
    RETRY = "retry"  # an attempt failed / the connection was lost; another is allowed
    GIVE_UP = "give_up"  # ... and no attempt is left
    FATAL = "fatal"  # a frame header that cannot be trusted
    SHUTDOWN = "shutdown"
    LOST = "lost"  # connection lost while CLOSING
    CLOSE = "close"


_S = ChannelState
CHANNEL_MACHINE: Final[Machine[ChannelState, ChannelInput]] = Machine(
    "channel",
    {
        (_S.IDLE, ChannelInput.CONNECT): _S.CONNECTING,
        (_S.BACKING_OFF, ChannelInput.CONNECT): _S.CONNECTING,
        (_S.CONNECTING, ChannelInput.CONNECTED): _S.OPEN,
        (_S.CONNECTING, ChannelInput.RETRY): _S.BACKING_OFF,
        (_S.CONNECTING, ChannelInput.GIVE_UP): _S.FAILED,
        (_S.OPEN, ChannelInput.RETRY): _S.BACKING_OFF,
        (_S.OPEN, ChannelInput.GIVE_UP): _S.FAILED,
        (_S.OPEN, ChannelInput.FATAL): _S.FAILED,
        (_S.OPEN, ChannelInput.SHUTDOWN): _S.CLOSING,
        (_S.IDLE, ChannelInput.SHUTDOWN): _S.CLOSED,
        (_S.CONNECTING, ChannelInput.SHUTDOWN): _S.CLOSED,
        (_S.BACKING_OFF, ChannelInput.SHUTDOWN): _S.CLOSED,
        (_S.CLOSING, ChannelInput.SHUTDOWN): _S.CLOSING,
        (_S.CLOSING, ChannelInput.FATAL): _S.FAILED,
        (_S.CLOSING, ChannelInput.LOST): _S.CLOSED,
        (_S.CLOSED, ChannelInput.SHUTDOWN): _S.CLOSED,
        (_S.FAILED, ChannelInput.SHUTDOWN): _S.FAILED,
        (_S.IDLE, ChannelInput.CLOSE): _S.CLOSED,
        (_S.CONNECTING, ChannelInput.CLOSE): _S.CLOSED,
        (_S.OPEN, ChannelInput.CLOSE): _S.CLOSED,
        (_S.BACKING_OFF, ChannelInput.CLOSE): _S.CLOSED,
        (_S.CLOSING, ChannelInput.CLOSE): _S.CLOSED,
        (_S.CLOSED, ChannelInput.CLOSE): _S.CLOSED,
        (_S.FAILED, ChannelInput.CLOSE): _S.FAILED,
    },
)


# ---------------------------------------------------------------------------
# Limits and policies
# ---------------------------------------------------------------------------

#: Seconds one connect attempt may take. The reference uses 30 s per attempt; 10 s is
#: ample for a local orchestrator and keeps a blackholed required channel from stalling
#: start-up for minutes.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: First connection: 4 attempts, delays drawn from [0, 0.1), [0, 0.2), [0, 0.4) s (at most
#: 0.7 s in total). The orchestrator opened the listener before sending init; retries only
#: cover a start-up race (e.g. the Unix socket file not created yet).
CONNECT_BACKOFF: Final = Backoff(base=0.1, factor=2.0, cap=1.0, max_attempts=4, jitter=True)
#: After an established connection is lost: 10 attempts (the loss counts as the first),
#: ceilings 0.1 s doubling to a 30 s cap (nine waits of at most 51.1 s in total, plus the
#: connect timeouts of the attempts), then give up.
RECONNECT_BACKOFF: Final = Backoff(base=0.1, factor=2.0, cap=30.0, max_attempts=10, jitter=True)
_JSON_HEADERS: Final = {"content-type": "application/json"}


class ChannelKind(enum.Enum):
    """Which init member a channel came from; the value is the reference's channel name."""

    TCP = "TCP"
    IPC = "IPC"


@record
class ChannelTarget:
    """Where to connect: ``address`` (TCP) or ``socket_path`` (IPC), from the init object.

    ``required``: a module that cannot connect must not start. ``tls``: wrap the TCP
    connection in TLS (the drivers use the platform's default client context).
    """

    kind: ChannelKind
    address: TcpListen | None = None
    socket_path: str | None = None
    required: bool = False
    tls: bool = False

    def __post_init__(self) -> None:
        if self.kind is ChannelKind.TCP and self.address is None:
            raise LocalProtocolError("a TCP channel needs an address", field="address")
        if self.kind is ChannelKind.IPC and not self.socket_path:
            raise LocalProtocolError("an IPC channel needs a socket_path", field="socket_path")

    def describe(self) -> str:
        """Return e.g. ``"TCP channel 127.0.0.1:9000"`` (for log and error messages)."""
        where = str(self.address) if self.kind is ChannelKind.TCP else self.socket_path
        return f"{self.kind.value} channel {where}"


def channel_targets(init: Init) -> tuple[ChannelTarget, ...]:
    """Return the channels ``init`` offers (TCP first, as the reference connects them)."""
    out: list[ChannelTarget] = []
    if init.tcp_channel is not None:
        tcp = init.tcp_channel
        out.append(
            ChannelTarget(
                kind=ChannelKind.TCP,
                address=tcp.address,
                required=tcp.required,
                tls=tcp.tls_enabled,
            )
        )
    if init.ipc_channel is not None:
        ipc = init.ipc_channel
        out.append(
            ChannelTarget(kind=ChannelKind.IPC, socket_path=ipc.socket_path, required=ipc.required)
        )
    return tuple(out)


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


@record
class BadFrame:
    """A frame was skipped: its payload is not a valid message (or the stream ended inside
    a frame: ``error`` is then a ``TruncatedInput``). ``answered_status`` if the core
    replied to it (400 for a recognisable but invalid ``http_request``)."""

    format: EncodingFormat | None
    payload: bytes
    error: RemoteProtocolError
    answered_status: int | None = None


ChannelEvent: TypeAlias = (
    RequestReceived | RequestTimedOut | ShutdownRequested | BadFrame | OrchestratorToModule
)


class ChannelConnection(ServingLink):
    """The module's side of one framed channel (driver loop in the module docstring).

    Args:
        kind: TCP or IPC (only used in messages).
        max_in_flight: unanswered requests allowed; the next one is answered 503.
        request_timeout: seconds before an unanswered request is answered 504 (None: never).
        max_frame_size: largest payload accepted and sent.
        connect_backoff, reconnect_backoff: retry policies (see the module docstring).
        rng: randomness for jitter and, without ``id_factory``, envelope ids
            (default: a fresh ``random.Random()``).
        id_factory: returns the ``id`` of each outgoing envelope.

    Raises ``LocalProtocolError`` for ``max_in_flight`` < 1.
    """

    _state: ChannelState
    _events: list[ChannelEvent]

    def __init__(
        self,
        *,
        kind: ChannelKind = ChannelKind.TCP,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        connect_backoff: Backoff = CONNECT_BACKOFF,
        reconnect_backoff: Backoff = RECONNECT_BACKOFF,
        rng: random.Random | None = None,
        id_factory: Callable[[], uuid.UUID] | None = None,
    ) -> None:
        super().__init__(max_in_flight, request_timeout, ChannelState.OPEN)
        self._kind = kind
        self._max_frame_size = max_frame_size
        self._reconnect_backoff = reconnect_backoff
        self._rng = rng if rng is not None else random.Random()
        self._id_factory = id_factory if id_factory is not None else self._random_id
        self._retry = RetryState(policy=connect_backoff, rng=self._rng)
        self._state = ChannelState.IDLE
        self._decoder = FrameDecoder(max_frame_size)
        self._eof_done = False
        self._retry_at: float | None = None
        self._error: Exception | None = None
        self._last_failure: str | None = None
        self._connections = 0

    # ------------------------------------------------------------------ state
    @property
    def kind(self) -> ChannelKind:
        """TCP or IPC."""
        return self._kind

    @property
    def state(self) -> ChannelState:
        """The current state (see the table at the top of this file)."""
        return self._state

    @property
    def error(self) -> Exception | None:
        """Why the channel is FAILED: the fatal framing error, or None (see ``last_failure``)."""
        return self._error

    @property
    def last_failure(self) -> str | None:
        """The reason given with the latest failed attempt or lost connection."""
        return self._last_failure

    @property
    def attempts(self) -> int:
        """Failed attempts since the last successful connect (a lost connection counts)."""
        return self._retry.attempts

    @property
    def connections(self) -> int:
        """How many times a connection was established."""
        return self._connections

    def _fire(self, inp: ChannelInput) -> None:
        self._state = CHANNEL_MACHINE.next(self._state, inp)

    def _require_stream(self, api: str) -> None:
        if self._state not in (ChannelState.OPEN, ChannelState.CLOSING):
            raise LocalProtocolError(f"{api}() needs an open connection (state {self._state.name})")

    # -------------------------------------------------------------- lifecycle
    def start_connect(self, now: float) -> None:
        """Record that the driver is starting a connect attempt (IDLE/BACKING_OFF ->
        CONNECTING). Raises ``LocalProtocolError`` in any other state (nothing changes)."""
        self._fire(ChannelInput.CONNECT)
        self._now = max(self._now, now)
        self._retry_at = None

    def connect_failed(self, now: float, reason: str) -> float | None:
        """Record a failed connect attempt. Returns when to try again (same clock as
        ``now``; state BACKING_OFF), or None when the policy allows no more attempts (state
        FAILED). Raises ``LocalProtocolError`` when not CONNECTING (nothing changes).
        """
        if self._state is not ChannelState.CONNECTING:
            raise LocalProtocolError(f"connect_failed() in state {self._state.name}")
        self._last_failure = reason
        return self._schedule_retry(now)

    def _schedule_retry(self, now: float) -> float | None:
        self._now = max(self._now, now)
        at = self._retry.failed(now)
        self._fire(ChannelInput.GIVE_UP if at is None else ChannelInput.RETRY)
        self._retry_at = at
        return at

    def connected(self, now: float) -> None:
        """Record that the socket is open (CONNECTING -> OPEN): a fresh frame decoder, the
        attempt count reset, and from now on ``reconnect_backoff`` applies. Raises
        ``LocalProtocolError`` when not CONNECTING (nothing changes)."""
        self._fire(ChannelInput.CONNECTED)
        self._now = max(self._now, now)
        self._decoder = FrameDecoder(self._max_frame_size)
        self._eof_done = False
        self._out = []
        if self._connections == 0:
            self._retry = RetryState(policy=self._reconnect_backoff, rng=self._rng)
        else:
            self._retry.succeeded()
        self._connections += 1

    def connection_lost(self, now: float, reason: str | None = None) -> float | None:
        """Record that the current connection is gone (end of stream, I/O error, or the
        driver closed it after a fatal error). Requests in flight on it are abandoned.

        Returns when to reconnect (state BACKING_OFF), or None: the channel is CLOSED
        (shutdown) or FAILED (attempts used up, or a fatal framing error earlier). Raises
        ``LocalProtocolError`` while IDLE, CONNECTING or BACKING_OFF.
        """
        state = self._state
        if state in (ChannelState.IDLE, ChannelState.CONNECTING, ChannelState.BACKING_OFF):
            raise LocalProtocolError(f"connection_lost() in state {state.name}")
        self._abandon_in_flight()
        if state is ChannelState.CLOSING:
            self._fire(ChannelInput.LOST)
        if state is not ChannelState.OPEN:
            return None
        self._last_failure = reason or "connection closed by the peer"
        return self._schedule_retry(now)

    def begin_shutdown(self) -> None:
        """Stop accepting requests because the module is stopping (no event is emitted).

        OPEN -> CLOSING (in-flight requests are still answered); not yet connected ->
        CLOSED (no more attempts). No-op when already closing or terminal. Returns None.
        """
        self._fire(ChannelInput.SHUTDOWN)
        if self._state is ChannelState.CLOSED:
            self._retry_at = None

    def close(self) -> None:
        """Stop for good (the driver closes the socket). In-flight requests are abandoned.
        Returns None; never raises.
        """
        self._fire(ChannelInput.CLOSE)
        self._retry_at = None
        self._abandon_in_flight()

    def _abandon_in_flight(self) -> None:
        for rid in self._in_flight:
            self._remember_answered(rid)
        self._in_flight.clear()

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> None:
        """Buffer bytes read from the socket; ``now`` is their arrival time. Frames are
        decoded lazily by ``next_event``. Raises ``LocalProtocolError`` with no open
        connection, after ``receive_eof``, or for empty ``data``."""
        self._require_stream("receive_data")
        self._now = max(self._now, now)
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """Record that the peer closed the stream; ``next_event`` returns END_OF_INPUT after
        the last frame. No-op unless a connection is open."""
        if self._state in (ChannelState.OPEN, ChannelState.CLOSING):
            self._decoder.receive_eof()

    def next_event(self) -> ChannelEvent | NeedData | EndOfInput:
        """Return the next event, ``NEED_DATA``, or ``END_OF_INPUT`` (the stream ended, or
        there is no open connection; then call ``connection_lost``).

        Raises ``FrameTooLarge`` or ``InvalidFormatCode`` when a header that cannot be trusted
        arrived: the channel is now FAILED (``error`` holds it); frames before it were returned
        first. Close the socket; ``connection_lost`` then returns None.
        """
        events = self._events
        while not events:
            if self._state not in (ChannelState.OPEN, ChannelState.CLOSING) or self._eof_done:
                return END_OF_INPUT
            try:
                frame = self._decoder.next_frame()
            except TruncatedInput as exc:
                self._eof_done = True
                return BadFrame(format=None, payload=b"", error=exc)
            except RemoteProtocolError as exc:  # FrameTooLarge / InvalidFormatCode
                self._error = exc
                self._last_failure = str(exc)
                self._fire(ChannelInput.FATAL)
                self._abandon_in_flight()
                raise
            if frame is NEED_DATA:
                return NEED_DATA
            if frame is END_OF_INPUT:
                self._eof_done = True
                return END_OF_INPUT
            assert isinstance(frame, Frame)
            self._handle_frame(frame)
        return events.pop(0)

    def _handle_frame(self, frame: Frame) -> None:
        text = frame.payload
        try:
            if frame.format is not EncodingFormat.JSON:
                text = convert_payload(text, frame.format, EncodingFormat.JSON)
            msg = _decode_message(text)
        except RemoteProtocolError as exc:
            self._skip_malformed(frame, frame.payload, exc)
            return
        match msg:
            case HttpRequest():
                self._on_http_request(msg, frame)
            case Heartbeat():
                # spec/framed.md section 3: "a heartbeat is always answered with heartbeat_ack
                # on the same channel".
                self._send_enveloped(HeartbeatAck())
            case Shutdown():
                if self._state is ChannelState.OPEN:
                    self._fire(ChannelInput.SHUTDOWN)
                    self._events.append(ShutdownRequested())
            case _:
                self._events.append(msg)

    def _reject(self, raw: Frame, status: int | None, error: RemoteProtocolError) -> None:
        self._events.append(
            BadFrame(format=raw.format, payload=raw.payload, error=error, answered_status=status)
        )

    # ----------------------------------------------------------------- output
    def _random_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def _send_enveloped(self, content: ModuleToOrchestrator) -> None:
        envelope = Message(id=self._id_factory(), content=content, metadata=MessageMetadata())
        self._out.append(
            encode_frame(
                EncodingFormat.JSON, encode_envelope(envelope), max_frame_size=self._max_frame_size
            )
        )

    def _answer_error(self, request_id: str, status: int, why: str) -> None:
        self._send_response(request_id, status, _JSON_HEADERS, error_body(why))

    def _send_response(
        self, request_id: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        response = HttpResponse(
            request_id=request_id, status_code=status, headers=headers, body=body
        )
        self._send_enveloped(response)

    def send_response(
        self,
        request_id: str,
        status_code: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> bool:
        """Answer ``request_id`` with an enveloped ``http_response`` (headers folded by
        ``join_headers``).

        Returns True if queued, False if the core already answered it (504) or its
        connection was lost -- the late result is dropped.

        Raises ``LocalProtocolError`` for an id never received (or answered twice), a field
        ``checked_answer`` refuses, or a response too large for a frame (state unchanged).
        """
        deadline = self._in_flight.pop(request_id, None)
        if deadline is None:
            return self._not_in_flight(request_id)
        body = body if body is not None else b""
        try:
            folded = checked_answer(status_code, headers, body)
            self._send_response(request_id, status_code, folded, body)
        except LocalProtocolError:
            self._restore_in_flight(request_id, deadline)
            raise
        return True

    def send(self, message: ModuleToOrchestrator) -> None:
        """Queue any other module->orchestrator message, enveloped. Raises
        ``LocalProtocolError`` with no open connection, or for a message the channel sends
        itself (http_response, heartbeat_ack)."""
        self._require_stream("send")
        if isinstance(message, HttpResponse | HeartbeatAck):
            raise LocalProtocolError(f"{type(message).__name__} is sent by ChannelConnection")
        self._send_enveloped(message)

    # ----------------------------------------------------------------- timers
    @property
    def retry_at(self) -> float | None:
        """When the next connect attempt is due (BACKING_OFF only), else None."""
        return self._retry_at

    def get_timer(self) -> float | None:
        """Return the earliest request deadline (same clock as ``now``), or None."""
        return self._first_deadline()

    def handle_timer(self, now: float) -> None:
        """Answer 504 to every request whose deadline is at or before ``now`` (one
        ``RequestTimedOut`` event each). Returns None; never raises."""
        self._now = max(self._now, now)
        self._expire_requests(now)

    def __repr__(self) -> str:
        return (
            f"ChannelConnection(kind={self._kind.name}, state={self._state.name}, "
            f"in_flight={len(self._in_flight)})"
        )


def _decode_message(data: bytes) -> OrchestratorToModule:
    """Decode a bare message; if it has no ``op``, try the ``Message`` envelope form
    (spec/framed.md section 3: a reader SHOULD accept both). Raises the bare form's error
    when neither fits."""
    try:
        return decode_orchestrator_to_module(data)
    except RemoteProtocolError as exc:
        if exc.field != "op":
            raise
        try:
            content = decode_envelope(data, content="orchestrator_to_module").content
        except RemoteProtocolError:
            raise exc from None
        return content  # type: ignore[return-value]  # a message object for this content kind


def connect_failure_reason(exc: BaseException, timeout: float) -> str:
    """Return the ``reason`` a driver gives :meth:`ChannelConnection.connect_failed`
    for a connect attempt that raised ``exc`` (``timeout``: the attempt's bound, in
    seconds, named when ``exc`` is a :class:`TimeoutError`)."""
    if isinstance(exc, TimeoutError):
        return f"no connection within {timeout:g} s"
    return str(exc) or type(exc).__name__
