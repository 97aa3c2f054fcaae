"""Typed messages and the serde_json-compatible codec, through the public API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pywatt_proto import (
    EXTENSIONS_KEY,
    Announce,
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
    EncodingFormat,
    Endpoint,
    GetSecret,
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Identify,
    Init,
    IpcChannelConfig,
    LocalProtocolError,
    Message,
    MessageMetadata,
    PortRequest,
    PortResponse,
    RegisterServiceProvider,
    RemoteProtocolError,
    RotationAck,
    RouteToModule,
    Secret,
    SecurityLevel,
    ServiceOperation,
    ServiceOperationResult,
    ServiceProviderInfo,
    ServiceRequest,
    ServiceType,
    TcpChannelConfig,
    TcpListen,
    UnixListen,
    decode_encoded_message,
    decode_envelope,
    decode_init,
    decode_module_line,
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
    encode,
    encode_encoded_message,
    encode_envelope,
    parse_listen_address,
    parse_socket_address,
)

UID = uuid.UUID("67e55044-10b1-426f-9247-bb680e5fe0c8")

# ---------------------------------------------------------------------------
# quick: field-level errors name the field (wrong type, missing, out of range)
# ---------------------------------------------------------------------------


def bad(cls: Any, **fields: Any) -> Callable[[], object]:
    """Return a thunk building ``cls(**fields)`` (fields deliberately ill-typed)."""
    return lambda: cls(**fields)


LOCAL_CASES: list[tuple[str, Callable[[], object], str]] = [
    # (description, thunk building an invalid message, expected field)
    (
        "status_code wrong type",
        bad(HttpResponse, request_id="r", status_code="200", headers={}),
        "status_code",
    ),
    (
        "status_code out of range",
        bad(HttpResponse, request_id="r", status_code=65536, headers={}),
        "status_code",
    ),
    (
        "status_code bool",
        bad(HttpResponse, request_id="r", status_code=True, headers={}),
        "status_code",
    ),
    (
        "body not bytes",
        bad(HttpRequest, request_id="r", method="GET", uri="/", headers={}, body="x"),
        "body",
    ),
    (
        "body bytearray",
        bad(HttpRequest, request_id="r", method="GET", uri="/", headers={}, body=bytearray(b"x")),
        "body",
    ),
    (
        "header value not str",
        bad(HttpRequest, request_id="r", method="GET", uri="/", headers={"a": 1}),
        "headers['a']",
    ),
    ("port negative", bad(PortResponse, request_id="p", success=True, port=-1), "port"),
    (
        "specific_port too big",
        bad(PortRequest, request_id="p", specific_port=70000),
        "specific_port",
    ),
    ("tcp port out of range", bad(TcpListen, host="127.0.0.1", port=65536), "port"),
    ("tcp host not an ip", bad(TcpListen, host="localhost", port=80), "host"),
    ("name not str", bad(GetSecret, name=None), "name"),
    ("methods item", bad(Endpoint, path="/", methods=("GET", 1)), "methods[1]"),
    ("success not bool", bad(PortResponse, request_id="p", success=1, port=1), "success"),
    (
        "uuid as str",
        bad(
            RouteToModule,
            target_module_id="m",
            target_endpoint="e",
            request_id=str(UID),
            payload=EncodedMessage(data=b"", format=EncodingFormat.JSON),
        ),
        "request_id",
    ),
    ("payload data str", bad(EncodedMessage, data="x", format=EncodingFormat.JSON), "data"),
    (
        "config not json",
        bad(ServiceRequest, id="r", service_type=ServiceType.CACHE, config={1, 2}),
        "config",
    ),
    (
        "config big int",
        bad(ServiceRequest, id="r", service_type=ServiceType.CACHE, config=[2**64]),
        "config[0]",
    ),
    ("timestamp i64", bad(MessageMetadata, timestamp=2**63), "timestamp"),
    (
        "security level str",
        bad(
            Init,
            orchestrator_api="o",
            module_id="m",
            env={},
            listen=UnixListen(path="/s"),
            security_level="None",
        ),
        "security_level",
    ),
    ("unknown service", bad(ServiceType, name="Queue"), "name"),
    (
        "extensions item",
        bad(Announce, listen="x", endpoints=(), extensions=("a", 2)),
        "extensions[1]",
    ),
]


@pytest.mark.parametrize(
    ("build", "field"), [(c[1], c[2]) for c in LOCAL_CASES], ids=[c[0] for c in LOCAL_CASES]
)
def test_quick_local_field_errors(build: Any, field: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert info.value.field == field
    assert field in str(info.value)


REMOTE_CASES: list[tuple[str, str, str, str]] = [
    # (id, direction, input, expected field)
    (
        "missing request_id",
        "o2m",
        '{"op":"http_request","method":"GET","uri":"/","headers":{}}',
        "request_id",
    ),
    (
        "headers wrong type",
        "o2m",
        '{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":[]}',
        "headers",
    ),
    (
        "header value number",
        "o2m",
        '{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{"a":1}}',
        'headers["a"]',
    ),
    (
        "body element float",
        "o2m",
        '{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{},"body":[1,2.0]}',
        "body[1]",
    ),
    (
        "body element bool",
        "o2m",
        '{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{},"body":[1,true]}',
        "body[1]",
    ),
    (
        "body element 256",
        "o2m",
        '{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{},"body":[0,256]}',
        "body[1]",
    ),
    (
        "port out of range",
        "o2m",
        '{"op":"port_response","request_id":"p","success":true,"port":70000}',
        "port",
    ),
    ("port -0", "o2m", '{"op":"port_response","request_id":"p","success":true,"port":-0}', "port"),
    (
        "status as string",
        "m2o",
        '{"op":"http_response","request_id":"r","status_code":"200","headers":{}}',
        "status_code",
    ),
    (
        "nested endpoint path",
        "m2o",
        '{"op":"announce","listen":"x","endpoints":[{"methods":[]}]}',
        "endpoints[0].path",
    ),
    (
        "payload format",
        "m2o",
        '{"op":"route_to_module","target_module_id":"m","target_endpoint":"e","request_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","payload":{"data":[],"format":"json"}}',
        "payload.format",
    ),
    (
        "tcp address",
        "o2m",
        '{"op":"init","orchestrator_api":"o","module_id":"m","env":{},"listen":"/s","tcp_channel":{"address":"localhost:1","tls_enabled":false,"required":false}}',
        "tcp_channel.address",
    ),
    (
        "security null",
        "o2m",
        '{"op":"init","orchestrator_api":"o","module_id":"m","env":{},"listen":"/s","security_level":null}',
        "security_level",
    ),
    (
        "provider metadata",
        "o2m",
        '{"op":"discover_service_providers_response","success":true,"providers":[{"provider_id":"p","module_id":"m","service_type":"Jwt","name":"n","address":"a","is_healthy":true}]}',
        "providers[0].metadata",
    ),
    ("duplicate field", "m2o", '{"op":"get_secret","name":"a","name":"b"}', "name"),
    ("duplicate op", "m2o", '{"op":"get_secret","op":"get_secret","name":"a"}', "op"),
    ("op not string", "m2o", '{"op":1,"name":"a"}', "op"),
    ("unknown op", "m2o", '{"op":"nope"}', "op"),
    (
        "custom service null",
        "m2o",
        '{"op":"discover_service_providers","service_type":{"Custom":null}}',
        "service_type",
    ),
    (
        "extensions wrong",
        "o2m",
        '{"op":"init","orchestrator_api":"o","module_id":"m","env":{},"listen":"/s","pywatt_extensions":"x"}',
        EXTENSIONS_KEY,
    ),
]


@pytest.mark.parametrize(
    ("direction", "text", "field"), [c[1:] for c in REMOTE_CASES], ids=[c[0] for c in REMOTE_CASES]
)
def test_quick_remote_field_errors(direction: str, text: str, field: str) -> None:
    decoder = decode_module_to_orchestrator if direction == "m2o" else decode_orchestrator_to_module
    with pytest.raises(RemoteProtocolError) as info:
        decoder(text)
    assert info.value.field == field
    assert info.value.error_status_hint == 400


# ---------------------------------------------------------------------------
# construction and equality
# ---------------------------------------------------------------------------


def test_messages_are_frozen_keyword_only_and_compare_plainly() -> None:
    a = HttpRequest(request_id="r", method="GET", uri="/", headers={"h": "v"}, body=b"x")
    b = HttpRequest(request_id="r", method="GET", uri="/", headers={"h": "v"}, body=b"x")
    assert a == b
    resp = HttpResponse(request_id="r", status_code=200, headers={}, body=None)
    with pytest.raises(AttributeError):
        resp.status_code = 500  # type: ignore[misc]
    # HttpRequest alone is an ordinary (mutable, unhashable) slotted class: the hot path
    # builds one per request
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(TypeError):
        HttpRequest("r", "GET", "/", {}, None)  # type: ignore[call-arg]
    assert Heartbeat() == Heartbeat() and hash(Heartbeat()) == hash(Heartbeat())


def test_sequences_and_mappings_are_normalised() -> None:
    ep = Endpoint(path="/", methods=["GET"])  # type: ignore[arg-type]
    assert ep.methods == ("GET",)
    from types import MappingProxyType

    req = HttpRequest(request_id="r", method="GET", uri="/", headers=MappingProxyType({"a": "b"}))  # type: ignore[arg-type]
    assert type(req.headers) is dict and req.headers == {"a": "b"}


def test_tcp_listen_canonical_text() -> None:
    assert str(TcpListen(host="127.0.0.1", port=80)) == "127.0.0.1:80"
    assert str(TcpListen(host="0:0:0:0:0:0:0:1", port=80)) == "[::1]:80"
    assert TcpListen(host="::FFFF:192.0.2.1", port=1).host == "::ffff:192.0.2.1"
    assert str(TcpListen(host="fe80::1%3", port=9)) == "[fe80::1%3]:9"
    assert TcpListen(host="2001:db8:0:1:1:1:1:1", port=1).host == "2001:db8:0:1:1:1:1:1"
    assert TcpListen(host="2001:db8:0:0:1:0:0:1", port=1).host == "2001:db8::1:0:0:1"
    assert TcpListen(host="::192.0.2.1", port=1).host == "::c000:201"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4102", "127.0.0.1:4102"),
        ("127.0.0.1:080", "127.0.0.1:80"),
        ("[0:0:0:0:0:0:0:1]:80", "[::1]:80"),
        ("[::]:0", "[::]:0"),
        ("[FE80::202:B3FF:FE1E:8329]:1", "[fe80::202:b3ff:fe1e:8329]:1"),
        ("[fe80::1%0]:1", "[fe80::1]:1"),
        ("[1:2:3:4:5:6:7::]:1", "[1:2:3:4:5:6:7:0]:1"),
        ("[::1:2:3:4:5:6:7]:1", "[0:1:2:3:4:5:6:7]:1"),
    ],
)
def test_socket_address_parsing(text: str, expected: str) -> None:
    addr = parse_socket_address(text)
    assert addr is not None and str(addr) == expected


@pytest.mark.parametrize(
    "text",
    [
        "localhost:8080",
        "127.0.0.1",
        "127.0.0.1:65536",
        "::1:80",
        "[fe80::1%eth0]:80",
        "127.000.000.001:80",
        "127.0.0.1:+80",
        "",
        "[::1]",
        "0x7f.0.0.1:80",
        "[1.2.3.4::]:1",
        "[::12345]:1",
        "[1::2::3]:1",
        "1.2.3.4:",
        "[::1]:80 ",
    ],
)
def test_not_socket_addresses_are_unix_paths(text: str) -> None:
    assert parse_socket_address(text) is None
    assert parse_listen_address(text) == UnixListen(path=text)


# ---------------------------------------------------------------------------
# encoding details
# ---------------------------------------------------------------------------


def test_string_escaping_matches_serde() -> None:
    wire = encode(GetSecret(name="".join(map(chr, range(0x21))) + '"\\/\x7f\u2028é😀'))
    assert wire == (
        b'{"op":"get_secret","name":"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007'
        b"\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015"
        b"\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f "
        b'\\"\\\\/\x7f' + "\u2028é😀".encode() + b'"}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (100.0, "100.0"),
        (-0.0, "-0.0"),
        (1e16, "1e16"),
        (1e15, "1000000000000000.0"),
        (1e-7, "1e-7"),
        (1e-5, "0.00001"),
        (1e-6, "1e-6"),
        (1.2345678901234568e20, "1.2345678901234568e20"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (-1.5e300, "-1.5e300"),
        (float("nan"), "null"),
        (float("inf"), "null"),
        (0.1, "0.1"),
    ],
)
def test_float_formatting(value: float, text: str) -> None:
    msg = ServiceOperation(
        connection_id="c", service_type=ServiceType.CACHE, operation="o", params=[value]
    )
    assert encode(msg).endswith(b'"params":[' + text.encode() + b"]}")


def test_value_objects_sorted_and_hash_maps_in_insertion_order() -> None:
    msg = ServiceRequest(
        id="r", service_type=ServiceType.custom("x"), config={"b": 1, "a": {"z": 1, "M": 2}}
    )
    assert encode(msg) == (
        b'{"op":"service_request","id":"r","service_type":{"Custom":"x"},'
        b'"config":{"a":{"M":2,"z":1},"b":1}}'
    )
    req = HttpRequest(request_id="r", method="GET", uri="/", headers={"b": "1", "a": "2"})
    assert b'"headers":{"b":"1","a":"2"}' in encode(req)


def test_optional_fields_null_or_omitted() -> None:
    assert encode(RotationAck(rotation_id="r", status="ok")) == (
        b'{"op":"rotation_ack","rotation_id":"r","status":"ok"}'
    )
    assert encode(RegisterServiceProvider(service_type=ServiceType.JWT, name="n", address="a")) == (
        b'{"op":"register_service_provider","service_type":"Jwt","name":"n","version":null,'
        b'"address":"a","metadata":null}'
    )
    assert encode(Secret(name="n", value="v")) == b'{"op":"secret","name":"n","value":"v"}'


@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 255, 256, 1023, 1024, 1025])
def test_byte_arrays(n: int) -> None:
    body = bytes(i * 7 % 256 for i in range(n))
    wire = encode(HttpResponse(request_id="r", status_code=200, headers={}, body=body))
    assert json.loads(wire)["body"] == list(body)
    assert decode_module_to_orchestrator(wire).body == body  # type: ignore[union-attr]


def test_encode_rejects_non_messages_and_lone_surrogates() -> None:
    with pytest.raises(LocalProtocolError):
        encode("heartbeat")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode(GetSecret(name="\ud800"))
    with pytest.raises(LocalProtocolError):
        encode_envelope(Heartbeat())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        encode_encoded_message(Heartbeat())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# decoding details
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '\ufeff{"op":"heartbeat_ack"}',
        '{"op":"heartbeat_ack"} x',
        '{"op":"heartbeat_ack",}',
        '{"op":"service_request","id":"r","service_type":"Cache","config":NaN}',
        '{"op":"service_request","id":"r","service_type":"Cache","config":-Infinity}',
        '{"op":"service_request","id":"r","service_type":"Cache","config":1e400}',
        '{"op":"get_secret","name":"\\udc00"}',
        '{"op":"get_secret","name":"\\ud800\\u0041"}',
        '{"op":"get_secret","name":"a\tb"}',
        "",
        "   ",
        "[" * 100000,
        '{"op":"heartbeat_ack","x":' + "[" * 127 + "]" * 127 + "}",
        "null",
        '"heartbeat_ack"',
        b'{"op":"get_secret","name":"\xff"}',
        b'{"op":"get_secret","name":"\xed\xa0\x80"}',
        '{"op":"get_secret","name":"\ud800"}',
    ],
)
def test_rejected_inputs(text: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_module_to_orchestrator(text)


def test_depth_limit_boundary() -> None:
    ok = '{"op":"heartbeat_ack","x":' + "[" * 126 + "]" * 126 + "}"
    assert decode_module_to_orchestrator(ok) == HeartbeatAck()


def test_accepted_lexical_variants() -> None:
    assert decode_module_to_orchestrator(' \t\r\n{"op":"heartbeat_ack"} \n\r\t') == HeartbeatAck()
    assert decode_module_to_orchestrator('{"\\u006fp":"get_secret","name":"\\ud83d\\ude00"}') == (
        GetSecret(name="😀")
    )
    msg = decode_module_to_orchestrator(
        '{"op":"service_request","id":"r","service_type":"Cache",'
        '"config":[-0,-0.0,18446744073709551616,{"a":1,"a":2}]}'
    )
    assert isinstance(msg, ServiceRequest)
    assert msg.config == [-0.0, -0.0, 1.8446744073709552e19, {"a": 2}]
    config = msg.config
    assert isinstance(config, list)
    assert type(config[3]) is dict
    assert type(config[0]) is float and str(config[0]) == "-0.0"


@pytest.mark.parametrize(
    "text",
    [
        "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "67E55044-10B1-426F-9247-BB680E5FE0C8",
        "67e5504410b1426f9247bb680e5fe0c8",
        "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
        "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
    ],
)
def test_uuid_forms(text: str) -> None:
    wire = (
        '{"op":"routed_module_response","source_module_id":"a","request_id":"'
        + text
        + '","payload":{"data":[1],"format":"Binary"}}'
    )
    msg = decode_orchestrator_to_module(wire)
    assert msg.request_id == UID  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "67e55044-10b1-426f-9247-bb680e5fe0c",
        "67e5504410b1-426f-9247-bb680e5fe0c8-",
        "{67e5504410b1426f9247bb680e5fe0c8}",
        "URN:UUID:67e55044-10b1-426f-9247-bb680e5fe0c8",
        "67e55044-10b1-426f-9247-bb680e5fe0cg",
        "",
    ],
)
def test_bad_uuids(text: str) -> None:
    wire = (
        '{"op":"routed_module_response","source_module_id":"a","request_id":"'
        + text
        + '","payload":{"data":[1],"format":"Binary"}}'
    )
    with pytest.raises(RemoteProtocolError) as info:
        decode_orchestrator_to_module(wire)
    assert info.value.field == "request_id"


def test_unit_variant_map_form() -> None:
    wire = '{"data":[],"format":{"Binary":null}}'
    assert decode_encoded_message(wire) == EncodedMessage(data=b"", format=EncodingFormat.BINARY)
    for bad in ('{"data":[],"format":{"Binary":1}}', '{"data":[],"format":{}}'):
        with pytest.raises(RemoteProtocolError):
            decode_encoded_message(bad)
    init = decode_init(
        '{"orchestrator_api":"o","module_id":"m","env":{},"listen":"/s",'
        '"security_level":{"Token":null}}'
    )
    assert init.security_level is SecurityLevel.TOKEN


def test_decode_init_bare_and_tagged() -> None:
    bare = (
        '{"orchestrator_api":"http://o","module_id":"m","env":{"A":"1"},"listen":"127.0.0.1:1",'
        '"tcp_channel":{"address":"[::1]:9","tls_enabled":true,"required":false},'
        '"ipc_channel":{"socket_path":"/i","required":true},"debug_mode":true,'
        '"pywatt_extensions":["identify","heartbeat_ack"]}'
    )
    init = decode_init(bare)
    assert init == Init(
        orchestrator_api="http://o",
        module_id="m",
        env={"A": "1"},
        listen=TcpListen(host="127.0.0.1", port=1),
        tcp_channel=TcpChannelConfig(
            address=TcpListen(host="::1", port=9), tls_enabled=True, required=False
        ),
        ipc_channel=IpcChannelConfig(socket_path="/i", required=True),
        extensions=("identify", "heartbeat_ack"),
    )
    assert decode_init(encode(init)) == init
    assert decode_orchestrator_to_module(encode(init)) == init
    assert encode(init).endswith(
        b',"security_level":"None","pywatt_extensions":["identify","heartbeat_ack"]}'
    )
    with pytest.raises(RemoteProtocolError):
        decode_init(
            '{"op":"heartbeat","orchestrator_api":"o","module_id":"m","env":{},"listen":"/s"}'
        )
    with pytest.raises(RemoteProtocolError):
        decode_init("[]")


def test_extensions_omitted_when_empty() -> None:
    ann = Announce(listen="127.0.0.1:1", endpoints=(Endpoint(path="/", methods=("GET",)),))
    assert EXTENSIONS_KEY.encode() not in encode(ann)
    ann2 = Announce(listen="x", endpoints=(), extensions=("http_response_op",))
    assert encode(ann2) == (
        b'{"op":"announce","listen":"x","endpoints":[],"pywatt_extensions":["http_response_op"]}'
    )
    assert decode_module_to_orchestrator(encode(ann2)) == ann2


def test_module_line_accepts_wrapper_and_flat() -> None:
    wrapper = (
        '{"content":{"request_id":"r-1","status_code":200,"headers":{"content-type":"text/plain"},'
        '"body":[79,75]},"metadata":{"id":"x","source":"m","properties":{"correlation_id":"r-1"}}}'
    )
    expected = HttpResponse(
        request_id="r-1", status_code=200, headers={"content-type": "text/plain"}, body=b"OK"
    )
    assert decode_module_line(wrapper) == expected
    assert decode_module_line(encode(expected)) == expected
    assert decode_module_line('{"op":"heartbeat_ack"}') == HeartbeatAck()
    with pytest.raises(RemoteProtocolError) as info:
        decode_module_line('{"content":{"request_id":"r","status_code":-1,"headers":{}}}')
    assert info.value.field == "content.status_code"
    with pytest.raises(RemoteProtocolError):
        decode_module_line(
            '{"content":{"request_id":"r","status_code":1,"headers":{}},"metadata":null}'
        )
    with pytest.raises(RemoteProtocolError):
        decode_module_to_orchestrator(wrapper)


def test_envelope_round_trip_and_metadata_rules() -> None:
    env = Message(
        id=UID,
        content={"b": [1, 2.5, None], "a": "x"},
        metadata=MessageMetadata(
            id="m", timestamp=-(2**63), source="s", destination="d", properties={"z": 1, "a": {}}
        ),
    )
    wire = encode_envelope(env)
    assert wire == (
        b'{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","content":{"a":"x","b":[1,2.5,null]},'
        b'"metadata":{"id":"m","timestamp":-9223372036854775808,"source":"s","destination":"d",'
        b'"properties":{"a":{},"z":1}}}'
    )
    assert decode_envelope(wire) == env
    typed = Message(id=UID, content=PortRequest(request_id="p"))
    assert decode_envelope(encode_envelope(typed), content="module_to_orchestrator") == typed
    o2m = Message(id=UID, content=Heartbeat())
    assert decode_envelope(encode_envelope(o2m), content="orchestrator_to_module") == o2m
    with pytest.raises(RemoteProtocolError) as info:
        decode_envelope(
            '{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","content":{"op":"x"}}',
            content="module_to_orchestrator",
        )
    assert info.value.field == "content.op"
    for bad in (
        '{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","content":1,"metadata":{"properties":[]}}',
        '{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","content":1,"metadata":{"timestamp":"1"}}',
        '{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}',
        '{"id":1,"content":1}',
    ):
        with pytest.raises(RemoteProtocolError):
            decode_envelope(bad)


def test_every_message_round_trips() -> None:
    payload = EncodedMessage(data=b'{"a":1}', format=EncodingFormat.JSON)
    provider = ServiceProviderInfo(
        provider_id="p",
        module_id="m",
        service_type=ServiceType.custom("Database"),
        name="n",
        address="a",
        metadata={"k": "v"},
        is_healthy=False,
    )
    messages: list[Any] = [
        Identify(module_id="mod"),
        Announce(listen="/s", endpoints=(Endpoint(path="/", methods=("GET",), auth="jwt"),)),
        GetSecret(name="n"),
        RotationAck(rotation_id="r", status="error", message="m"),
        RegisterServiceProvider(
            service_type=ServiceType.DATABASE,
            name="n",
            version="1",
            address="a",
            metadata={"x": "y"},
        ),
        DiscoverServiceProviders(service_type=ServiceType.CACHE, all_providers=False),
        ServiceRequest(id="i", service_type=ServiceType.JWT, config={"a": [1, {"b": None}]}),
        ServiceOperation(
            connection_id="c", service_type=ServiceType.JWT, operation="o", params=None
        ),
        HttpResponse(request_id="r", status_code=0, headers={}, body=b""),
        PortRequest(request_id="p", specific_port=0),
        RouteToModule(target_module_id="t", target_endpoint="e", request_id=UID, payload=payload),
        HeartbeatAck(),
    ]
    for m in messages:
        assert decode_module_to_orchestrator(encode(m)) == m
    more: list[Any] = [
        Init(
            orchestrator_api="o",
            module_id="m",
            env={},
            listen=UnixListen(path="localhost:1"),
            auth_token="t",
            security_level=SecurityLevel.MTLS,
        ),
        DiscoverServiceProvidersResponse(success=True, providers=(provider,), error=None),
        ServiceOperationResult(success=True, result=[1.5, "x"]),
        PortResponse(request_id="p", success=False, port=0, error_message="busy"),
        Heartbeat(),
    ]
    for m in more:
        assert decode_orchestrator_to_module(encode(m)) == m


def test_every_message_field_has_a_check() -> None:
    """Each field's annotation names a check (a new field with an annotation the table does
    not know would otherwise fail only when its class is first built)."""
    from pywatt_proto import _messages

    classes = [
        c
        for c in vars(_messages).values()
        if isinstance(c, type) and issubclass(c, _messages._Checked) and c is not _messages._Checked
    ]
    assert len(classes) >= 35
    for cls in classes:
        annotations = cls.__annotations__
        for name in cls.__record_fields__:
            check = cls._special_checks.get(name) or _messages._check_for(annotations[name])
            assert callable(check), (cls, name)
