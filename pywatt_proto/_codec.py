"""Encode and decode PyWatt messages as serde_json does.

Strategy: :func:`pywatt_proto._json.loads` turns text into plain Python values with
serde's lexical rules. Each struct is then described once, by a :class:`_Shape` (its
fields in the reference's declaration order, each with a kind and serde's presence rule),
which drives both directions: the decoder checks an object the way
``#[derive(Deserialize)]`` would (required fields, ``Option`` fields where a missing key
and ``null`` both mean None, strict integer types, duplicate *known* fields rejected,
unknown fields ignored) and the encoder writes it, ``op`` first, ``null`` or omission as
the reference's ``skip_serializing_if`` attributes say. The per-request messages are the
exceptions: ``http_request`` is read and written by hand (its canonical line by one regular
expression, :func:`decode_http_request_line`), and ``http_response`` is written by the one
encoder :func:`http_response_text`.

Deliberate differences from serde are listed in ``spec/deviations.md``:
``identify`` carries ``module_id`` and round-trips, and positional (array)
forms of structs and tagged enums are rejected.

Every decoder raises :class:`RemoteProtocolError` with ``field`` set to the dotted
path of the offending field; every encoder raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from ._bodies import (
    decode_base64_body,
    decode_byte_array,
    encode_base64_body,
    encode_byte_array,
    scan_plain,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._formats import EncodingFormat
from ._framing import DEFAULT_MAX_LINE_SIZE
from ._json import MAX_DEPTH, DupDict, dump_bytes, dump_str, dump_value, loads, normalize_value
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
    ListenAddress,
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
    TcpListen,
    parse_listen_address,
    parse_socket_address,
    trusted_http_request,
)
from ._records import replace as _replace

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    import uuid
    from typing import Any, Literal, NoReturn, TypeAlias

#: JSON key of ``Init.extensions`` / ``Announce.extensions`` (omitted when empty).
EXTENSIONS_KEY = "pywatt_extensions"
#: Member of routed_module_response marking a failed module call (spec/modules.md section 5).
ROUTE_ERROR_KEY = "pywatt_error"

#: What ``decode_envelope`` expects as the envelope's content.
if TYPE_CHECKING:
    EnvelopeContent: TypeAlias = Literal["json", "module_to_orchestrator", "orchestrator_to_module"]
    _Obj: TypeAlias = dict[str, Any]
    # A field kind: the value's decoder ``(value, path) -> value`` and its encoder.
    _Kind: TypeAlias = tuple[Callable[[Any, str], Any], Callable[[Any], str]]
    _Field: TypeAlias = tuple[str, str, _Kind, str]  # wire key, attribute, kind, presence
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


def _bool(v: Any, path: str) -> bool:
    if v is True or v is False:
        return v
    raise _invalid(path, v, "a boolean")


def _int_in(what: str, low: int, high: int) -> Callable[[Any, str], int]:
    """The decoder of a Rust integer type ``what`` (``u16``, ``i64``): an int in low..high."""

    def decode(v: Any, path: str) -> int:
        if type(v) is not int:
            raise _invalid(path, v, what)
        if not low <= v <= high:
            raise _err(path, f"invalid value: integer `{v}`, expected {what}")
        return v

    return decode


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


def _unit_enum(v: Any, path: str, names: dict[str, Any]) -> Any:
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
        raise _unknown_variant(path, key, names) from None


def _unknown_variant(path: str, name: str, names: Iterable[str]) -> RemoteProtocolError:
    expected = ", ".join(f"`{n}`" for n in names)
    return _err(path, f"unknown variant {dump_str(name)}, expected one of {expected}")


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
    return _unit_enum(v, path, _SERVICE_UNITS)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# message shapes: one table per struct drives its decoder and its encoder
# ---------------------------------------------------------------------------


def _bytes_or_base64(v: Any, path: str) -> bytes:
    return decode_base64_body(v, path) if type(v) is str else _bytes(v, path)


def _list_of(kind: _Kind) -> _Kind:
    """The kind of a ``Vec<T>`` of ``kind`` items (a tuple in Python)."""
    item_decode, item_encode = kind

    def decode(v: Any, path: str) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _invalid(path, v, "a sequence")
        return tuple([item_decode(x, f"{path}[{i}]") for i, x in enumerate(v)])

    return decode, lambda xs: "[" + ",".join(map(item_encode, xs)) + "]"


def _listen(v: Any, path: str) -> ListenAddress:
    if type(v) is not str:
        raise _err(path, "data did not match any variant of untagged enum ListenAddress")
    return parse_listen_address(v)


def _socket_address(v: Any, path: str) -> TcpListen:
    addr = parse_socket_address(_str(v, path))
    if addr is None:
        raise _err(path, "invalid socket address syntax")
    return addr


def _path_str(v: Any, path: str) -> str:
    if type(v) is not str:
        raise _invalid(path, v, "path string")
    return v


def _properties(v: Any, path: str) -> dict[str, JsonValue]:
    if type(v) is not dict and type(v) is not DupDict:
        raise _invalid(path, v, "a map")
    return normalize_value(v)  # type: ignore[no-any-return]


def _e_bool(b: bool) -> str:
    return "true" if b else "false"


def _e_str_map(m: dict[str, str]) -> str:
    return "{" + ",".join([dump_str(k) + ":" + dump_str(v) for k, v in m.items()]) + "}"


def _e_text(v: object) -> str:  # a value whose str() is its wire string (addresses, UUIDs)
    return dump_str(str(v))


def _e_base64(data: bytes) -> str:
    return '"' + encode_base64_body(data).decode("ascii") + '"'


def _e_service_type(st: ServiceType) -> str:
    if st.is_custom:
        return '{"Custom":' + dump_str(st.name) + "}"
    return '"' + st.name + '"'


_STR: _Kind = (_str, dump_str)
_STRS = _list_of(_STR)
_BOOL: _Kind = (_bool, _e_bool)
_U16: _Kind = (_int_in("u16", 0, 65535), str)
_STR_MAP: _Kind = (_str_map, _e_str_map)
_VALUE: _Kind = (_value, dump_value)
_UUID: _Kind = (_uuid, _e_text)
_SERVICE: _Kind = (_service_type, _e_service_type)
_FORMAT: _Kind = (
    lambda v, path: _unit_enum(v, path, _FORMATS),
    lambda f: '"' + f.wire_name + '"',
)
_SECURITY_LEVEL: _Kind = (
    lambda v, path: _unit_enum(v, path, _SECURITY),
    lambda s: '"' + s.value + '"',
)

# A field's presence, as the reference's serde attributes say:
_REQUIRED = "required"  # missing is an error
_OPTIONAL = "optional"  # Option<T>: missing or null is None; None is written null
_SKIPPED = "skipped"  # ... and skip_serializing_if: None (or no extensions) is not written
_DEFAULT = "default"  # #[serde(default)]: missing takes the default, null is an error


def _f(key: str, kind: _Kind, presence: str = _REQUIRED, attr: str | None = None) -> _Field:
    return (key, attr or key, kind, presence)


class _Shape:
    """One struct as serde reads and writes it: its fields in declaration (wire) order.

    ``op``: the message's tag, or "" for a part (a struct inside a message).

    ``decode`` checks an object the way ``#[derive(Deserialize)]`` does (duplicate known
    fields, missing required ones, each value by its kind; unknown fields ignored) and builds
    the class; ``encode`` writes it (``op`` first for a message). ``decode``/``encode`` given
    to the constructor replace the table-driven ones (the per-request http messages).
    """

    __slots__ = ("cls", "decode", "encode", "fields", "known", "op", "what")

    def __init__(
        self,
        cls: type,
        op: str,
        *fields: _Field,
        what: str | None = None,
        decode: Callable[[Any], Any] | None = None,
        encode: Callable[[Any], str] | None = None,
    ) -> None:
        self.cls = cls
        self.op = op
        self.fields = fields
        self.what = what or cls.__name__
        self.known = frozenset([f[0] for f in fields] + (["op"] if op else []))
        self.decode: Callable[..., Any] = decode or self._decode
        self.encode: Callable[[Any], str] = encode or self._encode

    def kind(self) -> _Kind:
        return (self.decode, self.encode)

    def replacing(self, old: _Kind, new: _Kind) -> _Shape:
        """The same shape with every field of kind ``old`` of kind ``new``."""
        fields = [(k, a, new if kind is old else kind, p) for k, a, kind, p in self.fields]
        return _Shape(self.cls, self.op, *fields, what=self.what)

    def _decode(self, v: Any, path: str = "") -> Any:
        o = _struct(v, path, self.what, self.known)
        kwargs = {}
        for key, attr, (decode, _), presence in self.fields:
            p = _sub(path, key)
            if presence is _REQUIRED:
                kwargs[attr] = decode(_req(o, key, p), p)
            elif presence is _DEFAULT:
                if key in o:
                    kwargs[attr] = decode(o[key], p)
            else:
                x = o.get(key)
                if x is not None:
                    kwargs[attr] = decode(x, p)
        try:
            return self.cls(**kwargs)
        except LocalProtocolError as exc:  # a rule of the class's own (the kinds check types)
            raise RemoteProtocolError(exc.message, field=_sub(path, exc.field or "")) from None

    def _encode(self, m: Any) -> str:
        parts = [f'"op":"{self.op}"'] if self.op else []
        for key, attr, (_, encode), presence in self.fields:
            x = getattr(m, attr)
            if presence is _SKIPPED and (x is None or x == ()):
                continue
            parts.append(f'"{key}":' + ("null" if x is None else encode(x)))
        return "{" + ",".join(parts) + "}"


_BYTES: _Kind = (_bytes, dump_bytes)
_ENCODED = _Shape(EncodedMessage, "", _f("data", _BYTES), _f("format", _FORMAT))
_PAYLOAD = _ENCODED.kind()
# base64_bodies: module-call payloads and http bodies travel as base64 strings
_BYTES_B64: _Kind = (_bytes_or_base64, _e_base64)
_PAYLOAD_B64 = _ENCODED.replacing(_BYTES, _BYTES_B64).kind()
_ENDPOINT = _Shape(
    Endpoint,
    "",
    _f("path", _STR),
    _f("methods", _STRS),
    _f("auth", _STR, _SKIPPED),
    what="EndpointAnnounce",
)
_PROVIDER = _Shape(
    ServiceProviderInfo,
    "",
    _f("provider_id", _STR),
    _f("module_id", _STR),
    _f("service_type", _SERVICE),
    _f("name", _STR),
    _f("version", _STR, _OPTIONAL),
    _f("address", _STR),
    _f("metadata", _STR_MAP),
    _f("is_healthy", _BOOL),
)
_ROUTE_ERROR = _Shape(  # spec/modules.md section 5
    RouteError, "", _f("kind", _STR), _f("message", _STR), _f("status", _U16, _SKIPPED)
)
_TCP_CHANNEL = _Shape(
    TcpChannelConfig,
    "",
    _f("address", (_socket_address, _e_text)),
    _f("tls_enabled", _BOOL),
    _f("required", _BOOL),
)
_IPC_CHANNEL = _Shape(
    IpcChannelConfig, "", _f("socket_path", (_path_str, dump_str)), _f("required", _BOOL)
)
_METADATA = _Shape(
    MessageMetadata,
    "",
    _f("id", _STR, _SKIPPED),
    _f("timestamp", (_int_in("i64", -(2**63), 2**63 - 1), str), _SKIPPED),
    _f("source", _STR, _SKIPPED),
    _f("destination", _STR, _SKIPPED),
    _f("properties", (_properties, dump_value), _SKIPPED),
)
_EXTENSIONS = _f(EXTENSIONS_KEY, _STRS, _SKIPPED, "extensions")
_ROUTE_TO_MODULE = _Shape(
    RouteToModule,
    "route_to_module",
    _f("target_module_id", _STR),
    _f("target_endpoint", _STR),
    _f("request_id", _UUID),
    _f("payload", _PAYLOAD),
)
_ROUTED_MESSAGE = _Shape(
    RoutedModuleMessage,
    "routed_module_message",
    _f("source_module_id", _STR),
    _f("original_request_id", _UUID),
    _f("payload", _PAYLOAD),
)
_ROUTED_RESPONSE = _Shape(
    RoutedModuleResponse,
    "routed_module_response",
    _f("source_module_id", _STR),
    _f("request_id", _UUID),
    _f("payload", _PAYLOAD),
    _f(ROUTE_ERROR_KEY, _ROUTE_ERROR.kind(), _SKIPPED, "error"),
)
_INIT = _Shape(
    Init,
    "init",
    _f("orchestrator_api", _STR),
    _f("module_id", _STR),
    _f("env", _STR_MAP),
    _f("listen", (_listen, _e_text)),
    _f("tcp_channel", _TCP_CHANNEL.kind(), _SKIPPED),
    _f("ipc_channel", _IPC_CHANNEL.kind(), _SKIPPED),
    _f("auth_token", _STR, _SKIPPED),
    _f("security_level", _SECURITY_LEVEL, _DEFAULT),
    _EXTENSIONS,
)


# ---------------------------------------------------------------------------
# http_request: read and written by hand (the module link's hot path)
# ---------------------------------------------------------------------------


def _body(v: Any, base64: bool) -> bytes | None:
    """An http body: null, the reference's byte array, or (``base64``) a base64 string."""
    if v is None:
        return None
    if base64 and type(v) is str:
        return decode_base64_body(v, "body")
    return _bytes(v, "body")


_F_HTTP_REQUEST = frozenset(("op", "request_id", "method", "uri", "headers", "body"))


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
        headers = scan_plain(headers_text, 0)[0]  # serde's HashMap: last duplicate wins
        body = None if body_text == "null" else bytes(scan_plain(body_text, 0)[0])
    except (ValueError, StopIteration):  # body: leading zeros, empty items, > 255, huge ints
        return None
    return trusted_http_request(request_id, method, uri, headers, body)


def _e_http_request(m: HttpRequest) -> str:
    body = "null" if m.body is None else dump_bytes(m.body)
    return (
        f'{{"op":"http_request","request_id":{dump_str(m.request_id)},'
        f'"method":{dump_str(m.method)},"uri":{dump_str(m.uri)},'
        f'"headers":{_e_str_map(m.headers)},"body":{body}}}'
    )


def _e_http_response(m: HttpResponse) -> str:
    return http_response_text(
        dump_str(m.request_id), m.status_code, encode_headers(m.headers), m.body, None, ""
    )


_HTTP_RESPONSE = _Shape(
    HttpResponse,
    "http_response",
    _f("request_id", _STR),
    _f("status_code", _U16),
    _f("headers", _STR_MAP),
    _f("body", _BYTES, _OPTIONAL),
    encode=_e_http_response,  # the one http_response encoder (below)
)
_HTTP_RESPONSE_B64 = _HTTP_RESPONSE.replacing(_BYTES, _BYTES_B64)

# The two enums, variants in the reference's order (the order "unknown variant" lists them).
_MODULE_TO_ORCHESTRATOR = (
    _Shape(Identify, "identify", _f("module_id", _STR)),
    _Shape(
        Announce,
        "announce",
        _f("listen", _STR),
        _f("endpoints", _list_of(_ENDPOINT.kind())),
        _EXTENSIONS,
    ),
    _Shape(GetSecret, "get_secret", _f("name", _STR)),
    _Shape(
        RotationAck,
        "rotation_ack",
        _f("rotation_id", _STR),
        _f("status", _STR),
        _f("message", _STR, _SKIPPED),
    ),
    _Shape(
        RegisterServiceProvider,
        "register_service_provider",
        _f("service_type", _SERVICE),
        _f("name", _STR),
        _f("version", _STR, _OPTIONAL),
        _f("address", _STR),
        _f("metadata", _STR_MAP, _OPTIONAL),
    ),
    _Shape(
        DiscoverServiceProviders,
        "discover_service_providers",
        _f("service_type", _SERVICE),
        _f("all_providers", _BOOL, _OPTIONAL),
    ),
    _Shape(
        ServiceRequest,
        "service_request",
        _f("id", _STR),
        _f("service_type", _SERVICE),
        _f("config", _VALUE, _OPTIONAL),
    ),
    _Shape(
        ServiceOperation,
        "service_operation",
        _f("connection_id", _STR),
        _f("service_type", _SERVICE),
        _f("operation", _STR),
        _f("params", _VALUE),
    ),
    _HTTP_RESPONSE,
    _Shape(
        PortRequest,
        "port_request",
        _f("request_id", _STR),
        _f("specific_port", _U16, _OPTIONAL),
    ),
    _ROUTE_TO_MODULE,
    _Shape(HeartbeatAck, "heartbeat_ack"),
)
_ORCHESTRATOR_TO_MODULE = (
    _INIT,
    _Shape(
        Secret,
        "secret",
        _f("name", _STR),
        _f("value", _STR),
        _f("rotation_id", _STR, _SKIPPED),
    ),
    _Shape(Rotated, "rotated", _f("keys", _STRS), _f("rotation_id", _STR)),
    _Shape(Shutdown, "shutdown"),
    _Shape(
        RegisterServiceProviderResponse,
        "register_service_provider_response",
        _f("success", _BOOL),
        _f("provider_id", _STR, _OPTIONAL),
        _f("error", _STR, _OPTIONAL),
    ),
    _Shape(
        DiscoverServiceProvidersResponse,
        "discover_service_providers_response",
        _f("success", _BOOL),
        _f("providers", _list_of(_PROVIDER.kind())),
        _f("error", _STR, _OPTIONAL),
    ),
    _Shape(
        ServiceResponse,
        "service_response",
        _f("id", _STR),
        _f("service_type", _SERVICE),
        _f("success", _BOOL),
        _f("error", _STR, _OPTIONAL),
        _f("connection_id", _STR, _OPTIONAL),
    ),
    _Shape(
        ServiceOperationResult,
        "service_operation_result",
        _f("success", _BOOL),
        _f("result", _VALUE, _OPTIONAL),
        _f("error", _STR, _OPTIONAL),
    ),
    _Shape(HttpRequest, "http_request", decode=_d_http_request, encode=_e_http_request),
    _Shape(
        PortResponse,
        "port_response",
        _f("request_id", _STR),
        _f("success", _BOOL),
        _f("port", _U16),
        _f("error_message", _STR, _OPTIONAL),
    ),
    _ROUTED_MESSAGE,
    _ROUTED_RESPONSE,
    _Shape(Heartbeat, "heartbeat"),
)
_M2O: dict[str, Callable[[_Obj], Any]] = {s.op: s.decode for s in _MODULE_TO_ORCHESTRATOR}
_O2M: dict[str, Callable[[_Obj], Any]] = {s.op: s.decode for s in _ORCHESTRATOR_TO_MODULE}
_ENCODERS: dict[type, Callable[[Any], str]] = {
    s.cls: s.encode for s in (*_MODULE_TO_ORCHESTRATOR, *_ORCHESTRATOR_TO_MODULE)
}

# The same for a connection using base64_bodies: http bodies and module-call payloads may be
# (and are written as) base64 strings.
_B64_PAYLOAD_SHAPES = {
    s.cls: s.replacing(_PAYLOAD, _PAYLOAD_B64)
    for s in (_ROUTE_TO_MODULE, _ROUTED_MESSAGE, _ROUTED_RESPONSE)
}
_M2O_B64: dict[str, Callable[[_Obj], Any]] = {
    **_M2O,
    "http_response": _HTTP_RESPONSE_B64.decode,
    "route_to_module": _B64_PAYLOAD_SHAPES[RouteToModule].decode,
}
_O2M_B64: dict[str, Callable[[_Obj], Any]] = {
    **_O2M,
    "http_request": lambda o: _d_http_request(o, True),
    "routed_module_message": _B64_PAYLOAD_SHAPES[RoutedModuleMessage].decode,
    "routed_module_response": _B64_PAYLOAD_SHAPES[RoutedModuleResponse].decode,
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
        raise _unknown_variant("op", op, table)
    return decoder(obj)


def _in_content(exc: RemoteProtocolError) -> RemoteProtocolError:
    """``exc``, raised for a message inside an envelope's or wrapper's ``content``."""
    field = f"content.{exc.field}" if exc.field else "content"
    return RemoteProtocolError(f"content: {exc.message}", field=field)


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
        return _tagged(obj, {"init": _INIT.decode}, "InitBlob")  # type: ignore[no-any-return]
    if not isinstance(obj, dict):
        raise _invalid("", obj, "struct InitBlob")
    return _INIT.decode(obj)  # type: ignore[no-any-return]


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
        shape = _HTTP_RESPONSE_B64 if base64 else _HTTP_RESPONSE
        content = _struct(obj["content"], "content", "IpcHttpResponse", shape.known)
        if "metadata" in obj:
            _METADATA.decode(obj["metadata"], "metadata")
        if "op" in content and content["op"] != "http_response":
            raise _err("content.op", "expected `http_response` inside the response wrapper")
        try:
            return shape.decode(content)  # type: ignore[no-any-return]
        except RemoteProtocolError as exc:
            raise _in_content(exc) from None
    table = _M2O_B64 if base64 else _M2O
    return _tagged(obj, table, "ModuleToOrchestrator")  # type: ignore[no-any-return]


def decode_encoded_message(data: _Input) -> EncodedMessage:
    """Decode a standalone ``{"data": [ints], "format": "Json"}`` object.

    Returns the :class:`EncodedMessage`; raises RemoteProtocolError on any error.
    """
    return _ENCODED.decode(loads(data))  # type: ignore[no-any-return]


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
    msg_id = _uuid(_req(o, "id", "id"), "id")
    raw = _req(o, "content", "content")
    metadata = _METADATA.decode(o["metadata"], "metadata") if "metadata" in o else MessageMetadata()
    body: Any
    if content == "json":
        body = _value(raw, "content")  # a JSON value loads() read: one Message accepts
    else:
        table = _M2O if content == "module_to_orchestrator" else _O2M
        try:
            body = _tagged(raw, table, "message")
        except RemoteProtocolError as exc:
            raise _in_content(exc) from None
    return Message(id=msg_id, content=body, metadata=metadata)


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


def encode_route_error(err: RouteError) -> str:
    """Return the wire text of ``err``: ``{"kind":..,"message":..}`` plus ``"status"`` when
    set (spec/modules.md section 5). Never raises for a valid RouteError."""
    return _ROUTE_ERROR.encode(err)


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

    ``base64_bodies``: write the body of an ``http_request`` / ``http_response`` and the
    payload of a module call as a base64 string (the ``base64_bodies`` extension).
    Raises LocalProtocolError if ``msg`` is not a message object, or a string in it
    cannot be UTF-8 encoded (lone surrogates).
    """
    if base64_bodies:
        if isinstance(msg, HttpRequest | HttpResponse) and msg.body is not None:
            text = encode(_replace(msg, body=None))[:-5]  # ..."body":null}
            return text + b'"' + encode_base64_body(msg.body) + b'"}'
        shape = _B64_PAYLOAD_SHAPES.get(type(msg))
        if shape is not None:
            return _utf8(shape.encode(msg))
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise LocalProtocolError(f"{type(msg).__name__} is not a PyWatt message")
    return _utf8(encoder(msg))


def encode_encoded_message(em: EncodedMessage) -> bytes:
    """Return ``{"data":[...],"format":"..."}`` for ``em``. Raises LocalProtocolError if
    ``em`` is not an :class:`EncodedMessage`."""
    if type(em) is not EncodedMessage:
        raise LocalProtocolError(f"{type(em).__name__} is not an EncodedMessage")
    return _ENCODED.encode(em).encode("ascii")


def encode_envelope(msg: Message) -> bytes:
    """Return the ``Message<T>`` envelope as serde writes it (``id``, ``content``, ``metadata``).

    ``content`` is written as a tagged message when it is a message object, else as a
    JSON value (object keys sorted). Raises LocalProtocolError for invalid content, or
    nesting deeper than :data:`~pywatt_proto._json.MAX_DEPTH` levels in all.
    """
    if type(msg) is not Message:
        raise LocalProtocolError(f"{type(msg).__name__} is not a Message")
    encoder = _ENCODERS.get(type(msg.content))
    content = encoder(msg.content) if encoder is not None else dump_value(msg.content)
    metadata = _METADATA.encode(msg.metadata)
    line = _utf8(f'{{"id":"{msg.id}","content":{content},"metadata":{metadata}}}')
    # A message's JSON values (and the metadata's properties) sit one level deeper here than
    # in a bare message: read the line back when it could pass serde's 127-level limit.
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH:
        try:
            loads(line)
        except RemoteProtocolError:
            raise LocalProtocolError(
                f"envelope nests deeper than {MAX_DEPTH} levels (serde_json cannot read it)"
            ) from None
    return line


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
        needle, start, end, decode = (
            _BODY_LAST_ARRAY,
            len(_BODY_LAST_ARRAY) - 1,
            -1,
            decode_byte_array,
        )
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


def _b64_or_none(text: bytes | bytearray | memoryview) -> bytes | None:
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


def _spliced(
    prefix: str, body: bytes | None, base64: bool, suffix: str, max_line_size: int
) -> bytes:
    """``prefix + <body as JSON> + suffix + "\\n"`` as bytes, refused past ``max_line_size``
    (hint 413); the body's bytes are copied once (into the line)."""
    if body is None:
        head, payload, tail = _utf8(prefix + "null" + suffix), b"", b""
    elif base64:
        head, payload, tail = _utf8(prefix + '"'), encode_base64_body(body), _utf8('"' + suffix)
    else:
        head, payload, tail = _utf8(prefix), encode_byte_array(body), _utf8(suffix)
    size = len(head) + len(payload) + len(tail)
    if size > max_line_size:
        raise LocalProtocolError(
            f"line of {size} bytes exceeds the maximum line size of {max_line_size}",
            error_status_hint=413,
        )
    return b"".join((head, payload, tail, b"\n"))


def http_request_line(
    msg: HttpRequest, *, base64_bodies: bool = False, max_line_size: int = DEFAULT_MAX_LINE_SIZE
) -> bytes:
    """Return ``msg`` as one stdio line (with its newline), the body in the connection's form.

    Without ``base64_bodies`` the bytes are ``encode(msg) + b"\\n"``. Raises
    LocalProtocolError (status hint 413, nothing built past the check) when the line would
    exceed ``max_line_size``, or for a string that cannot be UTF-8 encoded.
    """
    text = _e_http_request(msg if msg.body is None else _replace(msg, body=None))
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
