"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

#: The public surface, written once (as in pywatt_proto/__init__.py).
_SURFACE = {
    "module runtime, stdio, development orchestrator": {
        "._module": "DEFAULT_MAX_CONCURRENCY Module",
        "._orchestrator": "ModuleProcess PortPolicy",
        "._stdio": "guard_stdout",
    },
    "HTTP toolkit: server, client, router dispatch": {
        "._server": "DEFAULT_MAX_CONNECTIONS HttpServer serve start_server",
        "._client": "AsyncClient AsyncRequestBuilder",
        "._dispatch": "dispatch",
    },
    "circuit breaker wrappers, port negotiation": {
        "._breaker": "AsyncBreakerGuard Breaker CircuitOpenError",
        "._ports": "PortNegotiation PortNegotiationError PortResult PortSource negotiate_port "
        "port_is_free",
    },
    "ASGI adapter and secrets": {
        "._asgi": "AsgiApp AsgiModule LifespanFailed asgi_module",
        "._secrets": "AsyncModuleSecrets SecretsNotAvailable secrets",
    },
    "JWT middleware": {
        "._jwt_asgi": "JwtAsgiMiddleware jwt_authenticator module_jwt",
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
