"""The parts of the HTTP client both drivers share: settings, builders, the call's state.

``pywatt_asyncio.AsyncClient`` and ``pywatt_sync.Client`` differ only in how they connect,
wait and sleep. A driver subclasses :class:`ClientBase`, supplies ``request`` (its bound
builder) and ``_now`` (its monotonic clock), and keeps only its I/O: ``_start(spec)`` gives
a :class:`ClientCall`, which decides retries, deadlines and the breaker's outcome.
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
    split_url,
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
    """One client call as a pure state machine its driver steps: what is sent, the total
    deadline, the breaker ticket and the retry decisions. After each attempt the driver
    reports its answer (:meth:`after_response`) or error (:meth:`after_error`) and sleeps
    the delay returned (None: return the answer / re-raise); any exception leaving the call
    (the last error, TotalTimeout, a cancellation) goes to :meth:`failed`. So the breaker
    hears ONE outcome per call, after its retries (spec/breaker.md §1.8).
    """

    __slots__ = (
        "_breaker",
        "_retry",
        "_rng",
        "_ticket",
        "attempts",
        "body",
        "deadline",
        "headers",
        "method",
        "origin",
        "url",
    )

    def __init__(
        self,
        spec: RequestSpec,
        *,
        base_url: str | None,
        headers: Iterable[tuple[str, str]],
        timeout: float | None,
        retry: RetryPolicy | None,
        breaker: CircuitBreaker | None,
        rng: RandomSource,
        now: float,
    ) -> None:
        self.method = spec.method
        self.url = spec.resolve(base_url)
        self.origin = split_url(self.url)[0]
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
        self._breaker = breaker
        self._ticket = 0
        if breaker is not None:
            self._ticket = breaker.acquire(now)
            if self._ticket == REJECTED:
                err = ClientCircuitOpenError(
                    name=breaker.name,
                    state=breaker.state,
                    remaining=breaker.retry_after(now),
                    url=self.url,
                )
                raise breaker.chain(err)

    def after_error(self, exc: HTTPClientError | OSError, now: float) -> float | None:
        """Report that an attempt raised ``exc``; return the wait before the next
        attempt, or None to re-raise ``exc``. Raises TotalTimeout if the wait would reach
        the call's deadline."""
        self.attempts += 1
        if self._retry is None:
            return None
        delay = self._retry.next_delay(
            method=self.method, attempts=self.attempts, rng=self._rng, error=exc
        )
        return self._check_time_left(delay, now)

    def after_response(self, response: ClientResponse, now: float) -> float | None:
        """Report an attempt's answer; return the wait before the next attempt (raising
        TotalTimeout as :meth:`after_error` does), or None: ``response`` is the call's
        outcome (for the breaker, a 5xx is a failure)."""
        self.attempts += 1
        delay = None
        if self._retry is not None:
            delay = self._retry.next_delay(
                method=self.method,
                attempts=self.attempts,
                rng=self._rng,
                status=response.status,
                retry_after=response.headers.get("retry-after"),
            )
        breaker = self._breaker
        if delay is None and breaker is not None:
            if response.status >= 500:
                cause = HTTPStatusError(
                    f"HTTP {response.status} for {response.url}", response=response
                )
                breaker.record_failure(self._ticket, now, cause)
            else:
                breaker.record_success(self._ticket, now)
        return self._check_time_left(delay, now)

    def failed(self, exc: BaseException, now: float) -> None:
        """Report that the call ends by raising ``exc`` (to the breaker, if any)."""
        if self._breaker is not None:
            self._breaker.record_exception(self._ticket, exc, now)

    def _check_time_left(self, delay: float | None, now: float) -> float | None:
        if delay is not None and self.deadline is not None and now + delay >= self.deadline:
            raise TotalTimeout("no time left for another attempt", url=self.url)
        return delay

    def timeout(self, limit: float, now: float) -> tuple[float, bool]:
        """Return (seconds to wait, whether the call's deadline is the tighter bound)
        for a wait that ``limit`` bounds by itself."""
        if self.deadline is None:
            return limit, False
        left = self.deadline - now
        return (left, True) if left < limit else (limit, False)

    def connect_timeout_error(self, is_total: bool) -> HTTPTimeoutError:
        """The error for a connection attempt that timed out (TotalTimeout when the
        call's deadline was the tighter bound)."""
        if is_total:
            return TotalTimeout("timed out connecting", url=self.url)
        origin = self.origin
        return ConnectTimeout(f"connect to {origin.host}:{origin.port} timed out", url=self.url)

    def connect_error(self, exc: OSError) -> ConnectError:
        """The error for a connection attempt that failed with ``exc``."""
        origin = self.origin
        return ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}", url=self.url)

    def read_timeout_error(self, is_total: bool) -> HTTPTimeoutError:
        """The error for a wait for response bytes that timed out."""
        if is_total:
            return TotalTimeout("timed out reading the response", url=self.url)
        return ReadTimeout("timed out reading the response", url=self.url)

    def lost_connection_error(self, exchange: ClientExchange, exc: OSError) -> Exception:
        """The error for a read that failed with ``exc``: :class:`StaleConnection` before
        any response byte (the caller may retry on a fresh connection), else
        HTTPProtocolError."""
        if not exchange.started:
            return StaleConnection()
        return HTTPProtocolError(f"connection lost: {exc}", url=self.url)

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
        """Begin a call of ``spec`` (admitted by the breaker, if any).

        Raises:
            HTTPClientError: the client is closed.
            LocalProtocolError: bad URL (not absolute http/https once joined to the base).
            ClientCircuitOpenError: the breaker refused the call (nothing is sent); its
                ``__cause__`` is the failure that opened the breaker, when known.
        """
        if self._closed:
            raise HTTPClientError("client is closed")
        return ClientCall(
            spec,
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            retry=self.retry,
            breaker=self.breaker,
            rng=self._rng,
            now=self._now(),
        )
