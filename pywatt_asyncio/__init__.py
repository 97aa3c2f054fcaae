"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

#: The public surface, written once (as in pywatt_proto/__init__.py).
_SURFACE = {
    "module runtime, stdio, development orchestrator": {
        "._module": "DEFAULT_MAX_CONCURRENCY Module",
        "._orchestrator": "ModuleProcess PortPolicy",
        "._guard": "guard_stdout",
    },
    "HTTP toolkit: server, client, router dispatch": {
        "._server": "DEFAULT_MAX_CONNECTIONS HttpServer serve start_server",
        "._client": "AsyncClient AsyncRequestBuilder",
        "._dispatch": "dispatch",
    },
    "circuit breaker wrappers, port negotiation": {
        "._breaker": "AsyncBreakerGuard Breaker",
        "pywatt_proto._breaker": "CircuitOpenError",
        "._ports": "PortNegotiation negotiate_port",
        "pywatt_proto._ports": "PortNegotiationError PortResult PortSource",
        "pywatt_sync._ports": "port_is_free",
    },
    "ASGI adapter and secrets": {
        "._asgi": "AsgiApp AsgiModule LifespanFailed asgi_module",
        "._secrets": "AsyncModuleSecrets secrets",
        "pywatt_proto._serving": "SecretsNotAvailable",
    },
    "JWT middleware": {
        "._jwt_asgi": "JwtAsgiMiddleware module_jwt",
        "pywatt_sync._jwt_wsgi": "jwt_authenticator",
    },
    "framed TCP / Unix-socket channels": {
        "._channel": "AsyncChannel",
    },
}

from pywatt_proto._lazy import lazy_exports  # noqa: E402

from ._guard import guard_at_import  # noqa: E402

# Started by an orchestrator (stdin and stdout are pipes)? Keep stdout for the protocol
# from now on, before the module's own import-time code runs (see _guard's rule).
guard_at_import()

__all__, __getattr__, __dir__ = lazy_exports(globals(), _SURFACE)
