"""Port negotiation with the orchestrator, as a pure state machine (spec/breaker.md §3).

A module that serves HTTP on its own TCP port asks the orchestrator for one with
``port_request`` and gets a ``port_response`` (spec/reference.md R4).
:class:`PortNegotiator` runs that exchange without doing any I/O::

    neg = PortNegotiator(rng=random.Random(seed))
    neg.start(now, specific_port=None)
    for msg in neg.messages_to_send(): write(msg)        # PortRequest
    ... neg.receive_response(resp, now)                   # every PortResponse read
    ... neg.handle_timer(now) once now >= neg.get_timer()
    while (ev := neg.next_event()) is not None: ...       # PortAssigned, ...
    ... on NeedFallbackCandidate(port): bind-test it, then
        neg.fallback_candidate_result(port, free=..., now=now)

Only a response with the current attempt's id is applied; attempt timeouts grow from
``initial_timeout`` by ``timeout_step`` per failure since the last success; a timeout is
retried with the same ``specific_port``, a refusal or invalid port ends the call; every
failed attempt is a :class:`CircuitBreaker` failure; a call that ends without a port falls
back per :class:`FallbackPolicy` to bind-tested ports from ``fallback_range``. The policy
and its differences from the reference are tabled in spec/breaker.md §3.2. State changes go
through :data:`NEGOTIATION_MACHINE` only.
"""

from __future__ import annotations

import enum
import math
import random
import uuid
from collections import deque
from collections.abc import Callable

from ._breaker import REJECTED, BreakerState, BreakerTransition, CircuitBreaker, check_count
from ._errors import LocalProtocolError
from ._fsm import Machine
from ._lazylog import LazyLogger
from ._messages import Init, PortRequest, PortResponse, TcpListen
from ._records import record


class NegotiationState(enum.Enum):
    """Where a :class:`PortNegotiator` is."""

    IDLE = "idle"
    AWAITING_RESPONSE = "awaiting_response"
    CHECKING_FALLBACK = "checking_fallback"
    ASSIGNED = "assigned"  # terminal for a call: the orchestrator granted a port
    FALLBACK = "fallback"  # terminal for a call: a bind-tested fallback port
    FAILED = "failed"  # terminal for a call: no port


class NegotiationInput(enum.Enum):
    """What moves a :class:`PortNegotiator`."""

    START = "start"  # a call begins and the breaker admits the first attempt
    GRANTED = "granted"  # the current attempt's response grants a valid port
    RETRY = "retry"  # the current attempt failed; another one is sent
    TO_FALLBACK = "to_fallback"  # the call ends without a port; fallback applies
    GIVE_UP = "give_up"  # the call ends without a port and without fallback
    CANDIDATE_BUSY = "candidate_busy"  # a fallback candidate is taken; try the next
    CANDIDATE_FREE = "candidate_free"  # a fallback candidate is free: use it
    ABANDON = "abandon"  # the driver gave up on the call (cancelled, interrupted)


_S, _N = NegotiationState, NegotiationInput
_CALL_ENDED = (_S.IDLE, _S.ASSIGNED, _S.FALLBACK, _S.FAILED)

#: Every legal ``(state, input) -> next_state``. Nothing else changes the state.
NEGOTIATION_MACHINE: Machine[NegotiationState, NegotiationInput] = Machine(
    "port negotiation",
    {
        **{(s, _N.START): _S.AWAITING_RESPONSE for s in _CALL_ENDED},
        **{(s, _N.TO_FALLBACK): _S.CHECKING_FALLBACK for s in _CALL_ENDED},  # breaker open
        **{(s, _N.GIVE_UP): _S.FAILED for s in _CALL_ENDED},  # breaker open, no fallback
        (_S.AWAITING_RESPONSE, _N.GRANTED): _S.ASSIGNED,
        (_S.AWAITING_RESPONSE, _N.RETRY): _S.AWAITING_RESPONSE,
        (_S.AWAITING_RESPONSE, _N.TO_FALLBACK): _S.CHECKING_FALLBACK,
        (_S.AWAITING_RESPONSE, _N.GIVE_UP): _S.FAILED,
        (_S.CHECKING_FALLBACK, _N.CANDIDATE_BUSY): _S.CHECKING_FALLBACK,
        (_S.CHECKING_FALLBACK, _N.CANDIDATE_FREE): _S.FALLBACK,
        (_S.CHECKING_FALLBACK, _N.GIVE_UP): _S.FAILED,
        (_S.AWAITING_RESPONSE, _N.ABANDON): _S.IDLE,
        (_S.CHECKING_FALLBACK, _N.ABANDON): _S.IDLE,
    },
)


class FallbackPolicy(enum.Enum):
    """When a call that ended without a port falls back to a local port."""

    ON_FAILURE = "on_failure"
    ON_BREAKER_OPEN = "on_breaker_open"
    NEVER = "never"


class AttemptFailure(enum.Enum):
    """Why one attempt failed."""

    TIMEOUT = "timeout"
    REFUSED = "refused"  # success: false
    INVALID_PORT = "invalid_port"  # success: true with port 0 (or out of range)
    SEND_FAILED = "send_failed"  # the driver could not write the request


class UnsolicitedReason(enum.Enum):
    """Why a response was not applied."""

    STALE = "stale"  # the id of one of our earlier attempts (arrived too late)
    UNKNOWN_ID = "unknown_id"  # an attempt is pending, the id is not its id
    NO_REQUEST_PENDING = "no_request_pending"  # nothing pending, the id is unknown


MAX_PORT = 65535
#: How many earlier request ids are remembered to tell STALE from UNKNOWN_ID.
#: Attempts are sequential and a call makes a handful; 32 covers many calls.
REMEMBERED_IDS = 32


@record
class PortNegotiationConfig:
    """Tunables of :class:`PortNegotiator`; the defaults are the reference's.

    Raises:
        ValueError: a value is out of range (when built).
    """

    initial_timeout: float = 3.0
    timeout_step: float = 1.0
    max_timeout: float = 10.0
    max_attempts: int = 3
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 60.0
    fallback: FallbackPolicy = FallbackPolicy.ON_FAILURE
    fallback_range: tuple[int, int] = (10000, 10999)  # inclusive
    max_fallback_tries: int = 10

    def __post_init__(self) -> None:
        for name in ("initial_timeout", "max_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.timeout_step) and self.timeout_step >= 0):
            raise ValueError(f"timeout_step must be finite and >= 0, got {self.timeout_step!r}")
        if self.max_timeout < self.initial_timeout:
            raise ValueError("max_timeout must be >= initial_timeout")
        check_count("max_attempts", self.max_attempts)
        check_count("breaker_failure_threshold", self.breaker_failure_threshold)
        if not (math.isfinite(self.breaker_reset_timeout) and self.breaker_reset_timeout >= 0):
            raise ValueError("breaker_reset_timeout must be finite and >= 0")
        lo, hi = self.fallback_range
        if not (1 <= lo <= hi <= MAX_PORT):
            raise ValueError(f"fallback_range must satisfy 1 <= lo <= hi <= 65535, got {lo}-{hi}")
        check_count("max_fallback_tries", self.max_fallback_tries)

    def timeout_for(self, failed_since_success: int) -> float:
        """Return the timeout of an attempt made after ``failed_since_success``
        failed attempts: ``min(initial + step * n, max)``."""
        return min(
            self.initial_timeout + self.timeout_step * failed_since_success, self.max_timeout
        )


# ---------------------------------------------------------------------- events


@record
class PortAssigned:
    """The orchestrator granted ``port`` to the attempt ``request_id``; the call
    took ``attempts`` attempts."""

    port: int
    request_id: str
    attempts: int


@record
class AttemptFailed:
    """Attempt number ``attempt`` (1-based within its call) failed at ``at``."""

    request_id: str
    attempt: int
    reason: AttemptFailure
    at: float
    timeout: float
    error_message: str | None = None


@record
class BreakerChanged:
    """The negotiator's circuit breaker changed state."""

    transition: BreakerTransition


@record
class NeedFallbackCandidate:
    """The driver must bind-test ``port`` and call
    :meth:`PortNegotiator.fallback_candidate_result`. ``try_number`` is 1-based,
    out of at most ``max_tries``."""

    port: int
    try_number: int
    max_tries: int

    def __post_init__(self) -> None:
        _check_port(self.port)


@record
class FallbackChosen:
    """The driver found ``port`` free; it is the result of the call. ``reason``
    says why the orchestrator's port was not used."""

    port: int
    reason: str


@record
class NegotiationFailed:
    """The call ended without a port."""

    reason: str
    attempts: int


@record
class UnsolicitedResponse:
    """A response that was reported and not applied."""

    response: PortResponse
    reason: UnsolicitedReason


PortEvent = (
    PortAssigned
    | AttemptFailed
    | BreakerChanged
    | NeedFallbackCandidate
    | FallbackChosen
    | NegotiationFailed
    | UnsolicitedResponse
)


class PortSource(enum.Enum):
    """Where a module's port came from."""

    LISTEN = "listen"  # init's `listen` named a TCP port: no negotiation
    ORCHESTRATOR = "orchestrator"  # granted by a port_response
    FALLBACK = "fallback"  # a bind-tested port from the fallback range


@record
class PortResult:
    """What the drivers' ``negotiate_port`` returns: the port, where it came
    from, and (for a fallback) why the orchestrator's answer was not used."""

    port: int
    source: PortSource
    reason: str | None = None

    def __post_init__(self) -> None:
        _check_port(self.port)


def _check_port(port: int) -> None:
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"port out of range: {port!r}")


class PortNegotiationError(Exception):
    """Raised by the drivers when a call ends without a port
    (a :class:`NegotiationFailed` event); ``reason`` and ``attempts`` are copied
    from that event."""

    reason: str
    attempts: int

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(f"port negotiation failed after {attempts} attempt(s): {reason}")
        self.reason = reason
        self.attempts = attempts


def preassigned_port(init: Init) -> int | None:
    """Return ``init.listen.port`` when ``listen`` is a TCP address with a non-zero port
    (the orchestrator already chose it), else ``None`` (a Unix socket path, or port 0:
    negotiate)."""
    listen = init.listen
    if isinstance(listen, TcpListen) and listen.port != 0:
        return int(listen.port)
    return None


def preassigned_result(init: Init | None) -> PortResult | None:
    """Return the drivers' ``negotiate_port`` answer when no negotiation is needed
    (``PortSource.LISTEN``, see :func:`preassigned_port`), else ``None``."""
    if init is not None:
        port = preassigned_port(init)
        if port is not None:
            return PortResult(port=port, source=PortSource.LISTEN)
    return None


class PortNegotiator:
    """The module's side of port negotiation; see the module docstring.

    Args:
        config: tunables (defaults: the reference's numbers).
        rng: the random source for request ids and fallback candidates.
        id_factory: makes request ids; by default a UUID v4 from ``rng``.
        breaker: a breaker to use instead of one built from ``config``
            (e.g. shared by several negotiators).
    """

    __slots__ = (
        "_breaker",
        "_call_attempts",
        "_candidates",
        "_config",
        "_current_id",
        "_deadline",
        "_end_reason",
        "_events",
        "_failed_since_success",
        "_id_factory",
        "_outbox",
        "_port",
        "_recent_ids",
        "_rng",
        "_specific_port",
        "_state",
        "_ticket",
        "_timeout",
        "_tries",
    )

    def __init__(
        self,
        config: PortNegotiationConfig | None = None,
        *,
        rng: random.Random,
        id_factory: Callable[[], str] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._config = config if config is not None else PortNegotiationConfig()
        self._rng = rng
        self._id_factory = id_factory
        if breaker is None:
            breaker = CircuitBreaker(
                failure_threshold=self._config.breaker_failure_threshold,
                reset_timeout=self._config.breaker_reset_timeout,
                name="port-negotiation",
            )
        self._breaker = breaker
        breaker.add_listener(self._on_breaker_change)
        self._state = NegotiationState.IDLE
        self._events: deque[PortEvent] = deque()
        self._outbox: list[PortRequest] = []
        self._recent_ids: deque[str] = deque(maxlen=REMEMBERED_IDS)
        self._current_id: str | None = None
        self._specific_port: int | None = None
        self._deadline: float | None = None
        self._timeout = 0.0
        self._ticket = REJECTED
        self._call_attempts = 0
        self._failed_since_success = 0
        self._candidates: list[int] = []
        self._tries = 0
        self._end_reason = ""
        self._port: int | None = None

    # ------------------------------------------------------------------ views

    @property
    def state(self) -> NegotiationState:
        """The current state."""
        return self._state

    @property
    def config(self) -> PortNegotiationConfig:
        """The tunables in use."""
        return self._config

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding requests to the orchestrator."""
        return self._breaker

    @property
    def port(self) -> int | None:
        """The port of the last call (granted or fallback), or ``None``."""
        return self._port if self._state in (_S.ASSIGNED, _S.FALLBACK) else None

    @property
    def failed_since_success(self) -> int:
        """Failed attempts since the last success (drives the timeout schedule)."""
        return self._failed_since_success

    # --------------------------------------------------------------- the call

    def start(self, now: float, specific_port: int | None = None) -> None:
        """Begin a call: queue the first :class:`PortRequest` (see
        :meth:`messages_to_send`), or -- if the breaker is open -- go straight to
        fallback (:class:`NeedFallbackCandidate`) or :class:`NegotiationFailed`.

        Raises:
            LocalProtocolError: a call is already in progress, or
                ``specific_port`` is outside 1-65535; nothing changes.
        """
        if self._state not in _CALL_ENDED:
            raise LocalProtocolError(f"port negotiation already in progress ({self._state.name})")
        if specific_port is not None and not 1 <= specific_port <= MAX_PORT:
            raise LocalProtocolError(
                f"specific_port must be in 1-65535, got {specific_port!r}", field="specific_port"
            )
        self._specific_port = specific_port
        self._call_attempts = 0
        self._port = None
        ticket = self._breaker.acquire(now)
        if ticket == REJECTED:
            remaining = self._breaker.retry_after(now)
            self._end_call(
                f"circuit breaker open (retry in {remaining:.1f}s)", breaker_refused=True
            )
            return
        self._send_attempt(_N.START, ticket, now)

    def messages_to_send(self) -> list[PortRequest]:
        """Return and forget the requests queued since the last call (oldest first)."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> PortEvent | None:
        """Return the oldest queued event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def next_result(
        self, port_is_free: Callable[[int], bool], report: Callable[[PortEvent], None]
    ) -> PortResult | None:
        """Take every pending event, handing each to ``report``, until one ends the call;
        a :class:`NeedFallbackCandidate` is answered at once with ``port_is_free(port)``.

        Returns the :class:`PortResult` of a :class:`PortAssigned` or
        :class:`FallbackChosen`, or ``None`` when the events ran out first.

        Raises:
            PortNegotiationError: a :class:`NegotiationFailed` event.
        """
        while (event := self.next_event()) is not None:
            report(event)
            if isinstance(event, PortAssigned):
                return PortResult(port=event.port, source=PortSource.ORCHESTRATOR)
            if isinstance(event, FallbackChosen):
                return PortResult(port=event.port, source=PortSource.FALLBACK, reason=event.reason)
            if isinstance(event, NegotiationFailed):
                raise PortNegotiationError(event.reason, event.attempts)
            if isinstance(event, NeedFallbackCandidate):
                self.fallback_candidate_result(event.port, port_is_free(event.port))
        return None

    def get_timer(self) -> float | None:
        """Return the deadline of the pending attempt, or ``None`` if none is pending."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Time out the pending attempt if ``now`` has reached its deadline (else
        do nothing): report :class:`AttemptFailed` and retry, fall back or fail."""
        if self._deadline is None or now < self._deadline:
            return
        self._attempt_failed(AttemptFailure.TIMEOUT, now, None)

    def receive_response(self, response: PortResponse, now: float) -> None:
        """Apply ``response`` if it answers the pending attempt, else report it.

        A matching response with ``success`` and a port in 1-65535 ends the call
        (:class:`PortAssigned`); a refusal or an invalid port is a failed attempt
        that ends the call (fallback per policy). Any other response queues an
        :class:`UnsolicitedResponse` and changes nothing.
        """
        rid = response.request_id
        if self._current_id is None or rid != self._current_id:
            if rid in self._recent_ids:
                reason = UnsolicitedReason.STALE
            elif self._current_id is not None:
                reason = UnsolicitedReason.UNKNOWN_ID
            else:
                reason = UnsolicitedReason.NO_REQUEST_PENDING
            self._events.append(UnsolicitedResponse(response=response, reason=reason))
            return
        if not response.success:
            self._attempt_failed(AttemptFailure.REFUSED, now, response.error_message)
            return
        if not 1 <= response.port <= MAX_PORT:
            # the reference: success with port 0 is "Orchestrator returned invalid port 0"
            self._attempt_failed(
                AttemptFailure.INVALID_PORT,
                now,
                f"orchestrator returned invalid port {response.port}",
            )
            return
        self._breaker.record_success(self._ticket, now)
        self._failed_since_success = 0
        self._clear_pending()
        self._port = response.port
        self._move(_N.GRANTED)
        self._events.append(
            PortAssigned(port=response.port, request_id=rid, attempts=self._call_attempts)
        )

    def send_failed(self, now: float, error: str, *, request_id: str | None = None) -> None:
        """Tell the negotiator that the driver could not write the pending request: the
        attempt fails (``SEND_FAILED``) and the call ends without retrying, with fallback
        per policy. With ``request_id``, a report about an attempt that has already ended
        (answered or timed out while the write was blocked) is ignored.

        Raises:
            LocalProtocolError: no attempt is pending and no ``request_id`` was
                given; nothing changes.
        """
        if request_id is not None and request_id != self._current_id:
            return
        if self._current_id is None:
            raise LocalProtocolError(f"no port request is pending ({self._state.name})")
        self._attempt_failed(AttemptFailure.SEND_FAILED, now, error)

    def send_raised(self, now: float, request: PortRequest, exc: Exception) -> None:
        """:meth:`send_failed` for ``request``, whose write raised ``exc`` (the error
        reads ``"<type>: <message>"``); a report about an ended attempt is ignored."""
        self.send_failed(now, f"{type(exc).__name__}: {exc}", request_id=request.request_id)

    def abandon(self) -> None:
        """Give up on the call in progress (the driver was cancelled): the pending
        attempt is recorded as abandoned in the breaker (neither success nor
        failure), queued requests are dropped and the negotiator returns to IDLE.
        Does nothing when no call is in progress."""
        if self._state not in (_S.AWAITING_RESPONSE, _S.CHECKING_FALLBACK):
            return
        if self._current_id is not None:
            self._breaker.record_cancelled(self._ticket)
        self._clear_pending()
        self._outbox.clear()
        self._move(_N.ABANDON)

    def fallback_candidate_result(self, port: int, free: bool) -> None:
        """Tell the negotiator whether the candidate ``port`` (from the last
        :class:`NeedFallbackCandidate`) could be bound: free -> :class:`FallbackChosen`;
        taken -> the next candidate, or :class:`NegotiationFailed` when none is left.

        Raises:
            LocalProtocolError: no candidate is being checked, or ``port`` is not
                the one asked about; nothing changes.
        """
        if self._state is not _S.CHECKING_FALLBACK or self._tries == 0:
            raise LocalProtocolError(f"no fallback candidate is being checked ({self._state.name})")
        expected = self._candidates[self._tries - 1]
        if port != expected:
            raise LocalProtocolError(f"fallback result for port {port}, expected {expected}")
        if free:
            self._port = port
            self._move(_N.CANDIDATE_FREE)
            self._events.append(FallbackChosen(port=port, reason=self._end_reason))
            return
        if self._tries < len(self._candidates):
            self._move(_N.CANDIDATE_BUSY)
            self._ask_candidate()
            return
        lo, hi = self._config.fallback_range
        self._move(_N.GIVE_UP)
        self._events.append(
            NegotiationFailed(
                reason=(
                    f"{self._end_reason}; no free fallback port in {lo}-{hi} "
                    f"after {self._tries} tries"
                ),
                attempts=self._call_attempts,
            )
        )

    # -------------------------------------------------------------- internals

    def _move(self, event: NegotiationInput) -> None:
        self._state = NEGOTIATION_MACHINE.next(self._state, event)

    def _new_id(self) -> str:
        if self._id_factory is not None:
            return self._id_factory()
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _send_attempt(self, event: NegotiationInput, ticket: int, now: float) -> None:
        self._move(event)
        rid = self._new_id()
        self._ticket = ticket
        self._call_attempts += 1
        self._current_id = rid
        self._recent_ids.append(rid)
        self._timeout = self._config.timeout_for(self._failed_since_success)
        self._deadline = now + self._timeout
        self._outbox.append(PortRequest(request_id=rid, specific_port=self._specific_port))

    def _clear_pending(self) -> None:
        self._current_id = None
        self._deadline = None
        self._ticket = REJECTED

    def _attempt_failed(self, reason: AttemptFailure, now: float, message: str | None) -> None:
        rid = self._current_id
        assert rid is not None  # only called while an attempt is pending
        self._events.append(
            AttemptFailed(
                request_id=rid,
                attempt=self._call_attempts,
                reason=reason,
                at=now,
                timeout=self._timeout,
                error_message=message,
            )
        )
        ticket = self._ticket
        self._clear_pending()
        self._failed_since_success += 1
        self._breaker.record_failure(ticket, now)
        if reason is AttemptFailure.REFUSED:
            self._end_call(f"orchestrator refused: {message or 'unknown error'}")
            return
        if reason is AttemptFailure.INVALID_PORT:
            self._end_call(message or "invalid port")
            return
        if reason is AttemptFailure.SEND_FAILED:
            self._end_call(f"could not send port_request: {message}")
            return
        if self._call_attempts >= self._config.max_attempts:
            n = self._call_attempts
            self._end_call(f"no response after {n} attempt{'s' if n != 1 else ''}")
            return
        ticket = self._breaker.acquire(now)
        if ticket == REJECTED:
            self._end_call("circuit breaker opened", breaker_refused=True)
            return
        self._send_attempt(_N.RETRY, ticket, now)

    def _end_call(self, reason: str, *, breaker_refused: bool = False) -> None:
        policy = self._config.fallback
        opened = breaker_refused or self._breaker.state is BreakerState.OPEN
        use_fallback = policy is FallbackPolicy.ON_FAILURE or (
            policy is FallbackPolicy.ON_BREAKER_OPEN and opened
        )
        self._end_reason = reason
        lo, hi = self._config.fallback_range
        # never the requested port: the orchestrator has just failed to grant it
        pool = [port for port in range(lo, hi + 1) if port != self._specific_port]
        if use_fallback and not pool:
            reason += f"; the fallback range {lo}-{hi} holds only the requested port"
        if not use_fallback or not pool:
            self._move(_N.GIVE_UP)
            self._events.append(NegotiationFailed(reason=reason, attempts=self._call_attempts))
            return
        count = min(self._config.max_fallback_tries, len(pool))
        # uniform and without repeats (the reference's `10000 + rand % 1000` is biased)
        self._candidates = self._rng.sample(pool, count)
        self._tries = 0
        self._move(_N.TO_FALLBACK)
        self._ask_candidate()

    def _ask_candidate(self) -> None:
        port = self._candidates[self._tries]
        self._tries += 1
        self._events.append(
            NeedFallbackCandidate(
                port=port, try_number=self._tries, max_tries=len(self._candidates)
            )
        )

    def _on_breaker_change(self, transition: BreakerTransition) -> None:
        self._events.append(BreakerChanged(transition=transition))

    def __repr__(self) -> str:
        return (
            f"PortNegotiator(state={self._state.name}, port={self.port!r}, "
            f"breaker={self._breaker.state.name})"
        )


_log = LazyLogger("pywatt.ports")  # loads logging for the first emitted record


class NegotiationDriver:
    """What both drivers' ``PortNegotiation`` keep around a :class:`PortNegotiator`: the core
    built from their arguments, whether a ``negotiate()`` is running, the bind test, and
    event reporting (DEBUG on the ``pywatt.ports`` logger, then ``on_event``)."""

    def __init__(
        self,
        *,
        config: PortNegotiationConfig | None,
        rng: random.Random | None,
        id_factory: Callable[[], str] | None,
        breaker: CircuitBreaker | None,
        port_is_free: Callable[[int], bool],
        on_event: Callable[[PortEvent], None] | None,
    ) -> None:
        self._core = PortNegotiator(
            config,
            rng=rng if rng is not None else random.Random(),
            id_factory=id_factory,
            breaker=breaker,
        )
        self._port_is_free = port_is_free
        self._on_event = on_event
        self._running = False

    @property
    def core(self) -> PortNegotiator:
        """The pure negotiator (state, breaker, counters)."""
        return self._core

    def _received(self, response: PortResponse, now: float) -> bool:
        """Apply a ``port_response``; return whether a ``negotiate()`` is running (the
        driver wakes it). Outside one, the stray response is reported at once."""
        self._core.receive_response(response, now)
        if not self._running:
            while (event := self._core.next_event()) is not None:
                self._report(event)
        return self._running

    def _next_result(self) -> PortResult | None:
        return self._core.next_result(self._port_is_free, self._report)

    def _report(self, event: PortEvent) -> None:
        _log.debug("port negotiation: %r", event)
        if self._on_event is not None:
            self._on_event(event)
