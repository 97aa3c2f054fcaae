"""Backoff policy: exponential growth, cap, full jitter, attempt limit, reproducibility."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import Backoff, RetryState


def test_ceiling_grows_exponentially_and_is_capped() -> None:
    b = Backoff(base=0.1, factor=2.0, cap=1.0, jitter=False)
    assert [b.ceiling(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.ceiling(10**9) == 1.0  # no OverflowError for huge exponents
    assert Backoff(base=2.0, factor=1.0, cap=5.0).ceiling(10**9) == 2.0
    with pytest.raises(ValueError):
        b.ceiling(0)


def test_without_jitter_delays_are_the_ceilings() -> None:
    b = Backoff(base=1.0, factor=3.0, cap=20.0, max_attempts=5, jitter=False)

    class NoRandom:
        def random(self) -> float:
            raise AssertionError("jitter off must not draw")

    assert list(b.delays(NoRandom())) == [1.0, 3.0, 9.0, 20.0]


def test_full_jitter_is_reproducible_with_a_seed() -> None:
    b = Backoff(base=0.5, factor=2.0, cap=8.0, max_attempts=6)
    one = list(b.delays(random.Random(99)))
    two = list(b.delays(random.Random(99)))
    assert one == two and len(one) == 5
    assert one != list(b.delays(random.Random(100)))
    rng = random.Random(99)
    assert one == [rng.random() * c for c in (0.5, 1.0, 2.0, 4.0, 8.0)]


def test_unlimited_attempts() -> None:
    b = Backoff(base=1.0, cap=4.0, max_attempts=None, jitter=False)
    assert list(itertools.islice(b.delays(random.Random(0)), 6)) == [1, 2, 4, 4, 4, 4]
    assert b.allows(10**9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": float("inf")},
        {"factor": 0.5},
        {"cap": 0.01},
        {"max_attempts": 0},
    ],
)
def test_invalid_policies_cannot_exist(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_state_counts_attempts_and_resets() -> None:
    r = RetryState(policy=Backoff(base=1.0, max_attempts=3, jitter=False), rng=random.Random(0))
    assert r.failed(10.0) == 11.0  # first failure: wait base
    assert r.failed(11.0) == 13.0  # second failure: wait 2
    assert r.failed(13.0) is None  # three attempts made: stop
    assert r.attempts == 3
    r.succeeded()
    assert r.attempts == 0 and r.failed(0.0) == 1.0


@given(
    base=st.floats(0.001, 10),
    factor=st.floats(1, 10),
    extra=st.floats(0, 100),
    attempts=st.integers(1, 50),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_within_zero_and_the_cap(
    base: float, factor: float, extra: float, attempts: int, seed: int
) -> None:
    b = Backoff(base=base, factor=factor, cap=base + extra, max_attempts=attempts)
    delays = list(b.delays(random.Random(seed)))
    assert len(delays) == attempts - 1
    for n, d in enumerate(delays, start=1):
        assert 0.0 <= d <= b.ceiling(n) <= b.cap
    ceilings = [b.ceiling(n) for n in range(1, attempts)]
    assert ceilings == sorted(ceilings)  # never shrinks
