"""The per-request short cuts of the pure core give exactly what the general paths give.

* ``decode_http_request_line`` (the canonical compact ``http_request`` line read off one
  regular expression) returns the message ``decode_orchestrator_to_module`` returns, and
  declines (None) every line the general decoder answers differently or refuses;
* ``ModuleConnection`` answers the same bytes and events whichever way a line was read;
* ``send_response``'s remembered header text never outlives a change of the headers;
* ``Router.plan``'s remembered static lookups follow later registrations and a replaced
  ``metrics``; the JSON body encoder keeps the stdlib's errors.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywatt_proto import LocalProtocolError, RemoteProtocolError
from pywatt_proto._codec import (
    decode_http_request_line,
    decode_orchestrator_to_module,
    encode,
)
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Endpoint, HttpRequest, HttpResponse
from pywatt_proto._module import BadLine, ModuleConnection, ModuleState, RequestReceived
from pywatt_proto._router import Headers, Metrics, Request, Response, Router

INIT = (
    b'{"orchestrator_api":"x","module_id":"m","env":{},"listen":"127.0.0.1:0",'
    b'"pywatt_extensions":["heartbeat_ack","http_response_op"]}\n'
)
CANONICAL = (
    b'{"op":"http_request","request_id":"r1","method":"GET","uri":"/hello?a=1",'
    b'"headers":{"host":"x","Accept":"*/*"},"body":null}'
)


def general(line: bytes) -> Any:
    try:
        return decode_orchestrator_to_module(line)
    except RemoteProtocolError as exc:
        return exc


def assert_agrees(line: bytes) -> HttpRequest | None:
    fast = decode_http_request_line(line)
    slow = general(line)
    if fast is None:
        return None
    assert isinstance(slow, HttpRequest), (line, slow)
    assert fast == slow
    assert list(fast.headers.items()) == list(slow.headers.items())  # same order too
    return fast


# ------------------------------------------------------------------ decoder


def test_canonical_line_is_read_the_short_way() -> None:
    msg = assert_agrees(CANONICAL)
    assert msg == HttpRequest(
        request_id="r1", method="GET", uri="/hello?a=1", headers={"host": "x", "Accept": "*/*"}
    )
    body = assert_agrees(CANONICAL.replace(b'"body":null', b'"body":[0,1,9,10,99,100,255]'))
    assert body is not None and body.body == bytes([0, 1, 9, 10, 99, 100, 255])
    empty = assert_agrees(CANONICAL.replace(b'{"host":"x","Accept":"*/*"}', b"{}"))
    assert empty is not None and empty.headers == {}
    assert assert_agrees(CANONICAL.replace(b'"body":null', b'"body":[]')) is not None
    # non-ASCII text is plain UTF-8, not an escape
    assert assert_agrees(CANONICAL.replace(b"/hello", "/h\u00e9llo\U0001f600".encode())) is not None
    # repeated header names: the last one wins, as in serde's HashMap
    dup = assert_agrees(CANONICAL.replace(b'"Accept":"*/*"', b'"host":"y"'))
    assert dup is not None and dup.headers == {"host": "y"}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"body":null', b'"body":null,"body":[1]'),  # duplicate field
        (b'"op":"http_request",', b'"op":"http_request","op":"http_request",'),
        (b'"request_id":"r1"', b'"request_id":"r1","request_id":"r2"'),
        (b'"body":null', b'"body":[256]'),
        (b'"body":null', b'"body":[01]'),
        (b'"body":null', b'"body":[1,,2]'),
        (b'"body":null', b'"body":[-0]'),
        (b'"body":null', b'"body":[1.0]'),
        (b'"body":null', b'"body":[' + b"9" * 5000 + b"]"),
        (b'"body":null', b'"body":[true]'),
        (b'"body":null', b'"body":"x"'),
        (b'"host":"x"', b'"host":1'),
        (b'"host":"x"', b'"host":"\\u0078"'),  # escapes: general path (same value)
        (b'"host":"x"', b'"h\\"":"x"'),
        (b'"uri":"/hello?a=1"', b'"uri":"/\\ud800"'),  # lone surrogate
        (b'"uri":"/hello?a=1"', b'"uri":"/\x01"'),  # raw control character
        (b'"uri":"/hello?a=1"', b'"uri":"/\xff"'),  # invalid UTF-8
        (b'"method":"GET"', b'"method":null'),
        (b'"method":"GET",', b""),  # missing field
        (b'"body":null', b'"body":null,"extra":{"a":1,"a":2}'),  # unknown field
        (b'"uri":"/hello?a=1",', b""),
        (b'{"op":"http_request",', b'{"op": "http_request",'),  # not compact
        (b'"body":null}', b'"body":null} '),
    ],
)
def test_other_lines_go_the_general_way(old: bytes, new: bytes) -> None:
    line = CANONICAL.replace(old, new)
    assert line != CANONICAL
    assert decode_http_request_line(line) is None
    general(line)  # whatever it says is the answer (checked through the connection below)


_text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    rid=_text,
    method=_text,
    uri=_text,
    headers=st.lists(st.tuples(_text, _text), max_size=4),
    body=st.none() | st.binary(max_size=40),
    pretty=st.booleans(),
)
def test_any_serialised_request_agrees(
    rid: str,
    method: str,
    uri: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    pretty: bool,
) -> None:
    hdrs = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in headers) + "}"
    body_text = "null" if body is None else json.dumps(list(body), separators=(",", ":"))
    line = (
        f'{{"op":"http_request","request_id":{json.dumps(rid)},"method":{json.dumps(method)},'
        f'"uri":{json.dumps(uri)},"headers":{hdrs},"body":{body_text}}}'
    )
    for ascii_only in (True, False):
        text = line if ascii_only else line.encode().decode("unicode_escape", "ignore")
        data = text.encode("utf-8", "surrogatepass")
        assert_agrees(data)
        if pretty and b'","' in data:  # a space between fields: the general way
            spaced = data.replace(b'","', b'", "')
            assert decode_http_request_line(spaced) is None
            assert_agrees(spaced)


# ------------------------------------------------------------------ connection


def _running() -> ModuleConnection:
    conn = ModuleConnection(endpoints=(Endpoint(path="/hello", methods=("GET",)),))
    conn.receive_data(INIT, 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()
    assert conn.state is ModuleState.RUNNING
    return conn


def _feed(conn: ModuleConnection, data: bytes) -> list[Any]:
    conn.receive_data(data, 1.0)
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        assert ev is not END_OF_INPUT
        out.append(ev)
    return out


def _pretty(line: bytes) -> bytes:
    """The same message in serde's non-compact spacing (always read the general way)."""
    return json.dumps(json.loads(line)).encode()


@pytest.mark.parametrize(
    "line",
    [
        CANONICAL,
        CANONICAL.replace(b'"body":null', b'"body":[123,125]'),
        CANONICAL.replace(b'"method":"GET"', b'"method":"get"'),
        CANONICAL.replace(b'"method":"GET"', b'"method":"G T"'),  # invalid method: 400
        CANONICAL.replace(b'"uri":"/hello?a=1"', b'"uri":"hello"'),  # invalid uri: 400
        CANONICAL.replace(b'"uri":"/hello?a=1"', b'"uri":"http://h/x?y"'),
    ],
)
def test_connection_events_and_answers_match_the_general_path(line: bytes) -> None:
    assert decode_http_request_line(line) is not None
    fast, slow = _running(), _running()
    ev_fast = _feed(fast, line + b"\n")
    ev_slow = _feed(slow, _pretty(line) + b"\n")
    assert [type(e) for e in ev_fast] == [type(e) for e in ev_slow]
    for a, b in zip(ev_fast, ev_slow, strict=True):
        if isinstance(a, RequestReceived):
            assert (a.request_id, a.request, a.path, a.query) == (
                b.request_id,
                b.request,
                b.path,
                b.query,
            )
            ra, rb = a.to_router_request(), b.to_router_request()
            assert ra == rb
            assert ra.headers.items() == rb.headers.items() == Headers(a.request.headers).items()
            fast.send_response(a.request_id, 200, (("Content-Type", "text/plain"),), b"ok")
            slow.send_response(b.request_id, 200, {"content-type": "text/plain"}, b"ok")
        else:
            assert isinstance(a, BadLine) and isinstance(b, BadLine)
            assert a.answered_status == b.answered_status
            assert str(a.error) == str(b.error)
    assert fast.data_to_send() == slow.data_to_send()


def test_duplicate_request_id_and_shutdown_answers_are_unchanged() -> None:
    conn = _running()
    (ev,) = _feed(conn, CANONICAL + b"\n")
    (bad,) = _feed(conn, CANONICAL + b"\n")
    assert isinstance(ev, RequestReceived)
    assert isinstance(bad, BadLine) and bad.answered_status == 400
    assert json.loads(conn.data_to_send())["status_code"] == 400
    conn.begin_shutdown()
    assert _feed(conn, CANONICAL.replace(b'"r1"', b'"r2"') + b"\n") == []
    assert json.loads(conn.data_to_send())["status_code"] == 503
    assert conn.send_response("r1", 204, (), None) is True
    assert conn.state is ModuleState.CLOSED


def test_send_response_header_tuples_give_the_codec_bytes() -> None:
    conn = _running()
    constant = (("content-type", "application/json"), ("X-A", "1"), ("x-a", "2"))
    mutable_pair = ["x-b", "1"]
    changing = (tuple(mutable_pair), mutable_pair)  # a list inside: never remembered
    for i in range(3):
        for headers in (constant, changing):
            rid = f"r{i}-{len(headers)}-{id(headers) % 7}"
            _feed(conn, CANONICAL.replace(b'"r1"', json.dumps(rid).encode()) + b"\n")
            assert conn.send_response(rid, 201, headers, b'{"k":1}') is True
            folded: dict[str, str] = {}
            for k, v in headers:
                folded[k.lower()] = folded[k.lower()] + ", " + v if k.lower() in folded else v
            expected = encode(
                HttpResponse(request_id=rid, status_code=201, headers=folded, body=b'{"k":1}')
            )
            assert conn.data_to_send() == expected + b"\n"
        mutable_pair[1] = str(i + 2)
    _feed(conn, CANONICAL + b"\n")
    with pytest.raises(LocalProtocolError, match="surrogate"):
        conn.send_response("r1", 200, (("x", "\ud800"),), b"")


def test_wrapped_responses_still_wrap() -> None:
    conn = ModuleConnection()
    conn.receive_data(INIT.replace(b'"heartbeat_ack","http_response_op"', b""), 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()
    _feed(conn, CANONICAL + b"\n")
    conn.send_response("r1", 200, (("content-type", "text/plain"),), b"hi")
    out = json.loads(conn.data_to_send())
    assert out["content"] == {
        "request_id": "r1",
        "status_code": 200,
        "headers": {"content-type": "text/plain"},
        "body": list(b"hi"),
    }
    assert out["metadata"]["properties"] == {"correlation_id": "r1"}


# ------------------------------------------------------------------ router


def _hello(request: Request) -> Any:
    return {"message": "hello"}


def test_plan_remembers_static_routes_until_routes_change() -> None:
    router = Router()
    first = router.add_route("/ab", _hello)
    for _ in range(2):
        plan = router.plan(Request(method="GET", path="/ab"), 1.0)
        assert plan.route is first and plan.request.route is first
        assert plan.label == "GET /ab" and plan.started == 1.0
    head = router.plan(Request(method="HEAD", path="/ab"), 2.0)
    assert head.route is first and head.label == "HEAD /ab"
    # "/a%62" has the same canonical form: the later registration serves "/ab" from now on
    second = router.add_route("/a%62", _hello)
    assert router.plan(Request(method="GET", path="/ab"), 3.0).route is second
    assert router.metrics.routes()["GET /ab"].requests == 2
    router.metrics = Metrics()
    router.plan(Request(method="GET", path="/ab"), 4.0)
    router.plan(Request(method="GET", path="/ab"), 4.0)
    assert router.metrics.routes()["GET /a%62"].requests == 2
    assert router.plan(Request(method="POST", path="/ab"), 5.0).error is not None


def test_to_response_and_json_errors_are_unchanged() -> None:
    router = Router()
    resp = router.to_response({"a": [1, "\u00e9", None, 1.5]})
    assert resp == Response(
        status=200,
        headers=(("content-type", "application/json"),),
        body='{"a":[1,"\u00e9",null,1.5]}'.encode(),
    )
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular reference"):
        router.to_response(circular)
    with pytest.raises(ValueError, match="Out of range float"):
        router.to_response([float("nan")])
    with pytest.raises(TypeError, match="not JSON serializable"):
        router.to_response({"a": object()})

    class D(dict[str, int]):
        pass

    assert router.to_response(D(x=1)).body == b'{"x":1}'
    given_resp = Response(status=201)
    assert router.to_response(given_resp) is given_resp


def test_wire_headers_fold_like_the_constructor() -> None:
    wire = {"Host": "x", "X-Y": "1"}
    lazy = Headers.from_wire(wire)
    assert lazy == Headers(wire)
    assert lazy.get("host") == "x" and lazy.get_all("x-y") == ["1"] and "HOST" in lazy
    assert list(lazy) == ["host", "x-y"] and len(lazy) == 2


def test_hot_path_objects_equal_what_the_public_constructors_build() -> None:
    import dataclasses

    conn = _running()
    (ev,) = _feed(conn, CANONICAL + b"\n")
    req = ev.to_router_request()
    resp = Router().to_response([1])
    objs = (ev, ev.request, req, resp)
    assert [type(o) for o in objs] == [RequestReceived, HttpRequest, Request, Response]
    for obj in objs:
        assert not hasattr(obj, "__dict__")  # slotted
        with pytest.raises(TypeError):  # mutable, therefore unhashable (not claimed frozen)
            hash(obj)
    assert ev == RequestReceived(request_id="r1", request=ev.request, path="/hello", query="a=1")
    assert ev.request == HttpRequest(
        request_id="r1", method="GET", uri="/hello?a=1", headers={"host": "x", "Accept": "*/*"}
    )
    assert req == Request(method="GET", path="/hello", query_string="a=1", headers=req.headers)
    assert req == Request.from_wire("GET", "/hello", "a=1", {"host": "x", "Accept": "*/*"}, b"")
    assert dataclasses.replace(req, path="/y").path == "/y"
    assert resp == Response(
        status=200, headers=(("content-type", "application/json"),), body=b"[1]"
    )
    assert (
        repr(resp)
        == "Response(status=200, headers=(('content-type', 'application/json'),), body=b'[1]')"
    )


def test_reference_vectors_agree_and_rust_output_is_read_the_short_way() -> None:
    import pathlib

    vectors = pathlib.Path(__file__).parent / "vectors"
    short = 0
    for name, key in (("rust_emitted.jsonl", "wire"), ("rust_parsed.jsonl", "input")):
        for raw in (vectors / name).read_text(encoding="utf-8").split("\n"):
            if not raw:
                continue
            record = json.loads(raw)
            text = record.get(key)
            if record.get("direction") != "orchestrator_to_module" or text is None:
                continue
            msg = assert_agrees(text.encode("utf-8", "surrogatepass"))
            if msg is not None:
                short += 1
                assert record.get("variant", "http_request") == "http_request"
    # every http_request the reference emitted, and the one it parsed and accepted
    assert short == 5
