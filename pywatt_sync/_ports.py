"""Blocking driver for :class:`pywatt_proto.PortNegotiator` (spec/breaker.md §3.4).

The module runtime owns the only stdin reader and stdout writer (spec/reference.md R8), so
this driver never touches stdio: ``send(request)`` (given at construction, called from the
thread running :meth:`PortNegotiation.negotiate` with no lock held) writes each
``port_request``, and the runtime's reader thread calls :meth:`PortNegotiation.feed_response`
for every ``port_response``. This file waits on a condition variable until the core's
deadlines (``time.monotonic``) and bind-tests fallback candidates (:func:`port_is_free`);
everything else is the core's.

    negotiation = PortNegotiation(send=writer.send_message)
    result = negotiate_port(negotiation, init=init)   # PortResult
"""

from __future__ import annotations

import functools
import random
import socket
import threading
import time
from collections.abc import Callable

from pywatt_proto._breaker import CircuitBreaker
from pywatt_proto._messages import Init, PortRequest, PortResponse
from pywatt_proto._ports import (
    NegotiationDriver,
    PortEvent,
    PortNegotiationConfig,
    PortResult,
    preassigned_result,
)


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


class PortNegotiation(NegotiationDriver):
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

    Read :attr:`core` only while no other thread is feeding responses.
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
        self._cond = threading.Condition()
        self._call_lock = threading.Lock()

    def feed_response(self, response: PortResponse) -> None:
        """Hand a ``port_response`` read by the runtime to the negotiation.

        Thread-safe. Never raises for a stray response: outside a running
        :meth:`negotiate` it is reported to ``on_event`` and dropped.
        """
        with self._cond:
            if self._received(response, self._clock()):
                self._cond.notify_all()

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
                        result = self._next_result()
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


def negotiate_port(
    negotiation: PortNegotiation, *, init: Init | None = None, specific_port: int | None = None
) -> PortResult:
    """Return the port the module should serve on: ``init.listen``'s TCP port when it is
    non-zero (``PortSource.LISTEN``), else ``negotiation.negotiate(specific_port)``.

    Raises:
        PortNegotiationError: negotiation ended without a port.
    """
    return preassigned_result(init) or negotiation.negotiate(specific_port)
