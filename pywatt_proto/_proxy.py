"""What an HTTP front door (``pywatt run``) decides about a request before forwarding it
as an ``http_request`` line (no I/O):

* :func:`forward_target`: only targets the Rust reference's ``Uri`` parser accepts, in
  origin-form (a module built from the reference stops serving on the first one it refuses:
  spec/stdio.md, "The uri rule"); the front door answers 400 itself for the rest.
* :class:`TrustedProxies`, :func:`forwarding`: which client address the module is told
  about in ``x-forwarded-for`` / ``x-forwarded-proto`` (uvicorn's ``forwarded_allow_ips``).
* :func:`access_line`: the access log line, in uvicorn's shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ._errors import RemoteProtocolError
from ._router import reason_phrase

if TYPE_CHECKING:
    from ._router import Request

#: Bytes the reference's parser accepts unescaped in the path (``http`` crate,
#: ``PathAndQuery::from_shared``): ``!``, ``$``..``;``, ``=``, ``@``..``_``, ``a``..``z``,
#: ``|``, ``~``, and ``"``, ``{``, ``}`` (allowed there "for parity" with httparse).
PATH_BYTES: Final = (
    b"!"
    + bytes(range(0x24, 0x3C))
    + b"="
    + bytes(range(0x40, 0x60))
    + bytes(range(0x61, 0x7B))
    + b'|~"{}'
)
#: Bytes it accepts unescaped in the query: ``!``, ``$``..``;``, ``=``, ``?``..``~``.
QUERY_BYTES: Final = b"!" + bytes(range(0x24, 0x3C)) + b"=" + bytes(range(0x3F, 0x7F))
#: Longest ``uri`` the reference's parser accepts (``u16::MAX - 1``); longer is 414.
MAX_URI_BYTES: Final = 65534


def forward_target(path: str, query: str) -> str:
    """Return the origin-form ``uri`` to forward for a request's ``path`` and ``query``.

    ``path`` is what the HTTP parser took from the request target (for absolute-form,
    ``http://host/p?q``, the part after the authority; an empty path becomes ``/``).

    Raises:
        RemoteProtocolError: a byte the reference's parser refuses (hint 400: control
            characters, space, ``#``, ``<``, ``>``, a backtick in the path, ``"`` in the
            query, anything outside ASCII), a path not starting with ``/``, or a target
            over :data:`MAX_URI_BYTES` (hint 414).
    """
    if not path.startswith("/"):
        raise RemoteProtocolError("invalid request target", error_status_hint=400, field="target")
    try:
        raw_path = path.encode("ascii")
        raw_query = query.encode("ascii")
    except UnicodeEncodeError:
        raise RemoteProtocolError(
            "request target is not ASCII", error_status_hint=400, field="target"
        ) from None
    if raw_path.translate(None, PATH_BYTES) or raw_query.translate(None, QUERY_BYTES):
        raise RemoteProtocolError(
            "invalid character in request target", error_status_hint=400, field="target"
        )
    uri = f"{path}?{query}" if query else path
    if len(uri) > MAX_URI_BYTES:
        raise RemoteProtocolError("request target too long", error_status_hint=414, field="target")
    return uri


class TrustedProxies:
    """The peers whose ``x-forwarded-*`` headers are believed (uvicorn's
    ``forwarded_allow_ips``): ``"*"`` for all, else addresses and networks
    (``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"::1"``), as one comma-separated string or an
    iterable. Empty trusts nobody.

    Raises:
        ValueError: an entry is neither ``*`` nor an IP address or network.
    """

    __slots__ = ("_all", "_networks")

    def __init__(self, spec: str | Iterable[str] = ()) -> None:
        import ipaddress  # the front door only (module start-up time)

        items = spec.split(",") if isinstance(spec, str) else list(spec)
        entries = [item.strip() for item in items if item.strip()]
        self._all = "*" in entries
        self._networks: tuple[Any, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        )

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if not isinstance(host, str) or not self._networks:
            return False
        import ipaddress

        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def forwarding(
    peer: str | None,
    forwarded_for: str | None,
    forwarded_proto: str | None,
    trusted: TrustedProxies,
) -> tuple[str | None, str | None, str]:
    """Return ``(client host, x-forwarded-for, x-forwarded-proto)`` to forward.

    When ``peer`` is not trusted the client's own headers are ignored: the client is the
    peer, ``x-forwarded-for`` is the peer alone, the protocol ``http``. When it is trusted,
    the client is the rightmost untrusted entry of its ``x-forwarded-for`` (the leftmost if
    all are trusted; uvicorn's rule), the forwarded list ends with that client (entries
    after it, all trusted proxies, are dropped), and ``x-forwarded-proto`` is kept if it
    is ``http``/``https``/``ws``/``wss``. So the **last** ``x-forwarded-for`` entry a
    module receives is always the client the front door vouches for. A None peer (not an
    IP socket) gives ``(None, None, "http")``.
    """
    if peer is None:
        return None, None, "http"
    if peer not in trusted:
        return peer, peer, "http"
    hosts = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    if not hosts:
        return peer, peer, _proto(forwarded_proto)
    chosen = next((i for i in range(len(hosts) - 1, -1, -1) if hosts[i] not in trusted), 0)
    return hosts[chosen], ", ".join(hosts[: chosen + 1]), _proto(forwarded_proto)


def _proto(value: str | None) -> str:
    proto = (value or "").strip().lower()
    return proto if proto in ("http", "https", "ws", "wss") else "http"


def access_line(
    client: tuple[str, int] | None,
    method: str,
    target: str,
    http_version: str,
    status: int,
    duration: float,
    module_id: str | None = None,
) -> str:
    """Return one access-log line in uvicorn's shape, plus the time and the module id::

        127.0.0.1:50514 - "GET /hello?x=1 HTTP/1.1" 200 OK 1.25ms [hello]

    ``duration`` is in seconds; the target is written as :func:`log_safe` says.
    """
    who = f"{client[0]}:{client[1]}" if client else "-"
    line = (
        f'{who} - "{method} {log_safe(target)} HTTP/{http_version}" {status} '
        f"{reason_phrase(status)} "
        f"{duration * 1000.0:.2f}ms"
    )
    return f"{line} [{module_id}]" if module_id else line


def log_safe(target: str) -> str:
    """Return ``target`` as access logs write it: ``"`` as ``%22`` and characters outside
    printable ASCII escaped (``\\xNN``), so a hostile target cannot forge or colour a line."""
    shown = target.replace('"', "%22")
    if not shown.isprintable() or not shown.isascii():
        shown = shown.encode("latin-1", "backslashreplace").decode("ascii", "backslashreplace")
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return shown


def fill_forwarded_client(request: Request) -> None:
    """Set ``request.client`` to ``(host, 0)`` from the last ``x-forwarded-for`` entry.

    For a module run by ``pywatt run`` (``_module.FORWARDED_CLIENT_ENV``): the front door
    replaces whatever the client sent, so the last entry is the address it vouches for
    (:func:`forwarding`). Leaves ``request`` unchanged when the header is absent or empty.
    """
    value = request.headers.get("x-forwarded-for")
    if value:
        host = value.rpartition(",")[2].strip()
        if host:
            request.client = (host, 0)
