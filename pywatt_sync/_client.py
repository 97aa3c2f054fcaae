"""Blocking HTTP/1.1 client on h11: keep-alive pool, timeouts, retries, breaker.

The protocol work (request bytes, response parsing and limits, URL joining,
query encoding, retry decisions, idle-pool bookkeeping) is in
:mod:`pywatt_proto`; this module connects sockets, waits with deadlines and
sleeps between retries. A client may be shared by threads.

    with Client("http://127.0.0.1:8080") as client:
        resp = client.get("/items").query(page=2).header("x-trace", "1").send()
        data = client.post("/items").json({"name": "a"}).send_json()
"""

from __future__ import annotations

import contextlib
import socket
import ssl as _ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11

from pywatt_proto import (
    NEED_DATA,
    ClientResponse,
    HTTPClientError,
    HTTPProtocolError,
    ReadTimeout,
    RequestSpec,
    TotalTimeout,
)
from pywatt_proto._client_common import (
    ClientBase,
    ClientCall,
    StaleConnection,
)

_READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestBuilder(RequestSpec):
    """A :class:`~pywatt_proto.RequestSpec` bound to a client: ``builder.send()`` performs it."""

    client: Client | None = None

    def send(self) -> ClientResponse:
        """Send the request and return the response (any status).

        Raises:
            ConnectError, ConnectTimeout, ReadTimeout, TotalTimeout, HTTPProtocolError,
            CircuitOpenError: see :meth:`Client.send`.
        """
        assert self.client is not None, "builder is not bound to a client"
        return self.client.send(self)

    def send_json(self) -> Any:
        """Send, require a 2xx answer and return its JSON body.

        Raises:
            HTTPStatusError: 4xx/5xx; ``ValueError`` if the body is not JSON.
        """
        return self.send().raise_for_status().json()


class _Conn:
    __slots__ = ("h11", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Client(ClientBase[RequestBuilder, _Conn, threading.BoundedSemaphore]):
    """An HTTP client with a keep-alive pool (at most ``max_per_host`` connections per
    origin, idle ones kept ``idle_timeout`` s).

    Timeouts (seconds): ``connect_timeout`` per connection attempt, ``read_timeout`` to send
    the request and per wait for response bytes, ``timeout`` for the whole call including
    retries (None = unbounded). ``retry`` enables retries (:class:`~pywatt_proto.RetryPolicy`);
    ``breaker`` guards every call with a :class:`~pywatt_proto.CircuitBreaker`: one outcome
    per call, recorded after its retries (a final 5xx answer or error is a failure;
    spec/breaker.md §1.8). A refused call raises :class:`~pywatt_proto.ClientCircuitOpenError`
    (an ``HTTPClientError``), chained to the failure that opened the breaker.
    """

    def _init_driver(self) -> None:
        self._lock = threading.Lock()  # guards the pool, the slots and the pure breaker

    def request(self, method: str, url: str) -> RequestBuilder:
        """Return a builder for ``method url``."""
        return RequestBuilder(method=method.upper(), url=url, client=self)

    def _now(self) -> float:
        return time.monotonic()

    def get_json(self, url: str, **params: Any) -> Any:
        """GET ``url`` (with query ``params``), require 2xx, return the JSON body."""
        return self.get(url).query(params).send_json()

    def post_json(self, url: str, value: object) -> Any:
        """POST ``value`` as JSON, require 2xx, return the JSON body."""
        return self.post(url).json(value).send_json()

    # -- sending -------------------------------------------------------------------------------

    def send(self, spec: RequestSpec) -> ClientResponse:
        """Perform ``spec`` (retrying per the policy) and return the last response.

        Raises:
            ConnectError / ConnectTimeout: no connection could be made.
            ReadTimeout: the server did not answer in time.
            TotalTimeout: the whole call exceeded its timeout.
            HTTPProtocolError: the server broke HTTP/1.1 or the response is too large.
            ClientCircuitOpenError: the breaker refused the call (nothing was sent).
            LocalProtocolError: bad URL or header.
        """
        with self._lock:  # the pure breaker is not thread-safe by itself
            call = self._start(spec)
        try:
            while True:
                try:
                    response = self._attempt(call)
                except (HTTPClientError, OSError) as exc:
                    delay = call.after_error(exc, time.monotonic())
                    if delay is None:
                        raise
                else:
                    with self._lock:
                        delay = call.after_response(response, time.monotonic())
                    if delay is None:
                        return response
                time.sleep(delay)
        except BaseException as exc:
            with self._lock:
                call.failed(exc, time.monotonic())
            raise

    def _attempt(self, call: ClientCall) -> ClientResponse:
        url = call.url
        origin = call.origin
        with self._lock:
            slots = self._slots.get(origin)
            if slots is None:
                slots = self._slots[origin] = threading.BoundedSemaphore(self._max_per_host)
        wait, _ = call.timeout(1e9, time.monotonic())
        if not slots.acquire(timeout=max(wait, 0.0)):
            raise TotalTimeout("timed out waiting for a pooled connection", url=url)
        try:
            with self._lock:
                conn, expired = self._pool.take(origin, time.monotonic())
            for old in expired:
                old.close()
            if conn is not None:
                try:
                    return self._exchange(conn, call)
                except StaleConnection:
                    pass  # the server closed an idle connection: use a fresh one
            conn = self._connect(call)
            try:
                return self._exchange(conn, call)
            except StaleConnection as stale:
                raise HTTPProtocolError("server closed the connection", url=url) from stale
        finally:
            slots.release()

    def _connect(self, call: ClientCall) -> _Conn:
        origin = call.origin
        wait, is_total = call.timeout(self.connect_timeout, time.monotonic())
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=max(wait, 0.001))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.scheme == "https":
                ctx = self._ssl or _ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=origin.host)
        except TimeoutError:
            raise call.connect_timeout_error(is_total) from None
        except OSError as exc:
            raise call.connect_error(exc) from exc
        return _Conn(sock)

    def _exchange(self, conn: _Conn, call: ClientCall) -> ClientResponse:
        exchange = call.exchange(conn.h11, self.max_response_bytes)
        url = call.url
        ok = False
        try:
            sock = conn.sock
            try:
                sock.settimeout(max(call.timeout(self.read_timeout, time.monotonic())[0], 0.001))
                sock.sendall(exchange.bytes_to_send())
            except TimeoutError:
                raise ReadTimeout("timed out sending the request", url=url) from None
            except OSError as exc:
                raise StaleConnection() from exc
            while True:
                event = exchange.next_event()
                if event is not NEED_DATA:
                    break
                wait, is_total = call.timeout(self.read_timeout, time.monotonic())
                try:
                    if wait <= 0:
                        raise TimeoutError
                    sock.settimeout(wait)
                    data = sock.recv(_READ_SIZE)
                except TimeoutError:
                    raise call.read_timeout_error(is_total) from None
                except OSError as exc:
                    raise call.lost_connection_error(exchange, exc) from exc
                if not data and not exchange.started:
                    raise StaleConnection()
                exchange.receive_data(data)
            assert isinstance(event, ClientResponse)
            ok = True
            return event
        finally:
            if ok and exchange.reusable and not self._closed:
                with self._lock:
                    kept = self._pool.put(call.origin, conn, time.monotonic())
                if not kept:
                    conn.close()
            else:
                conn.close()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection; later calls raise ``HTTPClientError``."""
        self._closed = True
        with self._lock:
            conns = self._pool.drain()
        for conn in conns:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
