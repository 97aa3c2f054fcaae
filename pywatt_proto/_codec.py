"""Encode and decode PyWatt messages as serde_json does.

Strategy: :func:`pywatt_proto._json.loads` turns text into plain Python values with
serde's lexical rules; the decoders here then check each struct the way
``#[derive(Deserialize)]`` would (required fields, ``Option`` fields where a
missing key and ``null`` both mean None, strict integer types, duplicate *known*
fields rejected, unknown fields ignored) and build the message dataclass.
Encoders are hand-written per class: fields in the reference's declaration
order, ``op`` first, ``null`` or omission exactly as the reference's
``skip_serializing_if`` attributes say.

Deliberate differences from serde are listed in ``spec/deviations.md``:
``identify`` carries ``module_id`` and round-trips, and positional (array)
forms of structs and tagged enums are rejected.

:func:`decode_http_request_line` is the module link's short cut for the one line that
arrives per request: it recognises the canonical compact ``http_request`` (the layout serde
writes, no escapes) with one regular expression and returns exactly what the general decoder
would, or None for anything else.

Every decoder raises :class:`RemoteProtocolError` with ``field`` set to the dotted
path of the offending field; every encoder raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from ._bodies import decode_base64_body, decode_byte_array, encode_base64_body, encode_byte_array
from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._framing import DEFAULT_MAX_LINE_SIZE
from ._json import DupDict, dump_bytes, dump_str, dump_value, loads, normalize_value
from ._messages import (
    Announce,
    DiscoverServiceProviders,
    DiscoverServiceProvidersResponse,
    EncodedMessage,
    Endpoint,
    GetSecret,
    Heartbeat,
    HeartbeatAck,
    HttpRequest,
    HttpResponse,
    Identify,
    Init,
    IpcChannelConfig,
    JsonValue,
    Message,
    MessageMetadata,
    ModuleToOrchestrator,
    OrchestratorToModule,
    PortRequest,
    PortResponse,
    RegisterServiceProvider,
    RegisterServiceProviderResponse,
    Rotated,
    RotationAck,
    RoutedModuleMessage,
    RoutedModuleResponse,
    RouteError,
    RouteToModule,
    Secret,
    SecurityLevel,
    ServiceOperation,
    ServiceOperationResult,
    ServiceProviderInfo,
    ServiceRequest,
    ServiceResponse,
    ServiceType,
    Shutdown,
    TcpChannelConfig,
    parse_listen_address,
    parse_socket_address,
    trusted_http_request,
)
from ._records import replace as _replace

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    import uuid
    from typing import Any, Literal, NoReturn, TypeAlias

__all__ = [
    "EXTENSIONS_KEY",
    "EnvelopeContent",
    "decode_encoded_message",
    "decode_envelope",
    "decode_init",
    "decode_module_line",
    "decode_module_to_orchestrator",
    "decode_orchestrator_to_module",
    "encode",
    "encode_encoded_message",
    "encode_envelope",
    "encode_headers",
    "encode_http_response",
    "decode_http_request_line",
    "http_response_text",
]

#: JSON key of ``Init.extensions`` / ``Announce.extensions`` (omitted when empty).
EXTENSIONS_KEY = "pywatt_extensions"
#: Member of routed_module_response marking a failed module call (spec/modules.md section 5).
ROUTE_ERROR_KEY = "pywatt_error"

#: What ``decode_envelope`` expects as the envelope's content.
if TYPE_CHECKING:
    EnvelopeContent: TypeAlias = Literal["json", "module_to_orchestrator", "orchestrator_to_module"]
    _Obj: TypeAlias = dict[str, Any]
else:

    def __getattr__(name: str) -> object:  # PEP 562: typing only when this alias is used
        if name == "EnvelopeContent":
            from typing import Literal

            value = Literal["json", "module_to_orchestrator", "orchestrator_to_module"]
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_Input = bytes | bytearray | memoryview | str

# ---------------------------------------------------------------------------
# decoding helpers
# ---------------------------------------------------------------------------


def _desc(v: Any) -> str:
    """Describe a JSON value as serde's ``invalid type`` errors do, except that a string's
    content is never shown (only its length): the misplaced value may be a secret or a
    credential, and these messages end up in logs (issue 11, defect 15)."""
    if v is None:
        return "null"
    if v is True or v is False:
        return f"boolean `{'true' if v else 'false'}`"
    t = type(v)
    if t is int:
        return f"integer `{v}`"
    if t is float:
        return f"floating point `{v!r}`"
    if t is str:
        return f"string of {len(v)} character(s)"
    if t is list:
        return "sequence"
    return "map"


def _err(path: str, problem: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{path}: {problem}", field=path)


def _invalid(path: str, v: Any, expected: str) -> RemoteProtocolError:
    if type(v) is list and expected.startswith("struct"):
        return _err(path, f"positional (array) form of {expected} is not accepted")
    return _err(path, f"invalid type: {_desc(v)}, expected {expected}")


def _missing(path: str) -> RemoteProtocolError:
    name = path.rpartition(".")[2]
    return RemoteProtocolError(f"missing field `{name}`", field=path)


def _sub(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _struct(v: Any, path: str, what: str, known: frozenset[str]) -> _Obj:
    """Check ``v`` is an object with no duplicated known field; return it."""
    t = type(v)
    if t is dict:
        return v  # type: ignore[no-any-return]
    if t is DupDict:
        for k in sorted(v.dups):
            if k in known:
                raise _err(_sub(path, k), f"duplicate field `{k}`")
        return v  # type: ignore[no-any-return]
    raise _invalid(path or what, v, f"struct {what}")


def _req(o: _Obj, key: str, path: str) -> Any:
    try:
        return o[key]
    except KeyError:
        raise _missing(path) from None


def _str(v: Any, path: str) -> str:
    if type(v) is str:
        return v
    raise _invalid(path, v, "a string")


def _opt_str(v: Any, path: str) -> str | None:
    if v is None or type(v) is str:
        return v
    raise _invalid(path, v, "a string")


def _bool(v: Any, path: str) -> bool:
    if v is True or v is False:
        return v
    raise _invalid(path, v, "a boolean")


def _u16(v: Any, path: str) -> int:
    if type(v) is int:
        if 0 <= v <= 65535:
            return v
        raise _err(path, f"invalid value: integer `{v}`, expected u16")
    raise _invalid(path, v, "u16")


def _bytes(v: Any, path: str) -> bytes:
    if type(v) is not list:
        raise _invalid(path, v, "a sequence")
    try:
        b = bytes(v)
    except (TypeError, ValueError):
        _bad_byte(v, path)
    # bytes() also takes True/False as 1/0, so look at the elements that became
    # a 0 or 1 byte (few in typical bodies; a C-level type scan when many).
    zeros_ones = b.count(0) + b.count(1)
    if zeros_ones:
        if zeros_ones <= 64:
            for needle in (0, 1):
                i = b.find(needle)
                while i >= 0:
                    if type(v[i]) is not int:
                        _bad_byte(v, path)
                    i = b.find(needle, i + 1)
        elif bool in set(map(type, v)):
            _bad_byte(v, path)
    return b


def _bad_byte(v: list[Any], path: str) -> NoReturn:
    for i, x in enumerate(v):
        if type(x) is not int:
            raise _invalid(f"{path}[{i}]", x, "u8")
        if not 0 <= x <= 255:
            raise _err(f"{path}[{i}]", f"invalid value: integer `{x}`, expected u8")
    raise AssertionError("unreachable: no bad byte found")  # pragma: no cover


def _opt_bytes(v: Any, path: str) -> bytes | None:
    return None if v is None else _bytes(v, path)


def _str_map(v: Any, path: str) -> dict[str, str]:
    t = type(v)
    if t is not dict:
        if t is not DupDict:
            raise _invalid(path, v, "a map")
        v = dict(v)  # HashMap: last duplicate wins
    for k, x in v.items():
        if type(x) is not str:
            raise _invalid(f"{path}[{dump_str(k)}]", x, "a string")
    return v  # type: ignore[no-any-return]


def _opt_str_map(v: Any, path: str) -> dict[str, str] | None:
    return None if v is None else _str_map(v, path)


def _str_tuple(v: Any, path: str) -> tuple[str, ...]:
    if type(v) is not list:
        raise _invalid(path, v, "a sequence")
    for i, x in enumerate(v):
        if type(x) is not str:
            raise _invalid(f"{path}[{i}]", x, "a string")
    return tuple(v)


def _value(v: Any, path: str) -> JsonValue:
    try:
        return normalize_value(v)  # type: ignore[no-any-return]
    except RemoteProtocolError as exc:
        raise _err(path, exc.message) from None


_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HYPHENATED = re.compile(
    r"([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})"
)


def _uuid(v: Any, path: str) -> uuid.UUID:
    """Parse a UUID in the forms ``uuid::Uuid::parse_str`` accepts."""
    import uuid  # loaded with the first routed message (start-up time)

    if type(v) is not str:
        raise _invalid(path, v, "a UUID string")
    n = len(v)
    inner = None
    if n == 36:
        inner = v
    elif n == 38 and v[0] == "{" and v[-1] == "}":
        inner = v[1:-1]
    elif n == 45 and v.startswith("urn:uuid:"):
        inner = v[9:]
    elif n == 32 and _HEX32.fullmatch(v):
        return uuid.UUID(hex=v)
    if inner is not None:
        m = _HYPHENATED.fullmatch(inner)
        if m is not None:
            return uuid.UUID(hex="".join(m.groups()))
    raise _err(path, f"UUID parsing failed: {dump_str(v)}")


def _unit_enum(v: Any, path: str, names: dict[str, Any], what: str) -> Any:
    """Decode a serde unit-variant enum: ``"Name"`` or ``{"Name": null}``."""
    t = type(v)
    if t is str:
        key = v
    elif t is dict or t is DupDict:
        if len(v) != 1 or t is DupDict:
            raise _err(path, "invalid value: map, expected map with a single key")
        ((key, inner),) = v.items()
        if inner is not None and key in names:
            raise _invalid(path, inner, "unit")
    else:
        raise _invalid(path, v, "string or map")
    try:
        return names[key]
    except KeyError:
        expected = ", ".join(f"`{n}`" for n in names)
        raise _err(path, f"unknown variant {dump_str(key)}, expected one of {expected}") from None


_FORMATS = {f.wire_name: f for f in EncodingFormat}
_SECURITY = {s.value: s for s in SecurityLevel}
_SERVICE_UNITS = {
    "Database": ServiceType.DATABASE,
    "Cache": ServiceType.CACHE,
    "Jwt": ServiceType.JWT,
}


def _service_type(v: Any, path: str) -> ServiceType:
    if type(v) is str:
        st = _SERVICE_UNITS.get(v)
        if st is not None:
            return st
        if v == "Custom":
            raise _err(path, "invalid type: unit variant, expected newtype variant")
    elif type(v) is dict and len(v) == 1 and "Custom" in v:
        name = v["Custom"]
        if type(name) is not str:
            raise _invalid(path, name, "a string")
        return ServiceType.custom(name)
    return _unit_enum(v, path, _SERVICE_UNITS, "ServiceType")  # type: ignore[no-any-return]


_F_ENCODED = frozenset({"data", "format"})


def _encoded(v: Any, path: str, base64: bool = False) -> EncodedMessage:
    o = _struct(v, path, "EncodedMessage", _F_ENCODED)
    raw = _req(o, "data", _sub(path, "data"))
    if base64 and type(raw) is str:  # base64_bodies: a module call's payload bytes
        data = decode_base64_body(raw, _sub(path, "data"))
    else:
        data = _bytes(raw, _sub(path, "data"))
    fmt = _unit_enum(_req(o, "format", _sub(path, "format")), _sub(path, "format"), _FORMATS, "")
    return EncodedMessage(data=data, format=fmt)


_F_ENDPOINT = frozenset({"path", "methods", "auth"})


def _endpoints(v: Any, path: str) -> tuple[Endpoint, ...]:
    if type(v) is not list:
        raise _invalid(path, v, "a sequence")
    out = []
    for i, item in enumerate(v):
        p = f"{path}[{i}]"
        o = _struct(item, p, "EndpointAnnounce", _F_ENDPOINT)
        out.append(
            Endpoint(
                path=_str(_req(o, "path", p + ".path"), p + ".path"),
                methods=_str_tuple(_req(o, "methods", p + ".methods"), p + ".methods"),
                auth=_opt_str(o.get("auth"), p + ".auth"),
            )
        )
    return tuple(out)


_F_PROVIDER = frozenset(
    {
        "provider_id",
        "module_id",
        "service_type",
        "name",
        "version",
        "address",
        "metadata",
        "is_healthy",
    }
)


def _providers(v: Any, path: str) -> tuple[ServiceProviderInfo, ...]:
    if type(v) is not list:
        raise _invalid(path, v, "a sequence")
    out = []
    for i, item in enumerate(v):
        p = f"{path}[{i}]"
        o = _struct(item, p, "ServiceProviderInfo", _F_PROVIDER)
        out.append(
            ServiceProviderInfo(
                provider_id=_str(_req(o, "provider_id", p + ".provider_id"), p + ".provider_id"),
                module_id=_str(_req(o, "module_id", p + ".module_id"), p + ".module_id"),
                service_type=_service_type(
                    _req(o, "service_type", p + ".service_type"), p + ".service_type"
                ),
                name=_str(_req(o, "name", p + ".name"), p + ".name"),
                version=_opt_str(o.get("version"), p + ".version"),
                address=_str(_req(o, "address", p + ".address"), p + ".address"),
                metadata=_str_map(_req(o, "metadata", p + ".metadata"), p + ".metadata"),
                is_healthy=_bool(_req(o, "is_healthy", p + ".is_healthy"), p + ".is_healthy"),
            )
        )
    return tuple(out)


def _extensions(o: _Obj) -> tuple[str, ...]:
    v = o.get(EXTENSIONS_KEY)
    return () if v is None else _str_tuple(v, EXTENSIONS_KEY)


# ---------------------------------------------------------------------------
# per-op decoders (the object has already passed the tag checks)
# ---------------------------------------------------------------------------


def _fields(*names: str) -> frozenset[str]:
    return frozenset(("op", *names))


def _d_identify(o: _Obj) -> Identify:
    _struct(o, "", "Identify", _fields("module_id"))
    return Identify(module_id=_str(_req(o, "module_id", "module_id"), "module_id"))


_F_ANNOUNCE = _fields("listen", "endpoints", EXTENSIONS_KEY)


def _d_announce(o: _Obj) -> Announce:
    _struct(o, "", "AnnounceBlob", _F_ANNOUNCE)
    return Announce(
        listen=_str(_req(o, "listen", "listen"), "listen"),
        endpoints=_endpoints(_req(o, "endpoints", "endpoints"), "endpoints"),
        extensions=_extensions(o),
    )


def _d_get_secret(o: _Obj) -> GetSecret:
    _struct(o, "", "GetSecretRequest", _fields("name"))
    return GetSecret(name=_str(_req(o, "name", "name"), "name"))


def _d_rotation_ack(o: _Obj) -> RotationAck:
    _struct(o, "", "RotationAckRequest", _fields("rotation_id", "status", "message"))
    return RotationAck(
        rotation_id=_str(_req(o, "rotation_id", "rotation_id"), "rotation_id"),
        status=_str(_req(o, "status", "status"), "status"),
        message=_opt_str(o.get("message"), "message"),
    )


def _d_register_sp(o: _Obj) -> RegisterServiceProvider:
    _struct(o, "", "", _fields("service_type", "name", "version", "address", "metadata"))
    return RegisterServiceProvider(
        service_type=_service_type(_req(o, "service_type", "service_type"), "service_type"),
        name=_str(_req(o, "name", "name"), "name"),
        version=_opt_str(o.get("version"), "version"),
        address=_str(_req(o, "address", "address"), "address"),
        metadata=_opt_str_map(o.get("metadata"), "metadata"),
    )


def _d_discover_sp(o: _Obj) -> DiscoverServiceProviders:
    _struct(o, "", "", _fields("service_type", "all_providers"))
    all_providers = o.get("all_providers")
    return DiscoverServiceProviders(
        service_type=_service_type(_req(o, "service_type", "service_type"), "service_type"),
        all_providers=None if all_providers is None else _bool(all_providers, "all_providers"),
    )


def _d_service_request(o: _Obj) -> ServiceRequest:
    _struct(o, "", "", _fields("id", "service_type", "config"))
    return ServiceRequest(
        id=_str(_req(o, "id", "id"), "id"),
        service_type=_service_type(_req(o, "service_type", "service_type"), "service_type"),
        config=_value(o.get("config"), "config"),
    )


def _d_service_operation(o: _Obj) -> ServiceOperation:
    _struct(o, "", "", _fields("connection_id", "service_type", "operation", "params"))
    return ServiceOperation(
        connection_id=_str(_req(o, "connection_id", "connection_id"), "connection_id"),
        service_type=_service_type(_req(o, "service_type", "service_type"), "service_type"),
        operation=_str(_req(o, "operation", "operation"), "operation"),
        params=_value(_req(o, "params", "params"), "params"),
    )


_F_HTTP_RESPONSE = _fields("request_id", "status_code", "headers", "body")


def _body(v: Any, base64: bool) -> bytes | None:
    """An http body: null, the reference's byte array, or (``base64``) a base64 string."""
    if v is None:
        return None
    if base64 and type(v) is str:
        return decode_base64_body(v, "body")
    return _bytes(v, "body")


def _d_http_response(o: _Obj, base64: bool = False) -> HttpResponse:
    if type(o) is DupDict:
        _struct(o, "", "", _F_HTTP_RESPONSE)
    return HttpResponse(
        request_id=_str(_req(o, "request_id", "request_id"), "request_id"),
        status_code=_u16(_req(o, "status_code", "status_code"), "status_code"),
        headers=_str_map(_req(o, "headers", "headers"), "headers"),
        body=_body(o.get("body"), base64),
    )


def _d_port_request(o: _Obj) -> PortRequest:
    _struct(o, "", "", _fields("request_id", "specific_port"))
    port = o.get("specific_port")
    return PortRequest(
        request_id=_str(_req(o, "request_id", "request_id"), "request_id"),
        specific_port=None if port is None else _u16(port, "specific_port"),
    )


def _d_route_to_module(o: _Obj, base64: bool = False) -> RouteToModule:
    _struct(o, "", "", _fields("target_module_id", "target_endpoint", "request_id", "payload"))
    return RouteToModule(
        target_module_id=_str(_req(o, "target_module_id", "target_module_id"), "target_module_id"),
        target_endpoint=_str(_req(o, "target_endpoint", "target_endpoint"), "target_endpoint"),
        request_id=_uuid(_req(o, "request_id", "request_id"), "request_id"),
        payload=_encoded(_req(o, "payload", "payload"), "payload", base64),
    )


_HEARTBEAT_ACK = HeartbeatAck()
_HEARTBEAT = Heartbeat()
_SHUTDOWN = Shutdown()


def _d_heartbeat_ack(o: _Obj) -> HeartbeatAck:
    return _HEARTBEAT_ACK


_F_INIT = _fields(
    "orchestrator_api",
    "module_id",
    "env",
    "listen",
    "tcp_channel",
    "ipc_channel",
    "auth_token",
    "security_level",
    EXTENSIONS_KEY,
)
_F_TCP = frozenset({"address", "tls_enabled", "required"})
_F_IPC = frozenset({"socket_path", "required"})


def _d_init(o: _Obj) -> Init:
    _struct(o, "", "InitBlob", _F_INIT)
    listen_v = _req(o, "listen", "listen")
    if type(listen_v) is not str:
        raise _err("listen", "data did not match any variant of untagged enum ListenAddress")
    tcp_v = o.get("tcp_channel")
    tcp = None
    if tcp_v is not None:
        t = _struct(tcp_v, "tcp_channel", "TcpChannelConfig", _F_TCP)
        addr_text = _str(_req(t, "address", "tcp_channel.address"), "tcp_channel.address")
        addr = parse_socket_address(addr_text)
        if addr is None:
            raise _err("tcp_channel.address", "invalid socket address syntax")
        tcp = TcpChannelConfig(
            address=addr,
            tls_enabled=_bool(
                _req(t, "tls_enabled", "tcp_channel.tls_enabled"), "tcp_channel.tls_enabled"
            ),
            required=_bool(_req(t, "required", "tcp_channel.required"), "tcp_channel.required"),
        )
    ipc_v = o.get("ipc_channel")
    ipc = None
    if ipc_v is not None:
        c = _struct(ipc_v, "ipc_channel", "IpcChannelConfig", _F_IPC)
        sp = _req(c, "socket_path", "ipc_channel.socket_path")
        if type(sp) is not str:
            raise _invalid("ipc_channel.socket_path", sp, "path string")
        ipc = IpcChannelConfig(
            socket_path=sp,
            required=_bool(_req(c, "required", "ipc_channel.required"), "ipc_channel.required"),
        )
    security = SecurityLevel.NONE
    if "security_level" in o:  # serde(default): absent -> None, but null is an error
        security = _unit_enum(o["security_level"], "security_level", _SECURITY, "SecurityLevel")
    return Init(
        orchestrator_api=_str(_req(o, "orchestrator_api", "orchestrator_api"), "orchestrator_api"),
        module_id=_str(_req(o, "module_id", "module_id"), "module_id"),
        env=_str_map(_req(o, "env", "env"), "env"),
        listen=parse_listen_address(listen_v),
        tcp_channel=tcp,
        ipc_channel=ipc,
        auth_token=_opt_str(o.get("auth_token"), "auth_token"),
        security_level=security,
        extensions=_extensions(o),
    )


def _d_secret(o: _Obj) -> Secret:
    _struct(o, "", "", _fields("name", "value", "rotation_id"))
    return Secret(
        name=_str(_req(o, "name", "name"), "name"),
        value=_str(_req(o, "value", "value"), "value"),
        rotation_id=_opt_str(o.get("rotation_id"), "rotation_id"),
    )


def _d_rotated(o: _Obj) -> Rotated:
    _struct(o, "", "", _fields("keys", "rotation_id"))
    return Rotated(
        keys=_str_tuple(_req(o, "keys", "keys"), "keys"),
        rotation_id=_str(_req(o, "rotation_id", "rotation_id"), "rotation_id"),
    )


def _d_shutdown(o: _Obj) -> Shutdown:
    return _SHUTDOWN


def _d_heartbeat(o: _Obj) -> Heartbeat:
    return _HEARTBEAT


def _d_register_sp_response(o: _Obj) -> RegisterServiceProviderResponse:
    _struct(o, "", "", _fields("success", "provider_id", "error"))
    return RegisterServiceProviderResponse(
        success=_bool(_req(o, "success", "success"), "success"),
        provider_id=_opt_str(o.get("provider_id"), "provider_id"),
        error=_opt_str(o.get("error"), "error"),
    )


def _d_discover_sp_response(o: _Obj) -> DiscoverServiceProvidersResponse:
    _struct(o, "", "", _fields("success", "providers", "error"))
    return DiscoverServiceProvidersResponse(
        success=_bool(_req(o, "success", "success"), "success"),
        providers=_providers(_req(o, "providers", "providers"), "providers"),
        error=_opt_str(o.get("error"), "error"),
    )


def _d_service_response(o: _Obj) -> ServiceResponse:
    _struct(o, "", "", _fields("id", "service_type", "success", "error", "connection_id"))
    return ServiceResponse(
        id=_str(_req(o, "id", "id"), "id"),
        service_type=_service_type(_req(o, "service_type", "service_type"), "service_type"),
        success=_bool(_req(o, "success", "success"), "success"),
        error=_opt_str(o.get("error"), "error"),
        connection_id=_opt_str(o.get("connection_id"), "connection_id"),
    )


def _d_service_operation_result(o: _Obj) -> ServiceOperationResult:
    _struct(o, "", "", _fields("success", "result", "error"))
    return ServiceOperationResult(
        success=_bool(_req(o, "success", "success"), "success"),
        result=_value(o.get("result"), "result"),
        error=_opt_str(o.get("error"), "error"),
    )


_F_HTTP_REQUEST = _fields("request_id", "method", "uri", "headers", "body")


def _d_http_request(o: _Obj, base64: bool = False) -> HttpRequest:
    if type(o) is DupDict:
        _struct(o, "", "", _F_HTTP_REQUEST)
    # Every field is checked here, so the message is built without re-checking.
    return trusted_http_request(
        _str(_req(o, "request_id", "request_id"), "request_id"),
        _str(_req(o, "method", "method"), "method"),
        _str(_req(o, "uri", "uri"), "uri"),
        _str_map(_req(o, "headers", "headers"), "headers"),
        _body(o.get("body"), base64),
    )


# The http_request line exactly as serde_json writes it (and as the pywatt orchestrator does):
# compact, fields in declaration order, strings without escapes or control characters, headers
# a flat map of such strings, body null or an array of digits. Such a line has no duplicate
# field, no lone surrogate, no nesting beyond two levels and nothing a serde string would decode
# differently, so its fields can be read off the match; any other line (or a body the C scanner
# or bytes() refuses) goes through the general decoder, which gives its answer or error.
# (Possessive quantifiers, Python 3.11+: a class that excludes the closing quote or bracket
# never needs to give characters back, so the engine keeps no backtracking state.)
_PLAIN_STR = r'"([^"\\\x00-\x1f]*+)"'
_PLAIN_PAIR = r'"[^"\\\x00-\x1f]*+":"[^"\\\x00-\x1f]*+"'
_HTTP_REQUEST_LINE = re.compile(
    (
        r'\{"op":"http_request","request_id":<S>,"method":<S>,"uri":<S>,'
        r'"headers":(\{(?:<P>(?:,<P>)*)?\}),"body":(null|\[[0-9,]*+\])\}'
    )
    .replace("<S>", _PLAIN_STR)
    .replace("<P>", _PLAIN_PAIR)
)
_HTTP_REQUEST_START = b'{"op":"http_request","request_id":"'
# Hook-free C scanner for the matched headers object (a dict of str, last duplicate wins as in
# serde's HashMap) and the digits-only body array (ints only: no float, no -0).
_scan_plain: Callable[[str, int], tuple[Any, int]] = getattr(  # noqa: B009
    json.JSONDecoder(strict=True), "scan_once"
)


def decode_http_request_line(line: bytes) -> HttpRequest | None:
    """Return the :class:`HttpRequest` of a canonical ``http_request`` line, else None.

    The same message :func:`decode_orchestrator_to_module` returns for ``line``, read without
    the general JSON reader; None means "not recognised here" (any other op, another layout,
    escapes, invalid input): decode such a line with :func:`decode_orchestrator_to_module`.
    Never raises.
    """
    if not line.startswith(_HTTP_REQUEST_START):  # other ops: no decoding of a large line
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    m = _HTTP_REQUEST_LINE.fullmatch(text)
    if m is None:
        return None
    request_id, method, uri, headers_text, body_text = m.groups()
    try:
        headers = _scan_plain(headers_text, 0)[0]
        body = None if body_text == "null" else bytes(_scan_plain(body_text, 0)[0])
    except (ValueError, StopIteration):  # body: leading zeros, empty items, > 255, huge ints
        return None
    return trusted_http_request(request_id, method, uri, headers, body)


def _d_port_response(o: _Obj) -> PortResponse:
    _struct(o, "", "", _fields("request_id", "success", "port", "error_message"))
    return PortResponse(
        request_id=_str(_req(o, "request_id", "request_id"), "request_id"),
        success=_bool(_req(o, "success", "success"), "success"),
        port=_u16(_req(o, "port", "port"), "port"),
        error_message=_opt_str(o.get("error_message"), "error_message"),
    )


def _d_routed_message(o: _Obj, base64: bool = False) -> RoutedModuleMessage:
    _struct(o, "", "", _fields("source_module_id", "original_request_id", "payload"))
    return RoutedModuleMessage(
        source_module_id=_str(_req(o, "source_module_id", "source_module_id"), "source_module_id"),
        original_request_id=_uuid(
            _req(o, "original_request_id", "original_request_id"), "original_request_id"
        ),
        payload=_encoded(_req(o, "payload", "payload"), "payload", base64),
    )


def _d_routed_response(o: _Obj, base64: bool = False) -> RoutedModuleResponse:
    _struct(o, "", "", _fields("source_module_id", "request_id", "payload", ROUTE_ERROR_KEY))
    err = o.get(ROUTE_ERROR_KEY)
    return RoutedModuleResponse(
        source_module_id=_str(_req(o, "source_module_id", "source_module_id"), "source_module_id"),
        request_id=_uuid(_req(o, "request_id", "request_id"), "request_id"),
        payload=_encoded(_req(o, "payload", "payload"), "payload", base64),
        error=None if err is None else _route_error(err, ROUTE_ERROR_KEY),
    )


def _route_error(v: Any, path: str) -> RouteError:
    # spec/modules.md section 5: {"kind", "message", "status"?}; unknown members ignored.
    o = _struct(v, path, "RouteError", frozenset(("kind", "message", "status")))
    status = o.get("status")
    return RouteError(
        kind=_str(_req(o, "kind", path + ".kind"), path + ".kind"),
        message=_str(_req(o, "message", path + ".message"), path + ".message"),
        status=None if status is None else _u16(status, path + ".status"),
    )


_M2O: dict[str, Callable[[_Obj], Any]] = {
    "identify": _d_identify,
    "announce": _d_announce,
    "get_secret": _d_get_secret,
    "rotation_ack": _d_rotation_ack,
    "register_service_provider": _d_register_sp,
    "discover_service_providers": _d_discover_sp,
    "service_request": _d_service_request,
    "service_operation": _d_service_operation,
    "http_response": _d_http_response,
    "port_request": _d_port_request,
    "route_to_module": _d_route_to_module,
    "heartbeat_ack": _d_heartbeat_ack,
}
_O2M: dict[str, Callable[[_Obj], Any]] = {
    "init": _d_init,
    "secret": _d_secret,
    "rotated": _d_rotated,
    "shutdown": _d_shutdown,
    "register_service_provider_response": _d_register_sp_response,
    "discover_service_providers_response": _d_discover_sp_response,
    "service_response": _d_service_response,
    "service_operation_result": _d_service_operation_result,
    "http_request": _d_http_request,
    "port_response": _d_port_response,
    "routed_module_message": _d_routed_message,
    "routed_module_response": _d_routed_response,
    "heartbeat": _d_heartbeat,
}


# The same tables for a connection using base64_bodies: a body may be a base64 string.
_M2O_B64: dict[str, Callable[[_Obj], Any]] = {
    **_M2O,
    "http_response": lambda o: _d_http_response(o, True),
    "route_to_module": lambda o: _d_route_to_module(o, True),
}
_O2M_B64: dict[str, Callable[[_Obj], Any]] = {
    **_O2M,
    "http_request": lambda o: _d_http_request(o, True),
    "routed_module_message": lambda o: _d_routed_message(o, True),
    "routed_module_response": lambda o: _d_routed_response(o, True),
}


def _tagged(obj: Any, table: dict[str, Callable[[_Obj], Any]], enum_name: str) -> Any:
    t = type(obj)
    if t is not dict:
        if t is DupDict:
            if "op" in obj.dups:
                raise _err("op", "duplicate field `op`")
        elif t is list:
            raise RemoteProtocolError(
                f"positional (array) form of {enum_name} is not accepted", field=None
            )
        else:
            raise RemoteProtocolError(
                f"invalid type: {_desc(obj)}, expected internally tagged enum {enum_name}"
            )
    try:
        op = obj["op"]
    except KeyError:
        raise _missing("op") from None
    if type(op) is not str:
        raise _invalid("op", op, "variant identifier")
    decoder = table.get(op)
    if decoder is None:
        expected = ", ".join(f"`{n}`" for n in table)
        raise _err("op", f"unknown variant {dump_str(op)}, expected one of {expected}")
    try:
        return decoder(obj)
    except LocalProtocolError as exc:  # a value the dataclass itself refused
        raise RemoteProtocolError(exc.message, field=exc.field) from None


def decode_module_to_orchestrator(data: _Input) -> ModuleToOrchestrator:
    """Decode one module-to-orchestrator message (``{"op": ..., ...}``).

    Returns the message dataclass. Raises RemoteProtocolError (``field`` set) if the
    text is not valid JSON, has no/unknown ``op``, or any field is missing, of the
    wrong type, duplicated or out of range.
    """
    return _tagged(loads(data), _M2O, "ModuleToOrchestrator")  # type: ignore[no-any-return]


def decode_orchestrator_to_module(
    data: _Input, *, base64_bodies: bool = False
) -> OrchestratorToModule:
    """Decode one orchestrator-to-module message (``{"op": ..., ...}``).

    ``base64_bodies``: the connection uses the ``base64_bodies`` extension, so an
    ``http_request`` body may also be a base64 string. Returns the message dataclass;
    raises RemoteProtocolError like :func:`decode_module_to_orchestrator`.
    """
    if base64_bodies:
        split = split_body(bytes(data) if not isinstance(data, str) else data.encode(), True)
        if split is not None:
            head, body = split
            msg = _tagged(loads(head), _O2M, "OrchestratorToModule")
            if type(msg) is HttpRequest and msg.body is None:
                return _replace(msg, body=body)
        return _tagged(loads(data), _O2M_B64, "OrchestratorToModule")  # type: ignore[no-any-return]
    return _tagged(loads(data), _O2M, "OrchestratorToModule")  # type: ignore[no-any-return]


def decode_init(data: _Input) -> Init:
    """Decode the handshake line: a bare ``InitBlob`` or one tagged ``"op":"init"``.

    Returns the :class:`Init`. Raises RemoteProtocolError if the line is not an
    init blob (including when it carries an ``op`` other than ``"init"``).
    """
    obj = loads(data)
    if isinstance(obj, dict) and "op" in obj:
        return _tagged(obj, {"init": _d_init}, "InitBlob")  # type: ignore[no-any-return]
    if not isinstance(obj, dict):
        raise _invalid("", obj, "struct InitBlob")
    try:
        return _d_init(obj)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, field=exc.field) from None


_F_WRAPPER = frozenset({"content", "metadata"})


def decode_module_line(data: _Input, *, base64_bodies: bool = False) -> ModuleToOrchestrator:
    """Decode a line a module wrote on stdout.

    Accepts every module-to-orchestrator message, and also the reference's HTTP
    response wrapper ``{"content": {request_id, status_code, headers, body},
    "metadata": {...}}`` (no ``op``), which yields an :class:`HttpResponse` (the
    metadata is validated and dropped). ``base64_bodies``: the module uses the
    ``base64_bodies`` extension, so a response body may also be a base64 string.
    A large body written as serde does is read without the general JSON reader
    (:func:`split_body`). Raises RemoteProtocolError otherwise.
    """
    if not isinstance(data, str) and (base64_bodies or len(data) >= _SPLIT_MIN):
        split = split_body(bytes(data), base64_bodies)
        if split is not None:
            head, body = split
            msg = _decode_module_obj(loads(head), False)
            if type(msg) is HttpResponse and msg.body is None:
                return _replace(msg, body=body)
    return _decode_module_obj(loads(data), base64_bodies)


def _decode_module_obj(obj: Any, base64: bool) -> ModuleToOrchestrator:
    if isinstance(obj, dict) and "op" not in obj and "content" in obj:
        _struct(obj, "", "", _F_WRAPPER)
        content = _struct(obj["content"], "content", "IpcHttpResponse", _F_HTTP_RESPONSE)
        if "metadata" in obj:
            try:
                _metadata(obj["metadata"], "metadata")
            except LocalProtocolError as exc:
                raise RemoteProtocolError(exc.message, field=f"metadata.{exc.field}") from None
        if "op" in content and content["op"] != "http_response":
            raise _err("content.op", "expected `http_response` inside the response wrapper")
        try:
            return _d_http_response(content, base64)
        except RemoteProtocolError as exc:
            field = f"content.{exc.field}" if exc.field else "content"
            raise RemoteProtocolError(f"content: {exc.message}", field=field) from None
        except LocalProtocolError as exc:
            raise RemoteProtocolError(exc.message, field=exc.field) from None
    table = _M2O_B64 if base64 else _M2O
    return _tagged(obj, table, "ModuleToOrchestrator")  # type: ignore[no-any-return]


def decode_encoded_message(data: _Input) -> EncodedMessage:
    """Decode a standalone ``{"data": [ints], "format": "Json"}`` object.

    Returns the :class:`EncodedMessage`; raises RemoteProtocolError on any error.
    """
    return _encoded(loads(data), "")


_F_METADATA = frozenset({"id", "timestamp", "source", "destination", "properties"})


def _metadata(v: Any, path: str) -> MessageMetadata:
    o = _struct(v, path, "MessageMetadata", _F_METADATA)
    if not o:
        return _EMPTY_METADATA
    ts = o.get("timestamp")
    if ts is not None:
        if type(ts) is not int:
            raise _invalid(_sub(path, "timestamp"), ts, "i64")
        if not -(2**63) <= ts < 2**63:
            raise _err(_sub(path, "timestamp"), f"invalid value: integer `{ts}`, expected i64")
    props = o.get("properties")
    if props is not None:
        if type(props) is not dict and type(props) is not DupDict:
            raise _invalid(_sub(path, "properties"), props, "a map")
        props = normalize_value(props)
    return MessageMetadata(
        id=_opt_str(o.get("id"), _sub(path, "id")),
        timestamp=ts,
        source=_opt_str(o.get("source"), _sub(path, "source")),
        destination=_opt_str(o.get("destination"), _sub(path, "destination")),
        properties=props,
    )


_EMPTY_METADATA = MessageMetadata()
_F_ENVELOPE = frozenset({"id", "content", "metadata"})


def decode_envelope(data: _Input, *, content: EnvelopeContent = "json") -> Message:
    """Decode a ``Message<T>`` envelope ``{"id", "content", "metadata"}``.

    ``content`` says what T is: ``"json"`` (any JSON value), ``"module_to_orchestrator"``
    or ``"orchestrator_to_module"`` (a tagged message). ``metadata`` may be absent
    (empty metadata) but not ``null``. Returns the :class:`Message`; raises
    RemoteProtocolError on any error (fields inside the content are prefixed
    ``content.``).
    """
    o = _struct(loads(data), "", "Message", _F_ENVELOPE)
    try:
        msg_id = _uuid(_req(o, "id", "id"), "id")
        raw = _req(o, "content", "content")
        metadata = _metadata(o["metadata"], "metadata") if "metadata" in o else _EMPTY_METADATA
        body: Any
        if content == "json":
            body = _value(raw, "content")
        else:
            table = _M2O if content == "module_to_orchestrator" else _O2M
            try:
                body = _tagged(raw, table, "message")
            except RemoteProtocolError as exc:
                field = f"content.{exc.field}" if exc.field else "content"
                raise RemoteProtocolError(f"content: {exc.message}", field=field) from None
        return Message(id=msg_id, content=body, metadata=metadata)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, field=exc.field) from None


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------


def _e_str_map(m: dict[str, str]) -> str:
    return "{" + ",".join([dump_str(k) + ":" + dump_str(v) for k, v in m.items()]) + "}"


def _e_str_list(xs: tuple[str, ...]) -> str:
    return "[" + ",".join(map(dump_str, xs)) + "]"


def _e_opt_str(s: str | None) -> str:
    return "null" if s is None else dump_str(s)


def _e_bool(b: bool) -> str:
    return "true" if b else "false"


def _e_service_type(st: ServiceType) -> str:
    if st.is_custom:
        return '{"Custom":' + dump_str(st.name) + "}"
    return '"' + st.name + '"'


def _e_encoded(em: EncodedMessage) -> str:
    return f'{{"data":{dump_bytes(em.data)},"format":"{em.format.wire_name}"}}'


def _e_encoded_b64(em: EncodedMessage) -> str:
    data = encode_base64_body(em.data).decode("ascii")
    return f'{{"data":"{data}","format":"{em.format.wire_name}"}}'


def _e_extensions(ext: tuple[str, ...]) -> str:
    return f',"{EXTENSIONS_KEY}":{_e_str_list(ext)}' if ext else ""


def _e_endpoint(ep: Endpoint) -> str:
    auth = "" if ep.auth is None else ',"auth":' + dump_str(ep.auth)
    return f'{{"path":{dump_str(ep.path)},"methods":{_e_str_list(ep.methods)}{auth}}}'


def _e_identify(m: Identify) -> str:
    return '{"op":"identify","module_id":' + dump_str(m.module_id) + "}"


def _e_announce(m: Announce) -> str:
    eps = ",".join(map(_e_endpoint, m.endpoints))
    return (
        f'{{"op":"announce","listen":{dump_str(m.listen)},"endpoints":[{eps}]'
        f"{_e_extensions(m.extensions)}}}"
    )


def _e_get_secret(m: GetSecret) -> str:
    return '{"op":"get_secret","name":' + dump_str(m.name) + "}"


def _e_rotation_ack(m: RotationAck) -> str:
    msg = "" if m.message is None else ',"message":' + dump_str(m.message)
    return (
        f'{{"op":"rotation_ack","rotation_id":{dump_str(m.rotation_id)},'
        f'"status":{dump_str(m.status)}{msg}}}'
    )


def _e_register_sp(m: RegisterServiceProvider) -> str:
    md = "null" if m.metadata is None else _e_str_map(m.metadata)
    return (
        f'{{"op":"register_service_provider","service_type":{_e_service_type(m.service_type)},'
        f'"name":{dump_str(m.name)},"version":{_e_opt_str(m.version)},'
        f'"address":{dump_str(m.address)},"metadata":{md}}}'
    )


def _e_discover_sp(m: DiscoverServiceProviders) -> str:
    ap = "null" if m.all_providers is None else _e_bool(m.all_providers)
    return (
        f'{{"op":"discover_service_providers","service_type":{_e_service_type(m.service_type)},'
        f'"all_providers":{ap}}}'
    )


def _e_service_request(m: ServiceRequest) -> str:
    return (
        f'{{"op":"service_request","id":{dump_str(m.id)},'
        f'"service_type":{_e_service_type(m.service_type)},"config":{dump_value(m.config)}}}'
    )


def _e_service_operation(m: ServiceOperation) -> str:
    return (
        f'{{"op":"service_operation","connection_id":{dump_str(m.connection_id)},'
        f'"service_type":{_e_service_type(m.service_type)},'
        f'"operation":{dump_str(m.operation)},"params":{dump_value(m.params)}}}'
    )


def _e_http_response(m: HttpResponse) -> str:
    return http_response_text(
        dump_str(m.request_id), m.status_code, encode_headers(m.headers), m.body, None, ""
    )


# ---------------------------------------------------------------------------
# http_response: the one encoder (flat op and the reference's stdout wrapper)
# ---------------------------------------------------------------------------
#
# Every http_response pywatt writes -- encode(HttpResponse), the module link's answers, its
# own 400/503/504 -- is built by http_response_text. Two shapes (spec/stdio.md):
#
# * flat, the op (TCP/UDS envelopes; stdio with the http_response_op extension), fields in
#   declaration order like every tagged message:
#   {"op":"http_response","request_id":R,"status_code":S,"headers":H,"body":B}
# * the wrapper a reference module writes on stdout. It is built with serde_json's json!
#   (no preserve_order), so every object in it has its keys sorted:
#   {"content":{"body":B,"headers":H,"request_id":R,"status_code":S},
#    "metadata":{"id":U,"properties":{"correlation_id":R},"source":M}}
#
# H is always written with sorted names (encode_headers): the wrapper's order, and a valid
# order for the flat op, whose map is a HashMap (any order). So one pre-rendered header text
# serves both shapes, and a caller that answers with the same headers again (a router
# Response's constant header tuple) renders them once.


def encode_headers(headers: Mapping[str, str]) -> str:
    """Return the JSON object text of a header map, names in sorted order.

    Sorted by code point, which is UTF-8 byte order: the order serde_json's ``BTreeMap``
    gives the reference's wrapper. Raises LocalProtocolError if a name or value is not a str.
    Leaves ``headers`` unchanged.
    """
    items = sorted(headers.items()) if len(headers) > 1 else headers.items()
    try:
        return "{" + ",".join([dump_str(k) + ":" + dump_str(v) for k, v in items]) + "}"
    except TypeError:
        for k, v in items:
            if type(k) is not str or type(v) is not str:
                raise LocalProtocolError(
                    f"header {k!r}: names and values must be strings", field="headers"
                ) from None
        raise  # pragma: no cover - dump_str raises TypeError for non-str only


def http_response_text(
    request_id_json: str,
    status_code: int,
    headers_json: str,
    body: bytes | None,
    wrapper_id: str | None,
    source_json: str,
) -> str:
    """Return one ``http_response`` as JSON text (no newline) from pre-rendered parts.

    ``request_id_json``, ``source_json``: JSON string texts (``dump_str``); ``headers_json``:
    from :func:`encode_headers`; ``body`` None is written ``null``. ``wrapper_id`` None gives
    the flat op, else the reference's stdout wrapper with that ``metadata.id`` (a UUID text)
    and ``metadata.source``. The caller has checked the parts (``status_code`` an int in
    0..65535, ``body`` bytes or None): nothing is validated here and nothing raises.
    """
    body_json = "null" if body is None else dump_bytes(body)
    if wrapper_id is None:
        return (
            f'{{"op":"http_response","request_id":{request_id_json},'
            f'"status_code":{status_code},"headers":{headers_json},"body":{body_json}}}'
        )
    return (
        f'{{"content":{{"body":{body_json},"headers":{headers_json},'
        f'"request_id":{request_id_json},"status_code":{status_code}}},'
        f'"metadata":{{"id":"{wrapper_id}","properties":{{"correlation_id":{request_id_json}}},'
        f'"source":{source_json}}}}}'
    )


def encode_http_response(
    request_id: str,
    status_code: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    wrapper_id: str | None = None,
    source: str = "unknown_module",
) -> bytes:
    """Return one ``http_response`` as UTF-8 JSON (no newline), checked.

    With ``wrapper_id`` None: the flat op, the same bytes as ``encode(HttpResponse(...))``.
    Otherwise the reference's stdout wrapper with ``metadata.id = wrapper_id`` and
    ``metadata.source = source``. Raises LocalProtocolError for a field the message would
    refuse (types, status outside 0..65535, lone surrogates).
    """
    if (
        type(request_id) is not str
        or type(status_code) is not int
        or not 0 <= status_code <= 65535
        or (body is not None and type(body) is not bytes)
        or (wrapper_id is not None and type(wrapper_id) is not str)
        or type(source) is not str
    ):
        # the message's own checks name the field
        HttpResponse(
            request_id=request_id, status_code=status_code, headers=dict(headers), body=body
        )
        raise LocalProtocolError("invalid http_response wrapper metadata", field="metadata")
    text = http_response_text(
        dump_str(request_id),
        status_code,
        encode_headers(headers),
        body,
        wrapper_id,
        dump_str(source),
    )
    return _utf8(text)


def _e_port_request(m: PortRequest) -> str:
    port = "null" if m.specific_port is None else str(m.specific_port)
    return f'{{"op":"port_request","request_id":{dump_str(m.request_id)},"specific_port":{port}}}'


def _e_route_to_module(
    m: RouteToModule, payload: Callable[[EncodedMessage], str] = _e_encoded
) -> str:
    return (
        f'{{"op":"route_to_module","target_module_id":{dump_str(m.target_module_id)},'
        f'"target_endpoint":{dump_str(m.target_endpoint)},"request_id":"{m.request_id}",'
        f'"payload":{payload(m.payload)}}}'
    )


def _e_heartbeat_ack(m: HeartbeatAck) -> str:
    return '{"op":"heartbeat_ack"}'


def _e_init(m: Init) -> str:
    parts = [
        '{"op":"init","orchestrator_api":',
        dump_str(m.orchestrator_api),
        ',"module_id":',
        dump_str(m.module_id),
        ',"env":',
        _e_str_map(m.env),
        ',"listen":',
        dump_str(str(m.listen)),
    ]
    if m.tcp_channel is not None:
        tc = m.tcp_channel
        parts.append(
            f',"tcp_channel":{{"address":"{tc.address}","tls_enabled":{_e_bool(tc.tls_enabled)},'
            f'"required":{_e_bool(tc.required)}}}'
        )
    if m.ipc_channel is not None:
        ic = m.ipc_channel
        parts.append(
            f',"ipc_channel":{{"socket_path":{dump_str(ic.socket_path)},'
            f'"required":{_e_bool(ic.required)}}}'
        )
    if m.auth_token is not None:
        parts.append(',"auth_token":' + dump_str(m.auth_token))
    parts.append(f',"security_level":"{m.security_level.value}"')
    parts.append(_e_extensions(m.extensions))
    parts.append("}")
    return "".join(parts)


def _e_secret(m: Secret) -> str:
    rot = "" if m.rotation_id is None else ',"rotation_id":' + dump_str(m.rotation_id)
    return f'{{"op":"secret","name":{dump_str(m.name)},"value":{dump_str(m.value)}{rot}}}'


def _e_rotated(m: Rotated) -> str:
    return (
        f'{{"op":"rotated","keys":{_e_str_list(m.keys)},"rotation_id":{dump_str(m.rotation_id)}}}'
    )


def _e_shutdown(m: Shutdown) -> str:
    return '{"op":"shutdown"}'


def _e_heartbeat(m: Heartbeat) -> str:
    return '{"op":"heartbeat"}'


def _e_register_sp_response(m: RegisterServiceProviderResponse) -> str:
    return (
        f'{{"op":"register_service_provider_response","success":{_e_bool(m.success)},'
        f'"provider_id":{_e_opt_str(m.provider_id)},"error":{_e_opt_str(m.error)}}}'
    )


def _e_provider(p: ServiceProviderInfo) -> str:
    return (
        f'{{"provider_id":{dump_str(p.provider_id)},"module_id":{dump_str(p.module_id)},'
        f'"service_type":{_e_service_type(p.service_type)},"name":{dump_str(p.name)},'
        f'"version":{_e_opt_str(p.version)},"address":{dump_str(p.address)},'
        f'"metadata":{_e_str_map(p.metadata)},"is_healthy":{_e_bool(p.is_healthy)}}}'
    )


def _e_discover_sp_response(m: DiscoverServiceProvidersResponse) -> str:
    providers = ",".join(map(_e_provider, m.providers))
    return (
        f'{{"op":"discover_service_providers_response","success":{_e_bool(m.success)},'
        f'"providers":[{providers}],"error":{_e_opt_str(m.error)}}}'
    )


def _e_service_response(m: ServiceResponse) -> str:
    return (
        f'{{"op":"service_response","id":{dump_str(m.id)},'
        f'"service_type":{_e_service_type(m.service_type)},"success":{_e_bool(m.success)},'
        f'"error":{_e_opt_str(m.error)},"connection_id":{_e_opt_str(m.connection_id)}}}'
    )


def _e_service_operation_result(m: ServiceOperationResult) -> str:
    return (
        f'{{"op":"service_operation_result","success":{_e_bool(m.success)},'
        f'"result":{dump_value(m.result)},"error":{_e_opt_str(m.error)}}}'
    )


def _e_http_request(m: HttpRequest) -> str:
    body = "null" if m.body is None else dump_bytes(m.body)
    return (
        f'{{"op":"http_request","request_id":{dump_str(m.request_id)},'
        f'"method":{dump_str(m.method)},"uri":{dump_str(m.uri)},'
        f'"headers":{_e_str_map(m.headers)},"body":{body}}}'
    )


def _e_port_response(m: PortResponse) -> str:
    return (
        f'{{"op":"port_response","request_id":{dump_str(m.request_id)},'
        f'"success":{_e_bool(m.success)},"port":{m.port},'
        f'"error_message":{_e_opt_str(m.error_message)}}}'
    )


def _e_routed_message(
    m: RoutedModuleMessage, payload: Callable[[EncodedMessage], str] = _e_encoded
) -> str:
    return (
        f'{{"op":"routed_module_message","source_module_id":{dump_str(m.source_module_id)},'
        f'"original_request_id":"{m.original_request_id}","payload":{payload(m.payload)}}}'
    )


def _e_routed_response(
    m: RoutedModuleResponse, payload: Callable[[EncodedMessage], str] = _e_encoded
) -> str:
    head = (
        f'{{"op":"routed_module_response","source_module_id":{dump_str(m.source_module_id)},'
        f'"request_id":"{m.request_id}","payload":{payload(m.payload)}'
    )
    if m.error is None:
        return head + "}"
    return f'{head},"{ROUTE_ERROR_KEY}":{encode_route_error(m.error)}}}'


def encode_route_error(err: RouteError) -> str:
    """Return the wire text of ``err``: ``{"kind":..,"message":..}`` plus ``"status"`` when
    set (spec/modules.md section 5). Never raises for a valid RouteError."""
    text = f'{{"kind":{dump_str(err.kind)},"message":{dump_str(err.message)}'
    if err.status is not None:
        text += f',"status":{err.status}'
    return text + "}"


_ENCODERS: dict[type, Callable[[Any], str]] = {
    Identify: _e_identify,
    Announce: _e_announce,
    GetSecret: _e_get_secret,
    RotationAck: _e_rotation_ack,
    RegisterServiceProvider: _e_register_sp,
    DiscoverServiceProviders: _e_discover_sp,
    ServiceRequest: _e_service_request,
    ServiceOperation: _e_service_operation,
    HttpResponse: _e_http_response,
    PortRequest: _e_port_request,
    RouteToModule: _e_route_to_module,
    HeartbeatAck: _e_heartbeat_ack,
    Init: _e_init,
    Secret: _e_secret,
    Rotated: _e_rotated,
    Shutdown: _e_shutdown,
    RegisterServiceProviderResponse: _e_register_sp_response,
    DiscoverServiceProvidersResponse: _e_discover_sp_response,
    ServiceResponse: _e_service_response,
    ServiceOperationResult: _e_service_operation_result,
    HttpRequest: _e_http_request,
    PortResponse: _e_port_response,
    RoutedModuleMessage: _e_routed_message,
    RoutedModuleResponse: _e_routed_response,
    Heartbeat: _e_heartbeat,
}


#: Messages whose payload bytes travel as base64 with base64_bodies (module calls).
_B64_PAYLOAD_ENCODERS: dict[type, Callable[[Any, Callable[[EncodedMessage], str]], str]] = {
    RouteToModule: _e_route_to_module,
    RoutedModuleMessage: _e_routed_message,
    RoutedModuleResponse: _e_routed_response,
}


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"string holds a lone surrogate ({exc.reason}) and cannot be sent"
        ) from None


def encode(
    msg: ModuleToOrchestrator | OrchestratorToModule, *, base64_bodies: bool = False
) -> bytes:
    """Return ``msg`` as the exact compact JSON serde_json writes (no newline).

    ``base64_bodies``: write the body of an ``http_request`` / ``http_response`` as a
    base64 string (the ``base64_bodies`` extension); other messages are unaffected.
    Raises LocalProtocolError if ``msg`` is not a message object, or a string in it
    cannot be UTF-8 encoded (lone surrogates).
    """
    if base64_bodies:
        if isinstance(msg, HttpRequest | HttpResponse) and msg.body is not None:
            text = encode(_replace(msg, body=None))
            return text[:-5] + body_json(msg.body, True) + b"}"  # ..."body":null}
        payload_encoder = _B64_PAYLOAD_ENCODERS.get(type(msg))
        if payload_encoder is not None:
            return _utf8(payload_encoder(msg, _e_encoded_b64))
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise LocalProtocolError(f"{type(msg).__name__} is not a PyWatt message")
    return _utf8(encoder(msg))


def encode_encoded_message(em: EncodedMessage) -> bytes:
    """Return ``{"data":[...],"format":"..."}`` for ``em``. Raises LocalProtocolError if
    ``em`` is not an :class:`EncodedMessage`."""
    if type(em) is not EncodedMessage:
        raise LocalProtocolError(f"{type(em).__name__} is not an EncodedMessage")
    return _e_encoded(em).encode("ascii")


def _e_metadata(md: MessageMetadata) -> str:
    parts = []
    if md.id is not None:
        parts.append('"id":' + dump_str(md.id))
    if md.timestamp is not None:
        parts.append(f'"timestamp":{md.timestamp}')
    if md.source is not None:
        parts.append('"source":' + dump_str(md.source))
    if md.destination is not None:
        parts.append('"destination":' + dump_str(md.destination))
    if md.properties is not None:
        parts.append('"properties":' + dump_value(md.properties))
    return "{" + ",".join(parts) + "}"


def encode_envelope(msg: Message) -> bytes:
    """Return the ``Message<T>`` envelope as serde writes it (``id``, ``content``, ``metadata``).

    ``content`` is written as a tagged message when it is a message object, else as a
    JSON value (object keys sorted). Raises LocalProtocolError for invalid content.
    """
    if type(msg) is not Message:
        raise LocalProtocolError(f"{type(msg).__name__} is not a Message")
    encoder = _ENCODERS.get(type(msg.content))
    content = encoder(msg.content) if encoder is not None else dump_value(msg.content)
    return _utf8(f'{{"id":"{msg.id}","content":{content},"metadata":{_e_metadata(msg.metadata)}}}')


# ---------------------------------------------------------------------------
# body forms: the reference's byte array and base64_bodies (spec/extensions.md), and the
# length-checked line writers for the two messages that carry bodies (spec/limits.md 1.1)
# ---------------------------------------------------------------------------
#
# A body is the largest part of its line by far, so it is read and written on its own:
# split_body cuts it out of a line serde would write (the op forms put "body" last, the
# sorted stdout wrapper puts it first) and leaves "body":null in its place, so every other
# field still goes through the ordinary decoders with their checks and errors; the writers
# render the message with a null body and splice the body's bytes in. Neither builds a str
# or a Python int per body byte, and a line is copied once.

#: Lines at least this long are offered to split_body by the general decoders (a short
#: line is cheaper to decode whole).
_SPLIT_MIN = 2048
_BODY_LAST_ARRAY = b',"body":['
_BODY_LAST_STRING = b',"body":"'
_WRAPPER_BODY = b'{"content":{"body":'


def split_body(line: bytes, base64: bool) -> tuple[bytes, bytes] | None:
    """Cut the body out of an ``http_request`` / ``http_response`` line.

    Recognises a body written as serde does -- a compact byte array, or with ``base64`` a
    base64 string -- as the last member of the line (the op forms) or the first member of
    the stdout wrapper's ``content``. Returns ``(line with "body":null in its place, body)``,
    or None when the line has no such body or it does not decode (the general decoder then
    gives the answer or the precise error). Never raises; ``line`` is unchanged.
    """
    if line.startswith(_WRAPPER_BODY):
        start = len(_WRAPPER_BODY)
        opener = line[start : start + 1]
        if opener == b"[":
            end = line.find(b"]", start)
            if end < 0:
                return None
            body = decode_byte_array(memoryview(line)[start : end + 1])
        elif opener == b'"' and base64:
            end = line.find(b'"', start + 1)
            if end < 0:
                return None
            body = _b64_or_none(memoryview(line)[start + 1 : end])
        else:
            return None
        if body is None:
            return None
        return _WRAPPER_BODY + b"null" + line[end + 1 :], body
    # The key is searched from the start (it follows the short fields; a backwards search
    # would cross the whole body). Only a value that decodes up to the line's last "}"
    # is taken, so a "body" key elsewhere (a header named body) can only make the search
    # fall back to the last occurrence.
    if line.endswith(b"]}"):
        needle, start, end, decode = _BODY_LAST_ARRAY, len(_BODY_LAST_ARRAY) - 1, -1, _array
    elif base64 and line.endswith(b'"}'):
        needle, start, end, decode = _BODY_LAST_STRING, len(_BODY_LAST_STRING), -2, _b64_or_none
    else:
        return None
    at = line.find(needle)
    if at < 0:
        return None
    body = decode(memoryview(line)[at + start : end])
    if body is None:
        last = line.rfind(needle)
        if last == at:
            return None
        at = last
        body = decode(memoryview(line)[at + start : end])
        if body is None:
            return None
    return line[:at] + b',"body":null}', body


def _array(text: memoryview) -> bytes | None:
    return decode_byte_array(text)


def _b64_or_none(text: memoryview) -> bytes | None:
    try:
        return decode_base64_body(text)
    except RemoteProtocolError:
        return None


def read_http_request_line(line: bytes, *, base64_bodies: bool = False) -> HttpRequest | None:
    """Return the :class:`HttpRequest` of a canonical ``http_request`` line, else None.

    :func:`decode_http_request_line` extended to bodies of any size and, with
    ``base64_bodies``, to base64 bodies: a body of a line longer than a few KiB (or a base64
    one) is cut out with :func:`split_body` and decoded on its own. None means "not
    recognised here": decode the line with :func:`decode_orchestrator_to_module`. Never raises.
    """
    if len(line) < _SPLIT_MIN and not base64_bodies:
        return decode_http_request_line(line)
    if not line.startswith(_HTTP_REQUEST_START):
        return None
    split = split_body(line, base64_bodies)
    if split is None:
        return decode_http_request_line(line)
    msg = decode_http_request_line(split[0])
    if msg is None:
        return None
    return trusted_http_request(msg.request_id, msg.method, msg.uri, msg.headers, split[1])


def body_json(body: bytes | None, base64: bool) -> bytes:
    """Return the JSON text of an http body: ``null``, the byte array, or (``base64``) the
    base64 string in quotes. Never raises for bytes or None."""
    if body is None:
        return b"null"
    if base64:
        return b'"' + encode_base64_body(body) + b'"'
    return encode_byte_array(body)


def _line_too_long(size: int, max_line_size: int) -> LocalProtocolError:
    return LocalProtocolError(
        f"line of {size} bytes exceeds the maximum line size of {max_line_size}",
        error_status_hint=413,
    )


def _spliced(
    prefix: str, body: bytes | None, base64: bool, suffix: str, max_line_size: int
) -> bytes:
    """``prefix + body_json(body, base64) + suffix + "\\n"`` as bytes, refused past
    ``max_line_size``; the body's bytes are copied once (into the line)."""
    if body is None:
        head, payload, tail = _utf8(prefix + "null" + suffix), b"", b""
    elif base64:
        head, payload, tail = _utf8(prefix + '"'), encode_base64_body(body), _utf8('"' + suffix)
    else:
        head, payload, tail = _utf8(prefix), encode_byte_array(body), _utf8(suffix)
    size = len(head) + len(payload) + len(tail)
    if size > max_line_size:
        raise _line_too_long(size, max_line_size)
    return b"".join((head, payload, tail, b"\n"))


def http_request_line(
    msg: HttpRequest, *, base64_bodies: bool = False, max_line_size: int = DEFAULT_MAX_LINE_SIZE
) -> bytes:
    """Return ``msg`` as one stdio line (with its newline), the body in the connection's form.

    Without ``base64_bodies`` the bytes are ``encode(msg) + b"\\n"``. Raises
    LocalProtocolError (status hint 413, nothing built past the check) when the line would
    exceed ``max_line_size``, or for a string that cannot be UTF-8 encoded.
    """
    text = _e_http_request(_replace(msg, body=None)) if msg.body is not None else None
    if text is None:
        return _spliced(_e_http_request(msg)[:-5], None, False, "}", max_line_size)
    return _spliced(text[:-5], msg.body, base64_bodies, "}", max_line_size)  # ..."body":null}


def http_response_line(
    request_id_json: str,
    status_code: int,
    headers_json: str,
    body: bytes | None,
    wrapper_id: str | None,
    source_json: str,
    *,
    base64_bodies: bool = False,
    max_line_size: int = DEFAULT_MAX_LINE_SIZE,
) -> bytes:
    """Return :func:`http_response_text` of these parts as one stdio line, body in its form.

    The same checked-by-the-caller parts as :func:`http_response_text`; the body is
    written as a byte array or (``base64_bodies``) a base64 string, spliced into the text
    rendered around it. Raises LocalProtocolError (status hint 413) when the line would
    exceed ``max_line_size`` -- the caller answers 500 instead -- or for a lone surrogate.
    """
    text = http_response_text(
        request_id_json, status_code, headers_json, None, wrapper_id, source_json
    )
    if wrapper_id is None:  # ..."body":null}
        return _spliced(text[:-5], body, base64_bodies, "}", max_line_size)
    start = len(_WRAPPER_BODY)  # {"content":{"body":null,...
    return _spliced(text[:start], body, base64_bodies, text[start + 4 :], max_line_size)
