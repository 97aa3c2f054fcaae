"""pywatt_sync -- the blocking (threads) driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets with blocking I/O and a bounded thread pool.
"""

# --- http dispatch, server, client ---
from ._dispatch import dispatch

# --- WSGI adapter ---
from ._wsgi import WsgiApp

# --- circuit breaker wrappers, port negotiation ---
from ._breaker import Breaker, BreakerGuard, CircuitOpenError
from ._ports import (
    PortNegotiation,
    PortNegotiationError,
    PortResult,
    PortSource,
    negotiate_port,
    port_is_free,
)

__all__ = [
    # circuit breaker wrappers, port negotiation
    "BreakerGuard",
    "Breaker",
    "CircuitOpenError",
    "PortNegotiation",
    "PortNegotiationError",
    "PortResult",
    "PortSource",
    "negotiate_port",
    "port_is_free",
    # WSGI adapter
    "WsgiApp",
    # http dispatch, server, client
    "dispatch",
]
