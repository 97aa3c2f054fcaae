"""pywatt_asyncio -- the asyncio driver for the PyWatt module protocol.

Thin loops that run :mod:`pywatt_proto` state machines over real pipes and
sockets. Protocol logic lives in :mod:`pywatt_proto`, not here.
"""

TYPE_CHECKING = False  # mypy reads it as True; typing is not imported (start-up time)

# isort: off
if TYPE_CHECKING:  # what the lazy table below imports on first use (PEP 562)
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
    from ._secrets import AsyncModuleSecrets, SecretsNotAvailable, secrets
    from ._asgi import AsgiApp, AsgiModule, LifespanFailed, asgi_module

    # --- JWT middleware ---
    # isort: split
    from ._jwt_asgi import JwtAsgiMiddleware, jwt_authenticator, module_jwt

    # --- framed TCP / Unix-socket channels ---
    # isort: split
    from ._channel import AsyncChannel
# isort: on

#: Public name -> (private module, name there), imported on first access: importing the
#: package stays cheap (start-up time) and each area is loaded only when used.
_LAZY: dict[str, tuple[str, str]] = {
    "AsyncClient": ("._client", "AsyncClient"),
    "AsyncRequestBuilder": ("._client", "AsyncRequestBuilder"),
    "dispatch": ("._dispatch", "dispatch"),
    "DEFAULT_MAX_CONNECTIONS": ("._server", "DEFAULT_MAX_CONNECTIONS"),
    "HttpServer": ("._server", "HttpServer"),
    "serve": ("._server", "serve"),
    "start_server": ("._server", "start_server"),
    "DEFAULT_MAX_CONCURRENCY": ("._module", "DEFAULT_MAX_CONCURRENCY"),
    "Module": ("._module", "Module"),
    "ModuleProcess": ("._orchestrator", "ModuleProcess"),
    "PortPolicy": ("._orchestrator", "PortPolicy"),
    "guard_stdout": ("._stdio", "guard_stdout"),
    "AsyncBreakerGuard": ("._breaker", "AsyncBreakerGuard"),
    "Breaker": ("._breaker", "Breaker"),
    "CircuitOpenError": ("._breaker", "CircuitOpenError"),
    "PortNegotiation": ("._ports", "PortNegotiation"),
    "PortNegotiationError": ("._ports", "PortNegotiationError"),
    "PortResult": ("._ports", "PortResult"),
    "PortSource": ("._ports", "PortSource"),
    "negotiate_port": ("._ports", "negotiate_port"),
    "port_is_free": ("._ports", "port_is_free"),
    "AsgiApp": ("._asgi", "AsgiApp"),
    "AsgiModule": ("._asgi", "AsgiModule"),
    "LifespanFailed": ("._asgi", "LifespanFailed"),
    "asgi_module": ("._asgi", "asgi_module"),
    "secrets": ("._secrets", "secrets"),
    "AsyncModuleSecrets": ("._secrets", "AsyncModuleSecrets"),
    "SecretsNotAvailable": ("._secrets", "SecretsNotAvailable"),
    "JwtAsgiMiddleware": ("._jwt_asgi", "JwtAsgiMiddleware"),
    "jwt_authenticator": ("._jwt_asgi", "jwt_authenticator"),
    "module_jwt": ("._jwt_asgi", "module_jwt"),
    "AsyncChannel": ("._channel", "AsyncChannel"),
}


from pywatt_proto._lazy import lazy_exports  # noqa: E402

from ._guard import guard_at_import  # noqa: E402

# Started by an orchestrator (stdin and stdout are pipes)? Keep stdout for the protocol
# from now on, before the module's own import-time code runs (see _guard's rule).
guard_at_import()

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


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
    "secrets",
    "AsyncModuleSecrets",
    "SecretsNotAvailable",
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
