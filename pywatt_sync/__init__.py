"""pywatt_sync -- the blocking (threads) driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets with blocking I/O and a bounded thread pool.
"""

# --- http dispatch, server, client ---
from ._client import (
    Client,
    RequestBuilder,
)

from ._dispatch import dispatch

from ._server import (
    DEFAULT_MAX_WORKERS,
    HttpServer,
    serve,
    start_server,
)

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

# --- module runtime (blocking) and WSGI adapter ---
# isort: split
from ._module import Module
from ._wsgi import WsgiApp, WsgiModule, wsgi_module

# --- JWT middleware ---
# isort: split
from ._jwt_wsgi import (
    FlaskJwt,
    JwtWsgiMiddleware,
    jwt_authenticator,
    module_jwt,
    wsgi_claims,
)

# --- framed TCP / Unix-socket channels ---
# isort: split
from ._channel import SyncChannel

__all__ = [
    # JWT middleware
    "FlaskJwt",
    "JwtWsgiMiddleware",
    "jwt_authenticator",
    "module_jwt",
    "wsgi_claims",
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
    # module runtime (blocking) and WSGI adapter
    "Module",
    "WsgiApp",
    "WsgiModule",
    "wsgi_module",
    # http dispatch, server, client
    "DEFAULT_MAX_WORKERS",
    "Client",
    "HttpServer",
    "RequestBuilder",
    "dispatch",
    "serve",
    "start_server",
    # framed TCP / Unix-socket channels
    "SyncChannel",
]
