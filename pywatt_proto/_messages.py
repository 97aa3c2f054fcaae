"""Typed messages of the PyWatt module protocol.

One frozen, slotted, keyword-only record (:func:`~pywatt_proto._records.record`, a cheap
``@dataclass(frozen=True, slots=True, kw_only=True)``) per ``op`` of the reference
``ModuleToOrchestrator`` / ``OrchestratorToModule`` enums, plus the parts they are
made of (init blob pieces, endpoints, service types, the ``Message`` envelope and
``EncodedMessage``).  Field names are the wire names; field order is the order in
which the reference declares (and serde writes) them.

Every class validates itself in ``__post_init__`` and raises
:class:`LocalProtocolError` naming the offending field, so an invalid message
cannot exist.  A few fields are normalised on construction (documented per
class): sequences become tuples, mappings become plain ``dict`` objects, and IP
literals become their canonical text.  Equality is plain ``==``; classes holding
a ``dict`` (headers, env, JSON values) are not hashable, as with any dict.

Rust types map to Python types as follows: ``String``/``PathBuf`` -> ``str``,
``u16``/``i64`` -> ``int`` (range checked), ``Vec<u8>`` -> ``bytes``,
``Vec<String>`` -> ``tuple[str, ...]``, ``HashMap<String, String>`` ->
``dict[str, str]``, ``serde_json::Value`` -> :data:`JsonValue`, ``Uuid`` ->
:class:`uuid.UUID`, ``Option<T>`` -> ``T | None``.
"""

from __future__ import annotations

import enum
import sys

from ._errors import LocalProtocolError
from ._formats import EncodingFormat
from ._records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and uuid are not imported at run time (start-up cost)
    import uuid
    from typing import ClassVar, TypeAlias

#: Any JSON value, as ``serde_json::Value`` holds it. Integers must fit i64 or u64.
JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1

# Nesting a JSON value may have: serde's reader stops at 128 levels and the message
# object around a value is one level, so a deeper value could be written but never
# read back by a serde peer.
MAX_JSON_VALUE_DEPTH = 126


# ---------------------------------------------------------------------------
# field validators (all raise LocalProtocolError naming the field)
# ---------------------------------------------------------------------------


def _fail(field_name: str, problem: str) -> LocalProtocolError:
    return LocalProtocolError(f"{field_name}: {problem}", field=field_name)


def _tname(value: object) -> str:
    return type(value).__name__


def _str(field_name: str, value: object) -> None:
    if type(value) is not str:
        raise _fail(field_name, f"expected str, got {_tname(value)}")


def _opt_str(field_name: str, value: object) -> None:
    if value is not None and type(value) is not str:
        raise _fail(field_name, f"expected str or None, got {_tname(value)}")


def _bool(field_name: str, value: object) -> None:
    if type(value) is not bool:
        raise _fail(field_name, f"expected bool, got {_tname(value)}")


def _u16(field_name: str, value: object) -> None:
    if type(value) is not int:
        raise _fail(field_name, f"expected int (u16), got {_tname(value)}")
    if not 0 <= value <= 65535:
        raise _fail(field_name, f"{value} is out of range 0..65535")


def _opt_bytes(field_name: str, value: object) -> None:
    if value is not None and type(value) is not bytes:
        raise _fail(field_name, f"expected bytes or None, got {_tname(value)}")


def _typed(field_name: str, value: object, cls: type, optional: bool = False) -> None:
    if type(value) is not cls and not (optional and value is None):
        raise _fail(field_name, f"expected {cls.__name__}, got {_tname(value)}")


def _tuple_of(obj: object, field_name: str, value: object, cls: type = str) -> None:
    """Check a tuple of ``cls`` items; a list is stored as a tuple."""
    if type(value) is list:
        value = tuple(value)
        object.__setattr__(obj, field_name, value)
    if type(value) is not tuple:
        raise _fail(field_name, f"expected a tuple of {cls.__name__}, got {_tname(value)}")
    for i, item in enumerate(value):
        if type(item) is not cls:
            raise _fail(f"{field_name}[{i}]", f"expected {cls.__name__}, got {_tname(item)}")


def _str_map(obj: object, field_name: str, value: object) -> None:
    if type(value) is not dict:
        from collections.abc import Mapping

        if not isinstance(value, Mapping):
            raise _fail(field_name, f"expected a mapping of str to str, got {_tname(value)}")
        value = dict(value)
        object.__setattr__(obj, field_name, value)
    for k, v in value.items():
        if type(k) is not str:
            raise _fail(field_name, f"key {k!r} is not a str")
        if type(v) is not str:
            raise _fail(f"{field_name}[{k!r}]", f"expected str, got {_tname(v)}")


def _opt_str_map(obj: object, field_name: str, value: object) -> None:
    if value is not None:
        _str_map(obj, field_name, value)


def _uuid(field_name: str, value: object) -> None:
    # Only a uuid.UUID passes, and one cannot exist before its module is loaded, so the
    # check never needs to import uuid itself.
    uuid_module = sys.modules.get("uuid")
    if uuid_module is None or type(value) is not uuid_module.UUID:
        raise _fail(field_name, f"expected uuid.UUID, got {_tname(value)}")


def check_json_value(field_name: str, value: object, depth: int = 0) -> None:
    """Check that ``value`` is a :data:`JsonValue`; raise LocalProtocolError naming the field.

    Returns None. Lists and dicts are walked recursively; integers must fit i64 or u64;
    floats may be NaN or infinite (serde writes those as ``null``).
    """
    t = type(value)
    if value is None or t is str or t is bool or t is float:
        return
    if isinstance(value, int):
        if not _I64_MIN <= value <= _U64_MAX:
            raise _fail(field_name, f"integer {value} does not fit i64 or u64")
        return
    if depth >= MAX_JSON_VALUE_DEPTH:
        raise _fail(field_name, f"JSON value nested deeper than {MAX_JSON_VALUE_DEPTH}")
    if t is list and isinstance(value, list):
        for i, item in enumerate(value):
            check_json_value(f"{field_name}[{i}]", item, depth + 1)
        return
    if t is dict and isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                raise _fail(field_name, f"object key {k!r} is not a str")
            check_json_value(f"{field_name}[{k!r}]", v, depth + 1)
        return
    raise _fail(field_name, f"{t.__name__} is not a JSON value")


# ---------------------------------------------------------------------------
# addresses (Rust std SocketAddr semantics)
# ---------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdefABCDEF")
_DEC = frozenset("0123456789")


def _parse_ipv4(text: str) -> tuple[int, int, int, int] | None:
    """Parse a dotted quad as Rust's ``Ipv4Addr::from_str`` does (no leading zeros)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    out = []
    for p in parts:
        if not 1 <= len(p) <= 3 or not _DEC.issuperset(p):
            return None
        if len(p) > 1 and p[0] == "0":
            return None
        n = int(p)
        if n > 255:
            return None
        out.append(n)
    return (out[0], out[1], out[2], out[3])


def _parse_groups(text: str, limit: int, allow_v4: bool) -> list[int] | None:
    """Parse colon-separated hex groups (and an optional trailing dotted quad)."""
    if text == "":
        return []
    parts = text.split(":")
    out: list[int] = []
    for i, p in enumerate(parts):
        if i == len(parts) - 1 and "." in p and allow_v4:
            v4 = _parse_ipv4(p)
            if v4 is None:
                return None
            out.append(v4[0] << 8 | v4[1])
            out.append(v4[2] << 8 | v4[3])
        else:
            if not 1 <= len(p) <= 4 or not _HEX.issuperset(p):
                return None
            out.append(int(p, 16))
    if len(out) > limit:
        return None
    return out


def _parse_ipv6(text: str) -> list[int] | None:
    """Parse an IPv6 literal as Rust's ``Ipv6Addr::from_str`` does; return 8 groups."""
    if "::" in text:
        head_text, _, tail_text = text.partition("::")
        if "::" in tail_text:
            return None
        # An embedded IPv4 part is not allowed before "::".
        head = _parse_groups(head_text, 7, allow_v4=False)
        if head is None:
            return None
        tail = _parse_groups(tail_text, 7 - len(head), allow_v4=True)
        if tail is None:
            return None
        return head + [0] * (8 - len(head) - len(tail)) + tail
    groups = _parse_groups(text, 8, allow_v4=True)
    if groups is None or len(groups) != 8:
        return None
    return groups


def _format_ipv6(groups: list[int]) -> str:
    """Format 8 groups as Rust's ``Ipv6Addr`` Display does (RFC 5952, ``::ffff:a.b.c.d``)."""
    if groups[:6] == [0, 0, 0, 0, 0, 0xFFFF]:
        g6, g7 = groups[6], groups[7]
        return f"::ffff:{g6 >> 8}.{g6 & 255}.{g7 >> 8}.{g7 & 255}"
    best_start, best_len, cur_start, cur_len = 0, 0, 0, 0
    for i, g in enumerate(groups):
        if g == 0:
            if cur_len == 0:
                cur_start = i
            cur_len += 1
            if cur_len > best_len:
                best_start, best_len = cur_start, cur_len
        else:
            cur_len = 0
    if best_len > 1:
        before = ":".join(f"{g:x}" for g in groups[:best_start])
        after = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
        return f"{before}::{after}"
    return ":".join(f"{g:x}" for g in groups)


def _parse_decimal(text: str, maximum: int) -> int | None:
    """Parse unsigned decimal digits (leading zeros allowed, no sign) bounded by ``maximum``."""
    if not text or not _DEC.issuperset(text):
        return None
    n = int(text)
    return n if n <= maximum else None


def _canonical_v6(host: str) -> str | None:
    """Return the canonical text of ``v6[%scope]`` (numeric zone, 0 dropped), else None."""
    addr, sep, scope_text = host.partition("%")
    groups = _parse_ipv6(addr)
    if groups is None:
        return None
    text = _format_ipv6(groups)
    if sep:
        scope = _parse_decimal(scope_text, _U32_MAX)
        if scope is None:
            return None
        if scope != 0:
            text = f"{text}%{scope}"
    return text


def _canonical_host(host: str) -> str | None:
    """Return the canonical text of an IP literal host (``a.b.c.d`` or ``v6[%scope]``)."""
    v4 = _parse_ipv4(host)
    if v4 is not None:
        return ".".join(map(str, v4))
    return _canonical_v6(host)


def parse_socket_address(text: str) -> TcpListen | None:
    """Parse ``ip:port`` / ``[v6%scope]:port`` exactly as Rust's ``SocketAddr::from_str``.

    Returns a canonical :class:`TcpListen`, or None if ``text`` is not a socket
    address (hostnames, missing or out-of-range ports, IPv4 octets with leading
    zeros, named IPv6 zones, and so on).
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            return None
        host = _canonical_v6(text[1:close])
        port_text = text[close + 2 :]
    else:
        host_text, sep, port_text = text.rpartition(":")
        if not sep:
            return None
        v4 = _parse_ipv4(host_text)
        host = None if v4 is None else ".".join(map(str, v4))
    port = _parse_decimal(port_text, 65535)
    if host is None or port is None:
        return None
    return TcpListen(host=host, port=port)


def parse_listen_address(text: str) -> ListenAddress:
    """Interpret ``text`` as the reference's untagged ``ListenAddress``.

    Returns a :class:`TcpListen` when ``text`` is a socket address, otherwise a
    :class:`UnixListen` holding ``text`` unchanged (so ``"localhost:8080"`` is a path,
    as in the reference).
    """
    tcp = parse_socket_address(text)
    if tcp is not None:
        return tcp
    return UnixListen(path=text)


@record
class TcpListen:
    """A TCP socket address. ``host`` is an IP literal, stored in canonical form.

    ``str()`` gives the wire text: ``"127.0.0.1:4102"`` or ``"[::1]:4102"`` (IPv6
    compressed per RFC 5952, numeric zone kept as ``%3``).
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        _str("host", self.host)
        _u16("port", self.port)
        canonical = _canonical_host(self.host)
        if canonical is None:
            raise _fail("host", f"{self.host!r} is not an IPv4/IPv6 literal")
        if canonical != self.host:
            object.__setattr__(self, "host", canonical)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@record
class UnixListen:
    """A Unix-domain socket path (any string that is not a socket address)."""

    path: str

    def __post_init__(self) -> None:
        _str("path", self.path)

    def __str__(self) -> str:
        return self.path


ListenAddress: TypeAlias = TcpListen | UnixListen


# ---------------------------------------------------------------------------
# small enums and parts
# ---------------------------------------------------------------------------


class SecurityLevel(enum.Enum):
    """Init security level; the value is the wire spelling."""

    NONE = "None"
    TOKEN = "Token"
    MTLS = "Mtls"


_SERVICE_UNIT_NAMES = frozenset({"Database", "Cache", "Jwt"})


@record
class ServiceType:
    """A service kind: ``ServiceType.DATABASE``/``CACHE``/``JWT`` or ``ServiceType.custom(name)``.

    Wire form: ``"Database"``, ``"Cache"``, ``"Jwt"`` or ``{"Custom": name}``.
    ``ServiceType.custom("Database")`` is distinct from ``ServiceType.DATABASE``.
    """

    name: str
    is_custom: bool = False

    DATABASE: ClassVar[ServiceType]
    CACHE: ClassVar[ServiceType]
    JWT: ClassVar[ServiceType]

    def __post_init__(self) -> None:
        _str("name", self.name)
        _bool("is_custom", self.is_custom)
        if not self.is_custom and self.name not in _SERVICE_UNIT_NAMES:
            raise _fail("name", f"{self.name!r} is not Database/Cache/Jwt (use ServiceType.custom)")

    @classmethod
    def custom(cls, name: str) -> ServiceType:
        """Return the custom service type called ``name``."""
        return cls(name=name, is_custom=True)


ServiceType.DATABASE = ServiceType(name="Database")
ServiceType.CACHE = ServiceType(name="Cache")
ServiceType.JWT = ServiceType(name="Jwt")


@record
class Endpoint:
    """An announced HTTP endpoint. ``methods`` lists become tuples."""

    path: str
    methods: tuple[str, ...]
    auth: str | None = None

    def __post_init__(self) -> None:
        _str("path", self.path)
        _tuple_of(self, "methods", self.methods)
        _opt_str("auth", self.auth)


@record
class TcpChannelConfig:
    """Init's ``tcp_channel``: where the framed TCP channel lives (``address`` is ip:port)."""

    address: TcpListen
    tls_enabled: bool
    required: bool

    def __post_init__(self) -> None:
        _typed("address", self.address, TcpListen)
        _bool("tls_enabled", self.tls_enabled)
        _bool("required", self.required)


@record
class IpcChannelConfig:
    """Init's ``ipc_channel``: the Unix-socket framed channel."""

    socket_path: str
    required: bool

    def __post_init__(self) -> None:
        _str("socket_path", self.socket_path)
        _bool("required", self.required)


@record
class EncodedMessage:
    """Raw payload bytes plus their format (wire: ``{"data":[ints],"format":"Json"}``)."""

    data: bytes
    format: EncodingFormat

    def __post_init__(self) -> None:
        _typed("data", self.data, bytes)
        if not isinstance(self.format, EncodingFormat):
            raise _fail("format", f"expected EncodingFormat, got {_tname(self.format)}")


@record
class ServiceProviderInfo:
    """One provider in a ``discover_service_providers_response``."""

    provider_id: str
    module_id: str
    service_type: ServiceType
    name: str
    version: str | None = None
    address: str
    metadata: dict[str, str]
    is_healthy: bool

    def __post_init__(self) -> None:
        _str("provider_id", self.provider_id)
        _str("module_id", self.module_id)
        _typed("service_type", self.service_type, ServiceType)
        _str("name", self.name)
        _opt_str("version", self.version)
        _str("address", self.address)
        _str_map(self, "metadata", self.metadata)
        _bool("is_healthy", self.is_healthy)


# ---------------------------------------------------------------------------
# module -> orchestrator
# ---------------------------------------------------------------------------


@record
class Identify:
    """``{"op":"identify","module_id":...}`` -- a pywatt extension (serde cannot encode it)."""

    module_id: str

    def __post_init__(self) -> None:
        _str("module_id", self.module_id)


@record
class Announce:
    """The module's announcement: where it listens and which endpoints it serves.

    ``listen`` is a plain string on the wire (the reference ``AnnounceBlob`` uses
    ``String``); pass ``str(init.listen)``. ``extensions`` travels as
    ``"pywatt_extensions"`` and is omitted when empty.
    """

    listen: str
    endpoints: tuple[Endpoint, ...]
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _str("listen", self.listen)
        _tuple_of(self, "endpoints", self.endpoints, Endpoint)
        _tuple_of(self, "extensions", self.extensions)


@record
class GetSecret:
    """Ask the orchestrator for the secret ``name``."""

    name: str

    def __post_init__(self) -> None:
        _str("name", self.name)


@record
class RotationAck:
    """Acknowledge a rotation (``status`` is free text; the reference sends "success")."""

    rotation_id: str
    status: str
    message: str | None = None

    def __post_init__(self) -> None:
        _str("rotation_id", self.rotation_id)
        _str("status", self.status)
        _opt_str("message", self.message)


@record
class RegisterServiceProvider:
    """Register this module as a provider of ``service_type``."""

    service_type: ServiceType
    name: str
    version: str | None = None
    address: str
    metadata: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _typed("service_type", self.service_type, ServiceType)
        _str("name", self.name)
        _opt_str("version", self.version)
        _str("address", self.address)
        _opt_str_map(self, "metadata", self.metadata)


@record
class DiscoverServiceProviders:
    """Ask for providers of ``service_type``."""

    service_type: ServiceType
    all_providers: bool | None = None

    def __post_init__(self) -> None:
        _typed("service_type", self.service_type, ServiceType)
        if self.all_providers is not None:
            _bool("all_providers", self.all_providers)


@record
class ServiceRequest:
    """Request a connection to a service; ``config`` is any JSON value (None = null)."""

    id: str
    service_type: ServiceType
    config: JsonValue = None

    def __post_init__(self) -> None:
        _str("id", self.id)
        _typed("service_type", self.service_type, ServiceType)
        check_json_value("config", self.config)


@record
class ServiceOperation:
    """Run ``operation`` on an open service connection; ``params`` is any JSON value."""

    connection_id: str
    service_type: ServiceType
    operation: str
    params: JsonValue

    def __post_init__(self) -> None:
        _str("connection_id", self.connection_id)
        _typed("service_type", self.service_type, ServiceType)
        _str("operation", self.operation)
        check_json_value("params", self.params)


@record
class HttpResponse:
    """The answer to an ``http_request`` (``status_code`` is any u16, as in the reference)."""

    request_id: str
    status_code: int
    headers: dict[str, str]
    body: bytes | None = None

    def __post_init__(self) -> None:
        _str("request_id", self.request_id)
        _u16("status_code", self.status_code)
        _str_map(self, "headers", self.headers)
        _opt_bytes("body", self.body)


@record
class PortRequest:
    """Ask for a port (a specific one, or any when ``specific_port`` is None)."""

    request_id: str
    specific_port: int | None = None

    def __post_init__(self) -> None:
        _str("request_id", self.request_id)
        if self.specific_port is not None:
            _u16("specific_port", self.specific_port)


@record
class RouteToModule:
    """Send ``payload`` to another module's endpoint through the orchestrator."""

    target_module_id: str
    target_endpoint: str
    request_id: uuid.UUID
    payload: EncodedMessage

    def __post_init__(self) -> None:
        _str("target_module_id", self.target_module_id)
        _str("target_endpoint", self.target_endpoint)
        _uuid("request_id", self.request_id)
        _typed("payload", self.payload, EncodedMessage)


@record
class HeartbeatAck:
    """Answer to a ``heartbeat``."""


ModuleToOrchestrator: TypeAlias = (
    Identify
    | Announce
    | GetSecret
    | RotationAck
    | RegisterServiceProvider
    | DiscoverServiceProviders
    | ServiceRequest
    | ServiceOperation
    | HttpResponse
    | PortRequest
    | RouteToModule
    | HeartbeatAck
)


# ---------------------------------------------------------------------------
# orchestrator -> module
# ---------------------------------------------------------------------------


@record
class Init:
    """The handshake blob (first stdin line, bare or with ``"op":"init"``).

    ``extensions`` travels as ``"pywatt_extensions"`` and is omitted when empty.
    """

    orchestrator_api: str
    module_id: str
    env: dict[str, str]
    listen: ListenAddress
    tcp_channel: TcpChannelConfig | None = None
    ipc_channel: IpcChannelConfig | None = None
    auth_token: str | None = None
    security_level: SecurityLevel = SecurityLevel.NONE
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _str("orchestrator_api", self.orchestrator_api)
        _str("module_id", self.module_id)
        _str_map(self, "env", self.env)
        if type(self.listen) is not TcpListen and type(self.listen) is not UnixListen:
            raise _fail("listen", f"expected TcpListen or UnixListen, got {_tname(self.listen)}")
        _typed("tcp_channel", self.tcp_channel, TcpChannelConfig, optional=True)
        _typed("ipc_channel", self.ipc_channel, IpcChannelConfig, optional=True)
        _opt_str("auth_token", self.auth_token)
        _typed("security_level", self.security_level, SecurityLevel)
        _tuple_of(self, "extensions", self.extensions)


@record
class Secret:
    """A secret value (``rotation_id`` set when it is the result of a rotation)."""

    name: str
    value: str
    rotation_id: str | None = None

    def __post_init__(self) -> None:
        _str("name", self.name)
        _str("value", self.value)
        _opt_str("rotation_id", self.rotation_id)


@record
class Rotated:
    """The listed secrets were rotated."""

    keys: tuple[str, ...]
    rotation_id: str

    def __post_init__(self) -> None:
        _tuple_of(self, "keys", self.keys)
        _str("rotation_id", self.rotation_id)


@record
class Shutdown:
    """Stop the module."""


@record
class RegisterServiceProviderResponse:
    """Result of ``register_service_provider``."""

    success: bool
    provider_id: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        _bool("success", self.success)
        _opt_str("provider_id", self.provider_id)
        _opt_str("error", self.error)


@record
class DiscoverServiceProvidersResponse:
    """Result of ``discover_service_providers``."""

    success: bool
    providers: tuple[ServiceProviderInfo, ...]
    error: str | None = None

    def __post_init__(self) -> None:
        _bool("success", self.success)
        _tuple_of(self, "providers", self.providers, ServiceProviderInfo)
        _opt_str("error", self.error)


@record
class ServiceResponse:
    """Answer to a ``service_request``."""

    id: str
    service_type: ServiceType
    success: bool
    error: str | None = None
    connection_id: str | None = None

    def __post_init__(self) -> None:
        _str("id", self.id)
        _typed("service_type", self.service_type, ServiceType)
        _bool("success", self.success)
        _opt_str("error", self.error)
        _opt_str("connection_id", self.connection_id)


@record
class ServiceOperationResult:
    """Answer to a ``service_operation`` (``result`` null and absent are the same: None)."""

    success: bool
    result: JsonValue = None
    error: str | None = None

    def __post_init__(self) -> None:
        _bool("success", self.success)
        check_json_value("result", self.result)
        _opt_str("error", self.error)


@record(frozen=False)
class HttpRequest:
    """An HTTP request forwarded over IPC (``uri`` = path plus optional ``?query``).

    Not frozen, unlike the other messages: one is decoded per request on the module's hot
    path (:func:`trusted_http_request`), and an ordinary slotted class is the cheapest to
    build. Checked when built with ``HttpRequest(...)``.
    """

    request_id: str
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes | None = None

    def __post_init__(self) -> None:
        _str("request_id", self.request_id)
        _str("method", self.method)
        _str("uri", self.uri)
        _str_map(self, "headers", self.headers)
        _opt_bytes("body", self.body)


def trusted_http_request(
    request_id: str, method: str, uri: str, headers: dict[str, str], body: bytes | None
) -> HttpRequest:
    """Return an :class:`HttpRequest` from fields the decoder has already checked.

    For the codec's hot path only: ``__post_init__`` would repeat the decoder's checks.
    Public construction (``HttpRequest(...)``) still validates.
    """
    msg = object.__new__(HttpRequest)
    msg.request_id = request_id
    msg.method = method
    msg.uri = uri
    msg.headers = headers
    msg.body = body
    return msg


@record
class PortResponse:
    """Answer to a ``port_request`` (``port`` is 0 on failure by convention)."""

    request_id: str
    success: bool
    port: int
    error_message: str | None = None

    def __post_init__(self) -> None:
        _str("request_id", self.request_id)
        _bool("success", self.success)
        _u16("port", self.port)
        _opt_str("error_message", self.error_message)


@record
class RoutedModuleMessage:
    """A message routed to this module from ``source_module_id``."""

    source_module_id: str
    original_request_id: uuid.UUID
    payload: EncodedMessage

    def __post_init__(self) -> None:
        _str("source_module_id", self.source_module_id)
        _uuid("original_request_id", self.original_request_id)
        _typed("payload", self.payload, EncodedMessage)


@record
class RouteError:
    """Why a module call failed (wire: the ``pywatt_error`` member, spec/modules.md section 5).

    ``kind`` is ``unknown_module``, ``unknown_endpoint``, ``target_failed``, ``deadline`` or
    ``rejected`` (a reader treats any other text as a generic failure); ``status`` is the
    target's HTTP status when it answered one.
    """

    kind: str
    message: str
    status: int | None = None

    def __post_init__(self) -> None:
        _str("kind", self.kind)
        _str("message", self.message)
        if self.status is not None and (
            type(self.status) is not int or not 0 <= self.status <= 65535
        ):
            raise _fail("status", f"expected an integer 0..65535, got {self.status!r}")


@record
class RoutedModuleResponse:
    """The response to an earlier ``route_to_module`` (note: ``request_id``).

    ``error`` (wire ``pywatt_error``, omitted when None) marks a failed call; the reference
    knows no such member and ignores it (spec/modules.md section 5).
    """

    source_module_id: str
    request_id: uuid.UUID
    payload: EncodedMessage
    error: RouteError | None = None

    def __post_init__(self) -> None:
        _str("source_module_id", self.source_module_id)
        _uuid("request_id", self.request_id)
        _typed("payload", self.payload, EncodedMessage)
        _typed("error", self.error, RouteError, optional=True)


@record
class Heartbeat:
    """Liveness probe."""


OrchestratorToModule: TypeAlias = (
    Init
    | Secret
    | Rotated
    | Shutdown
    | RegisterServiceProviderResponse
    | DiscoverServiceProvidersResponse
    | ServiceResponse
    | ServiceOperationResult
    | HttpRequest
    | PortResponse
    | RoutedModuleMessage
    | RoutedModuleResponse
    | Heartbeat
)

_MESSAGE_CLASSES: tuple[type, ...] = (
    *ModuleToOrchestrator.__args__,
    *OrchestratorToModule.__args__,
)


# ---------------------------------------------------------------------------
# envelope
# ---------------------------------------------------------------------------


@record
class MessageMetadata:
    """Envelope metadata; every field is optional and omitted on the wire when None.

    ``timestamp`` is an i64 (unit undefined by the reference); ``properties`` is a
    JSON object (written with sorted keys).
    """

    id: str | None = None
    timestamp: int | None = None
    source: str | None = None
    destination: str | None = None
    properties: dict[str, JsonValue] | None = None

    def __post_init__(self) -> None:
        _opt_str("id", self.id)
        if self.timestamp is not None:
            if type(self.timestamp) is not int:
                raise _fail("timestamp", f"expected int (i64), got {_tname(self.timestamp)}")
            if not _I64_MIN <= self.timestamp < 2**63:
                raise _fail("timestamp", f"{self.timestamp} does not fit i64")
        _opt_str("source", self.source)
        _opt_str("destination", self.destination)
        if self.properties is not None:
            _typed("properties", self.properties, dict)
            check_json_value("properties", self.properties)


@record
class Message:
    """The framed-channel envelope ``{"id": uuid, "content": ..., "metadata": {...}}``.

    ``content`` is either any JSON value or a typed message object.
    """

    id: uuid.UUID
    content: JsonValue | ModuleToOrchestrator | OrchestratorToModule
    metadata: MessageMetadata = field(default_factory=MessageMetadata)

    def __post_init__(self) -> None:
        _uuid("id", self.id)
        if type(self.content) not in _MESSAGE_CLASSES:
            check_json_value("content", self.content)
        _typed("metadata", self.metadata, MessageMetadata)
