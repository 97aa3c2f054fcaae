"""PortNegotiator (pure core): correlation, timing schedule, breaker, fallback.

A FakeClock and a seeded random source; nothing sleeps, nothing binds.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import (
    NEGOTIATION_MACHINE,
    AttemptFailed,
    AttemptFailure,
    BreakerChanged,
    BreakerState,
    FallbackChosen,
    FallbackPolicy,
    Init,
    LocalProtocolError,
    NeedFallbackCandidate,
    NegotiationFailed,
    NegotiationState,
    PortAssigned,
    PortEvent,
    PortNegotiationConfig,
    PortNegotiator,
    PortRequest,
    PortResponse,
    TcpListen,
    UnixListen,
    UnsolicitedReason,
    UnsolicitedResponse,
    preassigned_port,
)
from pywatt_proto.testing import FakeClock

S = NegotiationState


def drain(neg: PortNegotiator) -> list[PortEvent]:
    out: list[PortEvent] = []
    while (ev := neg.next_event()) is not None:
        out.append(ev)
    return out


def only_request(neg: PortNegotiator) -> PortRequest:
    msgs = neg.messages_to_send()
    assert len(msgs) == 1, msgs
    return msgs[0]


def ok(req: PortRequest, port: int) -> PortResponse:
    return PortResponse(request_id=req.request_id, success=True, port=port)


# ------------------------------------------------------------------ basics


def test_request_response_round_trip_with_reproducible_ids() -> None:
    ids = []
    for _ in range(2):
        neg = PortNegotiator(rng=random.Random(7))
        neg.start(0.0)
        req = only_request(neg)
        ids.append(req.request_id)
        assert req.specific_port is None
        assert neg.get_timer() == 3.0
        neg.receive_response(ok(req, 8123), 1.0)
        assert drain(neg) == [PortAssigned(port=8123, request_id=req.request_id, attempts=1)]
        assert neg.state is S.ASSIGNED and neg.port == 8123 and neg.get_timer() is None
    assert ids[0] == ids[1]  # same seed, same id
    assert len(ids[0]) == 36 and ids[0][14] == "4"  # a UUID v4 string
    neg = PortNegotiator(rng=random.Random(8))
    neg.start(0.0)
    assert only_request(neg).request_id != ids[0]


def test_id_factory_is_used() -> None:
    counter = iter(range(100))
    neg = PortNegotiator(rng=random.Random(0), id_factory=lambda: f"req-{next(counter)}")
    neg.start(0.0, specific_port=8080)
    assert only_request(neg) == PortRequest(request_id="req-0", specific_port=8080)
    neg.handle_timer(3.0)
    assert only_request(neg) == PortRequest(request_id="req-1", specific_port=8080)


def test_specific_port_is_kept_on_retry_and_other_ports_are_accepted() -> None:
    clock = FakeClock()
    neg = PortNegotiator(rng=random.Random(1))
    neg.start(clock.now(), specific_port=8080)
    first = only_request(neg)
    neg.handle_timer(clock.advance(2.999))  # not yet due: nothing happens
    assert neg.messages_to_send() == [] and drain(neg) == []
    neg.handle_timer(clock.advance(0.001))
    second = only_request(neg)
    assert second.specific_port == 8080 and second.request_id != first.request_id
    neg.receive_response(ok(second, 8090), clock.now())  # the orchestrator chose another
    events = drain(neg)
    assert isinstance(events[0], AttemptFailed) and events[0].reason is AttemptFailure.TIMEOUT
    assert events[-1] == PortAssigned(port=8090, request_id=second.request_id, attempts=2)


def test_start_rejects_misuse() -> None:
    neg = PortNegotiator(rng=random.Random(0))
    with pytest.raises(LocalProtocolError):
        neg.start(0.0, specific_port=0)
    with pytest.raises(LocalProtocolError):
        neg.start(0.0, specific_port=70000)
    assert neg.state is S.IDLE
    neg.start(0.0)
    with pytest.raises(LocalProtocolError, match="in progress"):
        neg.start(0.0)
    with pytest.raises(LocalProtocolError):
        neg.fallback_candidate_result(10000, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_timeout": 0.0},
        {"max_timeout": 1.0},
        {"timeout_step": -1.0},
        {"max_attempts": 0},
        {"breaker_failure_threshold": 0},
        {"breaker_reset_timeout": float("nan")},
        {"fallback_range": (0, 10)},
        {"fallback_range": (2000, 1000)},
        {"fallback_range": (1, 65536)},
        {"max_fallback_tries": 0},
        # Before: accepted; a NaN max_attempts retried forever, a NaN max_fallback_tries
        # made the fallback raise TypeError.
        {"max_attempts": float("nan")},
        {"breaker_failure_threshold": float("nan")},
        {"max_fallback_tries": float("nan")},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PortNegotiationConfig(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_references() -> None:
    c = PortNegotiationConfig()
    assert [c.timeout_for(n) for n in range(10)] == [3, 4, 5, 6, 7, 8, 9, 10, 10, 10]
    assert (c.max_attempts, c.breaker_failure_threshold, c.breaker_reset_timeout) == (3, 5, 60.0)
    assert c.fallback_range == (10000, 10999) and c.fallback is FallbackPolicy.ON_FAILURE


# ------------------------------------------- the unresponsive orchestrator


Trace = list[tuple[float, str]]


def describe(ev: PortEvent) -> str:
    if isinstance(ev, AttemptFailed):
        return f"attempt {ev.attempt} {ev.reason.value} after {ev.timeout:g}s"
    if isinstance(ev, BreakerChanged):
        return f"breaker {ev.transition.old.name}->{ev.transition.new.name}"
    if isinstance(ev, NeedFallbackCandidate):
        return "check fallback candidate"
    if isinstance(ev, FallbackChosen):
        return f"fallback: {ev.reason}"
    if isinstance(ev, PortAssigned):
        return f"assigned {ev.port}"
    if isinstance(ev, NegotiationFailed):  # pragma: no cover - not expected here
        return f"failed: {ev.reason}"
    raise AssertionError(ev)  # pragma: no cover


def run_call(
    neg: PortNegotiator,
    clock: FakeClock,
    trace: Trace,
    answer: int | None = None,
) -> None:
    """Run one call to the end; the orchestrator never answers unless ``answer``
    is set, in which case it grants that port to the first request."""
    neg.start(clock.now())
    while True:
        while (ev := neg.next_event()) is not None:
            trace.append((clock.now(), describe(ev)))
            if isinstance(ev, NeedFallbackCandidate):
                lo, hi = neg.config.fallback_range
                assert lo <= ev.port <= hi
                neg.fallback_candidate_result(ev.port, free=True)
        if neg.state in (S.ASSIGNED, S.FALLBACK, S.FAILED):
            return
        requests = neg.messages_to_send()
        for req in requests:
            timeout = neg.get_timer() - clock.now()  # type: ignore[operator]
            trace.append((clock.now(), f"request (timeout {timeout:g}s)"))
            if answer is not None:
                neg.receive_response(ok(req, answer), clock.now())
        if requests:
            continue
        timer = neg.get_timer()
        assert timer is not None
        clock.set(timer)
        neg.handle_timer(clock.now())


def test_full_schedule_of_an_unresponsive_orchestrator() -> None:
    clock = FakeClock()
    neg = PortNegotiator(rng=random.Random(42))
    trace: Trace = []
    run_call(neg, clock, trace)  # call 1: 3 attempts, breaker stays closed, fallback
    clock.advance(0.0)
    run_call(neg, clock, trace)  # call 2: two attempts, the 5th failure opens the breaker
    clock.set(30.0)
    run_call(neg, clock, trace)  # call 3: breaker open, fallback without a request
    clock.set(85.0)
    run_call(neg, clock, trace)  # call 4: 60 s after opening: one trial, it fails
    clock.set(153.0)
    run_call(neg, clock, trace, answer=9000)  # call 5: the orchestrator is back
    clock.set(200.0)
    run_call(neg, clock, trace, answer=9001)  # call 6: counters were reset

    assert trace == [
        (0.0, "request (timeout 3s)"),
        (3.0, "attempt 1 timeout after 3s"),
        (3.0, "request (timeout 4s)"),
        (7.0, "attempt 2 timeout after 4s"),
        (7.0, "request (timeout 5s)"),
        (12.0, "attempt 3 timeout after 5s"),
        (12.0, "check fallback candidate"),
        (12.0, "fallback: no response after 3 attempts"),
        (12.0, "request (timeout 6s)"),
        (18.0, "attempt 1 timeout after 6s"),
        (18.0, "request (timeout 7s)"),
        (25.0, "attempt 2 timeout after 7s"),
        (25.0, "breaker CLOSED->OPEN"),
        (25.0, "check fallback candidate"),
        (25.0, "fallback: circuit breaker opened"),
        (30.0, "check fallback candidate"),
        (30.0, "fallback: circuit breaker open (retry in 55.0s)"),
        (85.0, "breaker OPEN->HALF_OPEN"),
        (85.0, "request (timeout 8s)"),
        (93.0, "attempt 1 timeout after 8s"),
        (93.0, "breaker HALF_OPEN->OPEN"),
        (93.0, "check fallback candidate"),
        (93.0, "fallback: circuit breaker opened"),
        (153.0, "breaker OPEN->HALF_OPEN"),
        (153.0, "request (timeout 9s)"),
        (153.0, "breaker HALF_OPEN->CLOSED"),
        (153.0, "assigned 9000"),
        (200.0, "request (timeout 3s)"),
        (200.0, "assigned 9001"),
    ]
    assert neg.breaker.state is BreakerState.CLOSED and neg.failed_since_success == 0
    k = neg.breaker.counters
    # rejected: the retries at 25 s and 93 s, and the call at 30 s
    assert (k.failures, k.successes, k.opened, k.rejected) == (6, 2, 2, 3)


@pytest.mark.parametrize(
    ("policy", "expect_fallback"),
    [
        (FallbackPolicy.NEVER, False),
        (FallbackPolicy.ON_BREAKER_OPEN, False),  # the breaker is still closed
        (FallbackPolicy.ON_FAILURE, True),
    ],
)
def test_fallback_policy_after_exhausted_attempts(
    policy: FallbackPolicy, expect_fallback: bool
) -> None:
    clock = FakeClock()
    neg = PortNegotiator(replace(PortNegotiationConfig(), fallback=policy), rng=random.Random(3))
    neg.start(clock.now())
    for _ in range(3):
        neg.messages_to_send()
        clock.set(neg.get_timer())  # type: ignore[arg-type]
        neg.handle_timer(clock.now())
    events = drain(neg)
    assert sum(isinstance(e, AttemptFailed) for e in events) == 3
    if expect_fallback:
        assert isinstance(events[-1], NeedFallbackCandidate) and neg.state is S.CHECKING_FALLBACK
    else:
        assert events[-1] == NegotiationFailed(reason="no response after 3 attempts", attempts=3)
        assert neg.state is S.FAILED and neg.port is None


def test_on_breaker_open_policy_falls_back_once_open() -> None:
    cfg = PortNegotiationConfig(
        fallback=FallbackPolicy.ON_BREAKER_OPEN, breaker_failure_threshold=2, max_attempts=3
    )
    neg = PortNegotiator(cfg, rng=random.Random(3))
    neg.start(0.0)
    neg.handle_timer(3.0)
    neg.handle_timer(7.0)  # second failure opens the breaker: fallback
    assert isinstance(drain(neg)[-1], NeedFallbackCandidate)
    assert neg.messages_to_send()[-1].request_id  # two requests went out
    # and with the breaker open a new call never contacts the orchestrator
    neg.abandon()
    assert neg.state is S.IDLE
    neg.start(8.0)
    assert neg.messages_to_send() == []
    assert isinstance(drain(neg)[-1], NeedFallbackCandidate)
    neg.abandon()
    cfg2 = replace(cfg, fallback=FallbackPolicy.NEVER)
    neg2 = PortNegotiator(cfg2, rng=random.Random(3), breaker=neg.breaker)
    neg2.start(9.0)
    failed = drain(neg2)[-1]
    assert isinstance(failed, NegotiationFailed) and "circuit breaker open" in failed.reason


# ---------------------------------------------------- correlation by id


def test_mismatched_response_is_reported_not_applied() -> None:
    neg = PortNegotiator(rng=random.Random(5))
    neg.start(0.0)
    req = only_request(neg)
    stray = PortResponse(request_id="not-ours", success=True, port=9999)
    neg.receive_response(stray, 1.0)
    assert drain(neg) == [UnsolicitedResponse(response=stray, reason=UnsolicitedReason.UNKNOWN_ID)]
    assert neg.state is S.AWAITING_RESPONSE and neg.get_timer() == 3.0 and neg.port is None
    neg.receive_response(ok(req, 8001), 2.0)
    assert drain(neg)[-1] == PortAssigned(port=8001, request_id=req.request_id, attempts=1)


def test_unsolicited_response_is_reported_not_applied() -> None:
    neg = PortNegotiator(rng=random.Random(5))
    stray = PortResponse(request_id="auto-assigned", success=True, port=9999)
    neg.receive_response(stray, 0.0)  # nothing pending (the reference would take the port)
    assert drain(neg) == [
        UnsolicitedResponse(response=stray, reason=UnsolicitedReason.NO_REQUEST_PENDING)
    ]
    assert neg.state is S.IDLE and neg.port is None
    neg.start(0.0)
    req = only_request(neg)
    neg.receive_response(ok(req, 8001), 0.5)
    drain(neg)
    neg.receive_response(ok(req, 8002), 0.6)  # a duplicate of an answered request
    assert drain(neg) == [
        UnsolicitedResponse(response=ok(req, 8002), reason=UnsolicitedReason.STALE)
    ]
    assert neg.port == 8001


def test_late_response_to_a_timed_out_attempt_is_stale() -> None:
    neg = PortNegotiator(rng=random.Random(5))
    neg.start(0.0)
    first = only_request(neg)
    neg.handle_timer(3.0)
    second = only_request(neg)
    drain(neg)
    neg.receive_response(ok(first, 8001), 3.5)
    assert drain(neg) == [
        UnsolicitedResponse(response=ok(first, 8001), reason=UnsolicitedReason.STALE)
    ]
    assert neg.state is S.AWAITING_RESPONSE
    neg.receive_response(ok(second, 8002), 4.0)
    assert neg.port == 8002


# ------------------------------------------------ failures that end a call


def test_success_with_port_zero_is_a_failure() -> None:
    neg = PortNegotiator(rng=random.Random(5))
    neg.start(0.0)
    req = only_request(neg)
    neg.receive_response(PortResponse(request_id=req.request_id, success=True, port=0), 1.0)
    events = drain(neg)
    assert events[0] == AttemptFailed(
        request_id=req.request_id,
        attempt=1,
        reason=AttemptFailure.INVALID_PORT,
        at=1.0,
        timeout=3.0,
        error_message="orchestrator returned invalid port 0",
    )
    assert isinstance(events[1], NeedFallbackCandidate)
    assert neg.messages_to_send() == []  # no retry
    assert neg.breaker.counters.failures == 1 and neg.failed_since_success == 1
    neg.fallback_candidate_result(events[1].port, free=True)
    chosen = drain(neg)[0]
    assert isinstance(chosen, FallbackChosen)
    assert chosen.reason == "orchestrator returned invalid port 0"
    assert neg.state is S.FALLBACK and neg.port == events[1].port


def test_refusal_ends_the_call_with_its_message() -> None:
    neg = PortNegotiator(PortNegotiationConfig(fallback=FallbackPolicy.NEVER), rng=random.Random(5))
    neg.start(0.0, specific_port=80)
    req = only_request(neg)
    neg.receive_response(
        PortResponse(request_id=req.request_id, success=False, port=0, error_message="in use"),
        0.5,
    )
    events = drain(neg)
    assert isinstance(events[0], AttemptFailed) and events[0].reason is AttemptFailure.REFUSED
    assert events[1] == NegotiationFailed(reason="orchestrator refused: in use", attempts=1)


def test_send_failure_and_abandon() -> None:
    neg = PortNegotiator(rng=random.Random(5))
    with pytest.raises(LocalProtocolError):
        neg.send_failed(0.0, "nothing pending")
    neg.start(0.0)
    neg.messages_to_send()
    neg.send_failed(0.1, "BrokenPipeError")
    events = drain(neg)
    assert isinstance(events[0], AttemptFailed)
    assert events[0].reason is AttemptFailure.SEND_FAILED
    assert isinstance(events[1], NeedFallbackCandidate)
    neg.abandon()
    assert neg.state is S.IDLE
    neg.abandon()  # no call: nothing happens
    neg.start(1.0)
    neg.abandon()  # abandoning a pending attempt is not a breaker failure
    k = neg.breaker.counters
    assert (k.failures, k.cancelled) == (1, 1)
    assert neg.messages_to_send() == []


# ------------------------------------------------------------- fallback


def test_fallback_candidates_are_distinct_uniform_and_bounded() -> None:
    cfg = PortNegotiationConfig(fallback_range=(20000, 20004), max_fallback_tries=10)
    neg = PortNegotiator(cfg, rng=random.Random(11))
    neg.start(0.0)
    req = only_request(neg)
    neg.receive_response(PortResponse(request_id=req.request_id, success=False, port=0), 0.0)
    tried: list[int] = []
    while True:
        events = drain(neg)
        ask = events[-1]
        if isinstance(ask, NegotiationFailed):
            break
        assert isinstance(ask, NeedFallbackCandidate)
        assert ask.try_number == len(tried) + 1 and ask.max_tries == 5
        tried.append(ask.port)
        with pytest.raises(LocalProtocolError, match="expected"):
            neg.fallback_candidate_result(ask.port + 100, free=True)
        neg.fallback_candidate_result(ask.port, free=False)
    assert sorted(tried) == [20000, 20001, 20002, 20003, 20004]
    assert ask.reason == (
        "orchestrator refused: unknown error; no free fallback port in 20000-20004 after 5 tries"
    )
    assert neg.state is S.FAILED and neg.port is None
    # reproducible: the same seed picks the same order
    neg2 = PortNegotiator(cfg, rng=random.Random(11))
    neg2.start(0.0)
    req2 = only_request(neg2)
    neg2.receive_response(PortResponse(request_id=req2.request_id, success=False, port=0), 0.0)
    first = drain(neg2)[-1]
    assert isinstance(first, NeedFallbackCandidate) and first.port == tried[0]


# ----------------------------------------------------------- init.listen


def _init(listen: TcpListen | UnixListen) -> Init:
    return Init(orchestrator_api="http://127.0.0.1:9900", module_id="m", env={}, listen=listen)


def test_preassigned_port_from_init() -> None:
    assert preassigned_port(_init(TcpListen(host="127.0.0.1", port=4102))) == 4102
    assert preassigned_port(_init(TcpListen(host="::1", port=4103))) == 4103
    assert preassigned_port(_init(TcpListen(host="127.0.0.1", port=0))) is None
    assert preassigned_port(_init(UnixListen(path="/run/m.sock"))) is None


# ----------------------------------------------------------- properties

actions = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from([None, 8080])),
        st.tuples(st.just("advance"), st.floats(0, 12)),
        st.tuples(st.just("timer"), st.none()),
        st.tuples(st.just("answer"), st.sampled_from(["ok", "zero", "refuse", "stray"])),
        st.tuples(st.just("candidate"), st.booleans()),
        st.tuples(st.just("abandon"), st.none()),
    ),
    max_size=60,
)


@given(actions=actions, seed=st.integers(0, 2**32))
def test_negotiator_never_breaks_its_invariants(
    actions: list[tuple[str, object]], seed: int
) -> None:
    clock = FakeClock()
    cfg = PortNegotiationConfig(breaker_failure_threshold=3, fallback_range=(30000, 30003))
    neg = PortNegotiator(cfg, rng=random.Random(seed))
    last_request: PortRequest | None = None
    last_candidate: int | None = None
    seen_ids: set[str] = set()
    for kind, arg in actions:
        state = neg.state
        if kind == "start":
            if state in (S.AWAITING_RESPONSE, S.CHECKING_FALLBACK):
                with pytest.raises(LocalProtocolError):
                    neg.start(clock.now(), arg)  # type: ignore[arg-type]
                assert neg.state is state
            else:
                neg.start(clock.now(), arg)  # type: ignore[arg-type]
        elif kind == "advance":
            clock.advance(arg)  # type: ignore[arg-type]
        elif kind == "timer":
            neg.handle_timer(clock.now())
        elif kind == "abandon":
            neg.abandon()
        elif kind == "answer" and last_request is not None:
            rid = last_request.request_id if arg != "stray" else "stray-id"
            port = {"ok": 8500, "zero": 0}.get(arg, 0)  # type: ignore[call-overload]
            neg.receive_response(
                PortResponse(request_id=rid, success=arg != "refuse", port=port), clock.now()
            )
        elif kind == "candidate" and last_candidate is not None and state is S.CHECKING_FALLBACK:
            neg.fallback_candidate_result(last_candidate, bool(arg))
        for req in neg.messages_to_send():
            assert req.request_id not in seen_ids  # every attempt has its own id
            seen_ids.add(req.request_id)
            last_request = req
        for ev in drain(neg):
            if isinstance(ev, NeedFallbackCandidate):
                assert 30000 <= ev.port <= 30003
                last_candidate = ev.port
        # invariants
        assert (neg.get_timer() is not None) == (neg.state is S.AWAITING_RESPONSE)
        assert (neg.port is not None) == (neg.state in (S.ASSIGNED, S.FALLBACK))
        if neg.state is S.ASSIGNED:
            assert neg.port == 8500 and neg.failed_since_success == 0
        if neg.state is not state:  # one legal transition per action
            assert neg.state in {
                n for (s, _), n in NEGOTIATION_MACHINE.transitions.items() if s is state
            }
        k = neg.breaker.counters
        assert k.calls - (k.successes + k.failures + k.cancelled) == (
            1 if neg.state is S.AWAITING_RESPONSE else 0
        )


def test_events_and_results_validate_themselves() -> None:
    from pywatt_proto import PortResult, PortSource

    with pytest.raises(ValueError):
        NeedFallbackCandidate(port=0, try_number=1, max_tries=1)
    with pytest.raises(ValueError):
        PortResult(port=70000, source=PortSource.FALLBACK)
    neg = PortNegotiator(rng=random.Random(0))
    assert "IDLE" in repr(neg) and neg.config == PortNegotiationConfig()


def test_send_failure_report_for_an_ended_attempt_is_ignored() -> None:
    neg = PortNegotiator(rng=random.Random(9))
    neg.start(0.0)
    req = only_request(neg)
    neg.receive_response(ok(req, 8600), 0.1)  # answered while the write was still blocked
    neg.send_failed(0.2, "BrokenPipeError", request_id=req.request_id)
    assert neg.state is S.ASSIGNED and neg.port == 8600
    assert neg.breaker.counters.failures == 0


def test_the_requested_port_is_never_a_fallback_candidate() -> None:
    # spec/breaker.md §3.2; before, the port the orchestrator had just refused was drawn
    # (and, with a one-port range, chosen) as the fallback.
    refused = PortResponse(request_id="", success=False, port=0, error_message="in use")
    for seed in range(20):
        neg = PortNegotiator(
            PortNegotiationConfig(fallback_range=(10000, 10002)), rng=random.Random(seed)
        )
        neg.start(0.0, specific_port=10001)
        neg.receive_response(replace(refused, request_id=only_request(neg).request_id), 0.5)
        asked = [e.port for e in drain(neg) if isinstance(e, NeedFallbackCandidate)]
        assert asked and 10001 not in asked
    neg = PortNegotiator(PortNegotiationConfig(fallback_range=(10001, 10001)), rng=random.Random(1))
    neg.start(0.0, specific_port=10001)
    neg.receive_response(replace(refused, request_id=only_request(neg).request_id), 0.5)
    events = drain(neg)
    assert events[-1] == NegotiationFailed(
        reason="orchestrator refused: in use; the fallback range 10001-10001 "
        "holds only the requested port",
        attempts=1,
    )
    assert neg.state is S.FAILED
