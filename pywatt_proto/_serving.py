"""Which module serves this process's stdio, and its secrets for code that has no ``app``.

An app served with ``asgi_module(app)`` / ``wsgi_module(app)`` does not hold the pywatt
``Module``; it reads orchestrator secrets through ``pywatt_asyncio.secrets`` /
``pywatt_sync.secrets``, bound to the module serving this process (one per process: one
stdin/stdout). A driver calls :func:`set_serving` when ``serve_stdio`` starts and
:func:`clear_serving` when it returns. Reading here is no I/O: it is the module connection's
cache (prefetched, fetched, pushed and rotated values); the drivers add ``fetch(name)``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Iterator
    from typing import Protocol

    from ._module import ModuleConnection

    class _Serving(Protocol):
        """What the accessors need of a driver's Module: its protocol core."""

        @property
        def connection(self) -> ModuleConnection | None: ...

else:
    _Serving = object


class SecretsNotAvailable(LookupError):
    """No module is serving in this process (outside ``serve_stdio``), or the module has
    not received its init yet."""


# The module whose serve_stdio is running in this process (None outside).
_current: list[_Serving] = []


def set_serving(module: _Serving) -> None:
    """Record ``module`` as the one serving this process (the latest call wins)."""
    _current.append(module)


def clear_serving(module: _Serving) -> None:
    """Forget ``module`` (its ``serve_stdio`` returned); others recorded stay."""
    if module in _current:
        _current.remove(module)


def serving() -> _Serving | None:
    """Return the module serving this process, or None."""
    return _current[-1] if _current else None


class ModuleSecrets:
    """Read-only view of the serving module's secrets: ``secrets["DB_URL"]``.

    Values come from the module connection's cache: every name listed in
    ``Module(secrets=[...])`` (or ``asgi_module(app, secrets=[...])``) is there before the
    announce, so before the app's lifespan startup and before any request. Rotated
    values replace old ones as the orchestrator pushes them.
    """

    __slots__ = ()

    def _connection(self) -> ModuleConnection:
        module = serving()
        conn = None if module is None else module.connection
        if conn is None or conn.init is None:
            raise SecretsNotAvailable(
                "no pywatt module is serving in this process yet (secrets are available "
                "from the lifespan startup / on_startup hooks on, once init has arrived)"
            )
        return conn

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the value of secret ``name`` if the module has it, else ``default``.

        Raises:
            SecretsNotAvailable: no module is serving (or init has not arrived).
        """
        value = self._connection().cached_secret(name)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        """Return the value of secret ``name``.

        Raises:
            KeyError: the module has no value for ``name`` (list it in ``secrets=[...]``
                to have it fetched before the announce, or use ``fetch``).
            SecretsNotAvailable: no module is serving (or init has not arrived).
        """
        value = self._connection().cached_secret(name)
        if value is None:
            raise KeyError(
                f"{name!r}: not received; list it in secrets=[...] or call secrets.fetch()"
            )
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        raise TypeError("secrets cannot be listed; ask for a name")

    def __repr__(self) -> str:  # never the values
        return f"<{type(self).__name__}>"
