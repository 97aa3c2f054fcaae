"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

# --- http dispatch, server, client ---
from ._client import (
    AsyncClient,
    AsyncRequestBuilder,
)

from ._dispatch import dispatch

from ._server import (
    DEFAULT_MAX_CONNECTIONS,
    HttpServer,
    serve,
    start_server,
)

# --- module runtime, stdio, development orchestrator ---
from ._module import DEFAULT_MAX_CONCURRENCY, Module
from ._orchestrator import ModuleProcess, PortPolicy
from ._stdio import guard_stdout

# --- circuit breaker wrappers, port negotiation ---
from ._breaker import AsyncBreakerGuard, Breaker, CircuitOpenError
from ._ports import (
    PortNegotiation,
    PortNegotiationError,
    PortResult,
    PortSource,
    negotiate_port,
    port_is_free,
)

# --- ASGI adapter ---
# isort: split
from ._asgi import AsgiApp, AsgiModule, LifespanFailed, asgi_module

# --- JWT middleware ---
# isort: split
from ._jwt_asgi import JwtAsgiMiddleware, jwt_authenticator, module_jwt

# --- framed TCP / Unix-socket channels ---
# isort: split
from ._channel import AsyncChannel

__all__ = [
    # module runtime, stdio, development orchestrator
    "DEFAULT_MAX_CONCURRENCY",
    "Module",
    "ModuleProcess",
    "PortPolicy",
    "guard_stdout",
    # JWT middleware
    "JwtAsgiMiddleware",
    "jwt_authenticator",
    "module_jwt",
    # circuit breaker wrappers, port negotiation
    "AsyncBreakerGuard",
    "Breaker",
    "CircuitOpenError",
    "PortNegotiation",
    "PortNegotiationError",
    "PortResult",
    "PortSource",
    "negotiate_port",
    "port_is_free",
    # ASGI adapter
    "AsgiApp",
    "AsgiModule",
    "LifespanFailed",
    "asgi_module",
    # http dispatch, server, client
    "DEFAULT_MAX_CONNECTIONS",
    "AsyncClient",
    "AsyncRequestBuilder",
    "HttpServer",
    "dispatch",
    "serve",
    "start_server",
    # framed TCP / Unix-socket channels
    "AsyncChannel",
]
