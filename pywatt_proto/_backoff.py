"""Retry delays: exponential backoff with full jitter, a cap and an attempt limit.

Theory of operation
-------------------
Attempt ``n`` (0-based, counting failed attempts so far) may wait up to
``ceiling(n) = min(cap, base * factor ** n)`` seconds. With *full jitter*
(the AWS Architecture Blog's "Exponential Backoff And Jitter", 2015) the actual
delay is drawn uniformly from ``[0, ceiling(n))``, which spreads retries of many
clients that failed together instead of making them retry in lock-step; with
``jitter=False`` the delay is exactly ``ceiling(n)``.

Nothing here reads a clock or a global random state: the random source is
passed in (any object with ``random() -> float``, e.g. ``random.Random(seed)``),
so a seeded source gives a reproducible schedule. :class:`Backoff` is an
immutable policy; :class:`RetryState` is the small mutable machine a driver
keeps per operation (``failed(now) -> when to try next | None``).

``max_attempts`` counts *attempts* (the first try included): with
``max_attempts=3`` there are at most two delays.
"""

from __future__ import annotations

import math

from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not loaded at run time (start-up time)
    from collections.abc import Iterator

    from ._random_source import RandomSource

__all__ = ["Backoff", "RetryState"]


@record
class Backoff:
    """An immutable retry policy.

    Args:
        base: ceiling of the first delay in seconds (> 0).
        factor: growth per failed attempt (>= 1).
        cap: largest delay in seconds (>= base).
        max_attempts: attempts in total, first try included (>= 1), or ``None``
            for no limit.
        jitter: full jitter (uniform in ``[0, ceiling)``) when true, else the
            ceiling itself.

    Raises:
        ValueError: a parameter is out of range (raised when built, so an
            invalid policy cannot exist).
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 30.0
    max_attempts: int | None = 5
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and self.base > 0):
            raise ValueError(f"base must be finite and > 0, got {self.base!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be finite and >= 1, got {self.factor!r}")
        if not (math.isfinite(self.cap) and self.cap >= self.base):
            raise ValueError(f"cap must be finite and >= base, got {self.cap!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")

    def ceiling(self, failures: int) -> float:
        """Return the largest delay after ``failures`` failed attempts (``failures >= 1``
        gives the wait before attempt ``failures + 1``): ``min(cap, base * factor **
        (failures - 1))``. Never overflows: large exponents return ``cap``.

        Raises:
            ValueError: ``failures < 1``.
        """
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        exponent = failures - 1
        # base * factor**exponent >= cap  <=>  exponent * log(factor) >= log(cap / base)
        if self.factor > 1 and exponent * math.log(self.factor) >= math.log(self.cap / self.base):
            return self.cap
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, failures: int, rng: RandomSource) -> float:
        """Return the wait after ``failures`` failed attempts, drawn from ``rng``
        (one ``rng.random()`` call when ``jitter`` is on, none otherwise).

        Raises:
            ValueError: ``failures < 1``.
        """
        ceiling = self.ceiling(failures)
        return rng.random() * ceiling if self.jitter else ceiling

    def allows(self, attempts: int) -> bool:
        """Return whether another attempt may follow ``attempts`` attempts made."""
        return self.max_attempts is None or attempts < self.max_attempts

    def delays(self, rng: RandomSource) -> Iterator[float]:
        """Yield the waits between attempts: ``max_attempts - 1`` of them, or an
        endless sequence when ``max_attempts`` is ``None``."""
        failures = 1
        while self.allows(failures):
            yield self.delay(failures, rng)
            failures += 1


class RetryState:
    """Per-operation retry bookkeeping under a :class:`Backoff` policy.

    Call :meth:`failed` after each failed attempt: it returns the time of the
    next attempt or ``None`` when the policy forbids another one. Call
    :meth:`succeeded` after a success to start afresh.

    A small mutable record (keyword-only, slotted, compared by its fields; what
    ``@dataclass(slots=True, kw_only=True)`` gave, without loading dataclasses).
    """

    __slots__ = ("attempts", "policy", "rng")
    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __init__(self, *, policy: Backoff, rng: RandomSource, attempts: int = 0) -> None:
        self.policy = policy
        self.rng = rng
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"RetryState(policy={self.policy!r}, rng={self.rng!r}, attempts={self.attempts!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, RetryState)
        return (self.policy, self.rng, self.attempts) == (other.policy, other.rng, other.attempts)

    def failed(self, now: float) -> float | None:
        """Count a failed attempt made before ``now``; return ``now + delay`` for the
        next one, or ``None`` when ``max_attempts`` is used up (the count stays)."""
        self.attempts += 1
        if not self.policy.allows(self.attempts):
            return None
        return now + self.policy.delay(self.attempts, self.rng)

    def succeeded(self) -> None:
        """Reset the attempt count to zero."""
        self.attempts = 0
