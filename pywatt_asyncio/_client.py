"""HTTP/1.1 client for asyncio on h11: keep-alive pool, timeouts, retries, breaker.

The protocol work (request bytes, response parsing and limits, URL joining,
query encoding, retry decisions, idle-pool bookkeeping) is in
:mod:`pywatt_proto`; this module connects sockets, waits with deadlines and
sleeps between retries.

    async with AsyncClient("http://127.0.0.1:8080") as client:
        resp = await client.get("/items").query(page=2).header("x-trace", "1")
        data = (await client.post("/items").json({"name": "a"}).send()).json()
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Generator
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
class AsyncRequestBuilder(RequestSpec):
    """A :class:`~pywatt_proto.RequestSpec` bound to a client: ``await builder`` or
    ``await builder.send()`` performs it."""

    client: AsyncClient | None = None

    async def send(self) -> ClientResponse:
        """Send the request and return the response (any status).

        Raises:
            ConnectError, ConnectTimeout, ReadTimeout, TotalTimeout, HTTPProtocolError,
            CircuitOpenError: see :meth:`AsyncClient.send`.
        """
        assert self.client is not None, "builder is not bound to a client"
        return await self.client.send(self)

    async def send_json(self) -> Any:
        """Send, require a 2xx answer and return its JSON body.

        Raises:
            HTTPStatusError: 4xx/5xx; ``ValueError`` if the body is not JSON.
        """
        return (await self.send()).raise_for_status().json()

    def __await__(self) -> Generator[Any, None, ClientResponse]:
        return self.send().__await__()


class _Conn:
    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class AsyncClient(ClientBase[AsyncRequestBuilder, _Conn, asyncio.Semaphore]):
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

    def request(self, method: str, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``method url``."""
        return AsyncRequestBuilder(method=method.upper(), url=url, client=self)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def get_json(self, url: str, **params: Any) -> Any:
        """GET ``url`` (with query ``params``), require 2xx, return the JSON body."""
        return await self.get(url).query(params).send_json()

    async def post_json(self, url: str, value: object) -> Any:
        """POST ``value`` as JSON, require 2xx, return the JSON body."""
        return await self.post(url).json(value).send_json()

    # -- sending -------------------------------------------------------------------------------

    async def send(self, spec: RequestSpec) -> ClientResponse:
        """Perform ``spec`` (retrying per the policy) and return the last response.

        Raises:
            ConnectError / ConnectTimeout: no connection could be made.
            ReadTimeout: the server did not answer in time.
            TotalTimeout: the whole call exceeded its timeout.
            HTTPProtocolError: the server broke HTTP/1.1 or the response is too large.
            ClientCircuitOpenError: the breaker refused the call (nothing was sent).
            LocalProtocolError: bad URL or header.
        """
        call = self._start(spec)
        try:
            while True:
                try:
                    response = await self._attempt(call)
                except (HTTPClientError, OSError) as exc:
                    delay = call.after_error(exc, self._now())
                    if delay is None:
                        raise
                else:
                    delay = call.after_response(response, self._now())
                    if delay is None:
                        return response
                await asyncio.sleep(delay)
        except BaseException as exc:
            call.failed(exc, self._now())
            raise

    async def _attempt(self, call: ClientCall) -> ClientResponse:
        url = call.url
        origin = call.origin
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._max_per_host)
        loop = asyncio.get_running_loop()
        wait, _ = call.timeout(1e9, self._now())
        try:
            async with asyncio.timeout(wait):
                await slots.acquire()
        except TimeoutError:
            raise TotalTimeout("timed out waiting for a pooled connection", url=url) from None
        try:
            conn, expired = self._pool.take(origin, loop.time())
            for old in expired:
                old.close()
            if conn is not None:
                try:
                    return await self._exchange(conn, call)
                except StaleConnection:
                    pass  # the server closed an idle connection: use a fresh one
            conn = await self._connect(call)
            try:
                return await self._exchange(conn, call)
            except StaleConnection as stale:
                raise HTTPProtocolError("server closed the connection", url=url) from stale
        finally:
            slots.release()

    async def _connect(self, call: ClientCall) -> _Conn:
        origin = call.origin
        wait, is_total = call.timeout(self.connect_timeout, self._now())
        ssl = (self._ssl or _ssl.create_default_context()) if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=ssl, limit=_READ_SIZE
                )
        except TimeoutError:
            raise call.connect_timeout_error(is_total) from None
        except OSError as exc:
            raise call.connect_error(exc) from exc
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, call: ClientCall) -> ClientResponse:
        exchange = call.exchange(conn.h11, self.max_response_bytes)
        ok = False
        try:
            try:
                async with asyncio.timeout(call.timeout(self.read_timeout, self._now())[0]):
                    conn.writer.write(exchange.bytes_to_send())
                    await conn.writer.drain()
            except TimeoutError:
                raise ReadTimeout("timed out sending the request", url=call.url) from None
            except OSError as exc:
                raise StaleConnection() from exc
            while True:
                event = exchange.next_event()
                if event is not NEED_DATA:
                    break
                wait, is_total = call.timeout(self.read_timeout, self._now())
                try:
                    async with asyncio.timeout(wait):
                        data = await conn.reader.read(_READ_SIZE)
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
                if not self._pool.put(call.origin, conn, asyncio.get_running_loop().time()):
                    conn.close()
            else:
                conn.close()

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every pooled connection; later calls raise ``HTTPClientError``."""
        self._closed = True
        for conn in self._pool.drain():
            conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
