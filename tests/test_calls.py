"""Module-to-module calls and the provider registry in the pure core (spec/modules.md).

Everything here runs on a FakeClock with no I/O: ModuleConnection (the caller) and
OrchestratorConnection (its orchestrator side) paired through pywatt_proto.testing, plus a
second pair for the target where a test routes a call end to end.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from typing import Any

import pytest

from pywatt_proto import LocalProtocolError
from pywatt_proto._calls import (
    CallDeadlineError,
    CallError,
    CallFailed,
    CallRejectedError,
    CallReplied,
    CallTracker,
    ServiceAnswered,
    ServiceFailed,
    ServiceRequests,
    TargetFailedError,
    UnknownEndpointError,
    UnknownModuleError,
    decode_reply,
    routed_message,
)
from pywatt_proto._codec import (
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
    encode,
    encode_envelope,
)
from pywatt_proto._formats import EncodingFormat
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import (
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
    Init,
    Message,
    RegisterServiceProvider,
    RegisterServiceProviderResponse,
    RoutedModuleResponse,
    RouteError,
    RouteToModule,
    ServiceType,
    TcpListen,
)
from pywatt_proto._module import ModuleConnection
from pywatt_proto._orchestrator import (
    CallAbandoned,
    CallRequested,
    OrchestratorConnection,
    ProviderDiscoveryRequested,
    ProviderRegistrationRequested,
    RequestFailed,
    ResponseReceived,
)
from pywatt_proto._routing import (
    CALL_ID_HEADER,
    SOURCE_HEADER,
    ProviderRegistry,
    call_delivery,
    reply_from_http,
)
from pywatt_proto.testing import ConnectionPair, FakeClock


def _pair(module_id: str, clock: FakeClock) -> ConnectionPair:
    init = Init(
        orchestrator_api="http://127.0.0.1:0",
        module_id=module_id,
        env={},
        listen=TcpListen(host="127.0.0.1", port=4100),
    )
    pair = ConnectionPair(
        ModuleConnection(rng=random.Random(module_id)),
        OrchestratorConnection(init=init, heartbeat_interval=None),
        clock,
    )
    pair.start()
    pair.pump()
    return pair


def _drain(conn: ModuleConnection | OrchestratorConnection) -> list[Any]:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def _of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


JSON = {"content-type": "application/json"}


# --------------------------------------------------------------------------- round trips


def test_call_is_delivered_as_a_post_and_the_reply_value_comes_back() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    rid = pair.module.start_call("pricing", "/price", {"sku": "a1", "n": [1, 2]}, clock.now())
    _, o_events = pair.pump()
    (call,) = _of(o_events, CallRequested)
    assert call.request_id == rid
    assert (call.target_module_id, call.target_endpoint) == ("pricing", "/price")
    assert call.body == b'{"n":[1,2],"sku":"a1"}'
    assert call.headers == {
        "content-type": "application/json",
        CALL_ID_HEADER: rid,
        SOURCE_HEADER: "gateway",
    }
    assert call.deadline == 30.0  # no timeout given: the default
    assert pair.orchestrator.answer_call(rid, 200, JSON, b'{"price": 42}') is True
    m_events, _ = pair.pump()
    assert m_events == [CallReplied(request_id=rid, value={"price": 42})]
    assert pair.module.calls_in_flight == 0
    assert pair.orchestrator.calls_pending == 0


def test_a_call_routed_between_two_connection_pairs() -> None:
    clock = FakeClock()
    source, target = _pair("gateway", clock), _pair("pricing", clock)
    rid = source.module.start_call("pricing", "/price", [1, "x"], clock.now(), timeout=2.5)
    (call,) = _of(source.pump()[1], CallRequested)
    assert call.deadline == 2.5
    hid = target.orchestrator.send_request(
        "POST", call.target_endpoint, call.headers, call.body, clock.now()
    )
    m_events, _ = target.pump()
    (req,) = [e for e in m_events if type(e).__name__ == "RequestReceived"]
    assert req.request.body == b'[1,"x"]'
    assert req.request.headers[SOURCE_HEADER] == "gateway"
    target.module.send_response(req.request_id, 200, [("content-type", "application/json")], b"7")
    (resp,) = _of(target.pump()[1], ResponseReceived)
    assert resp.request_id == hid
    r = resp.response
    source.orchestrator.answer_call(call.request_id, r.status_code, r.headers, r.body)
    assert source.pump()[0] == [CallReplied(request_id=rid, value=7)]


def test_a_thousand_calls_answered_in_reverse_order_all_match() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    ids = [pair.module.start_call("pricing", "/echo", i, clock.now()) for i in range(1000)]
    calls = _of(pair.pump()[1], CallRequested)
    assert [c.request_id for c in calls] == ids
    for c in reversed(calls):
        pair.orchestrator.answer_call(c.request_id, 200, JSON, c.body)
    replies = _of(pair.pump()[0], CallReplied)
    assert len(replies) == 1000
    assert {r.request_id: r.value for r in replies} == {rid: i for i, rid in enumerate(ids)}


@pytest.mark.parametrize(
    ("status", "headers", "body", "value"),
    [
        (200, JSON, b"", None),
        (204, {}, None, None),
        (200, {"content-type": "application/problem+json; charset=utf-8"}, b' {"a" : 1}', {"a": 1}),
        (200, {"content-type": "text/plain"}, b"hello", b"hello"),
        (200, JSON, b"not json", b"not json"),
        (201, {"content-type": "application/octet-stream"}, b"\x00\xff", b"\x00\xff"),
    ],
)
def test_reply_payloads(
    status: int, headers: dict[str, str], body: bytes | None, value: object
) -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    rid = pair.module.start_call("pricing", "/x", None, clock.now())
    pair.pump()
    pair.orchestrator.answer_call(rid, status, headers, body)
    assert pair.pump()[0] == [CallReplied(request_id=rid, value=value)]


def test_binary_argument_is_delivered_as_raw_bytes() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    pair.module.start_call("pricing", "/blob", b"\x00\x01", clock.now())
    (call,) = _of(pair.pump()[1], CallRequested)
    assert call.body == b"\x00\x01"
    assert call.headers["content-type"] == "application/octet-stream"


# --------------------------------------------------------------------------- errors


def test_each_error_kind_reaches_the_caller_at_once_as_its_exception() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    a = pair.module.start_call("nobody", "/x", 1, clock.now(), timeout=10)
    b = pair.module.start_call("pricing", "/nope", 1, clock.now(), timeout=10)
    c = pair.module.start_call("pricing", "/boom", 1, clock.now(), timeout=10)
    d = pair.module.start_call("pricing", "/get-only", 1, clock.now(), timeout=10)
    pair.pump()
    assert pair.orchestrator.fail_call(a, "unknown_module", "no module named 'nobody'")
    pair.orchestrator.answer_call(b, 404, JSON, b'{"error":"not found"}')
    pair.orchestrator.answer_call(c, 500, JSON, b'{"error":"division by zero"}')
    pair.orchestrator.answer_call(d, 405, {}, b"")
    failed = {e.request_id: e.error for e in _of(pair.pump()[0], CallFailed)}
    assert clock.now() == 0.0  # no time passed: errors are not timeouts
    assert type(failed[a]) is UnknownModuleError
    assert failed[a].target == "nobody" and failed[a].kind == "unknown_module"
    assert type(failed[b]) is UnknownEndpointError and failed[b].status == 404
    assert type(failed[d]) is UnknownEndpointError and failed[d].status == 405
    assert type(failed[c]) is TargetFailedError and failed[c].status == 500
    assert "division by zero" in failed[c].message
    assert all(isinstance(e, CallError) for e in failed.values())


def test_orchestrator_deadline_answers_deadline_and_abandons_the_target_request() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    rid = pair.module.start_call("pricing", "/slow", 1, clock.now(), timeout=0.5)
    pair.pump()
    assert pair.orchestrator.get_timer() == 0.5
    clock.advance(0.49)
    pair.handle_timers()
    assert pair.pump() == ([], [])
    clock.advance(0.01)
    pair.handle_timers()
    m_events, o_events = pair.pump()
    assert o_events == [CallAbandoned(request_id=rid, reason="deadline")]
    (failed,) = m_events
    assert isinstance(failed, CallFailed) and type(failed.error) is CallDeadlineError
    assert isinstance(failed.error, TimeoutError)
    # the target's late answer is dropped on the orchestrator side
    assert pair.orchestrator.answer_call(rid, 200, JSON, b"1") is False
    assert pair.orchestrator.fail_call(rid, "target_failed", "x") is False


def test_module_deadline_is_a_backstop_when_nothing_answers() -> None:
    clock = FakeClock()
    module = ModuleConnection()
    module.receive_data(
        b'{"orchestrator_api":"x","module_id":"m","env":{},"listen":"127.0.0.1:1"}\n', 0.0
    )
    _drain(module)
    assert module.state.name == "RUNNING"
    module.data_to_send()
    rid = module.start_call("pricing", "/x", 1, clock.now(), timeout=3)
    sent = json.loads(module.data_to_send())
    assert sent["op"] == "route_to_module" and sent["request_id"] == rid
    assert module.get_timer() == 3.0
    clock.advance(3)
    module.handle_timer(clock.now())
    ev = module.next_event()
    assert isinstance(ev, CallFailed) and isinstance(ev.error, CallDeadlineError)
    # a late answer is dropped quietly; an unknown one is handed on as the plain message
    late = RoutedModuleResponse(
        source_module_id="pricing",
        request_id=uuid.UUID(rid),
        payload=EncodedMessage(data=b"1", format=EncodingFormat.JSON),
    )
    unknown = RoutedModuleResponse(
        source_module_id="pricing",
        request_id=uuid.UUID(int=99, version=4),
        payload=EncodedMessage(data=b"1", format=EncodingFormat.JSON),
    )
    module.receive_data(encode(late) + b"\n" + encode(unknown) + b"\n", clock.now())
    assert _drain(module) == [unknown]


def test_rejected_calls() -> None:
    clock = FakeClock()
    tracker = CallTracker(max_in_flight=2, rng=random.Random(1))
    tracker.start("t", "/a", 1, 0.0)
    tracker.start("t", "/a", 2, 0.0)
    with pytest.raises(CallRejectedError):
        tracker.start("t", "/a", 3, 0.0)
    for bad in [("", "/a"), ("t", "a"), ("t", "")]:
        with pytest.raises(LocalProtocolError):
            tracker.start(bad[0], bad[1], 1, 0.0)
    with pytest.raises(LocalProtocolError):
        tracker.start("t", "/a", 1, 0.0, timeout=0)
    with pytest.raises(LocalProtocolError):
        tracker.start("t", "/a", object(), 0.0)
    assert tracker.in_flight == 2

    # orchestrator side: Auto payload and a duplicate request_id are answered rejected
    pair = _pair("gateway", clock)
    rid = uuid.UUID(int=7, version=4)
    auto = RouteToModule(
        target_module_id="p",
        target_endpoint="/x",
        request_id=rid,
        payload=EncodedMessage(data=b"1", format=EncodingFormat.AUTO),
    )
    ok = RouteToModule(
        target_module_id="p",
        target_endpoint="/x",
        request_id=uuid.UUID(int=8, version=4),
        payload=EncodedMessage(data=b"1", format=EncodingFormat.JSON),
    )
    for msg in (auto, ok, ok):
        pair.orchestrator.receive_data(encode(msg) + b"\n", clock.now())
    events = _drain(pair.orchestrator)
    assert len(_of(events, CallRequested)) == 1
    answers = [  # the pair selected base64_bodies: payload bytes travel as base64
        decode_orchestrator_to_module(x, base64_bodies=True)
        for x in pair.orchestrator.data_to_send().splitlines()
    ]
    assert [(a.request_id, a.error.kind) for a in answers] == [
        (rid, "rejected"),
        (ok.request_id, "rejected"),
    ]


def test_end_of_input_fails_calls_and_the_sender_exit_abandons_them() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    rid = pair.module.start_call("pricing", "/x", 1, clock.now())
    token = pair.module.start_service_request(
        DiscoverServiceProviders(service_type=ServiceType.CACHE, all_providers=None), clock.now()
    )
    pair.pump()
    pair.module.receive_eof()
    events = _drain(pair.module)
    assert [type(e.error) for e in events if isinstance(e, CallFailed)] == [CallRejectedError]
    assert [e.token for e in events if isinstance(e, ServiceFailed)] == [token]
    with pytest.raises(CallRejectedError):
        pair.module.start_call("pricing", "/x", 1, clock.now())
    pair.orchestrator.receive_eof()
    o_events = _drain(pair.orchestrator)
    assert CallAbandoned(request_id=rid, reason="calling module exited") in o_events


def test_heap_stays_bounded_when_calls_are_answered_quickly() -> None:
    tracker = CallTracker(max_in_flight=4, rng=random.Random(2))
    for i in range(10_000):
        msg = tracker.start("t", "/a", i, float(i))
        tracker.on_response(
            RoutedModuleResponse(
                source_module_id="t",
                request_id=msg.request_id,
                payload=EncodedMessage(data=b"1", format=EncodingFormat.JSON),
            )
        )
    assert tracker.in_flight == 0
    assert tracker.get_timer() is None
    assert tracker.handle_timer(1e9) == []


# --------------------------------------------------------------------------- registry


def test_registration_then_discovery_through_the_connections() -> None:
    clock = FakeClock()
    pair = _pair("pricing", clock)
    registry = ProviderRegistry()
    reg = RegisterServiceProvider(
        service_type=ServiceType.custom("pricing"),
        name="pricing-v1",
        version="1.0",
        address="http://127.0.0.1:9000",
        metadata={"region": "eu"},
    )
    t1 = pair.module.start_service_request(reg, clock.now())
    t2 = pair.module.start_service_request(
        DiscoverServiceProviders(service_type=ServiceType.custom("pricing"), all_providers=False),
        clock.now(),
    )
    _, o_events = pair.pump()
    (r,) = _of(o_events, ProviderRegistrationRequested)
    (d,) = _of(o_events, ProviderDiscoveryRequested)
    pair.orchestrator.answer_service(registry.register("pricing", r.request))
    pair.orchestrator.answer_service(registry.discover(d.request, lambda m: m == "pricing"))
    m_events, _ = pair.pump()
    a1, a2 = _of(m_events, ServiceAnswered)
    assert a1.token == t1 and a1.response.provider_id == "p1"
    assert a2.token == t2
    (info,) = a2.response.providers
    assert (info.module_id, info.name, info.is_healthy, info.metadata) == (
        "pricing",
        "pricing-v1",
        True,
        {"region": "eu"},
    )


def test_registry_rules() -> None:
    reg = ProviderRegistry(max_providers=2)
    cache = ServiceType.CACHE

    def req(name: str, t: ServiceType = cache) -> RegisterServiceProvider:
        return RegisterServiceProvider(service_type=t, name=name, address="a:" + name)

    assert reg.register("a", req("one")).provider_id == "p1"
    assert reg.register("b", req("two")).provider_id == "p2"
    again = reg.register("a", RegisterServiceProvider(service_type=cache, name="one", address="z"))
    assert again.provider_id == "p1"  # replaced, same id
    full = reg.register("c", req("three"))
    assert (full.success, full.provider_id) == (False, None) and "full" in (full.error or "")
    down = {"a"}

    def healthy(m: str) -> bool:
        return m not in down

    pref = reg.discover(DiscoverServiceProviders(service_type=cache), healthy)
    assert [p.provider_id for p in pref.providers] == ["p2"]  # first *healthy* one
    every = reg.discover(DiscoverServiceProviders(service_type=cache, all_providers=True), healthy)
    assert [(p.provider_id, p.is_healthy, p.address) for p in every.providers] == [
        ("p1", False, "z"),
        ("p2", True, "a:two"),
    ]
    none = reg.discover(DiscoverServiceProviders(service_type=ServiceType.JWT), healthy)
    assert none == DiscoverServiceProvidersResponse(success=True, providers=(), error=None)


def test_service_answers_pair_first_in_first_out_and_a_late_answer_keeps_the_pairing() -> None:
    clock = FakeClock()
    reqs = ServiceRequests(timeout=5.0, max_pending=3)
    reg = RegisterServiceProvider(service_type=ServiceType.JWT, name="n", address="a")
    t1 = reqs.start(reg, clock.now())
    clock.advance(1)
    t2 = reqs.start(reg, clock.now())
    disc = reqs.start(DiscoverServiceProviders(service_type=ServiceType.JWT), clock.now())
    assert reqs.get_timer() == 5.0
    clock.advance(4)
    assert reqs.handle_timer(clock.now()) == [ServiceFailed(token=t1, reason="no answer in time")]
    assert reqs.handle_timer(clock.now()) == []  # reported once
    assert reqs.get_timer() == 6.0
    late = RegisterServiceProviderResponse(success=True, provider_id="x", error=None)
    on_time = RegisterServiceProviderResponse(success=True, provider_id="y", error=None)
    assert reqs.on_response(late) is None  # consumed by the timed-out first request
    assert reqs.on_response(on_time) == ServiceAnswered(token=t2, response=on_time)
    answer = DiscoverServiceProvidersResponse(success=True, providers=(), error=None)
    assert reqs.on_response(answer) == ServiceAnswered(token=disc, response=answer)
    assert reqs.on_response(on_time) is None  # unsolicited
    for _ in range(3):
        reqs.start(reg, clock.now())
    with pytest.raises(LocalProtocolError):
        reqs.start(reg, clock.now())


# --------------------------------------------------------------------------- reference shapes


RID = uuid.UUID("6f1c5e0a-2b7d-4c1e-9a53-0d7c3f4b8e21")
ENV_ID = "0b7e2a52-9d0b-4f43-8f0e-3a2c6f3d1e55"
REF_INNER = f'{{"id":"{ENV_ID}","content":{{"sku":"a1"}},"metadata":{{}}}}'.encode()


PRICE = b'{"price":42}'


def _ints(data: bytes) -> str:
    return "[" + ",".join(str(b) for b in data) + "]"


def test_golden_route_to_module_frame_content_is_the_reference_shape() -> None:
    """The reference wraps route_to_module in a Message envelope on TCP, with the request
    inside an envelope in payload.data (spec/reference.md R15); our encoder writes the same
    bytes for the same values."""
    msg = RouteToModule(
        target_module_id="pricing",
        target_endpoint="/price",
        request_id=RID,
        payload=EncodedMessage(data=REF_INNER, format=EncodingFormat.JSON),
    )
    frame_id = uuid.UUID("11111111-2222-4333-8444-555555555555")
    expected = (
        f'{{"id":"{frame_id}","content":{{"op":"route_to_module","target_module_id":"pricing",'
        f'"target_endpoint":"/price","request_id":"{RID}",'
        f'"payload":{{"data":{_ints(REF_INNER)},"format":"Json"}}}},"metadata":{{}}}}'
    ).encode()
    assert encode_envelope(Message(id=frame_id, content=msg)) == expected
    # and the orchestrator reads the reference sender's call: body = the envelope's content
    assert decode_module_to_orchestrator(encode(msg)) == msg
    _headers, body, timeout_ms = call_delivery(
        msg.payload, source_module_id="gateway", request_id=str(RID)
    )
    assert (body, timeout_ms) == (b'{"sku":"a1"}', None)


def test_golden_routed_module_response_is_bare_and_carries_the_bare_reply_value() -> None:
    """What the orchestrator writes to a reference sender: a bare routed_module_response
    whose payload.data is the bare reply value (the reference parses it as Res directly)."""
    reply = reply_from_http(200, JSON, b'{"price": 42}', target="pricing", endpoint="/price")
    assert isinstance(reply, EncodedMessage)
    msg = RoutedModuleResponse(source_module_id="pricing", request_id=RID, payload=reply)
    expected = (
        f'{{"op":"routed_module_response","source_module_id":"pricing","request_id":"{RID}",'
        f'"payload":{{"data":{_ints(PRICE)},"format":"Json"}}}}'
    ).encode()
    assert encode(msg) == expected
    assert decode_orchestrator_to_module(expected) == msg
    assert decode_reply(reply) == {"price": 42}


def test_error_answer_shape_keeps_reference_fields_and_adds_pywatt_error() -> None:
    clock = FakeClock()
    pair = _pair("gateway", clock)
    rid = pair.module.start_call("pricing", "/nope", 1, clock.now())
    pair.pump()
    pair.orchestrator.answer_call(rid, 404, {}, b"")
    (line,) = pair.orchestrator.data_to_send().splitlines()
    obj = json.loads(line)
    assert list(obj) == ["op", "source_module_id", "request_id", "payload", "pywatt_error"]
    assert obj["pywatt_error"] == {
        "kind": "unknown_endpoint",
        "message": "pricing has no POST /nope (404)",
        "status": 404,
    }
    data = obj["payload"]["data"]  # base64 between pywatt sides (base64_bodies)
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    assert json.loads(raw) == {"pywatt_error": obj["pywatt_error"]}
    # a reply value that merely looks like an error is still a reply (no member)
    lookalike = RoutedModuleResponse(
        source_module_id="pricing",
        request_id=uuid.UUID(rid),
        payload=EncodedMessage(data=raw, format=EncodingFormat.JSON),
    )
    tracker = CallTracker(rng=random.Random(3))
    m = tracker.start("pricing", "/x", 1, 0.0)
    assert isinstance(
        tracker.on_response(
            RoutedModuleResponse(
                source_module_id="p", request_id=m.request_id, payload=lookalike.payload
            )
        ),
        CallReplied,
    )
    # unknown kinds become a plain CallError
    unknown = RoutedModuleResponse(
        source_module_id="p",
        request_id=tracker.start("pricing", "/x", 1, 0.0).request_id,
        payload=lookalike.payload,
        error=RouteError(kind="martian", message="?"),
    )
    ev = tracker.on_response(unknown)
    assert isinstance(ev, CallFailed) and type(ev.error) is CallError
    assert ev.error.kind == "martian"


def test_envelope_timeout_property_and_non_envelope_payloads() -> None:
    tracker = CallTracker(rng=random.Random(4))
    msg = tracker.start("t", "/a", {"k": 1}, 0.0, timeout=1.25)
    inner = json.loads(msg.payload.data)
    assert inner == {
        "id": str(msg.request_id),
        "content": {"k": 1},
        "metadata": {"properties": {"pywatt_timeout_ms": 1250}},
    }
    assert call_delivery(msg.payload, source_module_id="s", request_id="r")[1:] == (
        b'{"k":1}',
        1250,
    )
    bare = EncodedMessage(data=b'{"id":1,"content":2}', format=EncodingFormat.JSON)
    assert call_delivery(bare, source_module_id="s", request_id="r")[1] == b'{"content":2,"id":1}'
    b64 = EncodedMessage(data=b"AAE=", format=EncodingFormat.BASE64)
    assert call_delivery(b64, source_module_id="s", request_id="r")[1] == b"\x00\x01"
    one_way = routed_message("gateway", "r1", msg.payload)
    assert (one_way.source_module_id, one_way.value) == ("gateway", {"k": 1})


def test_request_failed_still_reported_separately_from_calls() -> None:
    """A forwarded request failing (502) is unrelated to calls: no call events appear."""
    clock = FakeClock()
    pair = _pair("gateway", clock)
    pair.orchestrator.send_request("GET", "/", {}, None, clock.now())
    pair.module.receive_eof()
    pair.orchestrator.receive_eof()
    assert [type(e) for e in _drain(pair.orchestrator)] == [RequestFailed]


def test_framed_channel_hands_routed_messages_to_the_driver_and_envelopes_calls() -> None:
    """On a framed channel a reference orchestrator sends bare frames; a routed message is
    handed on as the plain message, and a call sent there is enveloped as the reference's."""
    from pywatt_proto._channel import ChannelConnection
    from pywatt_proto._framing import FrameDecoder, encode_frame

    conn = ChannelConnection(id_factory=lambda: uuid.UUID(int=1, version=4))
    conn.start_connect(0.0)
    conn.connected(0.0)
    inner = f'{{"id":"{ENV_ID}","content":{{"n":1}},"metadata":{{}}}}'.encode()
    routed = (
        '{"op":"routed_module_message","source_module_id":"rust","original_request_id":'
        f'"{RID}","payload":{{"data":{_ints(inner)},"format":"Json"}}}}'
    ).encode()
    conn.receive_data(encode_frame(EncodingFormat.JSON, routed), 0.0)
    (event,) = _drain(conn)  # type: ignore[arg-type]
    assert event == decode_orchestrator_to_module(routed)
    assert routed_message("rust", str(RID), event.payload).value == {"n": 1}
    call = CallTracker(rng=random.Random(5)).start("pricing", "/price", {"sku": "a1"}, 0.0)
    conn.send(call)
    frames = FrameDecoder()
    frames.receive_data(conn.data_to_send())
    frame = frames.next_frame()
    assert frame.payload == encode_envelope(  # type: ignore[union-attr]
        Message(id=uuid.UUID(int=1, version=4), content=call)
    )


def test_a_call_or_registry_request_too_large_for_a_line_is_not_kept() -> None:
    # start_call / start_service_request raise LocalProtocolError (hint 413) when the line
    # would pass the limit; nothing is sent and nothing waits for an answer or a deadline
    clock = FakeClock()
    pair = _pair("gateway", clock)
    conn = pair.module
    huge = "x" * (100 * 1024 * 1024)  # past the 96 MiB base64_bodies line limit
    with pytest.raises(LocalProtocolError) as caught:
        conn.start_call("p", "/x", huge, clock.now())
    assert caught.value.error_status_hint == 413
    big = RegisterServiceProvider(
        service_type=ServiceType.DATABASE, name=huge, version=None, address="a", metadata=None
    )
    with pytest.raises(LocalProtocolError):
        conn.start_service_request(big, clock.now())
    assert conn.calls_in_flight == 0 and conn.get_timer() is None
    assert conn.data_to_send() == b""
    conn.handle_timer(clock.now() + 400.0)
    assert _drain(conn) == []
