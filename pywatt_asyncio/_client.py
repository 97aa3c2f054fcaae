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
import random
import ssl as _ssl
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import h11

from pywatt_proto import (
    DEFAULT_MAX_RESPONSE_BYTES,
    NEED_DATA,
    REJECTED,
    CircuitBreaker,
    CircuitOpenError,
    ClientExchange,
    ClientResponse,
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    HTTPClientError,
    HTTPProtocolError,
    Origin,
    RandomSource,
    ReadTimeout,
    RequestSpec,
    RetryPolicy,
    TotalTimeout,
    split_url,
)

__all__ = ["AsyncClient", "AsyncRequestBuilder"]

_READ_SIZE = 64 * 1024
_USER_AGENT = "pywatt"


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


class AsyncClient:
    """An HTTP client with a keep-alive pool (at most ``max_per_host`` connections per
    origin, idle ones kept ``idle_timeout`` s).

    Timeouts (seconds): ``connect_timeout`` per connection attempt,
    ``read_timeout`` per wait for response bytes, ``timeout`` for the whole
    call including retries (None = unbounded). ``retry`` enables retries
    (:class:`~pywatt_proto.RetryPolicy`); ``breaker`` guards every attempt with
    a :class:`~pywatt_proto.CircuitBreaker` (5xx answers and transport errors
    count as failures).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        max_per_host: int = 10,
        idle_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        ssl: _ssl.SSLContext | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        rng: RandomSource | None = None,
    ) -> None:
        self.base_url = base_url
        self.headers: tuple[tuple[str, str], ...] = tuple((headers or {}).items())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry = retry
        self.breaker = breaker
        self.max_response_bytes = max_response_bytes
        self._ssl = ssl
        self._rng: RandomSource = rng or random.Random()
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            max_per_host=max_per_host, idle_timeout=idle_timeout
        )
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._max_per_host = max_per_host
        self._closed = False

    # -- builders ------------------------------------------------------------------------------

    def request(self, method: str, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``method url``."""
        return AsyncRequestBuilder(method=method.upper(), url=url, client=self)

    def get(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``GET url``."""
        return self.request("GET", url)

    def post(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``POST url``."""
        return self.request("POST", url)

    def put(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``PUT url``."""
        return self.request("PUT", url)

    def delete(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``DELETE url``."""
        return self.request("DELETE", url)

    def patch(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``PATCH url``."""
        return self.request("PATCH", url)

    def head(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``HEAD url``."""
        return self.request("HEAD", url)

    def options(self, url: str) -> AsyncRequestBuilder:
        """Return a builder for ``OPTIONS url``."""
        return self.request("OPTIONS", url)

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
            CircuitOpenError: the breaker refused the call.
            LocalProtocolError: bad URL or header.
        """
        if self._closed:
            raise HTTPClientError("client is closed")
        url = spec.resolve(self.base_url)
        headers = [*self.headers, *spec.headers]
        if not any(k.lower() == "user-agent" for k, _ in headers):
            headers.append(("user-agent", _USER_AGENT))
        loop = asyncio.get_running_loop()
        total = spec.timeout if spec.timeout is not None else self.timeout
        deadline = None if total is None else loop.time() + total
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await self._guarded(spec.method, url, headers, spec.body, deadline)
            except (HTTPClientError, OSError) as exc:
                delay = None
                if self.retry is not None and not isinstance(exc, TotalTimeout):
                    delay = self.retry.next_delay(
                        method=spec.method, attempts=attempts, rng=self._rng, error=exc
                    )
                if delay is None:
                    raise
            else:
                if self.retry is None:
                    return response
                delay = self.retry.next_delay(
                    method=spec.method,
                    attempts=attempts,
                    rng=self._rng,
                    status=response.status,
                    retry_after=response.headers.get("retry-after"),
                )
                if delay is None:
                    return response
            if deadline is not None and loop.time() + delay >= deadline:
                raise TotalTimeout("no time left for another attempt", url=url)
            await asyncio.sleep(delay)

    async def _guarded(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        deadline: float | None,
    ) -> ClientResponse:
        breaker = self.breaker
        if breaker is None:
            return await self._attempt(method, url, headers, body, deadline)
        loop = asyncio.get_running_loop()
        ticket = breaker.acquire(loop.time())
        if ticket == REJECTED:
            raise CircuitOpenError(
                name=breaker.name, state=breaker.state, remaining=breaker.retry_after(loop.time())
            )
        try:
            response = await self._attempt(method, url, headers, body, deadline)
        except BaseException as exc:
            breaker.record_exception(ticket, exc, loop.time())
            raise
        if response.status >= 500:
            breaker.record_failure(ticket, loop.time())
        else:
            breaker.record_success(ticket, loop.time())
        return response

    def _wait(self, deadline: float | None, limit: float) -> tuple[float, bool]:
        """Return (seconds to wait, whether the total deadline is the tighter bound)."""
        if deadline is None:
            return limit, False
        left = deadline - asyncio.get_running_loop().time()
        return (left, True) if left < limit else (limit, False)

    async def _attempt(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        deadline: float | None,
    ) -> ClientResponse:
        origin, _ = split_url(url)
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._max_per_host)
        loop = asyncio.get_running_loop()
        wait, _ = self._wait(deadline, 1e9)
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
                    return await self._exchange(conn, origin, method, url, headers, body, deadline)
                except _Stale:
                    pass  # the server closed an idle connection: use a fresh one
            conn = await self._connect(origin, url, deadline)
            try:
                return await self._exchange(conn, origin, method, url, headers, body, deadline)
            except _Stale as stale:
                raise HTTPProtocolError("server closed the connection", url=url) from stale
        finally:
            slots.release()

    async def _connect(self, origin: Origin, url: str, deadline: float | None) -> _Conn:
        wait, is_total = self._wait(deadline, self.connect_timeout)
        ssl = (self._ssl or _ssl.create_default_context()) if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=ssl, limit=_READ_SIZE
                )
        except TimeoutError:
            if is_total:
                raise TotalTimeout("timed out connecting", url=url) from None
            msg = f"connect to {origin.host}:{origin.port} timed out"
            raise ConnectTimeout(msg, url=url) from None
        except OSError as exc:
            msg = f"cannot connect to {origin.host}:{origin.port}: {exc}"
            raise ConnectError(msg, url=url) from exc
        return _Conn(reader, writer)

    async def _exchange(
        self,
        conn: _Conn,
        origin: Origin,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        deadline: float | None,
    ) -> ClientResponse:
        exchange = ClientExchange(
            conn.h11, method, url, headers, body, max_response_bytes=self.max_response_bytes
        )
        ok = False
        try:
            try:
                conn.writer.write(exchange.bytes_to_send())
                await conn.writer.drain()
            except OSError as exc:
                raise _Stale() from exc
            while True:
                event = exchange.next_event()
                if event is not NEED_DATA:
                    break
                wait, is_total = self._wait(deadline, self.read_timeout)
                try:
                    async with asyncio.timeout(wait):
                        data = await conn.reader.read(_READ_SIZE)
                except TimeoutError:
                    if is_total:
                        raise TotalTimeout("timed out reading the response", url=url) from None
                    raise ReadTimeout("timed out reading the response", url=url) from None
                except OSError as exc:
                    if not exchange.started:
                        raise _Stale() from exc
                    raise HTTPProtocolError(f"connection lost: {exc}", url=url) from exc
                if not data and not exchange.started:
                    raise _Stale()
                exchange.receive_data(data)
            assert isinstance(event, ClientResponse)
            ok = True
            return event
        finally:
            if ok and exchange.reusable and not self._closed:
                if not self._pool.put(origin, conn, asyncio.get_running_loop().time()):
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


class _Stale(Exception):
    """A reused connection turned out closed before any response byte arrived."""
