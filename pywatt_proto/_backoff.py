"""Retry delays: exponential backoff with full jitter, a cap and an attempt limit.

After ``n`` failed attempts the wait is at most ``ceiling(n) = min(cap, base * factor **
(n - 1))``; with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") it is
drawn uniformly from ``[0, ceiling(n))`` so clients that failed together do not retry in
lock-step. The random source is passed in (``random() -> float``), so a seeded one gives a
reproducible schedule. ``max_attempts`` counts attempts, the first try included.
:class:`Backoff` is the immutable policy; :class:`RetryState` the per-operation count.
"""

from __future__ import annotations

import math

from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not loaded at run time (start-up time)
    from collections.abc import Iterator

    from ._random_source import RandomSource


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


@record(frozen=False)
class RetryState:
    """Per-operation retry bookkeeping under a :class:`Backoff` policy (a mutable record).

    Call :meth:`failed` after each failed attempt: it returns the time of the
    next attempt or ``None`` when the policy forbids another one. Call
    :meth:`succeeded` after a success to start afresh.
    """

    policy: Backoff
    rng: RandomSource
    attempts: int = 0

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
