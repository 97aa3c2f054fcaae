"""CircuitBreaker (pure core) and its asyncio / blocking wrappers.

Time is a FakeClock; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import (
    BREAKER_MACHINE,
    REJECTED,
    BreakerInput,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitOpenError,
)
from pywatt_proto.testing import FakeClock

C, O, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN  # noqa: E741


class Boom(Exception):
    pass


class NotFound(Exception):
    pass


def fail_n(cb: CircuitBreaker, n: int, now: float) -> None:
    for _ in range(n):
        t = cb.acquire(now)
        assert t != REJECTED
        cb.record_failure(t, now)


# ------------------------------------------------------------------ pure core


def test_defaults_match_reference() -> None:
    cb = CircuitBreaker()
    assert (cb.failure_threshold, cb.reset_timeout) == (5, 60.0)
    assert (cb.success_threshold, cb.half_open_max_calls) == (1, 1)
    assert cb.state is C and cb.get_timer() is None and cb.opened_at is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"reset_timeout": -1.0},
        {"reset_timeout": float("inf")},
        {"success_threshold": 0},
        {"half_open_max_calls": 0},
        # Before: accepted; a NaN threshold is never reached (the breaker never opened).
        {"failure_threshold": float("nan")},
        {"success_threshold": float("nan")},
        {"half_open_max_calls": float("nan")},
        {"failure_threshold": 2.5},
    ],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_opens_after_threshold_consecutive_failures() -> None:
    cb = CircuitBreaker(failure_threshold=3, reset_timeout=10.0)
    fail_n(cb, 2, 0.0)
    t = cb.acquire(0.0)
    cb.record_success(t, 0.0)  # a success resets the consecutive count
    fail_n(cb, 2, 1.0)
    assert cb.state is C and cb.counters.consecutive_failures == 2
    fail_n(cb, 1, 2.0)
    assert cb.state is O and cb.opened_at == 2.0 and cb.get_timer() == 12.0
    assert cb.counters.opened == 1 and cb.counters.failures == 5


def test_open_rejects_until_timeout_then_admits_one_trial() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=10.0)
    fail_n(cb, 1, 5.0)
    assert cb.acquire(14.999) == REJECTED
    assert cb.retry_after(14.0) == pytest.approx(1.0)
    assert cb.counters.rejected == 1
    trial = cb.acquire(15.0)  # exactly at the boundary: half-open
    assert trial != REJECTED and cb.state is H
    assert cb.acquire(15.0) == REJECTED  # one trial at a time by default
    assert cb.retry_after(15.0) == 0.0
    cb.record_success(trial, 15.5)
    assert cb.state is C


def test_failed_trial_reopens_with_new_opened_at() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=10.0)
    fail_n(cb, 1, 0.0)
    trial = cb.acquire(10.0)
    cb.record_failure(trial, 11.0)
    assert cb.state is O and cb.opened_at == 11.0
    assert cb.acquire(20.9) == REJECTED
    assert cb.acquire(21.0) != REJECTED


def test_non_finite_now_is_refused_where_it_decides_or_is_stored() -> None:
    # Before: a trip at now=inf left the breaker OPEN forever (every finite now was
    # "before" the timeout), and an OPEN breaker asked at now=NaN half-opened at once.
    nan, inf = float("nan"), float("inf")
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=10.0)
    ticket = cb.acquire(0.0)
    for bad in (nan, inf, -inf):
        with pytest.raises(ValueError, match="finite"):
            cb.record_failure(ticket, bad)
        with pytest.raises(ValueError, match="finite"):
            cb.force_open(bad)
    assert cb.state is C and cb.counters.failures == 0
    cb.record_failure(ticket, 1.0)
    for bad in (nan, inf, -inf):
        with pytest.raises(ValueError, match="finite"):
            cb.acquire(bad)
        with pytest.raises(ValueError, match="finite"):
            cb.handle_timer(bad)
    assert cb.state is O and cb.opened_at == 1.0 and cb.counters.rejected == 0
    assert cb.acquire(11.0) != REJECTED and cb.state is H


def test_success_threshold_and_concurrent_trials() -> None:
    cb = CircuitBreaker(
        failure_threshold=1, reset_timeout=1.0, success_threshold=3, half_open_max_calls=2
    )
    fail_n(cb, 1, 0.0)
    a, b = cb.acquire(1.0), cb.acquire(1.0)
    assert REJECTED not in (a, b) and cb.acquire(1.0) == REJECTED
    assert cb.counters.half_open_in_flight == 2
    cb.record_success(a, 1.1)
    cb.record_success(b, 1.2)
    assert cb.state is H and cb.counters.half_open_successes == 2
    c = cb.acquire(1.3)
    cb.record_success(c, 1.4)
    assert cb.state is C


def test_handle_timer_half_opens() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=3.0)
    fail_n(cb, 1, 0.0)
    assert cb.handle_timer(2.0) is O
    assert cb.handle_timer(3.0) is H
    assert cb.get_timer() is None


def test_excluded_exceptions_and_predicate_count_as_success() -> None:
    cb = CircuitBreaker(
        failure_threshold=2,
        excluded=(NotFound,),
        is_failure=lambda e: not isinstance(e, KeyError),
    )
    fail_n(cb, 1, 0.0)
    t = cb.acquire(0.0)
    assert cb.record_exception(t, NotFound(), 0.0) is False
    assert cb.counters.consecutive_failures == 0 and cb.counters.ignored == 1
    t = cb.acquire(0.0)
    assert cb.record_exception(t, KeyError("x"), 0.0) is False
    t = cb.acquire(0.0)
    assert cb.record_exception(t, Boom(), 0.0) is True
    t = cb.acquire(0.0)
    assert cb.record_exception(t, Boom(), 0.0) is True
    assert cb.state is O
    assert cb.counters.successes == 0 and cb.counters.ignored == 2


def test_excluded_exception_closes_half_open_like_a_success() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=0.0, excluded=(NotFound,))
    fail_n(cb, 1, 0.0)
    t = cb.acquire(0.0)
    cb.record_exception(t, NotFound(), 0.0)
    assert cb.state is C


def test_cancellation_frees_the_trial_slot_without_counting() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    fail_n(cb, 1, 0.0)
    t = cb.acquire(1.0)
    assert cb.record_exception(t, asyncio.CancelledError(), 1.0) is False
    assert cb.state is H and cb.counters.cancelled == 1
    assert cb.acquire(1.0) != REJECTED  # the slot is free again
    # KeyboardInterrupt is not a failure either (pybreaker counts it)
    cb2 = CircuitBreaker(failure_threshold=1)
    t = cb2.acquire(0.0)
    cb2.record_exception(t, KeyboardInterrupt(), 0.0)
    assert cb2.state is C


def test_stale_outcomes_do_not_move_the_state() -> None:
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    slow = cb.acquire(0.0)  # admitted while closed, still running
    fail_n(cb, 1, 0.0)  # another call trips the breaker
    trial = cb.acquire(1.0)
    cb.record_failure(slow, 1.5)  # the slow call fails late: stale
    assert cb.state is H and cb.counters.stale == 1
    cb.record_success(trial, 2.0)
    assert cb.state is C
    cb.record_success(trial, 2.0)  # a duplicate/stale report changes nothing
    cb.record_cancelled(slow)
    assert cb.state is C and cb.counters.stale == 3


def test_listeners_see_every_transition_in_order() -> None:
    seen: list[BreakerTransition] = []
    cb = CircuitBreaker(failure_threshold=1, reset_timeout=2.0, listeners=[seen.append], name="db")
    fail_n(cb, 1, 1.0)
    t = cb.acquire(3.0)
    cb.record_success(t, 3.5)
    cb.force_open(4.0)
    cb.reset(5.0)
    assert [(x.old, x.new, x.cause, x.at) for x in seen] == [
        (C, O, BreakerInput.TRIP, 1.0),
        (O, H, BreakerInput.RESET_TIMEOUT, 3.0),
        (H, C, BreakerInput.RECOVER, 3.5),
        (C, O, BreakerInput.FORCE_OPEN, 4.0),
        (O, C, BreakerInput.FORCE_CLOSE, 5.0),
    ]
    assert all(x.name == "db" for x in seen)
    assert [x.epoch for x in seen] == [1, 2, 3, 4, 5]
    cb.remove_listener(seen.append)
    with pytest.raises(ValueError):
        cb.remove_listener(seen.append)


def test_listener_errors_do_not_skip_other_listeners_or_corrupt_state() -> None:
    seen: list[BreakerTransition] = []

    def bad(_: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    cb = CircuitBreaker(failure_threshold=1, listeners=[bad])
    cb.add_listener(seen.append)
    t = cb.acquire(0.0)
    with pytest.raises(RuntimeError, match="listener bug"):
        cb.record_failure(t, 0.0)
    assert cb.state is O and len(seen) == 1


def test_transition_table_is_closed_over_states() -> None:
    for (state, _event), nxt in BREAKER_MACHINE.transitions.items():
        assert state in BreakerState and nxt in BreakerState
    assert BREAKER_MACHINE.transitions[(C, BreakerInput.SUCCESS)] is C


# --------------------------------------------------------- property tests

ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0)),
        st.tuples(
            st.sampled_from(["success", "failure", "excluded", "cancel", "boom"]),
            st.integers(0, 10),
        ),
        st.tuples(st.just("advance"), st.integers(0, 30)),
        st.tuples(st.just("force_open"), st.just(0)),
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=80,
)


@given(
    ops=ops,
    threshold=st.integers(1, 4),
    reset_timeout=st.integers(0, 20),
    success_threshold=st.integers(1, 3),
    max_trials=st.integers(1, 3),
)
def test_breaker_invariants(
    ops: list[tuple[str, int]],
    threshold: int,
    reset_timeout: int,
    success_threshold: int,
    max_trials: int,
) -> None:
    clock = FakeClock()
    changes: list[BreakerTransition] = []
    cb = CircuitBreaker(
        failure_threshold=threshold,
        reset_timeout=float(reset_timeout),
        success_threshold=success_threshold,
        half_open_max_calls=max_trials,
        excluded=(NotFound,),
        listeners=[changes.append],
    )
    in_flight: list[int] = []
    acquires = 0
    for op, arg in ops:
        now = clock.now()
        before = cb.state
        before_opened_at = cb.opened_at
        before_trials = cb.counters.half_open_in_flight
        before_consecutive = cb.counters.consecutive_failures
        before_successes = cb.counters.half_open_successes
        if op == "acquire":
            acquires += 1
            t = cb.acquire(now)
            if before is O:
                assert before_opened_at is not None
                # refused exactly while the open period lasts
                assert (t == REJECTED) == (now < before_opened_at + reset_timeout)
            if before is H:
                assert (t == REJECTED) == (before_trials >= max_trials)
            if before is C:
                assert t == cb.epoch
            if t != REJECTED:
                in_flight.append(t)
        elif op == "advance":
            clock.advance(float(arg))
        elif op == "force_open":
            cb.force_open(now)
            assert cb.state is O and cb.opened_at == now
        elif op == "reset":
            cb.reset(now)
            assert cb.state is C
        elif in_flight:
            t = in_flight.pop(arg % len(in_flight))
            current = t == cb.epoch
            if op == "success":
                cb.record_success(t, now)
            elif op == "failure":
                cb.record_failure(t, now)
            elif op == "excluded":
                cb.record_exception(t, NotFound(), now)
            elif op == "boom":
                cb.record_exception(t, Boom(), now)
            else:
                cb.record_exception(t, asyncio.CancelledError(), now)
            if not current:
                assert cb.state is before  # stale outcomes never move the state
            elif op in ("failure", "boom"):
                if before is H:
                    assert cb.state is O and cb.opened_at == now
                else:
                    assert before is C
                    assert cb.state is (O if before_consecutive + 1 >= threshold else C)
            elif op in ("success", "excluded"):
                if before is H:
                    recovered = before_successes + 1 >= success_threshold
                    assert cb.state is (C if recovered else H)
                else:
                    assert before is C and cb.state is C
            else:
                assert cb.state is before

        # invariants after every step
        k = cb.counters
        assert k.calls + k.rejected == acquires
        assert k.calls - (k.successes + k.failures + k.ignored + k.cancelled) == len(in_flight)
        assert 0 <= k.half_open_in_flight <= max_trials
        if cb.state is not H:
            assert k.half_open_in_flight == 0 and k.half_open_successes == 0
        if cb.state is C:
            assert k.consecutive_failures < threshold
        else:
            assert k.consecutive_failures == 0
        assert (cb.get_timer() is None) == (cb.state is not O)
        assert k.opened == sum(1 for x in changes if x.new is O)
    # the listener saw a connected chain of legal transitions in time order
    state = C
    last_at = 0.0
    for x in changes:
        assert x.old is state
        assert BREAKER_MACHINE.transitions[(x.old, x.cause)] is x.new
        assert x.at >= last_at
        state, last_at = x.new, x.at
    assert state is cb.state
    assert cb.epoch == len(changes)


# ------------------------------------------------------------ sync wrapper


def test_sync_breaker_decorator_call_and_guard() -> None:
    clock = FakeClock()
    b = pywatt_sync.Breaker(
        CircuitBreaker(failure_threshold=2, reset_timeout=30.0, name="api"), clock=clock.now
    )

    @b
    def ok(x: int) -> int:
        return x * 2

    @b
    def bad() -> None:
        raise Boom("down")

    assert ok(21) == 42 and ok.__name__ == "ok"
    assert b.call(lambda: "v") == "v"
    with b.guard():
        pass
    for _ in range(2):
        with pytest.raises(Boom):
            bad()
    assert b.core.state is O
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        ok(1)
    assert info.value.remaining == pytest.approx(20.0)
    assert info.value.state is O and info.value.name == "api"
    with pytest.raises(CircuitOpenError):
        b.call(ok, 1)
    with pytest.raises(CircuitOpenError), b.guard():
        pytest.fail("the block must not run while open")
    clock.advance(20.0)
    with b.guard():  # the trial
        pass
    assert b.core.state is C
    with pytest.raises(Boom), b.guard():
        raise Boom()
    assert b.core.counters.consecutive_failures == 1


def test_sync_breaker_rejects_coroutine_functions() -> None:
    async def coro() -> None:
        pass

    with pytest.raises(TypeError):
        pywatt_sync.Breaker()(coro)


def test_sync_breaker_is_thread_safe_and_does_not_serialise_calls() -> None:
    b = pywatt_sync.Breaker(CircuitBreaker(failure_threshold=10**9))
    inside = threading.Barrier(4, timeout=5)

    def work(i: int) -> int:
        inside.wait()  # all four calls are inside the protected function at once
        if i % 2:
            raise Boom()
        return i

    def run(n: int) -> None:
        with contextlib.suppress(Boom):
            b.call(work, n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    k = b.core.counters
    assert (k.calls, k.successes, k.failures) == (4, 2, 2)


# ----------------------------------------------------------- async wrapper


async def test_async_breaker_decorator_call_guard_and_cancel() -> None:
    clock = FakeClock()
    b = pywatt_asyncio.Breaker(
        CircuitBreaker(failure_threshold=1, reset_timeout=5.0), clock=clock.now
    )

    @b
    async def echo(x: int) -> int:
        return x

    async def boom() -> None:
        raise Boom()

    assert await echo(3) == 3
    async with b.guard():
        pass
    with pytest.raises(Boom):
        await b.call(boom)
    with pytest.raises(CircuitOpenError) as info:
        await echo(1)
    assert info.value.remaining == pytest.approx(5.0)
    with pytest.raises(CircuitOpenError):
        async with b.guard():
            pytest.fail("the block must not run while open")
    clock.advance(5.0)

    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(b.call(hang))  # the half-open trial
    await started.wait()
    assert b.core.state is H
    with pytest.raises(CircuitOpenError) as info:
        await echo(1)  # the single trial slot is taken
    assert info.value.state is H and info.value.remaining == 0.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.core.counters.cancelled == 1
    assert await echo(7) == 7  # cancellation freed the slot; this trial closes it
    assert b.core.state is C


def test_async_breaker_rejects_plain_functions() -> None:
    with pytest.raises(TypeError):
        pywatt_asyncio.Breaker()(lambda: None)  # type: ignore[arg-type, return-value]


async def test_async_breaker_outcomes_through_every_entry_point() -> None:
    clock = FakeClock()
    b = pywatt_asyncio.Breaker(
        CircuitBreaker(failure_threshold=3, reset_timeout=1.0, name="svc"), clock=clock.now
    )

    async def value() -> int:
        return 5

    @b
    async def failing() -> None:
        raise Boom()

    assert await b.call(value) == 5
    g = b.guard()
    async with g:
        with pytest.raises(RuntimeError):
            await g.__aenter__()  # one use at a time
    with pytest.raises(Boom):
        await failing()
    with pytest.raises(Boom):
        async with b.guard():
            raise Boom()
    assert b.core.counters.failures == 2 and b.core.counters.successes == 2
    assert b.core.state is C
    with pytest.raises(Boom):
        await failing()
    assert b.core.state is O
    with pytest.raises(CircuitOpenError, match=r"'svc' is open; retry in 1\.000s"):
        await b.call(value)
    assert "state=OPEN" in repr(b) and "svc" in repr(b.core)


def test_sync_guard_is_one_use_at_a_time() -> None:
    b = pywatt_sync.Breaker()
    g = b.guard()
    with g, pytest.raises(RuntimeError):
        g.__enter__()
    assert b.core.counters.successes == 1 and repr(b).startswith("Breaker(")


def test_refusal_chains_the_failure_that_opened_the_breaker() -> None:
    cb = CircuitBreaker(failure_threshold=2, reset_timeout=10.0)
    first, second = Boom("first"), Boom("second")
    cb.record_exception(cb.acquire(0.0), first, 0.0)
    assert cb.trip_cause is None  # not open yet
    cb.record_exception(cb.acquire(1.0), second, 1.0)
    assert cb.state is O and cb.trip_cause is second
    refusal = cb.refusal(2.0)
    assert refusal.__cause__ is second and refusal.__suppress_context__
    # a failed trial re-opens it with the trial's cause; plain record_failure has none
    trial = cb.acquire(11.0)
    third = Boom("third")
    cb.record_exception(trial, third, 11.0)
    assert cb.refusal(12.0).__cause__ is third
    cb.record_failure(cb.acquire(21.0), 21.0)
    assert cb.trip_cause is None and cb.refusal(22.0).__cause__ is None
    # closing releases the reference; force_open has no cause
    cb.reset(30.0)
    assert cb.trip_cause is None
    cb.record_exception(cb.acquire(30.0), first, 30.0)
    cb.force_open(31.0)
    assert cb.refusal(31.0).__cause__ is None


def test_wrappers_raise_refusals_chained_to_the_cause() -> None:
    clock = FakeClock()
    breaker = pywatt_sync.Breaker(CircuitBreaker(failure_threshold=1), clock=clock.now)
    original = Boom("db down")

    def failing() -> None:
        raise original

    with pytest.raises(Boom):
        breaker.call(failing)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.__cause__ is original

    abreaker = pywatt_asyncio.Breaker(CircuitBreaker(failure_threshold=1), clock=clock.now)

    async def afailing() -> None:
        raise original

    async def ok() -> None:
        return None

    async def scenario() -> BaseException | None:
        with contextlib.suppress(Boom):
            await abreaker.call(afailing)
        try:
            await abreaker.call(ok)
        except CircuitOpenError as exc:
            return exc.__cause__
        return None

    assert asyncio.run(scenario()) is original
