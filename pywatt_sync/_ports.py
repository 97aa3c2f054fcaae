"""Blocking driver for :class:`pywatt_proto.PortNegotiator`.

The module runtime owns the only stdin reader and the only stdout writer
(spec/reference.md R8), so this driver never touches stdio. It talks to the
runtime through two small hooks:

* ``send(request)`` -- given at construction, called (from the thread running
  :meth:`PortNegotiation.negotiate`, without any lock held) for every
  :class:`pywatt_proto.PortRequest` to write as a ``port_request`` line.
* :meth:`PortNegotiation.feed_response` -- the runtime's reader thread calls it
  for every ``port_response`` it reads (whether or not a negotiation is
  running; stray responses are reported and dropped by the core). It is
  thread-safe and never blocks for long.

Integration, in the module runtime::

    negotiation = PortNegotiation(send=writer.send_message)
    # reader thread: on PortResponse -> negotiation.feed_response(msg)
    result = negotiate_port(negotiation, init=init)   # PortResult
    serve_http(host, result.port)

The driver waits on a condition variable with ``time.monotonic`` deadlines
from the core and bind-tests fallback candidates with real sockets
(:func:`port_is_free`). Everything else is the core's.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable

from pywatt_proto._breaker import CircuitBreaker
from pywatt_proto._lazylog import LazyLogger
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

_log = LazyLogger("pywatt.ports")  # loads logging for the first emitted record


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
        send: writes one :class:`PortRequest` (blocking is fine).
        config: tunables of the core (defaults: the reference's numbers).
        rng: random source for request ids and fallback candidates
            (default: a ``random.Random`` seeded from the OS).
        id_factory: makes request ids (default: UUID v4 from ``rng``).
        breaker: a shared pure breaker, instead of one built from ``config``.
        bind_host: the address fallback candidates are bind-tested on.
        clock: monotonic seconds (default ``time.monotonic``).
        on_event: called with every core event (with the internal lock held:
            keep it short, do not call back into this object); events are also
            logged at DEBUG on the ``pywatt.ports`` logger.
    """

    def __init__(
        self,
        send: Callable[[PortRequest], None],
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
        self._cond = threading.Condition()
        self._call_lock = threading.Lock()
        self._running = False

    @property
    def core(self) -> PortNegotiator:
        """The pure negotiator (state, breaker, counters). Read it only while no
        other thread is feeding responses."""
        return self._core

    def feed_response(self, response: PortResponse) -> None:
        """Hand a ``port_response`` read by the runtime to the negotiation.

        Thread-safe. Never raises for a stray response: outside a running
        :meth:`negotiate` it is reported to ``on_event`` and dropped.
        """
        with self._cond:
            self._core.receive_response(response, self._clock())
            if self._running:
                self._cond.notify_all()
            else:
                while (event := self._core.next_event()) is not None:
                    self._report(event)

    def negotiate(self, specific_port: int | None = None) -> PortResult:
        """Run one negotiation, blocking, and return its :class:`PortResult`.

        Calls are serialised (a second concurrent call waits for the first).

        Raises:
            PortNegotiationError: the call ended without a port.
            pywatt_proto.LocalProtocolError: ``specific_port`` is out of range.
            BaseException: from ``send`` (other than ``Exception``) or an
                interrupt; the core is left IDLE, the pending attempt recorded
                as abandoned.
        """
        with self._call_lock:
            core = self._core
            with self._cond:
                core.start(self._clock(), specific_port)
                outgoing = core.messages_to_send()
                self._running = True
            try:
                while True:
                    for request in outgoing:  # no lock held while writing
                        try:
                            self._send(request)
                        except Exception as exc:
                            with self._cond:
                                core.send_raised(self._clock(), request, exc)
                    with self._cond:
                        result = self._handle_events()
                        if result is not None:
                            return result
                        deadline = core.get_timer()
                        if deadline is not None:
                            delay = deadline - self._clock()
                            if delay > 0:
                                self._cond.wait(delay)
                        core.handle_timer(self._clock())
                        outgoing = core.messages_to_send()
            except BaseException:
                with self._cond:
                    core.abandon()
                raise
            finally:
                with self._cond:
                    self._running = False

    def _handle_events(self) -> PortResult | None:
        return self._core.next_result(self._port_is_free, self._report)

    def _port_is_free(self, port: int) -> bool:
        return port_is_free(self._bind_host, port)

    def _report(self, event: PortEvent) -> None:
        _log.debug("port negotiation: %r", event)
        if self._on_event is not None:
            self._on_event(event)


def negotiate_port(
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
    return negotiation.negotiate(specific_port)
