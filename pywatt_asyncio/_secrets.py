"""``pywatt_asyncio.secrets``: the serving module's secrets, for ASGI apps (FastAPI, ...).

See :mod:`pywatt_proto._serving`. In a FastAPI lifespan (which ``asgi_module`` runs after
init, before the announce), a dependency or a route::

    from pywatt_asyncio import secrets

    db_url = secrets["DB_URL"]                 # prefetched: asgi_module(app, secrets=["DB_URL"])
    token = await secrets.fetch("API_TOKEN")  # asks the orchestrator if not cached
"""

from __future__ import annotations

from pywatt_proto._serving import ModuleSecrets, SecretsNotAvailable, serving


class AsyncModuleSecrets(ModuleSecrets):
    """:class:`~pywatt_proto._serving.ModuleSecrets` plus ``await fetch(name)``."""

    __slots__ = ()

    async def fetch(self, name: str) -> str:
        """Return secret ``name``: cached, or asked of the orchestrator (``Module.secret``).

        Raises:
            SecretsNotAvailable: no asyncio module is serving in this process.
            SecretUnavailable: the orchestrator did not answer in time.
        """
        from ._module import Module

        module = serving()
        if not isinstance(module, Module) or module.connection is None:
            raise SecretsNotAvailable("no pywatt_asyncio module is serving in this process")
        return await module.secret(name)


#: The serving module's secrets (``secrets["NAME"]``, ``await secrets.fetch("NAME")``).
secrets = AsyncModuleSecrets()
