"""asyncio driver for :class:`pywatt_proto.PortNegotiator`.

The module runtime owns the only stdin reader and the only stdout writer
(spec/reference.md R8), so this driver never touches stdio. It talks to the
runtime through two small hooks:

* ``send(request)`` -- given at construction, called for every
  :class:`pywatt_proto.PortRequest` to write (the runtime encodes it as a
  ``port_request`` line). It may be a plain function or a coroutine function.
* :meth:`PortNegotiation.feed_response` -- the runtime calls it, on the event
  loop, for every ``port_response`` it reads (whether or not a negotiation is
  running; stray responses are reported and dropped by the core).

Integration, in the module runtime::

    negotiation = PortNegotiation(send=writer.send_message)
    # reader task: on PortResponse -> negotiation.feed_response(msg)
    result = await negotiate_port(negotiation, init=init)   # PortResult
    serve_http(host, result.port)

The driver runs the core's timers with ``time.monotonic`` and bind-tests
fallback candidates with real sockets (see :func:`port_is_free`). Everything
else -- ids, correlation, timeouts, breaker, fallback choice -- is the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable

from pywatt_proto._breaker import CircuitBreaker
from pywatt_proto._messages import Init, PortRequest, PortResponse
from pywatt_proto._ports import (
    PortEvent,
    PortNegotiationConfig,
    PortNegotiationError,
    PortNegotiator,
    PortResult,
    PortSource,
    preassigned_result,
)

__all__ = [
    "PortNegotiation",
    "PortNegotiationError",
    "PortResult",
    "PortSource",
    "negotiate_port",
    "port_is_free",
]

_log = logging.getLogger("pywatt.ports")

Send = Callable[[PortRequest], Awaitable[None] | None]


def port_is_free(host: str, port: int) -> bool:
    """Return whether a TCP socket can be bound to ``(host, port)`` right now.

    The test socket is closed at once and is bound *without* ``SO_REUSEADDR``,
    so a port held by any other socket (listening or not) counts as taken. The
    answer can go stale before the caller binds; bind promptly.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class PortNegotiation:
    """One module's port negotiation over the runtime's stdio (see module docstring).

    Args:
        send: writes one :class:`PortRequest`; may return an awaitable.
        config: tunables of the core (defaults: the reference's numbers).
        rng: random source for request ids and fallback candidates
            (default: a ``random.Random`` seeded from the OS).
        id_factory: makes request ids (default: UUID v4 from ``rng``).
        breaker: a shared pure breaker, instead of one built from ``config``.
        bind_host: the address fallback candidates are bind-tested on.
        clock: monotonic seconds (default ``time.monotonic``).
        on_event: called with every core event (for logging/metrics); events are
            also logged at DEBUG on the ``pywatt.ports`` logger.
    """

    def __init__(
        self,
        send: Send,
        *,
        config: PortNegotiationConfig | None = None,
        rng: random.Random | None = None,
        id_factory: Callable[[], str] | None = None,
        breaker: CircuitBreaker | None = None,
        bind_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[PortEvent], None] | None = None,
    ) -> None:
        self._core = PortNegotiator(
            config,
            rng=rng if rng is not None else random.Random(),
            id_factory=id_factory,
            breaker=breaker,
        )
        self._send = send
        self._bind_host = bind_host
        self._clock = clock
        self._on_event = on_event
        self._wake = asyncio.Event()
        self._running = False
        self._lock = asyncio.Lock()

    @property
    def core(self) -> PortNegotiator:
        """The pure negotiator (state, breaker, counters)."""
        return self._core

    def feed_response(self, response: PortResponse) -> None:
        """Hand a ``port_response`` read by the runtime to the negotiation.

        Must be called on the event loop thread. Never raises for a stray
        response: outside a running :meth:`negotiate` it is reported to
        ``on_event`` (as an ``UnsolicitedResponse``) and dropped.
        """
        self._core.receive_response(response, self._clock())
        if self._running:
            self._wake.set()
        else:
            self._drain_idle()

    async def negotiate(self, specific_port: int | None = None) -> PortResult:
        """Run one negotiation and return its :class:`PortResult`.

        Calls are serialised (a second concurrent call waits for the first).

        Raises:
            PortNegotiationError: the call ended without a port.
            pywatt_proto.LocalProtocolError: ``specific_port`` is out of range.
            asyncio.CancelledError: cancelled; the core is left IDLE, the pending
                attempt recorded as abandoned.
        """
        async with self._lock:
            core = self._core
            self._running = True
            try:
                core.start(self._clock(), specific_port)
                while True:
                    for request in core.messages_to_send():
                        try:
                            pending = self._send(request)
                            if inspect.isawaitable(pending):
                                await pending
                        except Exception as exc:
                            core.send_raised(self._clock(), request, exc)
                    result = self._handle_events()
                    if result is not None:
                        return result
                    await self._wait(core.get_timer())
                    core.handle_timer(self._clock())
            except BaseException:
                core.abandon()
                raise
            finally:
                self._running = False

    async def _wait(self, deadline: float | None) -> None:
        self._wake.clear()
        if deadline is None:  # pragma: no cover - a pending call always has a timer
            await self._wake.wait()
            return
        delay = deadline - self._clock()
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _handle_events(self) -> PortResult | None:
        return self._core.next_result(self._port_is_free, self._report)

    def _port_is_free(self, port: int) -> bool:
        return port_is_free(self._bind_host, port)

    def _drain_idle(self) -> None:
        while (event := self._core.next_event()) is not None:
            self._report(event)

    def _report(self, event: PortEvent) -> None:
        _log.debug("port negotiation: %r", event)
        if self._on_event is not None:
            self._on_event(event)


async def negotiate_port(
    negotiation: PortNegotiation, *, init: Init | None = None, specific_port: int | None = None
) -> PortResult:
    """Return the port the module should serve on.

    When ``init.listen`` is a TCP address with a non-zero port, that port is
    used without negotiating (``PortSource.LISTEN``); otherwise this runs
    ``negotiation.negotiate(specific_port)``.

    Raises:
        PortNegotiationError: negotiation ended without a port.
    """
    preassigned = preassigned_result(init)
    if preassigned is not None:
        return preassigned
    return await negotiation.negotiate(specific_port)
