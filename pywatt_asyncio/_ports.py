"""asyncio driver for :class:`pywatt_proto.PortNegotiator` (spec/breaker.md §3.4).

The module runtime owns the only stdin reader and stdout writer (spec/reference.md R8), so
this driver never touches stdio: ``send(request)`` (given at construction; a plain function
or a coroutine function) writes each ``port_request``, and the runtime calls
:meth:`PortNegotiation.feed_response`, on the event loop, for every ``port_response``. This
file runs the core's timers (``time.monotonic``) and bind-tests fallback candidates
(:func:`port_is_free`, shared with the blocking driver); everything else is the core's.

    negotiation = PortNegotiation(send=writer.send_message)
    result = await negotiate_port(negotiation, init=init)   # PortResult
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import time
from collections.abc import Awaitable, Callable

from pywatt_proto._breaker import CircuitBreaker
from pywatt_proto._messages import Init, PortRequest, PortResponse
from pywatt_proto._ports import (
    NegotiationDriver,
    PortEvent,
    PortNegotiationConfig,
    PortResult,
    preassigned_result,
)
from pywatt_sync._ports import port_is_free

Send = Callable[[PortRequest], Awaitable[None] | None]


class PortNegotiation(NegotiationDriver):
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
        super().__init__(
            config=config,
            rng=rng,
            id_factory=id_factory,
            breaker=breaker,
            port_is_free=functools.partial(port_is_free, bind_host),
            on_event=on_event,
        )
        self._send = send
        self._clock = clock
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def feed_response(self, response: PortResponse) -> None:
        """Hand a ``port_response`` read by the runtime to the negotiation.

        Must be called on the event loop thread. Never raises for a stray
        response: outside a running :meth:`negotiate` it is reported to
        ``on_event`` (as an ``UnsolicitedResponse``) and dropped.
        """
        if self._received(response, self._clock()):
            self._wake.set()

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
                    result = self._next_result()
                    if result is not None:
                        return result
                    deadline = core.get_timer()
                    assert deadline is not None  # a pending attempt always has a timer
                    self._wake.clear()
                    delay = deadline - self._clock()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), delay)
                    core.handle_timer(self._clock())
            except BaseException:
                core.abandon()
                raise
            finally:
                self._running = False


async def negotiate_port(
    negotiation: PortNegotiation, *, init: Init | None = None, specific_port: int | None = None
) -> PortResult:
    """Return the port the module should serve on: ``init.listen``'s TCP port when it is
    non-zero (``PortSource.LISTEN``), else ``await negotiation.negotiate(specific_port)``.

    Raises:
        PortNegotiationError: negotiation ended without a port.
    """
    return preassigned_result(init) or await negotiation.negotiate(specific_port)
