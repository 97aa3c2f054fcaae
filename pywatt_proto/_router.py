"""HTTP router: path patterns, method dispatch, middleware plan, errors, metrics.

The router is pure: it never calls a handler or a middleware (plain functions for
pywatt_sync, possibly coroutines for pywatt_asyncio); a driver's ``dispatch`` does, in this
order:

1. :meth:`Router.plan` resolves the request (route, typed path parameters, 404 / 405 /
   automatic ``OPTIONS`` / ``HEAD`` served by ``GET``) into a :class:`Plan`.
2. The driver walks ``plan.middleware`` (each gets ``(request, call_next)`` and may answer
   without calling it); at its end :meth:`Router.enter` raises the planned 404/405 or runs
   the authenticator, and the driver calls the handler.
3. :meth:`Router.to_response` turns the result into a :class:`Response`; an exception goes
   to :meth:`Router.error_handler_for`, else :meth:`Router.error_response` (no internals).
4. :meth:`Router.finish` strips ``HEAD`` bodies and records metrics.

Hot path: ``plan`` remembers what it found per exact static path and method (``_hot``,
bounded by the registered static paths); the driver's request and a handler's dict/list
result are built by trusted constructors (``Request.from_wire``, ``_trusted``); JSON bodies
go through one prebuilt C encoder (``_json_bytes``). Measurements: docs/performance.md.

Path matching: literal routes win over patterns, patterns are tried in registration order,
no trailing-slash normalisation. Paths are compared in a canonical percent-encoded form and
parameters are percent-decoded after matching, so ``%2F`` never splits a segment.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, quote, unquote

from ._errors import AuthError, LocalProtocolError, RemoteProtocolError
from ._jsonable import fallback_json, json_default
from ._messages import Endpoint
from ._records import field, record, replace
from ._route_checks import RouteDefinitionError, check_handler, check_pattern

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from typing import Any, NamedTuple, TypeAlias, TypeVar

    _T = TypeVar("_T")
    _F = TypeVar("_F", bound=Callable[..., Any])
else:
    from ._records import NamedTuple  # typing's class syntax, without importing typing

# A query string with more fields than this is refused with 400: parse_qsl
# would otherwise build an arbitrarily long list (Django uses 1000 as well).
MAX_QUERY_FIELDS = 1000
# Latency histogram upper bounds in seconds (the Prometheus client defaults);
# one extra bucket counts everything slower. Fixed, so memory per route is fixed.
# fmt: off
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
# fmt: on
# Static paths whose plan() lookups are remembered (see Router._hot).
_MAX_HOT_PATHS = 1024
_tuple_new = tuple.__new__
# Metrics label for requests that matched no route: one shared label keeps the
# metrics table bounded however many distinct paths clients send.
UNMATCHED_LABEL = "<unmatched>"

Middleware: TypeAlias = Callable[["Request", Callable[["Request"], "Any"]], "Any"]
ErrorHandler: TypeAlias = Callable[["Request", BaseException], "Any"]
Authenticator: TypeAlias = Callable[["Request", str, float], Mapping[str, object]]

# fmt: off
_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
    409: "Conflict", 410: "Gone", 411: "Length Required", 413: "Content Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
# X-Error-Code values of the reference's ApiResponse helpers.
_ERROR_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 408: "TIMEOUT", 409: "CONFLICT", 500: "INTERNAL_ERROR",
    502: "IPC_COMMUNICATION_ERROR",
}
# fmt: on
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Scheme and authority of an absolute-form target (RFC 3986 §3.2: the authority ends at
# "/", "?", "#" or the end).
_ORIGIN = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_JSON_HEADERS = (("content-type", _JSON),)
_TEXT_HEADERS = (("content-type", _TEXT),)


def reason_phrase(status: int) -> str:
    """Return the standard reason phrase for ``status`` (``""`` for unknown codes)."""
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            from http import HTTPStatus  # unusual codes only (start-up time)

            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
    return phrase


# One shared encoder: json.dumps() with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_default
)
# The C encoder _ENCODER.encode() builds per call, built once, without circular-reference
# markers: a circular value recurses to RecursionError and is encoded again by _ENCODER, which
# raises what it always did. c_make_encoder is private API, so _ENCODER is also the fallback.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_FAST_ENCODE: Callable[[object, int], Any] | None = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _json_bytes(data: object) -> bytes:
    fast = _FAST_ENCODE
    if fast is not None:
        try:
            return "".join(fast(data, 0)).encode()
        except RecursionError:
            pass
    return _ENCODER.encode(data).encode()


# --------------------------------------------------------------------------- headers / query


class _Pairs:
    """What :class:`Headers` and :class:`QueryParams` share: ``(name, value)`` pairs in
    order, names compared lower-cased when ``_lower``."""

    __slots__ = ()
    _items: tuple[tuple[str, str], ...]
    _lower = False

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name`` or ``default``."""
        if self._lower:
            name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order (possibly empty)."""
        if self._lower:
            name = name.lower()
        return [v for k, v in self._items if k == name]

    def items(self) -> tuple[tuple[str, str], ...]:
        """Return all ``(name, value)`` pairs in order."""
        return self._items

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other._items == self._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._items)!r})"


class Headers(_Pairs):
    """Case-insensitive, multi-valued, read-only header list (names stored lower-case).

    ``get(name)`` returns the first value (or ``default``); ``get_all`` every value
    in order; ``items()`` the ``(name, value)`` pairs as received.
    """

    __slots__ = ("_decoded", "_source")
    _lower = True

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._decoded: tuple[tuple[str, str], ...] | None = tuple((k.lower(), v) for k, v in pairs)
        # what _items decodes on first use: byte pairs (from_raw) or a str map (from_wire)
        self._source: Sequence[tuple[bytes, bytes]] | dict[str, str] = ()

    @classmethod
    def from_raw(cls, raw: Sequence[tuple[bytes, bytes]]) -> Headers:
        """Return headers for byte pairs (latin-1, names lower-cased), decoded on first use."""
        new = _new_object(cls)
        new._decoded = None
        new._source = raw
        return new

    @classmethod
    def from_wire(cls, wire: dict[str, str]) -> Headers:
        """Return headers for a decoded message's map, folded into pairs on first use.

        ``wire`` must be a dict of str -> str that nobody changes afterwards (the codec
        builds a fresh one per message); it is not copied. Never raises.
        """
        new = _new_object(cls)
        new._decoded = None
        new._source = wire
        return new

    @property
    def _items(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        items = self._decoded
        if items is None:
            source = self._source
            if isinstance(source, dict):
                items = tuple([(k.lower(), v) for k, v in source.items()])
            else:
                items = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in source)
            self._decoded = items
        return items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_new_object = object.__new__


class QueryParams(_Pairs):
    """Parsed, percent-decoded query string; multi-valued (``?a=1&a=2``).

    Reads like Starlette's ``QueryParams``: ``query["a"]`` and ``get("a")`` give one
    value (the first), ``get_all``/``getlist`` every value, ``keys()``/iteration the
    distinct names in order, ``items()`` every pair; ``"a" in query`` and ``len`` (pairs)
    work too.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = tuple(items)

    @classmethod
    def parse(cls, query_string: str) -> QueryParams:
        """Return the parsed query (``+`` is a space, blank values kept).

        Raises:
            RemoteProtocolError: more than ``MAX_QUERY_FIELDS`` fields (hint 400).
        """
        if not query_string:
            return _EMPTY_QUERY
        try:
            pairs = parse_qsl(query_string, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError as exc:
            raise RemoteProtocolError("too many query fields", field="query") from exc
        return cls(pairs)

    def __getitem__(self, name: str) -> str:
        """Return the first value of ``name``; raises ``KeyError`` when it is absent."""
        for k, v in self._items:
            if k == name:
                return v
        raise KeyError(name)

    getlist = _Pairs.get_all  # Starlette's spelling

    def keys(self) -> list[str]:
        """Return the distinct names in the order they first appear."""
        return list(self)

    def values(self) -> list[str]:
        """Return the first value of each distinct name, in :meth:`keys` order."""
        return [self[k] for k in self]

    def multi_items(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` pair in order (Starlette's name)."""
        return list(self._items)

    def to_dict(self) -> dict[str, list[str]]:
        """Return ``{name: [values...]}``."""
        out: dict[str, list[str]] = {}
        for k, v in self._items:
            out.setdefault(k, []).append(v)
        return out

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self._items)


_EMPTY_QUERY = QueryParams()


class _NoValues(Mapping[str, object]):
    """An empty, immutable and hashable mapping: the default path_params and claims."""

    __slots__ = ()

    def __getitem__(self, key: str) -> object:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


_NO_VALUES: Mapping[str, object] = _NoValues()
_EMPTY_HEADERS = Headers()


# --------------------------------------------------------------------------- request / response


@record(frozen=False)
class Request:
    """One HTTP request as the router and handlers see it (a plain mutable slotted class:
    :meth:`Router.plan` completes ``route``/``path_params`` in place).

    ``path`` is the raw (still percent-encoded) path, ``query_string`` the raw
    text after ``?`` and ``query`` its parsed form (parsed on first use, so the two
    always agree). ``claims`` are filled by the authenticator; ``state`` is a
    per-request scratch dict for middleware. Build with :meth:`from_target` to
    split a request target.
    """

    method: str
    path: str
    query_string: str = ""
    headers: Headers = _EMPTY_HEADERS
    body: bytes = b""
    path_params: Mapping[str, object] = _NO_VALUES
    claims: Mapping[str, object] = _NO_VALUES
    client: tuple[str, int] | None = None
    route: Route | None = None
    _query: QueryParams | None = field(default=None, init=False, compare=False, repr=False)
    _state: dict[str, object] | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def state(self) -> dict[str, object]:
        """Return the per-request scratch dict for middleware (created on first use)."""
        st = self._state
        if st is None:
            st = self._state = {}
        return st

    @property
    def query(self) -> QueryParams:
        """Return the parsed query string (parsed on first use).

        Raises:
            RemoteProtocolError: more than ``MAX_QUERY_FIELDS`` fields (hint 400).
        """
        q = self._query
        if q is None:
            q = self._query = QueryParams.parse(self.query_string)
        return q

    @classmethod
    def from_target(
        cls,
        method: str,
        target: str,
        headers: Headers | Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes = b"",
        *,
        client: tuple[str, int] | None = None,
    ) -> Request:
        """Return a request for ``method`` and a request target (``/p?q`` or absolute URL).

        Raises:
            RemoteProtocolError: the target is not origin-form/absolute-form, or the
                query is too large (hint 400).
        """
        if target[:1] != "/":
            origin = _ORIGIN.match(target)
            if origin is not None:  # absolute-form
                rest = target[origin.end() :]
                target = rest if rest[:1] == "/" else "/" + rest  # "http://h?q": path "/"
            elif not (target == "*" and method == "OPTIONS"):
                raise RemoteProtocolError("invalid request target", field="target")
        path, _, qs = target.partition("?")
        path = path.partition("#")[0]
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        return cls(
            method=method.upper(),
            path=path,
            query_string=qs,
            headers=hdrs,
            body=body,
            client=client,
        )

    @classmethod
    def from_wire(
        cls, method: str, path: str, query_string: str, headers: dict[str, str], body: bytes
    ) -> Request:
        """Return the request for a decoded ``http_request`` (the module link's constructor).

        ``method`` upper-case, ``path``/``query_string`` the target split at ``?``, ``headers``
        kept as :meth:`Headers.from_wire` says; not checked (the link layer has). Other fields
        take their defaults. Never raises.
        """
        req = _new_object(cls)
        req.method = method
        req.path = path
        req.query_string = query_string
        req.headers = Headers.from_wire(headers)
        req.body = body
        req.path_params = _NO_VALUES
        req.claims = _NO_VALUES
        req.client = None
        req.route = None
        req._query = None
        req._state = None
        return req

    def path_param(self, name: str, kind: type[_T]) -> _T:
        """Return path parameter ``name``, checked to be a ``kind`` (typed for mypy: no cast).

        ``{id:int}`` gives an ``int``, ``{f:float}`` a ``float``, ``{u:uuid}`` a
        ``uuid.UUID``, ``{name}``/``{p:path}`` a ``str``: ``request.path_param("id", int)``.

        Raises:
            KeyError: the matched route has no parameter ``name``.
            TypeError: the parameter's value is not a ``kind`` (the route's pattern
                declares another type); the message shows the declaration to use.
        """
        value = self.path_params[name]
        if not isinstance(value, kind):
            spelled = {"int": "int", "float": "float", "UUID": "uuid"}.get(kind.__name__, "")
            want = "{" + name + (":" + spelled if spelled else "") + "}"
            raise TypeError(
                f"path parameter {name!r} is a {type(value).__name__}, not {kind.__name__}; "
                f"declare it as {want} in the route pattern"
            )
        return value

    @property
    def target(self) -> str:
        """Return the request target: path plus ``?query`` when there is one."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    def text(self, encoding: str = "utf-8") -> str:
        """Return the body decoded (invalid bytes replaced)."""
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        """Return the body parsed as JSON.

        Raises:
            HTTPException: 400 when the body is missing or not valid JSON.
        """
        if not self.body:
            raise HTTPException(400, "Request body is required")
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise HTTPException(400, "Invalid JSON body") from exc


@record(frozen=False)
class Response:
    """An HTTP response: status, ``(name, value)`` header pairs (repeats allowed) and body.

    Checked when built (a plain mutable slotted class: build a new one rather than assign).

    ``headers`` may be given as a mapping (``Response(headers={"x-a": "1"})``) or any
    iterable of pairs; it is stored as a tuple of pairs.

    Raises:
        LocalProtocolError: status outside 100-599, non-bytes body, or a header
            name that is not a token / a value containing CR, LF or NUL.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    if TYPE_CHECKING:  # the constructor @record generates, as type checkers should see it

        def __init__(
            self,
            *,
            status: int = 200,
            headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
            body: bytes = b"",
        ) -> None: ...

    def __post_init__(self) -> None:
        if type(self.headers) is not tuple:  # a mapping or a list of pairs: normalise
            pairs = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
            self.headers = tuple((k, v) for k, v in pairs)
        if type(self.status) is not int or not 100 <= self.status <= 599:
            raise LocalProtocolError(f"invalid status {self.status!r}", field="status")
        if type(self.body) is not bytes:
            raise LocalProtocolError("body must be bytes", field="body")
        for name, value in self.headers:
            if not _TOKEN.match(name):
                raise LocalProtocolError(f"invalid header name {name!r}", field="headers")
            if "\r" in value or "\n" in value or "\x00" in value:
                raise LocalProtocolError(f"invalid value for header {name}", field="headers")

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive) or None."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive)."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def with_header(self, name: str, value: str, *, replace_existing: bool = False) -> Response:
        """Return a copy with ``name: value`` added (or replacing same-named headers)."""
        kept = self.headers
        if replace_existing:
            lower = name.lower()
            kept = tuple(h for h in kept if h[0].lower() != lower)
        return replace(self, headers=(*kept, (name, value)))

    def json(self) -> Any:
        """Return the body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)


def _trusted(status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> Response:
    """Build a Response from values known valid (skips ``__post_init__`` checks)."""
    resp = _new_object(Response)
    resp.status = status
    resp.headers = headers
    resp.body = body
    return resp


@record
class ApiResponse:
    """The reference ``ApiResponse`` body ``{"status","data","message"}`` plus its HTTP status.

    ``data`` and ``message`` are written as ``null`` when None (http_ipc shape).
    Handlers may return one; :meth:`Router.to_response` renders it.
    """

    status: str = "success"
    data: object = None
    message: str | None = None
    status_code: int = 200

    def to_response(self, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """Return the JSON :class:`Response` for this value."""
        body = {"status": self.status, "data": self.data, "message": self.message}
        return _typed(_JSON, _json_bytes(body), self.status_code, headers)


class HTTPException(Exception):
    """Raise from a handler or middleware to answer with ``status``.

    ``message`` goes to the client in the ApiResponse error body, so it must be
    safe to show; ``headers`` are added to the response.
    """

    status: int
    message: str
    headers: tuple[tuple[str, str], ...]

    def __init__(
        self, status: int, message: str | None = None, *, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.message = message if message is not None else (reason_phrase(status) or "Error")
        self.headers = tuple(headers)
        super().__init__(status, self.message)


def _hdrs(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items() if isinstance(headers, Mapping) else headers)


def _typed(
    content_type: str,
    body: bytes,
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> Response:
    return Response(
        status=status, headers=(("content-type", content_type), *_hdrs(headers)), body=body
    )


def json_response(
    data: object,
    status: int = 200,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Response:
    """Return a compact JSON response (``application/json``).

    Raises:
        ValueError / TypeError: ``data`` is not JSON-serialisable (NaN included).
    """
    return _typed(_JSON, _json_bytes(data), status, headers)


def text_response(
    text: str,
    status: int = 200,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    *,
    content_type: str = _TEXT,
) -> Response:
    """Return a UTF-8 text response."""
    return _typed(content_type, text.encode(), status, headers)


def bytes_response(
    body: bytes,
    status: int = 200,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    *,
    content_type: str = "application/octet-stream",
) -> Response:
    """Return a binary response."""
    return _typed(content_type, bytes(body), status, headers)


def redirect(location: str, status: int = 307) -> Response:
    """Return a redirect to ``location``.

    Raises:
        LocalProtocolError: ``status`` is not a 3xx redirect code.
    """
    if status not in (301, 302, 303, 307, 308):
        raise LocalProtocolError(f"not a redirect status: {status}", field="status")
    return Response(status=status, headers=(("location", location),))


def api_response(
    data: object = None,
    *,
    status_code: int = 200,
    message: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Response:
    """Return ``{"status":"success"|"error","data":...,"message":...}`` (error when >= 400)."""
    status = "success" if status_code < 400 else "error"
    value = ApiResponse(status=status, data=data, message=message, status_code=status_code)
    return value.to_response(_hdrs(headers))


def api_error(
    message: str,
    status_code: int = 500,
    *,
    error_code: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Response:
    """Return the reference error body ``{"status":"error","data":null,"message":...}``.

    ``X-Error-Code`` is ``error_code`` or the reference's code for the status, if any.
    """
    extra = _hdrs(headers)
    code = error_code if error_code is not None else _ERROR_CODES.get(status_code)
    if code is not None:
        extra.append(("x-error-code", code))
    value = ApiResponse(status="error", data=None, message=message, status_code=status_code)
    return value.to_response(extra)


# --------------------------------------------------------------------------- patterns / routes


def _to_uuid(text: str) -> object:
    import uuid  # loaded with the first {name:uuid} parameter (start-up time)

    return uuid.UUID(text)


# Parameter types: regex for one match and converter from the decoded text.
_PARAM_TYPES: dict[str, tuple[str, Callable[[str], object]]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": (
        r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
        _to_uuid,
    ),
    "path": (r".+", str),
}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")
# Characters left as-is in a canonical path segment (RFC 3986 pchar minus "%").
_SAFE = ":@!$&'()*+,;=-._~"


def _canonical(path: str) -> str:
    """Return ``path`` with each segment's percent-escapes normalised (``%2F`` stays escaped)."""
    if "%" not in path and path.isascii():
        return path
    return "/".join(quote(unquote(seg), safe=_SAFE) for seg in path.split("/"))


@record
class Route:
    """A registered route: path pattern, methods, handler and optional auth label.

    Patterns use ``{name}`` / ``{name:type}`` with type ``str`` (one segment,
    default), ``int``, ``float``, ``uuid`` or ``path`` (the rest, slashes included).
    """

    path: str
    methods: tuple[str, ...]
    handler: Callable[..., Any]
    auth: str | None = None
    name: str = ""
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    converters: tuple[tuple[str, Callable[[str], object]], ...] = field(
        default=(), compare=False, repr=False
    )

    @classmethod
    def compile(
        cls,
        path: str,
        methods: Iterable[str],
        handler: Callable[..., Any],
        *,
        auth: str | None = None,
        name: str | None = None,
    ) -> Route:
        """Return a route with its pattern compiled.

        Raises:
            RouteDefinitionError: the path does not start with ``/``, a parameter
                type is unknown, a name repeats, or no method is given.
        """
        check_pattern(path)
        if not path.startswith("/"):
            raise RouteDefinitionError(f"route path must start with '/': {path!r}")
        meths = tuple(dict.fromkeys(m.upper() for m in methods))
        if not meths or not all(_TOKEN.match(m) for m in meths):
            raise RouteDefinitionError(f"invalid methods for {path!r}")
        parts: list[str] = []
        converters: list[tuple[str, Callable[[str], object]]] = []
        pos = 0
        for m in _PARAM.finditer(path):
            pname, ptype = m.group(1), m.group(2) or "str"
            if ptype not in _PARAM_TYPES:
                raise RouteDefinitionError(f"unknown parameter type {ptype!r}")
            if any(pname == n for n, _ in converters):
                raise RouteDefinitionError(f"parameter {pname!r} repeats")
            rx, conv = _PARAM_TYPES[ptype]
            parts.append(re.escape(_canonical(path[pos : m.start()])))
            parts.append(f"(?P<{pname}>{rx})")
            converters.append((pname, conv))
            pos = m.end()
        if "{" in path[pos:] or "}" in path[pos:]:
            raise RouteDefinitionError(f"malformed parameter in {path!r}")
        regex = None
        if converters:
            parts.append(re.escape(_canonical(path[pos:])))
            regex = re.compile("".join(parts) + r"\Z")
        return cls(
            path=path,
            methods=meths,
            handler=handler,
            auth=auth,
            name=name or str(getattr(handler, "__name__", "")),
            regex=regex,
            converters=tuple(converters),
        )

    def match(self, canonical_path: str) -> dict[str, object] | None:
        """Return the converted path parameters if the canonical path matches, else None."""
        if self.regex is None:
            return {} if canonical_path == _canonical(self.path) else None
        m = self.regex.match(canonical_path)
        if m is None:
            return None
        return {n: conv(unquote(m.group(n))) for n, conv in self.converters}


class RouteEndpoint(NamedTuple):
    """Announce data for one path: ``(path, methods, auth)``."""

    path: str
    methods: tuple[str, ...]
    auth: str | None


class Plan(NamedTuple):
    """What a driver runs for one request (built by :meth:`Router.plan`; a NamedTuple: one
    is built per request).

    ``route`` is None for 404/405/OPTIONS; ``error`` is what :meth:`Router.enter` raises
    (404/405); ``response`` a settled answer (automatic OPTIONS) sent instead of a handler's;
    ``started`` the driver clock at plan time; ``counters`` the label's metrics row.
    """

    request: Request
    middleware: tuple[Middleware, ...]
    route: Route | None
    error: HTTPException | None
    response: Response | None
    started: float
    label: str
    counters: list[Any]


# --------------------------------------------------------------------------- metrics


@record
class RouteStats:
    """Counters of one route label; ``latency_buckets`` pairs upper bound -> count."""

    label: str
    requests: int
    responses: int
    errors: int
    statuses: Mapping[int, int]
    latency_buckets: tuple[tuple[float, int], ...]
    latency_sum: float

    @property
    def avg_response_time_ms(self) -> float:
        """Return the mean latency in milliseconds (0.0 before any response)."""
        return self.latency_sum * 1000.0 / self.responses if self.responses else 0.0


class Metrics:
    """Request/response/error counters and a latency histogram per route label.

    Labels are ``"<METHOD> <pattern>"`` for matched routes and ``UNMATCHED_LABEL``
    otherwise, so the table is bounded by the number of routes. ``errors`` counts
    responses with status >= 500. Not thread-safe by itself: the blocking driver
    serialises calls to :meth:`Router.finish`.
    """

    __slots__ = ("_table",)

    def __init__(self) -> None:
        # label -> [requests, responses, errors, latency_sum, buckets list, statuses dict]
        self._table: dict[str, list[Any]] = {}

    def counters(self, label: str) -> list[Any]:
        """Return the internal counter row of ``label`` (created on first use)."""
        row = self._table.get(label)
        if row is None:
            row = self._table[label] = [0, 0, 0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1), {}]
        return row

    def record_request(self, label: str) -> None:
        """Count one received request for ``label``."""
        self.counters(label)[0] += 1

    def record_response(self, label: str, status: int, duration: float) -> None:
        """Count one response for ``label`` with its status and duration (seconds)."""
        row = self.counters(label)
        row[1] += 1
        if status >= 500:
            row[2] += 1
        row[3] += max(duration, 0.0)
        row[4][bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1
        row[5][status] = row[5].get(status, 0) + 1

    def _stats(self, label: str, row: list[Any]) -> RouteStats:
        bounds = (*LATENCY_BUCKETS, float("inf"))
        return RouteStats(
            label=label,
            requests=row[0],
            responses=row[1],
            errors=row[2],
            statuses=dict(row[5]),
            latency_buckets=tuple(zip(bounds, row[4], strict=True)),
            latency_sum=row[3],
        )

    def routes(self) -> dict[str, RouteStats]:
        """Return a snapshot ``{label: RouteStats}``."""
        return {label: self._stats(label, row) for label, row in self._table.items()}

    @property
    def requests_received(self) -> int:
        """Return the total number of requests seen."""
        return sum(r[0] for r in self._table.values())

    @property
    def responses_sent(self) -> int:
        """Return the total number of responses produced."""
        return sum(r[1] for r in self._table.values())

    @property
    def errors_encountered(self) -> int:
        """Return the total number of 5xx responses."""
        return sum(r[2] for r in self._table.values())

    @property
    def avg_response_time_ms(self) -> float:
        """Return the mean latency over all routes in milliseconds."""
        n = self.responses_sent
        return sum(r[3] for r in self._table.values()) * 1000.0 / n if n else 0.0

    def render_prometheus(self, prefix: str = "pywatt_http") -> str:
        """Return the metrics in the Prometheus text exposition format."""
        lines = [
            f"# TYPE {prefix}_requests_total counter",
            f"# TYPE {prefix}_errors_total counter",
            f"# TYPE {prefix}_request_duration_seconds histogram",
        ]
        for label, row in sorted(self._table.items()):
            lbl = json.dumps(label)
            lines.append(f"{prefix}_requests_total{{route={lbl}}} {row[0]}")
            lines.append(f"{prefix}_errors_total{{route={lbl}}} {row[2]}")
            acc = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), row[4], strict=True):
                acc += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'{prefix}_request_duration_seconds_bucket{{route={lbl},le="{le}"}} {acc}'
                )
            lines.append(f"{prefix}_request_duration_seconds_sum{{route={lbl}}} {row[3]}")
            lines.append(f"{prefix}_request_duration_seconds_count{{route={lbl}}} {row[1]}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- router


class MethodDecorators:
    """``get``/``post``/``put``/``delete``/``patch``: the class's ``route`` for one method
    (shared by :class:`Router` and the drivers' ``Module``)."""

    if TYPE_CHECKING:

        def route(
            self, path: str, methods: Iterable[str] = ("GET",), *, auth: str | None = None
        ) -> Callable[[_F], _F]: ...

    def get(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Return a decorator for ``GET path`` (also serves HEAD); see ``route``."""
        return self.route(path, ("GET",), auth=auth)

    def post(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Return a decorator for ``POST path``; see ``route``."""
        return self.route(path, ("POST",), auth=auth)

    def put(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Return a decorator for ``PUT path``; see ``route``."""
        return self.route(path, ("PUT",), auth=auth)

    def delete(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Return a decorator for ``DELETE path``; see ``route``."""
        return self.route(path, ("DELETE",), auth=auth)

    def patch(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Return a decorator for ``PATCH path``; see ``route``."""
        return self.route(path, ("PATCH",), auth=auth)


class Router(MethodDecorators):
    """Routes, middleware, error handlers, optional authenticator and metrics.

    Registration methods raise :class:`RouteDefinitionError` on invalid patterns or
    a duplicate ``(method, path)``; everything else is documented per method.
    """

    def __init__(self, *, authenticator: Authenticator | None = None) -> None:
        self.metrics = Metrics()
        self.authenticator: Authenticator | None = authenticator
        self._routes: list[Route] = []
        self._static: dict[str, dict[str, Route]] = {}
        self._dynamic: list[Route] = []
        self._chain: tuple[Middleware, ...] = ()  # the middleware, outermost first
        self._labels: dict[tuple[str, str], str] = {}
        # path -> method -> (route, label, counters, metrics) for requests planned to a static
        # route by their exact path (no percent-escapes); cleared when a route is added.
        # Bounded: static paths are registered ones, at most _MAX_HOT_PATHS of them.
        self._hot: dict[str, dict[str, tuple[Route, str, list[Any], Metrics]]] = {}
        self._by_type: dict[type[BaseException], ErrorHandler] = {}
        self._by_status: dict[int, ErrorHandler] = {}

    # -- registration ----------------------------------------------------------------

    def add_route(
        self,
        path: str,
        handler: Callable[..., Any],
        methods: Iterable[str] = ("GET",),
        *,
        auth: str | None = None,
        name: str | None = None,
    ) -> Route:
        """Register ``handler`` for ``methods`` on ``path`` and return the route.

        Raises:
            RouteDefinitionError: invalid pattern (other frameworks' spellings included),
                a handler that cannot take the request, or a method already bound to
                ``path``; the message names the caller's file and line. Nothing is
                registered then.
        """
        check_handler(handler, allow_async=True)
        route = Route.compile(path, methods, handler, auth=auth, name=name)
        for other in self._routes:
            if other.path == path and set(other.methods) & set(route.methods):
                raise RouteDefinitionError(f"duplicate route {route.methods} {path}")
        self._routes.append(route)
        self._hot.clear()
        if route.regex is None:
            table = self._static.setdefault(_canonical(path), {})
            for m in route.methods:
                table[m] = route
        else:
            self._dynamic.append(route)
        return route

    def route(
        self, path: str, methods: Iterable[str] = ("GET",), *, auth: str | None = None
    ) -> Callable[[_F], _F]:
        """Return a decorator registering the function for ``methods`` on ``path``."""

        def deco(fn: _F) -> _F:
            self.add_route(path, fn, methods, auth=auth)
            return fn

        return deco

    def middleware(self, fn: Middleware) -> Middleware:
        """Register ``fn(request, call_next)`` (outermost first) and return it."""
        self._chain = (*self._chain, fn)
        return fn

    def add_error_handler(self, key: int | type[BaseException], fn: ErrorHandler) -> None:
        """Register ``fn(request, exc)`` for a status code or an exception type."""
        if isinstance(key, int):
            self._by_status[key] = fn
        else:
            self._by_type[key] = fn

    def error_handler(
        self, key: int | type[BaseException]
    ) -> Callable[[ErrorHandler], ErrorHandler]:
        """Return a decorator registering an error handler for ``key`` (status or type)."""

        def deco(fn: ErrorHandler) -> ErrorHandler:
            self.add_error_handler(key, fn)
            return fn

        return deco

    def set_authenticator(self, fn: Authenticator | None) -> None:
        """Install (or remove) the authenticator used for routes with an ``auth`` label."""
        self.authenticator = fn

    @property
    def routes(self) -> tuple[Route, ...]:
        """Return the registered routes in registration order."""
        return tuple(self._routes)

    def endpoints(self) -> tuple[RouteEndpoint, ...]:
        """Return announce data: one ``(path, methods, auth)`` per path and auth label."""
        grouped: dict[tuple[str, str | None], list[str]] = {}
        for r in self._routes:
            grouped.setdefault((r.path, r.auth), []).extend(r.methods)
        return tuple(
            RouteEndpoint(p, tuple(dict.fromkeys(ms)), a) for (p, a), ms in grouped.items()
        )

    def announce_endpoints(self) -> tuple[Endpoint, ...]:
        """Return :meth:`endpoints` as ``Endpoint`` messages for the ``announce`` op."""
        return tuple(Endpoint(path=p, methods=m, auth=a) for p, m, a in self.endpoints())

    # -- resolution ------------------------------------------------------------------

    def _allowed(self, canonical: str) -> tuple[dict[str, Route], dict[str, dict[str, object]]]:
        """Return ``{method: route}`` for the path (first match per method) and its params."""
        found: dict[str, Route] = dict(self._static.get(canonical, {}))
        params_of: dict[str, dict[str, object]] = {}
        for r in self._dynamic:
            if all(m in found for m in r.methods):
                continue
            params = r.match(canonical)
            if params is not None:
                for m in r.methods:
                    if m not in found:
                        found[m] = r
                        params_of[m] = params
        return found, params_of

    def plan(self, request: Request, now: float) -> Plan:
        """Return the plan for ``request`` and count it in the metrics.

        Never raises for any request: unknown paths and methods become planned
        404/405 errors, raised later by :meth:`enter` inside the middleware chain.
        """
        method = request.method
        path = request.path
        hot = self._hot.get(path)
        if hot is not None:
            entry = hot.get(method)
            if entry is not None and entry[3] is self.metrics:
                hot_route, hot_label, counters, _ = entry
                counters[0] += 1
                request.route = hot_route
                plan: Plan = _tuple_new(
                    Plan, (request, self._chain, hot_route, None, None, now, hot_label, counters)
                )
                return plan
        canonical = path if "%" not in path and path.isascii() else _canonical(path)
        table = self._static.get(canonical)
        route = None if table is None else table.get(method)
        params: Mapping[str, object] = {}
        if route is None:
            found, params_of = self._allowed(canonical)
            lookup = "GET" if method == "HEAD" and "HEAD" not in found else method
            route = found.get(lookup)
            params = params_of.get(lookup, {}) if route is not None else {}
            if route is None:
                return self._unrouted(request, found, now)
        label = self._labels.get((method, route.path))
        if label is None:  # bounded: (method, route) pairs of registered routes only
            label = self._labels[(method, route.path)] = f"{method} {route.path}"
        metrics = self.metrics
        counters = metrics.counters(label)
        counters[0] += 1
        if not params and canonical is path and len(self._hot) < _MAX_HOT_PATHS:
            # a static route by its exact path: remember what the lines above found
            self._hot.setdefault(path, {})[method] = (route, label, counters, metrics)
        # plan() completes the request it is handed (route, path_params) before any
        # user code sees it; building a copy here would cost more than routing.
        request.route = route
        if params:
            request.path_params = params
        return Plan(request, self._chain, route, None, None, now, label, counters)

    def _unrouted(self, request: Request, found: Mapping[str, Route], now: float) -> Plan:
        error: HTTPException | None = None
        response: Response | None = None
        if not found:
            error = HTTPException(404, f"Endpoint not found: {request.method} {request.path}")
            label = UNMATCHED_LABEL
        else:
            label = f"* {next(iter(found.values())).path}"
            allow = set(found)
            if "GET" in allow:
                allow.add("HEAD")
            allow.add("OPTIONS")
            allow_value = ", ".join(sorted(allow))
            if request.method == "OPTIONS":
                response = Response(status=204, headers=(("allow", allow_value),))
            else:
                msg = f"Method {request.method} not allowed for endpoint {request.path}"
                error = HTTPException(405, msg, headers=(("allow", allow_value),))
        counters = self.metrics.counters(label)
        counters[0] += 1
        return Plan(request, self._chain, None, error, response, now, label, counters)

    def enter(self, plan: Plan, request: Request) -> Request:
        """Run the end-of-chain checks and return the request to hand to the handler.

        Returns ``request`` with ``claims`` when the route has an ``auth`` label.

        Raises:
            HTTPException: the planned 404/405, or 500 when a route needs auth but
                no authenticator is installed (fail closed).
            AuthError: from the authenticator.
        """
        if plan.error is not None:
            raise plan.error
        route = plan.route
        if route is None or route.auth is None:
            return request
        auth = self.authenticator
        if auth is None:
            raise HTTPException(500, "Internal server error")
        claims = auth(request, route.auth, plan.started)
        new = replace(request, claims=dict(claims))
        new._state = request._state  # the same request: it keeps its scratch dict
        new._query = request._query
        return new

    # -- results and errors ------------------------------------------------------------

    def to_response(self, result: object) -> Response:
        """Return ``result`` converted to a :class:`Response`.

        Values JSON cannot encode by itself (datetime, UUID, Decimal, enums, dataclasses,
        pydantic models, sets) are encoded as :mod:`pywatt_proto._jsonable` describes,
        inside dicts/lists or returned directly; so are bare numbers.

        Raises:
            TypeError: the value has no conversion (the message lists the supported types).
            ValueError: a dict/list is not JSON-serialisable (NaN, ...).
        """
        t = type(result)
        if t is dict or t is list:  # the common cases first, without isinstance
            return _trusted(200, _JSON_HEADERS, _json_bytes(result))
        if t is Response:
            return result  # type: ignore[return-value]
        if isinstance(result, Response):
            return result
        if isinstance(result, dict | list):
            return _trusted(200, _JSON_HEADERS, _json_bytes(result))
        if isinstance(result, str):
            return _trusted(200, _TEXT_HEADERS, result.encode())
        if isinstance(result, bytes | bytearray | memoryview):
            return bytes_response(bytes(result))
        if result is None:
            return Response(status=204)
        if isinstance(result, ApiResponse):
            return result.to_response()
        if isinstance(result, tuple) and 2 <= len(result) <= 3 and isinstance(result[1], int):
            base = self.to_response(result[0])
            extra = _hdrs(result[2]) if len(result) == 3 else []
            return Response(status=result[1], headers=(*base.headers, *extra), body=base.body)
        return _trusted(200, _JSON_HEADERS, fallback_json(result, _json_bytes))

    def error_handler_for(self, exc: BaseException) -> ErrorHandler | None:
        """Return the error handler for ``exc`` (type along the MRO, then status) or None."""
        for cls in type(exc).__mro__:
            fn = self._by_type.get(cls)
            if fn is not None:
                return fn
        return self._by_status.get(_status_of(exc))

    def error_response(self, exc: BaseException) -> Response:
        """Return the default response for ``exc``; never leaks internals.

        ``HTTPException`` -> its status/message/headers; ``AuthError`` -> its status
        with ``WWW-Authenticate`` and a generic message; ``RemoteProtocolError`` ->
        its status hint; anything else -> 500 ``"Internal server error"``.
        """
        if isinstance(exc, HTTPException):
            return api_error(exc.message, exc.status, headers=exc.headers)
        if isinstance(exc, AuthError):
            hdrs = [("www-authenticate", exc.www_authenticate)] if exc.status == 401 else []
            return api_error(reason_phrase(exc.status) or "Error", exc.status, headers=hdrs)
        if isinstance(exc, RemoteProtocolError):
            return api_error(reason_phrase(exc.error_status_hint), exc.error_status_hint)
        return api_error("Internal server error", 500)

    def finish(self, plan: Plan, response: Response, now: float) -> Response:
        """Return the response to send (HEAD: body stripped, Content-Length kept); count it."""
        if plan.request.method == "HEAD":
            response = _strip_head(response)
        status = response.status
        duration = now - plan.started
        row = plan.counters  # Metrics.record_response, inlined for the hot path
        row[1] += 1
        if status >= 500:
            row[2] += 1
        if duration > 0.0:
            row[3] += duration
        row[4][bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1
        statuses = row[5]
        statuses[status] = statuses.get(status, 0) + 1
        return response


def _strip_head(response: Response) -> Response:
    """Return a HEAD answer: no body, Content-Length of the body it replaces."""
    no_length = response.header("content-length") is None
    if response.body or no_length:
        headers = response.headers
        if no_length and response.status not in (204, 304):
            headers = (*headers, ("content-length", str(len(response.body))))
        response = Response(status=response.status, headers=headers, body=b"")
    return response


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException | AuthError):
        return exc.status
    if isinstance(exc, RemoteProtocolError):
        return exc.error_status_hint
    return 500


def router_of(app: Any) -> Router:
    """Return ``app`` if it is a Router, else ``app.router`` (a Module app, for example);
    what both drivers' ``serve()`` accept.

    Raises:
        TypeError: neither.
    """
    if isinstance(app, Router):
        return app
    router = getattr(app, "router", None)
    if isinstance(router, Router):
        return router
    raise TypeError(f"expected a Router or an object with a .router, got {type(app).__name__}")
