"""PortNegotiation drivers (asyncio and blocking) with real sockets.

The orchestrator is a fake wired into the two driver hooks (``send`` and
``feed_response``). Fallback candidates are bind-tested for real: the tests
occupy ports by binding them and constrain the fallback range so the occupied
ones are hit. Only the timeout tests wait, for a few tens of milliseconds of
configured timeout; nothing calls sleep.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import (
    AttemptFailed,
    AttemptFailure,
    FallbackPolicy,
    Init,
    NeedFallbackCandidate,
    NegotiationState,
    PortEvent,
    PortNegotiationConfig,
    PortRequest,
    PortResponse,
    TcpListen,
    UnixListen,
    UnsolicitedReason,
    UnsolicitedResponse,
)

SIZE = 8
SEED = 1234


@dataclass
class Occupied:
    lo: int
    hi: int
    sockets: dict[int, socket.socket]

    def release(self, port: int) -> None:
        self.sockets.pop(port).close()


@pytest.fixture
def occupied() -> Iterator[Occupied]:
    """SIZE consecutive ports on 127.0.0.1, all bound and listening."""
    rng = random.Random()
    for _ in range(100):
        lo = rng.randint(20000, 30000)
        held: dict[int, socket.socket] = {}
        try:
            for port in range(lo, lo + SIZE):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held[port] = s
                s.bind(("127.0.0.1", port))
                s.listen()
        except OSError:
            for s in held.values():
                s.close()
            continue
        occ = Occupied(lo=lo, hi=lo + SIZE - 1, sockets=held)
        try:
            yield occ
        finally:
            for s in occ.sockets.values():
                s.close()
        return
    pytest.skip("could not find a block of free ports")  # pragma: no cover


def refusing_config(occ: Occupied, **kw: object) -> PortNegotiationConfig:
    return PortNegotiationConfig(
        fallback_range=(occ.lo, occ.hi),
        max_fallback_tries=SIZE,
        **kw,  # type: ignore[arg-type]
    )


def refuse(req: PortRequest) -> PortResponse:
    return PortResponse(
        request_id=req.request_id, success=False, port=0, error_message="no ports left"
    )


def candidates(events: list[PortEvent]) -> list[int]:
    return [e.port for e in events if isinstance(e, NeedFallbackCandidate)]


def ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"req-{n}"


# ------------------------------------------------------------------ asyncio


async def test_async_orchestrator_grants_a_port() -> None:
    sent: list[PortRequest] = []
    loop = asyncio.get_running_loop()

    async def send(req: PortRequest) -> None:  # an async writer works too
        sent.append(req)
        # the runtime's reader delivers the answer later, on the loop
        loop.call_soon(
            neg.feed_response, PortResponse(request_id="someone-else", success=True, port=1)
        )
        loop.call_soon(
            neg.feed_response, PortResponse(request_id=req.request_id, success=True, port=8123)
        )

    events: list[PortEvent] = []
    neg = pywatt_asyncio.PortNegotiation(send, rng=random.Random(1), on_event=events.append)
    result = await pywatt_asyncio.negotiate_port(neg, specific_port=8123)
    assert result == pywatt_asyncio.PortResult(
        port=8123, source=pywatt_asyncio.PortSource.ORCHESTRATOR
    )
    assert [r.specific_port for r in sent] == [8123]
    stray = [e for e in events if isinstance(e, UnsolicitedResponse)]
    assert [e.reason for e in stray] == [UnsolicitedReason.UNKNOWN_ID]
    # a response arriving when no negotiation runs is reported, not applied
    neg.feed_response(PortResponse(request_id="late", success=True, port=9999))
    assert isinstance(events[-1], UnsolicitedResponse)
    assert events[-1].reason is UnsolicitedReason.NO_REQUEST_PENDING
    assert neg.core.port == 8123


async def test_async_fallback_skips_occupied_ports(occupied: Occupied) -> None:
    loop = asyncio.get_running_loop()

    def run() -> pywatt_asyncio.PortNegotiation:
        def send(req: PortRequest) -> None:
            loop.call_soon(neg.feed_response, refuse(req))

        neg = pywatt_asyncio.PortNegotiation(
            send,
            config=refusing_config(occupied),
            rng=random.Random(SEED),
            id_factory=ids().__next__,
            on_event=events.append,
        )
        return neg

    # first run: every port in the range is taken -> a clear error
    events: list[PortEvent] = []
    with pytest.raises(pywatt_asyncio.PortNegotiationError) as info:
        await run().negotiate()
    order = candidates(events)
    assert sorted(order) == list(range(occupied.lo, occupied.hi + 1))
    assert f"no free fallback port in {occupied.lo}-{occupied.hi} after {SIZE} tries" in str(
        info.value
    )
    assert "orchestrator refused: no ports left" in info.value.reason
    # second run, same seed: free the third candidate; the first two are hit
    occupied.release(order[2])
    events = []
    neg = run()
    result = await neg.negotiate()
    assert candidates(events) == order[:3]
    assert result.port == order[2] and result.source is pywatt_asyncio.PortSource.FALLBACK
    assert result.reason == "orchestrator refused: no ports left"
    assert pywatt_asyncio.port_is_free("127.0.0.1", result.port)
    assert not pywatt_asyncio.port_is_free("127.0.0.1", order[0])


async def test_async_unresponsive_orchestrator_times_out_then_falls_back(
    occupied: Occupied,
) -> None:
    occupied.release(occupied.lo)
    sent: list[PortRequest] = []
    events: list[PortEvent] = []
    cfg = refusing_config(
        occupied, initial_timeout=0.02, timeout_step=0.01, max_timeout=0.05, max_attempts=2
    )
    neg = pywatt_asyncio.PortNegotiation(
        sent.append, config=cfg, rng=random.Random(SEED), on_event=events.append
    )
    result = await neg.negotiate(specific_port=7000)
    assert result.port == occupied.lo and result.reason == "no response after 2 attempts"
    assert [r.specific_port for r in sent] == [7000, 7000]
    assert len({r.request_id for r in sent}) == 2
    timeouts = [e for e in events if isinstance(e, AttemptFailed)]
    assert [(e.reason, e.timeout) for e in timeouts] == [
        (AttemptFailure.TIMEOUT, 0.02),
        (AttemptFailure.TIMEOUT, 0.03),
    ]


async def test_async_send_failure_and_cancellation(occupied: Occupied) -> None:
    occupied.release(occupied.hi)

    def broken(req: PortRequest) -> None:
        raise BrokenPipeError("stdout closed")

    neg = pywatt_asyncio.PortNegotiation(broken, config=refusing_config(occupied))
    result = await neg.negotiate()
    assert result.port == occupied.hi
    assert result.reason == "could not send port_request: BrokenPipeError: stdout closed"

    silent = pywatt_asyncio.PortNegotiation(lambda req: None)
    task = asyncio.create_task(silent.negotiate())
    await asyncio.sleep(0)  # let it send (a yield, not a wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert silent.core.state is NegotiationState.IDLE
    assert silent.core.breaker.counters.cancelled == 1


async def test_async_listen_port_skips_negotiation() -> None:
    def send(req: PortRequest) -> None:
        raise AssertionError("must not negotiate")

    neg = pywatt_asyncio.PortNegotiation(send)
    init = Init(
        orchestrator_api="http://127.0.0.1:9900",
        module_id="m",
        env={},
        listen=TcpListen(host="127.0.0.1", port=4102),
    )
    result = await pywatt_asyncio.negotiate_port(neg, init=init)
    assert result == pywatt_asyncio.PortResult(port=4102, source=pywatt_asyncio.PortSource.LISTEN)


# ------------------------------------------------------------------- blocking


def test_sync_orchestrator_answers_from_another_thread() -> None:
    sent: list[PortRequest] = []

    def send(req: PortRequest) -> None:
        sent.append(req)
        # the runtime's reader thread delivers the answer
        threading.Thread(
            target=neg.feed_response,
            args=(PortResponse(request_id=req.request_id, success=True, port=8200),),
        ).start()

    neg = pywatt_sync.PortNegotiation(send, rng=random.Random(2))
    result = pywatt_sync.negotiate_port(neg)
    assert result.port == 8200 and result.source is pywatt_sync.PortSource.ORCHESTRATOR
    assert len(sent) == 1


def test_sync_fallback_skips_occupied_ports(occupied: Occupied) -> None:
    def run() -> pywatt_sync.PortNegotiation:
        def send(req: PortRequest) -> None:
            neg.feed_response(refuse(req))

        neg = pywatt_sync.PortNegotiation(
            send,
            config=refusing_config(occupied),
            rng=random.Random(SEED),
            id_factory=ids().__next__,
            on_event=events.append,
        )
        return neg

    events: list[PortEvent] = []
    with pytest.raises(pywatt_sync.PortNegotiationError, match="no free fallback port"):
        run().negotiate()
    order = candidates(events)
    assert sorted(order) == list(range(occupied.lo, occupied.hi + 1))
    occupied.release(order[4])
    events = []
    result = run().negotiate()
    assert candidates(events) == order[:5]
    assert result.port == order[4] and result.source is pywatt_sync.PortSource.FALLBACK


def test_sync_unresponsive_orchestrator_and_policy_never(occupied: Occupied) -> None:
    sent: list[PortRequest] = []
    cfg = refusing_config(
        occupied,
        initial_timeout=0.02,
        timeout_step=0.0,
        max_timeout=0.02,
        max_attempts=2,
        fallback=FallbackPolicy.NEVER,
    )
    neg = pywatt_sync.PortNegotiation(sent.append, config=cfg)
    with pytest.raises(pywatt_sync.PortNegotiationError) as info:
        neg.negotiate()
    assert info.value.reason == "no response after 2 attempts" and info.value.attempts == 2
    assert len(sent) == 2


def test_sync_listen_port_and_unix_listen() -> None:
    neg = pywatt_sync.PortNegotiation(
        lambda req: neg.feed_response(
            PortResponse(request_id=req.request_id, success=True, port=8300)
        )
    )
    tcp = Init(
        orchestrator_api="http://127.0.0.1:9900",
        module_id="m",
        env={},
        listen=TcpListen(host="127.0.0.1", port=4102),
    )
    unix = Init(
        orchestrator_api="http://127.0.0.1:9900",
        module_id="m",
        env={},
        listen=UnixListen(path="/tmp/m.sock"),
    )
    assert pywatt_sync.negotiate_port(neg, init=tcp).source is pywatt_sync.PortSource.LISTEN
    assert pywatt_sync.negotiate_port(neg, init=unix).port == 8300


def test_sync_send_failure_and_stray_response(occupied: Occupied) -> None:
    occupied.release(occupied.lo + 3)
    events: list[PortEvent] = []

    def broken(req: PortRequest) -> None:
        raise OSError("pipe closed")

    neg = pywatt_sync.PortNegotiation(
        broken, config=refusing_config(occupied), on_event=events.append
    )
    neg.feed_response(PortResponse(request_id="x", success=True, port=5))
    assert isinstance(events[-1], UnsolicitedResponse)
    result = neg.negotiate()
    assert result.port == occupied.lo + 3
    assert result.reason == "could not send port_request: OSError: pipe closed"
    assert neg.core.state is NegotiationState.FALLBACK


# ------------------------------------------- one contract, both drivers
# The same scenarios run against pywatt_asyncio and pywatt_sync, through the same
# calls, so the two drivers cannot drift apart.

Driver = str
DRIVERS = ["asyncio", "sync"]


def make(kind: Driver, send: Callable[[PortRequest], None], **kw: Any) -> Any:
    mod: Any = pywatt_asyncio if kind == "asyncio" else pywatt_sync
    return mod.PortNegotiation(send, **kw)


def run_negotiation(kind: Driver, neg: Any, **kw: Any) -> Any:
    if kind == "asyncio":
        return asyncio.run(pywatt_asyncio.negotiate_port(neg, **kw))
    return pywatt_sync.negotiate_port(neg, **kw)


@pytest.mark.parametrize("kind", DRIVERS)
def test_contract_grant_ignores_strays(kind: Driver) -> None:
    events: list[PortEvent] = []
    sent: list[PortRequest] = []

    def send(req: PortRequest) -> None:
        sent.append(req)
        neg.feed_response(PortResponse(request_id="other", success=True, port=1))
        neg.feed_response(PortResponse(request_id=req.request_id, success=True, port=8400))

    neg = make(kind, send, rng=random.Random(5), on_event=events.append)
    result = run_negotiation(kind, neg, specific_port=8400)
    assert (result.port, result.source.value, result.reason) == (8400, "orchestrator", None)
    assert [r.specific_port for r in sent] == [8400]
    assert [e.reason for e in events if isinstance(e, UnsolicitedResponse)] == [
        UnsolicitedReason.UNKNOWN_ID
    ]


@pytest.mark.parametrize("kind", DRIVERS)
def test_contract_fallback_in_a_partly_occupied_range(kind: Driver, occupied: Occupied) -> None:
    def attempt() -> tuple[list[PortEvent], Any]:
        events: list[PortEvent] = []

        def send(req: PortRequest) -> None:
            neg.feed_response(refuse(req))

        neg = make(
            kind,
            send,
            config=refusing_config(occupied),
            rng=random.Random(SEED),
            id_factory=ids().__next__,
            on_event=events.append,
        )
        try:
            return events, run_negotiation(kind, neg)
        except (pywatt_asyncio.PortNegotiationError, pywatt_sync.PortNegotiationError) as exc:
            return events, exc

    events, outcome = attempt()  # everything taken
    order = candidates(events)
    assert sorted(order) == list(range(occupied.lo, occupied.hi + 1))
    assert isinstance(outcome, pywatt_asyncio.PortNegotiationError)
    assert pywatt_asyncio.PortNegotiationError is pywatt_sync.PortNegotiationError
    occupied.release(order[1])
    occupied.release(order[5])
    events, outcome = attempt()  # two free: the first free candidate in order wins
    assert candidates(events) == order[:2]
    assert outcome.port == order[1] and outcome.source.value == "fallback"


@pytest.mark.parametrize("kind", DRIVERS)
def test_contract_unresponsive_orchestrator(kind: Driver, occupied: Occupied) -> None:
    occupied.release(occupied.hi)
    sent: list[PortRequest] = []
    cfg = refusing_config(
        occupied, initial_timeout=0.01, timeout_step=0.01, max_timeout=0.02, max_attempts=3
    )
    events: list[PortEvent] = []
    neg = make(kind, sent.append, config=cfg, on_event=events.append)
    result = run_negotiation(kind, neg, specific_port=9100)
    assert result.port == occupied.hi and result.reason == "no response after 3 attempts"
    assert [r.specific_port for r in sent] == [9100] * 3
    assert [e.timeout for e in events if isinstance(e, AttemptFailed)] == [0.01, 0.02, 0.02]
    assert neg.core.breaker.counters.failures == 3
