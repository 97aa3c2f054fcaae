"""pywatt_sync -- the blocking (threads) driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets with blocking I/O and a bounded thread pool.
"""

#: The public surface, written once (as in pywatt_proto/__init__.py).
_SURFACE = {
    "module runtime (blocking) and WSGI adapter": {
        "._module": "Module",
        "._wsgi": "WsgiApp WsgiModule wsgi_module",
        "._secrets": "SyncModuleSecrets secrets",
        "pywatt_proto._serving": "SecretsNotAvailable",
    },
    "HTTP toolkit: server, client, router dispatch": {
        "._server": "DEFAULT_MAX_WORKERS HttpServer serve start_server",
        "._client": "Client RequestBuilder",
        "._dispatch": "dispatch",
    },
    "circuit breaker wrappers, port negotiation": {
        "._breaker": "Breaker BreakerGuard",
        "pywatt_proto._breaker": "CircuitOpenError",
        "._ports": "PortNegotiation negotiate_port port_is_free",
        "pywatt_proto._ports": "PortNegotiationError PortResult PortSource",
    },
    "JWT middleware": {
        "._jwt_wsgi": "FlaskJwt JwtWsgiMiddleware jwt_authenticator module_jwt wsgi_claims",
    },
    "framed TCP / Unix-socket channels": {
        "._channel": "SyncChannel",
    },
}

from pywatt_asyncio._guard import guard_at_import  # noqa: E402
from pywatt_proto._lazy import lazy_exports  # noqa: E402

# Started by an orchestrator (stdin and stdout are pipes)? Keep stdout for the protocol
# from now on, before the module's own import-time code runs (see _guard's rule).
guard_at_import()

__all__, __getattr__, __dir__ = lazy_exports(globals(), _SURFACE)
