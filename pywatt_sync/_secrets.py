"""``pywatt_sync.secrets``: the serving module's secrets, for WSGI apps (Flask, ...).

See :mod:`pywatt_proto._serving`. In a Flask view (or anywhere in the process once the
module serves)::

    from pywatt_sync import secrets

    db_url = secrets["DB_URL"]           # prefetched: wsgi_module(app, secrets=["DB_URL"])
    token = secrets.fetch("API_TOKEN")   # blocks; asks the orchestrator if not cached
"""

from __future__ import annotations

from pywatt_proto._serving import ModuleSecrets, SecretsNotAvailable, serving


class SyncModuleSecrets(ModuleSecrets):
    """:class:`~pywatt_proto._serving.ModuleSecrets` plus a blocking ``fetch(name)``."""

    __slots__ = ()

    def fetch(self, name: str, timeout: float | None = None) -> str:
        """Return secret ``name``: cached, or asked of the orchestrator (``Module.secret``).

        Blocks the calling thread (not for use on the thread that reads stdin).

        Raises:
            SecretsNotAvailable: no blocking module is serving in this process.
            SecretUnavailable: the orchestrator did not answer in time.
        """
        from ._module import Module

        module = serving()
        if not isinstance(module, Module) or module.connection is None:
            raise SecretsNotAvailable("no pywatt_sync module is serving in this process")
        return module.secret(name, timeout)


#: The serving module's secrets (``secrets["NAME"]``, ``secrets.fetch("NAME")``).
secrets = SyncModuleSecrets()
