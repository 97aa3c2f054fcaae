"""Property test: module calls through a ModuleConnection / OrchestratorConnection pair.

Random interleavings of starting calls (random timeouts), answering them (2xx with a value,
404, 500, or an error kind), cancelling them and moving the fake clock. Whatever the order:
every call that was not cancelled ends exactly once (``CallReplied`` with the value the
orchestrator answered, or ``CallFailed``), never before its deadline unless answered, and
both tables end empty -- no leak, no mismatch (spec/modules.md).
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto._calls import CallDeadlineError, CallFailed, CallReplied
from pywatt_proto._messages import Init, TcpListen
from pywatt_proto._module import ModuleConnection
from pywatt_proto._orchestrator import CallAbandoned, CallRequested, OrchestratorConnection
from pywatt_proto.testing import ConnectionPair, FakeClock

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from([None, 0.5, 1.0, 3.0])),
        st.tuples(st.just("answer"), st.integers(0, 50), st.sampled_from([200, 404, 500])),
        st.tuples(st.just("fail"), st.integers(0, 50), st.sampled_from(["unknown_module", "x"])),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.sampled_from([0.1, 0.5, 1.0, 2.0])),
    ),
    max_size=60,
)


@given(OPS)
def test_every_call_ends_exactly_once(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    init = Init(
        orchestrator_api="x", module_id="m", env={}, listen=TcpListen(host="127.0.0.1", port=1)
    )
    pair = ConnectionPair(
        ModuleConnection(rng=random.Random(0)),
        OrchestratorConnection(init=init, heartbeat_interval=None),
        clock,
    )
    pair.start()
    pair.pump()
    started: list[str] = []
    deadline: dict[str, float] = {}
    expected: dict[str, object] = {}  # call id -> value the orchestrator answered with
    pending: list[str] = []  # known to the orchestrator, not answered by it
    cancelled: set[str] = set()
    outcomes: dict[str, list[object]] = {}
    seen_at: dict[str, float] = {}

    def settle() -> None:
        m_events, o_events = pair.pump()
        for ev in o_events:
            if isinstance(ev, CallRequested):
                pending.append(ev.request_id)
            elif isinstance(ev, CallAbandoned):
                pending.remove(ev.request_id)
        for ev in m_events:
            assert isinstance(ev, CallReplied | CallFailed), ev
            outcomes.setdefault(ev.request_id, []).append(ev)
            seen_at[ev.request_id] = clock.now()

    for op in ops:
        kind = op[0]
        if kind == "start":
            rid = pair.module.start_call("t", "/e", len(started), clock.now(), timeout=op[1])
            started.append(rid)
            deadline[rid] = clock.now() + (op[1] if op[1] is not None else 30.0)
        elif kind in ("answer", "fail") and pending:
            rid = pending.pop(op[1] % len(pending))
            if kind == "answer":
                body = json.dumps({"n": started.index(rid)}).encode()
                pair.orchestrator.answer_call(
                    rid, op[2], {"content-type": "application/json"}, body
                )
                if op[2] == 200:
                    expected[rid] = {"n": started.index(rid)}
            else:
                pair.orchestrator.fail_call(rid, op[2], "because")
        elif kind == "cancel" and started:
            rid = started[op[1] % len(started)]
            if pair.module.cancel_call(rid):
                cancelled.add(rid)
        elif kind == "tick":
            clock.advance(op[1])
            pair.handle_timers()
        settle()
    clock.advance(400.0)  # past every deadline (at most 300 s)
    pair.handle_timers()
    settle()

    for rid in started:
        got = outcomes.get(rid, [])
        if rid in cancelled:
            assert got == []
            continue
        assert len(got) == 1, (rid, got)
        (ev,) = got
        if isinstance(ev, CallReplied):
            assert expected.get(rid) == ev.value
        else:
            assert isinstance(ev, CallFailed)
            assert rid not in expected
            if isinstance(ev.error, CallDeadlineError):
                assert seen_at[rid] >= deadline[rid]  # never before the caller's deadline
    assert pair.module.calls_in_flight == 0
    assert pair.orchestrator.calls_pending == 0
    assert pair.module.get_timer() is None
    assert pair.orchestrator.get_timer() is None
