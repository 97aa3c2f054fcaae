"""Module-to-module calls and the provider registry of a development host (spec/modules.md).

:class:`ModuleNetwork` joins the :class:`~pywatt_asyncio._orchestrator.ModuleProcess` objects
of one host: a ``route_to_module`` read from one module (``CallRequested``) is delivered to the
target module as a POST through :meth:`ModuleProcess.exchange` and its answer relayed with
``conn.answer_call``; an unknown or stopped target is answered at once (``fail_call``); the
caller's deadline is kept by the caller's connection, which emits ``CallAbandoned`` -- the
delivery task is then cancelled, which forgets the target's request. Registrations and
discoveries go to one :class:`~pywatt_proto._calls.ProviderRegistry`, with health taken from
the processes (``ModuleProcess.running``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from pywatt_proto._orchestrator import (
    CallAbandoned,
    CallRequested,
    OrchestratorEvent,
    ProviderDiscoveryRequested,
    ProviderRegistrationRequested,
    RequestFailed,
)
from pywatt_proto._routing import ProviderRegistry

from ._orchestrator import ModuleProcess

_log = logging.getLogger("pywatt.orchestrator")


class ModuleNetwork:
    """Routes calls between a host's modules and keeps their provider registry.

    Args:
        lookup: ``module_id -> running ModuleProcess or None`` for a host that owns the
            processes (restarts swap them); default: the modules given to :meth:`add`.
        known: ``module_id -> bool``, whether the host has such a module at all, running or
            not; default: the ids given to :meth:`add`. Unknown ids are answered
            ``unknown_module``, known but not running ones ``target_failed``.

    A process routes its calls here once ``process.network`` is this object (``add`` sets
    it; a host sets it on every process it starts).
    """

    def __init__(
        self,
        *,
        lookup: Callable[[str], ModuleProcess | None] | None = None,
        known: Callable[[str], bool] | None = None,
    ) -> None:
        self.modules: dict[str, ModuleProcess] = {}
        self._lookup = lookup if lookup is not None else self._added
        self._known = known if known is not None else self.modules.__contains__
        self.registry = ProviderRegistry()
        # (caller module id, call id) -> delivery task; at most MAX_PENDING_CALLS per caller
        # (the caller's connection refuses more before a task exists).
        self._deliveries: dict[tuple[str, str], asyncio.Task[None]] = {}

    def add(self, module: ModuleProcess) -> None:
        """Route calls from and to ``module`` (by its ``module_id``).

        Raises ``ValueError`` if another module has the same id.
        """
        if module.module_id in self.modules:
            raise ValueError(f"two modules with id {module.module_id!r}")
        self.modules[module.module_id] = module
        module.network = self

    def _added(self, module_id: str) -> ModuleProcess | None:
        module = self.modules.get(module_id)
        return module if module is not None and module.running else None

    def healthy(self, module_id: str) -> bool:
        """True while module ``module_id`` is running (announced, process alive)."""
        return self._lookup(module_id) is not None

    def on_event(self, source: ModuleProcess, event: OrchestratorEvent) -> None:
        """Act on a call or registry event read from ``source`` (see the module docstring)."""
        conn = source.conn
        if isinstance(event, CallRequested):
            target = self._lookup(event.target_module_id)
            if target is None and not self._known(event.target_module_id):
                conn.fail_call(
                    event.request_id,
                    "unknown_module",
                    f"no module named {event.target_module_id!r}",
                )
            elif target is None:
                conn.fail_call(
                    event.request_id,
                    "target_failed",
                    f"{event.target_module_id} is not running",
                )
            else:
                key = (source.module_id, event.request_id)
                task = asyncio.ensure_future(self._deliver(source, target, event))
                self._deliveries[key] = task
                task.add_done_callback(partial(self._forget, key))
                return
        elif isinstance(event, CallAbandoned):
            pending = self._deliveries.pop((source.module_id, event.request_id), None)
            if pending is not None:
                pending.cancel()  # the target's request is forgotten; its answer is dropped
            return
        elif isinstance(event, ProviderRegistrationRequested):
            conn.answer_service(self.registry.register(source.module_id, event.request))
        elif isinstance(event, ProviderDiscoveryRequested):
            conn.answer_service(self.registry.discover(event.request, self.healthy))
        source.flush()

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._deliveries.get(key) is task:
            del self._deliveries[key]

    async def _deliver(
        self, source: ModuleProcess, target: ModuleProcess, event: CallRequested
    ) -> None:
        conn = source.conn
        try:
            outcome = await target.exchange(
                "POST", event.target_endpoint, event.headers, event.body
            )
        except Exception as exc:  # e.g. the target's link refused the request: answer now
            _log.warning("call %s to %s failed: %s", event.request_id, target.module_id, exc)
            conn.fail_call(event.request_id, "target_failed", f"{target.module_id}: {exc}")
            source.flush()
            return
        if isinstance(outcome, RequestFailed):
            why = "exited" if outcome.status == 502 else outcome.reason
            status = outcome.status if outcome.status == 504 else None
            conn.fail_call(
                event.request_id, "target_failed", f"{target.module_id}: {why}", status=status
            )
        else:
            conn.answer_call(event.request_id, outcome.status_code, outcome.headers, outcome.body)
        source.flush()
