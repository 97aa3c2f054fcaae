"""Pure conversions between router requests/responses and ASGI / WSGI apps, shared by the
two adapters (``pywatt_asyncio`` ASGI, ``pywatt_sync`` WSGI):

1. :func:`asgi_http_scope` / :func:`wsgi_environ` turn a :class:`~pywatt_proto.Request` into
   the scope (ASGI 3, HTTP spec 2.3) or environ (PEP 3333) the app reads, validating header
   names and values; the driver adds only its process objects (``wsgi.input``, ``state``).
2. A :class:`ResponseCollector` takes the app's answer (ASGI ``send`` messages, or WSGI
   ``start`` / ``body``), enforces the ordering rules and :data:`MAX_RESPONSE_BODY`, and
   yields one :class:`~pywatt_proto.Response`. Header pairs stay an ordered tuple, so
   repeated fields (``Set-Cookie``) survive until the module connection joins them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from ._errors import LocalProtocolError, RemoteProtocolError
from ._framing import DEFAULT_MAX_LINE_SIZE
from ._router import Request, Response, reason_phrase, text_response

#: Room kept on the response line for everything but the body: the
#: ``http_response`` (or wrapper) keys, request id, status and headers.
RESPONSE_LINE_OVERHEAD: Final = 64 * 1024

#: Largest response body an adapter collects, in bytes. On stdio a body is a
#: JSON array of numbers, up to 4 line bytes per body byte (``"255,"``), and a
#: line may be at most ``DEFAULT_MAX_LINE_SIZE`` (16 MiB), so this is the
#: largest body that always fits on one line (just under 4 MiB). Exceeding it
#: is a :class:`LocalProtocolError` with hint 502.
MAX_RESPONSE_BODY: Final = (DEFAULT_MAX_LINE_SIZE - RESPONSE_LINE_OVERHEAD) // 4

#: Largest number of response header pairs an app may set. Servers cap request
#: headers near 100 (h11, nginx defaults); a response with more than this is a
#: bug in the app, not a need.
MAX_RESPONSE_HEADERS: Final = 256

#: The ``scope["asgi"]`` dict every scope carries (ASGI 3, HTTP spec 2.3:
#: ``path`` includes ``root_path``).
ASGI_VERSION: Final[Mapping[str, str]] = {"version": "3.0", "spec_version": "2.3"}

# RFC 9110 §5.1: field-name = token; token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9110 §5.5: a field value never contains CR, LF or NUL.
_BAD_VALUE = re.compile(rb"[\r\n\x00]")

_REASONS: Final = {status: reason_phrase(status) for status in (400, 413, 502, 503)}


def header_bytes(value: str) -> bytes:
    """Return the bytes of a header value (or path) held as ``str``.

    Latin-1 when the text fits (the HTTP/1.1 convention; round-trips every
    byte), UTF-8 otherwise (a JSON peer may send any text). Never raises.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _raw_headers(request: Request) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in request.headers.items():
        raw_name = header_bytes(name).lower()
        if not _TOKEN.match(raw_name):
            raise RemoteProtocolError(f"invalid header name {name!r}", field=f"headers.{name}")
        raw_value = header_bytes(value).strip(b" \t")
        if _BAD_VALUE.search(raw_value):
            raise RemoteProtocolError(f"invalid value in header {name!r}", field=f"headers.{name}")
        pairs.append((raw_name, raw_value))
    return pairs


def _host_port(headers: list[tuple[bytes, bytes]], default: tuple[str, int]) -> tuple[str, int]:
    host = next((v for k, v in headers if k == b"host"), b"").decode("latin-1")
    if not host:
        return default
    if host.startswith("["):  # "[v6]" or "[v6]:port"
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    if port.isascii() and port.isdigit() and int(port) <= 65535:
        return name, int(port)
    return name, default[1]


def asgi_http_scope(
    request: Request,
    *,
    scheme: str = "http",
    root_path: str = "",
    server: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Return the ASGI ``http`` connection scope for ``request``.

    ``path`` is percent-decoded (UTF-8, invalid bytes -> U+FFFD) and, as in
    ASGI HTTP spec 2.3, includes ``root_path``; ``raw_path`` is the path as
    received. ``headers`` are ``[lower-cased name, value]`` byte pairs in
    order. ``server`` defaults to the ``Host`` header (else None); ``client``
    is ``request.client``. The caller adds ``state`` when the app's lifespan
    filled one.

    Raises:
        RemoteProtocolError: a header name is not a token or a value holds
            CR/LF/NUL (hint 400).
    """
    headers = _raw_headers(request)
    if server is None:
        host = _host_port(headers, ("", 443 if scheme == "https" else 80))
        server = host if host[0] else None
    raw_path = header_bytes(request.path)
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": "1.1",
        "method": request.method,
        "scheme": scheme,
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": header_bytes(request.query_string),
        "root_path": root_path.rstrip("/"),
        "headers": [[name, value] for name, value in headers],
        "client": list(request.client) if request.client is not None else None,
        "server": list(server) if server is not None else None,
        "extensions": {},
    }


def wsgi_environ(
    request: Request,
    *,
    script_name: str = "",
    server: tuple[str, int] = ("localhost", 80),
) -> dict[str, str]:
    """Return the CGI part of a PEP 3333 environ for ``request`` (all ``str``).

    ``PATH_INFO``/``SCRIPT_NAME`` are the percent-decoded path bytes decoded
    as Latin-1 (PEP 3333 "bytes as native strings"); ``script_name`` is split
    off ``PATH_INFO`` when the path lies under it. ``CONTENT_LENGTH`` is the
    real body length whatever the header said, so reading ``wsgi.input`` never
    blocks or truncates. ``server`` is the fallback for ``SERVER_NAME`` /
    ``SERVER_PORT`` when there is no ``Host`` header. Repeated header names are
    joined with ``","`` (RFC 9110 §5.3). The caller adds the ``wsgi.*`` keys.

    Raises:
        RemoteProtocolError: a header name is not a token or a value holds
            CR/LF/NUL (hint 400).
    """
    headers = _raw_headers(request)
    raw_path = header_bytes(request.path)
    decoded = unquote_to_bytes(raw_path).decode("latin-1")
    root = script_name.rstrip("/")
    script, path_info = "", decoded
    if root and (decoded == root or decoded.startswith(root + "/")):
        script, path_info = root, decoded[len(root) :]
    name, port = _host_port(headers, server)
    query = header_bytes(request.query_string).decode("latin-1")
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": script,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": name,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "CONTENT_LENGTH": str(len(request.body)) if request.body else "",
    }
    if request.client is not None:
        environ["REMOTE_ADDR"] = request.client[0]
        environ["REMOTE_PORT"] = str(request.client[1])
    for key, value in headers:
        text = value.decode("latin-1")
        if key == b"content-type":
            environ["CONTENT_TYPE"] = text
            continue
        if key == b"content-length":
            continue  # replaced by the real length above
        cgi = "HTTP_" + key.decode("latin-1").upper().replace("-", "_")
        environ[cgi] = f"{environ[cgi]},{text}" if cgi in environ else text
    return environ


def parse_wsgi_status(status: str) -> int:
    """Return the code of a PEP 3333 status string such as ``"200 OK"``.

    Raises:
        LocalProtocolError: the string is not ``"NNN reason"`` with NNN in
            100..599 (hint 500).
    """
    code, sep, _reason = status.partition(" ")
    if not (sep and len(code) == 3 and code.isascii() and code.isdigit()) or not (
        100 <= int(code) <= 599
    ):
        raise LocalProtocolError(f"invalid WSGI status {status!r}", error_status_hint=500)
    return int(code)


def error_response(status: int) -> Response:
    """Return a short plain-text response for ``status`` that leaks no internals.

    Used by both adapters when an app fails; a status without a listed reason
    reads "Internal Server Error".

    Raises:
        LocalProtocolError: ``status`` is outside 100..599.
    """
    return text_response(_REASONS.get(status, "Internal Server Error"), status)


def _text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    if isinstance(value, str):
        return value
    return None


class ResponseCollector:
    """Collects one app response, enforcing order and the size bound.

    States: *waiting* (no status) -> *started* (status and headers known, body
    accumulating) -> *done*. WSGI uses :meth:`start` / :meth:`body` /
    :meth:`finish`; ASGI feeds each ``send`` message to :meth:`asgi_send`.
    Every method raises :class:`LocalProtocolError` (hint 500, or 502 for an
    oversize body) on misuse; the collector is then ``failed`` and refuses
    every later call.
    """

    __slots__ = ("_chunks", "_size", "done", "failed", "headers", "max_body", "status")

    def __init__(self, *, max_body: int = MAX_RESPONSE_BODY) -> None:
        """Start empty, accepting at most ``max_body`` body bytes."""
        self.max_body = max_body
        self.status: int | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.done = False
        self.failed = False
        self._chunks: list[bytes] = []
        self._size = 0

    def _fail(self, msg: str, hint: int = 500) -> LocalProtocolError:
        self.failed = True
        return LocalProtocolError(msg, error_status_hint=hint)

    @property
    def body_size(self) -> int:
        """Number of body bytes collected so far."""
        return self._size

    def start(
        self, status: int, headers: Iterable[Iterable[object]], *, replace: bool = False
    ) -> None:
        """Record status and header pairs (str or bytes, Latin-1).

        ``replace`` allows a second call as long as no body byte was collected
        (WSGI ``start_response`` with ``exc_info``).

        Raises:
            LocalProtocolError: already started (without ``replace``), body
                already collected, status outside 100..599, more than
                :data:`MAX_RESPONSE_HEADERS` headers, or a header that is not a
                (str|bytes, str|bytes) pair, not a token, or holds CR/LF/NUL.
        """
        if self.failed or self.done:
            raise self._fail("response already finished")
        if self.status is not None and not (replace and self._size == 0):
            raise self._fail("response already started")
        if type(status) is not int or not 100 <= status <= 599:
            raise self._fail(f"invalid response status {status!r}")
        pairs: list[tuple[str, str]] = []
        for pair in headers:
            if len(pairs) >= MAX_RESPONSE_HEADERS:
                raise self._fail(f"more than {MAX_RESPONSE_HEADERS} response headers")
            items = tuple(pair)
            texts = [_text(x) for x in items]
            if len(texts) != 2 or texts[0] is None or texts[1] is None:
                raise self._fail(f"response header must be a (name, value) pair: {pair!r}")
            name, value = texts[0], texts[1]
            if not _TOKEN.match(header_bytes(name)) or _BAD_VALUE.search(header_bytes(value)):
                raise self._fail(f"invalid response header {name!r}")
            pairs.append((name, value))
        self.status = status
        self.headers = tuple(pairs)

    def body(self, chunk: bytes) -> None:
        """Append a body chunk.

        Raises:
            LocalProtocolError: not started, already done, or the body would
                exceed ``max_body`` (hint 502).
        """
        if self.failed or self.done or self.status is None:
            raise self._fail("body before response start or after its end")
        if self._size + len(chunk) > self.max_body:
            raise self._fail(f"response body exceeds {self.max_body} bytes", 502)
        if chunk:
            self._chunks.append(bytes(chunk))
            self._size += len(chunk)

    def finish(self) -> Response:
        """Mark the response complete and return it.

        Raises:
            LocalProtocolError: no status was ever given, or the collector failed.
        """
        if self.failed or self.status is None:
            raise self._fail("app finished without starting a response")
        self.done = True
        return Response(status=self.status, headers=self.headers, body=b"".join(self._chunks))

    def asgi_send(self, message: Mapping[str, Any]) -> bool:
        """Apply one ASGI ``send`` message; return True when the response is complete.

        Accepts ``http.response.start`` (``status``, ``headers``) and
        ``http.response.body`` (``body``, ``more_body``); anything else is an
        error, as is any message after completion.

        Raises:
            LocalProtocolError: unknown type, wrong order, bad field types or
                an oversize body (hint 500 / 502).
        """
        kind = message.get("type")
        if kind == "http.response.start":
            status: Any = message.get("status")
            self.start(status, message.get("headers", ()))
            return False
        if kind == "http.response.body":
            chunk = message.get("body", b"")
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise self._fail(f"ASGI body must be bytes, got {type(chunk).__name__}")
            self.body(bytes(chunk))
            if message.get("more_body", False):
                return False
            self.done = True
            return True
        raise self._fail(f"unexpected ASGI message {kind!r}")
