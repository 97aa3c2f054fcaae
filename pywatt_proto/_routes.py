"""The route-registration half of a module's public API, shared by both drivers.

``pywatt_asyncio.Module`` and ``pywatt_sync.Module`` expose the same decorators
(``@app.get``, ``@app.route``, ``@app.middleware``, ...). They only forward to the
module's :class:`~pywatt_proto.Router`, so the forwarding lives here once; each
driver inherits it and decides how handlers are *called*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._router import Router

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from typing import Any, TypeVar

    _F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["RouteDecorators"]


class RouteDecorators:
    """Mixin: route decorators that register on ``self.router``.

    The class using it must set ``self.router`` (a :class:`Router`) before any
    decorator is used. Every decorator returns the function unchanged.
    """

    router: Router

    def route(
        self, path: str, methods: Iterable[str] = ("GET",), *, auth: str | None = None
    ) -> Callable[[_F], _F]:
        """Return a decorator registering a handler for ``methods`` on ``path``.

        ``auth`` names the authentication the route requires; it is announced in
        the endpoint's ``auth`` field. Raises ``LocalProtocolError`` (from the
        router) for an invalid pattern or a route registered twice.
        """
        return self.router.route(path, methods, auth=auth)  # type: ignore[return-value]

    def get(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Decorator for ``GET path`` (also answers HEAD)."""
        return self.router.get(path, auth=auth)  # type: ignore[return-value]

    def post(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Decorator for ``POST path``."""
        return self.router.post(path, auth=auth)  # type: ignore[return-value]

    def put(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Decorator for ``PUT path``."""
        return self.router.put(path, auth=auth)  # type: ignore[return-value]

    def delete(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Decorator for ``DELETE path``."""
        return self.router.delete(path, auth=auth)  # type: ignore[return-value]

    def patch(self, path: str, *, auth: str | None = None) -> Callable[[_F], _F]:
        """Decorator for ``PATCH path``."""
        return self.router.patch(path, auth=auth)  # type: ignore[return-value]

    def middleware(self, fn: _F) -> _F:
        """Register ``fn(request, call_next)`` as middleware (outermost first)."""
        self.router.middleware(fn)
        return fn

    def error_handler(self, key: int | type[BaseException]) -> Callable[[_F], _F]:
        """Decorator registering ``fn(request, exc)`` for a status code or exception type."""
        return self.router.error_handler(key)  # type: ignore[return-value]
