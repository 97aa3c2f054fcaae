"""Test helpers for ``pywatt_asyncio`` modules: :class:`TestClient` (shared with
``pywatt_sync.testing``; it serves modules of either driver in-process, an asyncio
module on its own event loop in a thread, so it is called without ``await``)."""

from pywatt_sync.testing import ModuleStopped, TestClient, TestResponse

__all__ = ["ModuleStopped", "TestClient", "TestResponse"]
