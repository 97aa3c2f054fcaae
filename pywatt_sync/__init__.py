"""pywatt_sync -- the blocking (threads) driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets with blocking I/O and a bounded thread pool.
"""

TYPE_CHECKING = False  # mypy reads it as True; typing is not imported (start-up time)

# isort: off
if TYPE_CHECKING:  # what the lazy table below imports on first use (PEP 562)
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
    from ._secrets import SyncModuleSecrets, SecretsNotAvailable, secrets
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
# isort: on

#: Public name -> (private module, name there), imported on first access: importing the
#: package stays cheap (start-up time) and each area is loaded only when used.
_LAZY: dict[str, tuple[str, str]] = {
    "Client": ("._client", "Client"),
    "RequestBuilder": ("._client", "RequestBuilder"),
    "dispatch": ("._dispatch", "dispatch"),
    "DEFAULT_MAX_WORKERS": ("._server", "DEFAULT_MAX_WORKERS"),
    "HttpServer": ("._server", "HttpServer"),
    "serve": ("._server", "serve"),
    "start_server": ("._server", "start_server"),
    "Breaker": ("._breaker", "Breaker"),
    "BreakerGuard": ("._breaker", "BreakerGuard"),
    "CircuitOpenError": ("._breaker", "CircuitOpenError"),
    "PortNegotiation": ("._ports", "PortNegotiation"),
    "PortNegotiationError": ("._ports", "PortNegotiationError"),
    "PortResult": ("._ports", "PortResult"),
    "PortSource": ("._ports", "PortSource"),
    "negotiate_port": ("._ports", "negotiate_port"),
    "port_is_free": ("._ports", "port_is_free"),
    "Module": ("._module", "Module"),
    "WsgiApp": ("._wsgi", "WsgiApp"),
    "WsgiModule": ("._wsgi", "WsgiModule"),
    "wsgi_module": ("._wsgi", "wsgi_module"),
    "secrets": ("._secrets", "secrets"),
    "SyncModuleSecrets": ("._secrets", "SyncModuleSecrets"),
    "SecretsNotAvailable": ("._secrets", "SecretsNotAvailable"),
    "FlaskJwt": ("._jwt_wsgi", "FlaskJwt"),
    "JwtWsgiMiddleware": ("._jwt_wsgi", "JwtWsgiMiddleware"),
    "jwt_authenticator": ("._jwt_wsgi", "jwt_authenticator"),
    "module_jwt": ("._jwt_wsgi", "module_jwt"),
    "wsgi_claims": ("._jwt_wsgi", "wsgi_claims"),
    "SyncChannel": ("._channel", "SyncChannel"),
}


from pywatt_asyncio._guard import guard_at_import  # noqa: E402
from pywatt_proto._lazy import lazy_exports  # noqa: E402

# Started by an orchestrator (stdin and stdout are pipes)? Keep stdout for the protocol
# from now on, before the module's own import-time code runs (see _guard's rule).
guard_at_import()

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


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
    "secrets",
    "SyncModuleSecrets",
    "SecretsNotAvailable",
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
