"""The parts of the HTTP client both drivers share: settings, builders, retry bookkeeping.

``pywatt_asyncio.AsyncClient`` and ``pywatt_sync.Client`` differ only in how they connect,
wait and sleep. A driver subclasses :class:`ClientBase`, supplies ``request`` (its bound
builder) and ``_now`` (its monotonic clock), and keeps only its loop: ``_start(spec)`` gives
a :class:`ClientCall`; after each attempt it reports the answer or the error to the call,
which returns the sleep before the next one (or None: return the answer / re-raise);
``check_time_left`` refuses a sleep past the call's deadline.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from ._breaker import REJECTED, CircuitBreaker
from ._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ClientCircuitOpenError,
    ClientExchange,
    ClientResponse,
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    HTTPClientError,
    HTTPProtocolError,
    HTTPStatusError,
    HTTPTimeoutError,
    Origin,
    ReadTimeout,
    RequestSpec,
    RetryPolicy,
    TotalTimeout,
)
from ._random_source import RandomSource

if TYPE_CHECKING:
    import ssl

    import h11

#: Sent as ``User-Agent`` unless the client or the request sets one.
USER_AGENT = "pywatt"

B = TypeVar("B", bound=RequestSpec)
C = TypeVar("C")
S = TypeVar("S")


class StaleConnection(Exception):
    """A reused connection turned out closed before any response byte arrived.

    Raised inside a driver's exchange and caught by its attempt, which then opens a
    fresh connection (or, if that one was fresh already, raises HTTPProtocolError).
    """


class ClientCall:
    """One client call: what is sent, its total deadline, and the retry decisions.

    ``attempts`` counts the attempts whose outcome was reported.
    """

    __slots__ = ("_retry", "_rng", "attempts", "body", "deadline", "headers", "method", "url")

    def __init__(
        self,
        spec: RequestSpec,
        *,
        base_url: str | None,
        headers: Iterable[tuple[str, str]],
        timeout: float | None,
        retry: RetryPolicy | None,
        rng: RandomSource,
        now: float,
    ) -> None:
        self.method = spec.method
        self.url = spec.resolve(base_url)
        self.body = spec.body
        sent = [*headers, *spec.headers]
        if not any(k.lower() == "user-agent" for k, _ in sent):
            sent.append(("user-agent", USER_AGENT))
        self.headers = sent
        total = spec.timeout if spec.timeout is not None else timeout
        self.deadline = None if total is None else now + total
        self.attempts = 0
        self._retry = retry
        self._rng = rng

    def retry_after_error(self, exc: BaseException) -> float | None:
        """Report that an attempt raised ``exc``; return the wait before the next
        attempt, or None to re-raise ``exc`` (no policy, a TotalTimeout, or the policy
        says stop)."""
        self.attempts += 1
        if self._retry is None or isinstance(exc, TotalTimeout):
            return None
        return self._retry.next_delay(
            method=self.method, attempts=self.attempts, rng=self._rng, error=exc
        )

    def retry_after_response(self, response: ClientResponse) -> float | None:
        """Report an attempt's answer; return the wait before the next attempt, or None
        to return ``response`` (no policy, or the policy does not retry its status)."""
        self.attempts += 1
        if self._retry is None:
            return None
        return self._retry.next_delay(
            method=self.method,
            attempts=self.attempts,
            rng=self._rng,
            status=response.status,
            retry_after=response.headers.get("retry-after"),
        )

    def exchange(self, conn: h11.Connection, max_response_bytes: int) -> ClientExchange:
        """Return a :class:`ClientExchange` making one attempt of this call on ``conn``."""
        return ClientExchange(
            conn,
            self.method,
            self.url,
            self.headers,
            self.body,
            max_response_bytes=max_response_bytes,
        )

    def check_time_left(self, delay: float, now: float) -> None:
        """Raise TotalTimeout if waiting ``delay`` s from ``now`` reaches the deadline."""
        if self.deadline is not None and now + delay >= self.deadline:
            raise TotalTimeout("no time left for another attempt", url=self.url)


def connect_timeout_error(origin: Origin, url: str, is_total: bool) -> HTTPTimeoutError:
    """The error for a connection attempt that timed out (TotalTimeout when the
    call's deadline was the tighter bound)."""
    if is_total:
        return TotalTimeout("timed out connecting", url=url)
    return ConnectTimeout(f"connect to {origin.host}:{origin.port} timed out", url=url)


def connect_error(origin: Origin, url: str, exc: OSError) -> ConnectError:
    """The error for a connection attempt that failed with ``exc``."""
    return ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}", url=url)


def read_timeout_error(url: str, is_total: bool) -> HTTPTimeoutError:
    """The error for a wait for response bytes that timed out."""
    if is_total:
        return TotalTimeout("timed out reading the response", url=url)
    return ReadTimeout("timed out reading the response", url=url)


def lost_connection_error(exchange: ClientExchange, url: str, exc: OSError) -> Exception:
    """The error for a read that failed with ``exc``: :class:`StaleConnection` before
    any response byte (the caller may retry on a fresh connection), else
    HTTPProtocolError."""
    if not exchange.started:
        return StaleConnection()
    return HTTPProtocolError(f"connection lost: {exc}", url=url)


# Breaker accounting: ONE outcome per client call, not per attempt (spec/breaker.md §1.8):
# admitted before its first attempt, recorded once the retry policy is done with it.


def admit(breaker: CircuitBreaker, now: float, url: str) -> int:
    """Admit one client call; return its ticket for :func:`record_response` /
    ``breaker.record_exception``.

    Raises:
        ClientCircuitOpenError: the breaker refused the call (nothing is sent); its
            ``__cause__`` is the failure that opened the breaker, when known.
    """
    ticket = breaker.acquire(now)
    if ticket == REJECTED:
        err = ClientCircuitOpenError(
            name=breaker.name, state=breaker.state, remaining=breaker.retry_after(now), url=url
        )
        raise breaker.chain(err)
    return ticket


def record_response(
    breaker: CircuitBreaker, ticket: int, response: ClientResponse, now: float
) -> None:
    """Tell ``breaker`` how an admitted call ended: a 5xx answer is a failure (with an
    :class:`HTTPStatusError` for it as the cause), anything else a success."""
    if response.status >= 500:
        cause = HTTPStatusError(f"HTTP {response.status} for {response.url}", response=response)
        breaker.record_failure(ticket, now, cause)
    else:
        breaker.record_success(ticket, now)


class ClientBase(Generic[B, C, S]):
    """Settings, builders and call bookkeeping of an HTTP client (``B``: its bound
    builder, ``C``: its pooled connection, ``S``: its per-origin semaphore). The
    settings are documented on the driver classes (``pywatt_asyncio.AsyncClient``,
    ``pywatt_sync.Client``)."""

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
        ssl: ssl.SSLContext | None = None,
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
        self._pool: ConnectionPool[C] = ConnectionPool(
            max_per_host=max_per_host, idle_timeout=idle_timeout
        )
        self._slots: dict[Origin, S] = {}
        self._max_per_host = max_per_host
        self._closed = False
        self._init_driver()

    # -- what a driver supplies ----------------------------------------------------------------

    def _init_driver(self) -> None:
        """Set up the driver's own state, last thing in ``__init__`` (default: none)."""

    def request(self, method: str, url: str) -> B:
        """Return a builder for ``method url``."""
        raise NotImplementedError

    def _now(self) -> float:
        """The driver's monotonic clock, in seconds."""
        raise NotImplementedError

    # -- builders ------------------------------------------------------------------------------

    def get(self, url: str) -> B:
        """Return a builder for ``GET url``."""
        return self.request("GET", url)

    def post(self, url: str) -> B:
        """Return a builder for ``POST url``."""
        return self.request("POST", url)

    def put(self, url: str) -> B:
        """Return a builder for ``PUT url``."""
        return self.request("PUT", url)

    def delete(self, url: str) -> B:
        """Return a builder for ``DELETE url``."""
        return self.request("DELETE", url)

    def patch(self, url: str) -> B:
        """Return a builder for ``PATCH url``."""
        return self.request("PATCH", url)

    def head(self, url: str) -> B:
        """Return a builder for ``HEAD url``."""
        return self.request("HEAD", url)

    def options(self, url: str) -> B:
        """Return a builder for ``OPTIONS url``."""
        return self.request("OPTIONS", url)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _start(self, spec: RequestSpec) -> ClientCall:
        """Begin a call of ``spec``.

        Raises:
            HTTPClientError: the client is closed.
            LocalProtocolError: bad URL.
        """
        if self._closed:
            raise HTTPClientError("client is closed")
        return ClientCall(
            spec,
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            retry=self.retry,
            rng=self._rng,
            now=self._now(),
        )

    def _wait(self, deadline: float | None, limit: float) -> tuple[float, bool]:
        """Return (seconds to wait, whether the call's total ``deadline`` is the tighter
        bound) for a wait that ``limit`` bounds by itself."""
        if deadline is None:
            return limit, False
        left = deadline - self._now()
        return (left, True) if left < limit else (limit, False)
