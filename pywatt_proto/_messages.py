"""Typed messages of the PyWatt module protocol.

One frozen, slotted, keyword-only record (:func:`~pywatt_proto._records.record`, a cheap
``@dataclass(frozen=True, slots=True, kw_only=True)``) per ``op`` of the reference
``ModuleToOrchestrator`` / ``OrchestratorToModule`` enums, plus the parts they are
made of (init blob pieces, endpoints, service types, the ``Message`` envelope and
``EncodedMessage``).  Field names are the wire names; field order is the order in
which the reference declares (and serde writes) them.

Every class checks each field by its annotation when built (:class:`_Checked`) and
raises :class:`LocalProtocolError` naming the offending field, so an invalid message
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
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeAlias

    # A field's check: (field name, value) -> the value to keep; raises LocalProtocolError.
    _Check: TypeAlias = Callable[[str, Any], object]

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
# field checks: every message field is checked by its annotation
# ---------------------------------------------------------------------------


def _fail(field_name: str, problem: str) -> LocalProtocolError:
    return LocalProtocolError(f"{field_name}: {problem}", field=field_name)


def _tname(value: object) -> str:
    return type(value).__name__


def _of_type(cls: type, optional: bool = False) -> _Check:
    """Check that a value's type is exactly ``cls`` (or that it is None, when ``optional``)."""
    expected = cls.__name__ + (" or None" if optional else "")

    def check(field_name: str, value: object) -> object:
        if type(value) is not cls and not (optional and value is None):
            raise _fail(field_name, f"expected {expected}, got {_tname(value)}")
        return value

    return check


def _int(what: str, low: int, high: int, optional: bool = False) -> _Check:
    """Check an ``int`` in ``low..high`` (or None, when ``optional``)."""

    def check(field_name: str, value: object) -> object:
        if optional and value is None:
            return value
        if type(value) is not int:
            raise _fail(field_name, f"expected int ({what}), got {_tname(value)}")
        if not low <= value <= high:
            raise _fail(field_name, f"{value} is out of range {low}..{high}")
        return value

    return check


def _tuple_of(cls: type) -> _Check:
    """Check a tuple of ``cls`` items; a list is kept as a tuple."""

    def check(field_name: str, value: object) -> object:
        if type(value) is list:
            value = tuple(value)
        if type(value) is not tuple:
            raise _fail(field_name, f"expected a tuple of {cls.__name__}, got {_tname(value)}")
        for i, item in enumerate(value):
            if type(item) is not cls:
                raise _fail(f"{field_name}[{i}]", f"expected {cls.__name__}, got {_tname(item)}")
        return value

    return check


def _str_map(field_name: str, value: object) -> object:
    """Check a mapping of str to str; any other mapping is kept as a plain ``dict``."""
    if type(value) is not dict:
        from collections.abc import Mapping

        if not isinstance(value, Mapping):
            raise _fail(field_name, f"expected a mapping of str to str, got {_tname(value)}")
        value = dict(value)
    for k, v in value.items():
        if type(k) is not str:
            raise _fail(field_name, f"key {k!r} is not a str")
        if type(v) is not str:
            raise _fail(f"{field_name}[{k!r}]", f"expected str, got {_tname(v)}")
    return value


def _opt_str_map(field_name: str, value: object) -> object:
    return None if value is None else _str_map(field_name, value)


def _listen(field_name: str, value: object) -> object:
    if type(value) is not TcpListen and type(value) is not UnixListen:
        raise _fail(field_name, f"expected TcpListen or UnixListen, got {_tname(value)}")
    return value


def _uuid(field_name: str, value: object) -> object:
    # Only a uuid.UUID passes, and one cannot exist before its module is loaded, so the
    # check never needs to import uuid itself.
    uuid_module = sys.modules.get("uuid")
    if uuid_module is None or type(value) is not uuid_module.UUID:
        raise _fail(field_name, f"expected uuid.UUID, got {_tname(value)}")
    return value


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


def _json(field_name: str, value: object) -> object:
    check_json_value(field_name, value)
    return value


def _json_object(field_name: str, value: object) -> object:
    if value is not None:
        if type(value) is not dict:
            raise _fail(field_name, f"expected dict, got {_tname(value)}")
        check_json_value(field_name, value)
    return value


def _content(field_name: str, value: object) -> object:
    """``Message.content``: a typed message, or any JSON value."""
    if type(value) not in _MESSAGE_CLASSES:
        check_json_value(field_name, value)
    return value


#: The check for each annotation that is not a class name (or ``tuple[Class, ...]``).
_CHECKS: dict[str, _Check] = {
    "str": _of_type(str),
    "str | None": _of_type(str, optional=True),
    "bool": _of_type(bool),
    "bool | None": _of_type(bool, optional=True),
    "int": _int("u16", 0, 65535),
    "int | None": _int("u16", 0, 65535, optional=True),
    "bytes": _of_type(bytes),
    "bytes | None": _of_type(bytes, optional=True),
    "tuple[str, ...]": _tuple_of(str),
    "dict[str, str]": _str_map,
    "dict[str, str] | None": _opt_str_map,
    "uuid.UUID": _uuid,
    "ListenAddress": _listen,
    "JsonValue": _json,
    "dict[str, JsonValue] | None": _json_object,
    "JsonValue | ModuleToOrchestrator | OrchestratorToModule": _content,
}


def _check_for(annotation: str) -> _Check:
    """Return the check of a field annotated ``annotation`` (the text after ``name:``)."""
    check = _CHECKS.get(annotation)
    if check is not None:
        return check
    if annotation.startswith("tuple["):  # tuple[Class, ...]
        return _tuple_of(globals()[annotation.removeprefix("tuple[").removesuffix(", ...]")])
    name, _, none = annotation.partition(" | ")  # Class or Class | None
    return _of_type(globals()[name], optional=none == "None")


class _Checked:
    """Base of every message class: a new instance's fields are checked by their annotations.

    Each field's annotation selects its check (:data:`_CHECKS`; a class name checks for an
    instance of exactly that class), unless the class's ``_special_checks`` names another.
    A check raises :class:`LocalProtocolError` naming the field and returns the value to
    keep (a list becomes a tuple, a mapping a ``dict``). A class with a further rule extends
    ``__post_init__``.
    """

    __slots__ = ()
    _special_checks: ClassVar[dict[str, _Check]] = {}

    def __post_init__(self) -> None:
        cls = type(self)
        checks = _FIELD_CHECKS.get(cls)
        if checks is None:
            annotations = cls.__annotations__
            checks = _FIELD_CHECKS[cls] = tuple(
                (name, cls._special_checks.get(name) or _check_for(annotations[name]))
                for name in cls.__record_fields__  # type: ignore[attr-defined]
            )
        for name, check in checks:
            value = getattr(self, name)
            kept = check(name, value)
            if kept is not value:
                object.__setattr__(self, name, kept)


_FIELD_CHECKS: dict[type, tuple[tuple[str, _Check], ...]] = {}


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
class TcpListen(_Checked):
    """A TCP socket address. ``host`` is an IP literal, stored in canonical form.

    ``str()`` gives the wire text: ``"127.0.0.1:4102"`` or ``"[::1]:4102"`` (IPv6
    compressed per RFC 5952, numeric zone kept as ``%3``).
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        _Checked.__post_init__(self)  # record makes a new class: no zero-argument super()
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
class UnixListen(_Checked):
    """A Unix-domain socket path (any string that is not a socket address)."""

    path: str

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
class ServiceType(_Checked):
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
        _Checked.__post_init__(self)  # record makes a new class: no zero-argument super()
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
class Endpoint(_Checked):
    """An announced HTTP endpoint. ``methods`` lists become tuples."""

    path: str
    methods: tuple[str, ...]
    auth: str | None = None


@record
class TcpChannelConfig(_Checked):
    """Init's ``tcp_channel``: where the framed TCP channel lives (``address`` is ip:port)."""

    address: TcpListen
    tls_enabled: bool
    required: bool


@record
class IpcChannelConfig(_Checked):
    """Init's ``ipc_channel``: the Unix-socket framed channel."""

    socket_path: str
    required: bool


@record
class EncodedMessage(_Checked):
    """Raw payload bytes plus their format (wire: ``{"data":[ints],"format":"Json"}``)."""

    data: bytes
    format: EncodingFormat


@record
class ServiceProviderInfo(_Checked):
    """One provider in a ``discover_service_providers_response``."""

    provider_id: str
    module_id: str
    service_type: ServiceType
    name: str
    version: str | None = None
    address: str
    metadata: dict[str, str]
    is_healthy: bool


# ---------------------------------------------------------------------------
# module -> orchestrator
# ---------------------------------------------------------------------------


@record
class Identify(_Checked):
    """``{"op":"identify","module_id":...}`` -- a pywatt extension (serde cannot encode it)."""

    module_id: str


@record
class Announce(_Checked):
    """The module's announcement: where it listens and which endpoints it serves.

    ``listen`` is a plain string on the wire (the reference ``AnnounceBlob`` uses
    ``String``); pass ``str(init.listen)``. ``extensions`` travels as
    ``"pywatt_extensions"`` and is omitted when empty.
    """

    listen: str
    endpoints: tuple[Endpoint, ...]
    extensions: tuple[str, ...] = ()


@record
class GetSecret(_Checked):
    """Ask the orchestrator for the secret ``name``."""

    name: str


@record
class RotationAck(_Checked):
    """Acknowledge a rotation (``status`` is free text; the reference sends "success")."""

    rotation_id: str
    status: str
    message: str | None = None


@record
class RegisterServiceProvider(_Checked):
    """Register this module as a provider of ``service_type``."""

    service_type: ServiceType
    name: str
    version: str | None = None
    address: str
    metadata: dict[str, str] | None = None


@record
class DiscoverServiceProviders(_Checked):
    """Ask for providers of ``service_type``."""

    service_type: ServiceType
    all_providers: bool | None = None


@record
class ServiceRequest(_Checked):
    """Request a connection to a service; ``config`` is any JSON value (None = null)."""

    id: str
    service_type: ServiceType
    config: JsonValue = None


@record
class ServiceOperation(_Checked):
    """Run ``operation`` on an open service connection; ``params`` is any JSON value."""

    connection_id: str
    service_type: ServiceType
    operation: str
    params: JsonValue


@record
class HttpResponse(_Checked):
    """The answer to an ``http_request`` (``status_code`` is any u16, as in the reference)."""

    request_id: str
    status_code: int
    headers: dict[str, str]
    body: bytes | None = None


@record
class PortRequest(_Checked):
    """Ask for a port (a specific one, or any when ``specific_port`` is None)."""

    request_id: str
    specific_port: int | None = None


@record
class RouteToModule(_Checked):
    """Send ``payload`` to another module's endpoint through the orchestrator."""

    target_module_id: str
    target_endpoint: str
    request_id: uuid.UUID
    payload: EncodedMessage


@record
class HeartbeatAck(_Checked):
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
class Init(_Checked):
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


@record
class Secret(_Checked):
    """A secret value (``rotation_id`` set when it is the result of a rotation)."""

    name: str
    value: str
    rotation_id: str | None = None


@record
class Rotated(_Checked):
    """The listed secrets were rotated."""

    keys: tuple[str, ...]
    rotation_id: str


@record
class Shutdown(_Checked):
    """Stop the module."""


@record
class RegisterServiceProviderResponse(_Checked):
    """Result of ``register_service_provider``."""

    success: bool
    provider_id: str | None = None
    error: str | None = None


@record
class DiscoverServiceProvidersResponse(_Checked):
    """Result of ``discover_service_providers``."""

    success: bool
    providers: tuple[ServiceProviderInfo, ...]
    error: str | None = None


@record
class ServiceResponse(_Checked):
    """Answer to a ``service_request``."""

    id: str
    service_type: ServiceType
    success: bool
    error: str | None = None
    connection_id: str | None = None


@record
class ServiceOperationResult(_Checked):
    """Answer to a ``service_operation`` (``result`` null and absent are the same: None)."""

    success: bool
    result: JsonValue = None
    error: str | None = None


@record(frozen=False)
class HttpRequest(_Checked):
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
class PortResponse(_Checked):
    """Answer to a ``port_request`` (``port`` is 0 on failure by convention)."""

    request_id: str
    success: bool
    port: int
    error_message: str | None = None


@record
class RoutedModuleMessage(_Checked):
    """A message routed to this module from ``source_module_id``."""

    source_module_id: str
    original_request_id: uuid.UUID
    payload: EncodedMessage


@record
class RouteError(_Checked):
    """Why a module call failed (wire: the ``pywatt_error`` member, spec/modules.md section 5).

    ``kind`` is ``unknown_module``, ``unknown_endpoint``, ``target_failed``, ``deadline`` or
    ``rejected`` (a reader treats any other text as a generic failure); ``status`` is the
    target's HTTP status when it answered one.
    """

    kind: str
    message: str
    status: int | None = None


@record
class RoutedModuleResponse(_Checked):
    """The response to an earlier ``route_to_module`` (note: ``request_id``).

    ``error`` (wire ``pywatt_error``, omitted when None) marks a failed call; the reference
    knows no such member and ignores it (spec/modules.md section 5).
    """

    source_module_id: str
    request_id: uuid.UUID
    payload: EncodedMessage
    error: RouteError | None = None


@record
class Heartbeat(_Checked):
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
class MessageMetadata(_Checked):
    """Envelope metadata; every field is optional and omitted on the wire when None.

    ``timestamp`` is an i64 (unit undefined by the reference); ``properties`` is a
    JSON object (written with sorted keys).
    """

    id: str | None = None
    timestamp: int | None = None
    source: str | None = None
    destination: str | None = None
    properties: dict[str, JsonValue] | None = None

    _special_checks: ClassVar[dict[str, _Check]] = {
        "timestamp": _int("i64", _I64_MIN, 2**63 - 1, optional=True)
    }


@record
class Message(_Checked):
    """The framed-channel envelope ``{"id": uuid, "content": ..., "metadata": {...}}``.

    ``content`` is either any JSON value or a typed message object.
    """

    id: uuid.UUID
    content: JsonValue | ModuleToOrchestrator | OrchestratorToModule
    metadata: MessageMetadata = field(default_factory=MessageMetadata)
