"""A circuit breaker as a pure state machine: time comes in as ``now`` (spec/breaker.md §1).

CLOSED admits calls; ``failure_threshold`` consecutive failures open it; OPEN refuses calls
for ``reset_timeout`` seconds, then HALF_OPEN admits ``half_open_max_calls`` trials at once:
``success_threshold`` successes close it, one failure re-opens it. The core never calls the
protected function; a driver asks for admission and reports the outcome::

    ticket = breaker.acquire(now)          # REJECTED: refused (see refusal(now))
    ... run the call ...
    breaker.record_success(ticket, now)    # or record_failure / record_exception
                                           # / record_cancelled

The ticket is the breaker's epoch, bumped on every state change: only an outcome with the
current epoch moves the state (a late outcome of a call admitted before a change is counted
as ``stale`` and moves nothing). Every state change goes through :data:`BREAKER_MACHINE`;
listeners see a :class:`BreakerTransition` after it is complete.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable

from ._fsm import Machine
from ._records import record

TYPE_CHECKING = False  # no typing import at run time; mypy reads True
if TYPE_CHECKING:
    from typing import TypeVar

    _E = TypeVar("_E", bound=BaseException)


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerInput(enum.Enum):
    """What can move a breaker from one state to another."""

    #: an admitted call succeeded (or raised an excluded exception)
    SUCCESS = "success"
    #: an admitted call failed, the threshold is not reached
    FAILURE = "failure"
    #: a failure that reaches ``failure_threshold`` (CLOSED) or any failed trial (HALF_OPEN)
    TRIP = "trip"
    #: ``reset_timeout`` has elapsed since the breaker opened
    RESET_TIMEOUT = "reset_timeout"
    #: the ``success_threshold``-th successful trial in HALF_OPEN
    RECOVER = "recover"
    #: :meth:`CircuitBreaker.force_open`
    FORCE_OPEN = "force_open"
    #: :meth:`CircuitBreaker.reset`
    FORCE_CLOSE = "force_close"


_C, _O, _H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_I = BreakerInput

#: Every legal ``(state, input) -> next_state``. Nothing else changes the state.
BREAKER_MACHINE: Machine[BreakerState, BreakerInput] = Machine(
    "circuit breaker",
    {
        (_C, _I.SUCCESS): _C,  # hot self-loop, inlined in record_success
        (_C, _I.FAILURE): _C,
        (_C, _I.TRIP): _O,
        (_O, _I.RESET_TIMEOUT): _H,
        (_H, _I.SUCCESS): _H,
        (_H, _I.RECOVER): _C,
        (_H, _I.TRIP): _O,
        **{(s, _I.FORCE_OPEN): _O for s in BreakerState},
        **{(s, _I.FORCE_CLOSE): _C for s in BreakerState},
    },
)

# The fast path in record_success relies on this self-loop; keep them in step.
if BREAKER_MACHINE.next(_C, _I.SUCCESS) is not _C:  # pragma: no cover - guards edits of the table
    raise RuntimeError("record_success inlines (CLOSED, SUCCESS) -> CLOSED")

#: The ticket :meth:`CircuitBreaker.acquire` returns when it refuses a call.
REJECTED = -1


def check_count(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (a NaN compares false with
    every count, so a NaN threshold would never be reached)."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _finite(now: float) -> float:
    # An infinite opened_at would keep the breaker OPEN forever; a NaN now compares
    # false with the end of the open period, so it would half-open at once.
    if not -math.inf < now < math.inf:
        raise ValueError(f"now must be a finite number of seconds, got {now!r}")
    return now


@record
class BreakerTransition:
    """One state change, as handed to listeners.

    ``at`` is the ``now`` of the call that caused it; ``epoch`` is the breaker's
    epoch *after* the change.
    """

    name: str | None
    old: BreakerState
    new: BreakerState
    cause: BreakerInput
    at: float
    epoch: int


@record
class BreakerCounters:
    """A snapshot of a breaker's counters (:attr:`CircuitBreaker.counters`, spec/breaker.md
    §1.4): ``calls - (successes + failures + ignored + cancelled)`` calls are in flight."""

    calls: int
    successes: int
    failures: int
    ignored: int
    cancelled: int
    rejected: int
    opened: int
    stale: int
    consecutive_failures: int
    half_open_successes: int
    half_open_in_flight: int


class CircuitOpenError(Exception):
    """A call was refused because the circuit is open (or its trial slots are taken).

    Raised by the driver wrappers, never by the pure core (which returns :data:`REJECTED`).

    Attributes:
        name: the breaker's name (may be ``None``).
        state: the state at the time of the refusal (OPEN or HALF_OPEN).
        remaining: seconds until the breaker will admit a trial call; ``0.0``
            when HALF_OPEN and every trial slot is taken (the wait depends on
            the trials in flight, not on a timer).
    """

    name: str | None
    state: BreakerState
    remaining: float

    def __init__(self, *, name: str | None, state: BreakerState, remaining: float) -> None:
        label = f"circuit breaker {name!r}" if name else "circuit breaker"
        if state is BreakerState.OPEN:
            super().__init__(f"{label} is open; retry in {remaining:.3f}s")
        else:
            super().__init__(f"{label} is half-open and all trial calls are in flight")
        self.name = name
        self.state = state
        self.remaining = remaining


Listener = Callable[[BreakerTransition], None]


class CircuitBreaker:
    """Pure circuit breaker; see the module docstring for the protocol.

    Args:
        failure_threshold: consecutive failures in CLOSED that open the breaker (>= 1).
        reset_timeout: seconds the breaker stays OPEN before admitting trials (>= 0).
        success_threshold: successful trials in HALF_OPEN that close it (>= 1).
        half_open_max_calls: trial calls admitted concurrently in HALF_OPEN (>= 1).
        excluded: exception types that are *not* failures (a business error
            proves the dependency answered); they count as successes.
        is_failure: optional predicate applied to exceptions that are not
            excluded; returning ``False`` makes the exception count as a success.
        listeners: callables receiving a :class:`BreakerTransition` per change.
        name: a label for errors and listeners.

    Raises:
        ValueError: a parameter is out of range.
    """

    __slots__ = (
        "_calls",
        "_cancelled",
        "_consecutive_failures",
        "_epoch",
        "_excluded",
        "_failure_threshold",
        "_failures",
        "_half_open_in_flight",
        "_half_open_max_calls",
        "_half_open_successes",
        "_ignored",
        "_is_failure",
        "_listeners",
        "_name",
        "_opened",
        "_opened_at",
        "_rejected",
        "_reset_timeout",
        "_stale",
        "_state",
        "_success_threshold",
        "_successes",
        "_trip_cause",
    )

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 60.0,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
        excluded: Iterable[type[BaseException]] = (),
        is_failure: Callable[[BaseException], bool] | None = None,
        listeners: Iterable[Listener] = (),
        name: str | None = None,
    ) -> None:
        check_count("failure_threshold", failure_threshold)
        if not (math.isfinite(reset_timeout) and reset_timeout >= 0):
            raise ValueError(f"reset_timeout must be finite and >= 0, got {reset_timeout!r}")
        check_count("success_threshold", success_threshold)
        check_count("half_open_max_calls", half_open_max_calls)
        self._failure_threshold = failure_threshold
        self._reset_timeout = float(reset_timeout)
        self._success_threshold = success_threshold
        self._half_open_max_calls = half_open_max_calls
        self._excluded: tuple[type[BaseException], ...] = tuple(excluded)
        self._is_failure = is_failure
        self._listeners: list[Listener] = list(listeners)
        self._name = name
        self._state = BreakerState.CLOSED
        self._epoch = 0
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._half_open_in_flight = 0
        self._calls = 0
        self._successes = 0
        self._failures = 0
        self._ignored = 0
        self._cancelled = 0
        self._rejected = 0
        self._opened = 0
        self._stale = 0
        self._trip_cause: BaseException | None = None

    # ------------------------------------------------------------------ views

    @property
    def name(self) -> str | None:
        """The label given at construction."""
        return self._name

    @property
    def state(self) -> BreakerState:
        """The stored state. An OPEN breaker whose timeout has elapsed stays OPEN
        here until :meth:`acquire` or :meth:`handle_timer` is called with ``now``."""
        return self._state

    @property
    def epoch(self) -> int:
        """The current epoch (bumped on every state change)."""
        return self._epoch

    @property
    def failure_threshold(self) -> int:
        """Consecutive failures that open the breaker."""
        return self._failure_threshold

    @property
    def reset_timeout(self) -> float:
        """Seconds the breaker stays OPEN."""
        return self._reset_timeout

    @property
    def success_threshold(self) -> int:
        """Successful trials needed to close from HALF_OPEN."""
        return self._success_threshold

    @property
    def half_open_max_calls(self) -> int:
        """Trial calls admitted concurrently in HALF_OPEN."""
        return self._half_open_max_calls

    @property
    def opened_at(self) -> float | None:
        """``now`` at the moment the breaker last opened, or ``None`` unless OPEN."""
        return self._opened_at if self._state is BreakerState.OPEN else None

    @property
    def counters(self) -> BreakerCounters:
        """Return a snapshot of the counters (a new frozen object each time)."""
        return BreakerCounters(
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            ignored=self._ignored,
            cancelled=self._cancelled,
            rejected=self._rejected,
            opened=self._opened,
            stale=self._stale,
            consecutive_failures=self._consecutive_failures,
            half_open_successes=self._half_open_successes,
            half_open_in_flight=self._half_open_in_flight,
        )

    def add_listener(self, listener: Listener) -> None:
        """Register ``listener`` for future transitions."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Unregister ``listener``; raises ValueError if it was not registered."""
        self._listeners.remove(listener)

    # ----------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """Return when an OPEN breaker will half-open (``opened_at + reset_timeout``),
        or ``None`` in the other states."""
        if self._state is BreakerState.OPEN:
            return self._opened_at + self._reset_timeout
        return None

    def handle_timer(self, now: float) -> BreakerState:
        """Apply the OPEN -> HALF_OPEN transition if it is due; return the state.
        Raises ValueError for a non-finite ``now`` while OPEN."""
        if self._state is _O and _finite(now) >= self._opened_at + self._reset_timeout:
            self._transition(BreakerInput.RESET_TIMEOUT, now)
        return self._state

    def retry_after(self, now: float) -> float:
        """Return the seconds until a call could be admitted: the rest of the open
        period when OPEN (``0.0`` once it has elapsed), else ``0.0``."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._reset_timeout - now)
        return 0.0

    @property
    def trip_cause(self) -> BaseException | None:
        """The failure that last opened the breaker (the exception a call raised, or the
        one a driver built for a failed answer), while it is OPEN or HALF_OPEN; None when
        CLOSED, after :meth:`force_open`, or when the failure was reported without one."""
        return self._trip_cause

    def refusal(self, now: float) -> CircuitOpenError:
        """Return the :class:`CircuitOpenError` a driver raises after :meth:`acquire`
        returned :data:`REJECTED`: this breaker's name and state, and
        :meth:`retry_after` at ``now``, chained (``__cause__``) to :attr:`trip_cause`,
        so the error says what went wrong behind the open circuit. Changes nothing."""
        err = CircuitOpenError(name=self.name, state=self.state, remaining=self.retry_after(now))
        return self.chain(err)

    def chain(self, err: _E) -> _E:
        """Return ``err`` with ``__cause__`` set to :attr:`trip_cause` (as ``raise err
        from cause`` would). Changes nothing else."""
        cause = self._trip_cause
        if cause is not None and cause is not err:
            err.__cause__ = cause
            err.__suppress_context__ = True
        return err

    # -------------------------------------------------------------- admission

    def acquire(self, now: float) -> int:
        """Ask to make one call at time ``now``; return its ticket (the epoch, ``>= 0``) to
        hand back with the outcome, or :data:`REJECTED` when OPEN before the timeout or
        HALF_OPEN with every trial slot taken (counted; nothing else changes). An OPEN
        breaker whose timeout has elapsed half-opens first and admits the call as a trial.
        Raises ValueError for a non-finite ``now`` while OPEN (nothing changes).
        """
        if self._state is _C:
            self._calls += 1
            return self._epoch
        return self._acquire_slow(now)

    def _acquire_slow(self, now: float) -> int:
        if self._state is _O:
            if _finite(now) < self._opened_at + self._reset_timeout:
                self._rejected += 1
                return REJECTED
            self._transition(BreakerInput.RESET_TIMEOUT, now)
        # HALF_OPEN
        if self._half_open_in_flight >= self._half_open_max_calls:
            self._rejected += 1
            return REJECTED
        self._half_open_in_flight += 1
        self._calls += 1
        return self._epoch

    # --------------------------------------------------------------- outcomes

    def record_success(self, ticket: int, now: float) -> None:
        """Report that the call admitted with ``ticket`` succeeded.

        In CLOSED this resets the consecutive-failure count; in HALF_OPEN it
        counts a successful trial and closes the breaker at ``success_threshold``.
        A stale ticket is only counted.
        """
        self._successes += 1
        if ticket == self._epoch and self._state is _C:
            self._consecutive_failures = 0
            return
        self._on_success(ticket, now)

    def record_failure(self, ticket: int, now: float, cause: BaseException | None = None) -> None:
        """Report that the call admitted with ``ticket`` failed (``cause``: what it raised
        or an error describing the failed answer; kept as :attr:`trip_cause` if this
        failure opens the breaker -- one reference, released when the breaker closes).

        In CLOSED this counts a consecutive failure and opens the breaker at
        ``failure_threshold`` (``opened_at = now``); in HALF_OPEN it re-opens the
        breaker. A stale ticket is only counted. Raises ValueError for a non-finite
        ``now`` (nothing changes).
        """
        _finite(now)
        self._failures += 1
        if ticket != self._epoch:
            self._stale += 1
            return
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self._failure_threshold:
                self._trip_cause = cause
                self._transition(BreakerInput.TRIP, now)
            else:
                self._check(BreakerInput.FAILURE)
        else:  # HALF_OPEN: the only other state that admits calls
            self._half_open_in_flight -= 1
            self._trip_cause = cause
            self._transition(BreakerInput.TRIP, now)

    def record_outcome(self, ticket: int, exc: BaseException | None, now: float) -> None:
        """Report how the call admitted with ``ticket`` ended: :meth:`record_success`
        when ``exc`` is None (it returned), else :meth:`record_exception`. This is what
        a guarded block's exit reports."""
        if exc is None:
            self.record_success(ticket, now)
        else:
            self.record_exception(ticket, exc, now)

    def record_exception(self, ticket: int, exc: BaseException, now: float) -> bool:
        """Classify ``exc`` raised by the call admitted with ``ticket`` and report it
        (spec/breaker.md §1.3): not an :class:`Exception` (cancelled, interrupted) ->
        :meth:`record_cancelled`; an ``excluded`` type or ``is_failure(exc)`` false ->
        ``ignored``, a success for the state; anything else -> :meth:`record_failure`.
        Returns whether it was recorded as a failure."""
        if not isinstance(exc, Exception):
            self.record_cancelled(ticket)
            return False
        if (self._excluded and isinstance(exc, self._excluded)) or (
            self._is_failure is not None and not self._is_failure(exc)
        ):
            self._ignored += 1
            if ticket == self._epoch and self._state is _C:
                self._consecutive_failures = 0
            else:
                self._on_success(ticket, now)
            return False
        self.record_failure(ticket, now, exc)
        return True

    def record_cancelled(self, ticket: int) -> None:
        """Report that the call admitted with ``ticket`` was abandoned (cancelled,
        interrupted): it frees its trial slot in HALF_OPEN and counts as neither a
        success nor a failure."""
        self._cancelled += 1
        if ticket != self._epoch:
            self._stale += 1
            return
        if self._state is BreakerState.HALF_OPEN:
            self._half_open_in_flight -= 1

    def _on_success(self, ticket: int, now: float) -> None:
        if ticket != self._epoch:
            self._stale += 1
            return
        # HALF_OPEN: the only other state that admits calls
        self._half_open_in_flight -= 1
        self._half_open_successes += 1
        if self._half_open_successes >= self._success_threshold:
            self._transition(BreakerInput.RECOVER, now)
        else:
            self._check(BreakerInput.SUCCESS)

    # ---------------------------------------------------------------- control

    def force_open(self, now: float) -> None:
        """Open the breaker now (``opened_at = now``), whatever its state. Raises
        ValueError for a non-finite ``now`` (nothing changes)."""
        _finite(now)
        self._trip_cause = None
        self._transition(BreakerInput.FORCE_OPEN, now)

    def reset(self, now: float) -> None:
        """Close the breaker now and clear the consecutive-failure count."""
        self._transition(BreakerInput.FORCE_CLOSE, now)

    # -------------------------------------------------------------- internals

    def _check(self, event: BreakerInput) -> BreakerState:
        return BREAKER_MACHINE.next(self._state, event)

    def _transition(self, event: BreakerInput, now: float) -> None:
        old = self._state
        new = self._check(event)
        self._state = new
        self._epoch += 1
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._half_open_in_flight = 0
        if new is BreakerState.OPEN:
            self._opened_at = now
            self._opened += 1
        elif new is BreakerState.CLOSED:
            self._trip_cause = None
        if not self._listeners:
            return
        change = BreakerTransition(
            name=self._name, old=old, new=new, cause=event, at=now, epoch=self._epoch
        )
        first: BaseException | None = None
        for listener in tuple(self._listeners):
            try:
                listener(change)
            except Exception as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self._name!r}, state={self._state.name}, "
            f"consecutive_failures={self._consecutive_failures}, epoch={self._epoch})"
        )
