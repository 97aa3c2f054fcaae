"""TestClient answers service-provider registration and discovery (spec/modules.md section 7)
from one registry shared with its peers, so a module that registers in ``on_startup`` starts
at once instead of waiting out the 30 s registry deadline."""

from __future__ import annotations

import time

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request, ServiceType
from pywatt_sync.testing import TestClient


def test_registration_in_startup_then_discovery_from_a_peer() -> None:
    pricing = pywatt_sync.Module()

    @pricing.on_startup
    def register() -> None:
        pricing.register_service_provider(ServiceType.CACHE, "c1", "redis://x", version="7")

    @pricing.post("/price")
    def price(request: Request) -> dict[str, int]:
        return {"price": 1}

    gateway = pywatt_asyncio.Module()

    @gateway.get("/caches")
    async def caches(request: Request) -> list[list[object]]:
        await gateway.call_module("pricing", "/price", {})  # TestClient starts peers on use
        found = await gateway.discover_service_providers(ServiceType.CACHE, all_providers=True)
        return [[p.provider_id, p.module_id, p.address, p.version, p.is_healthy] for p in found]

    t0 = time.monotonic()
    with TestClient(gateway, module_id="gateway", modules={"pricing": pricing}) as client:
        assert client.get("/caches").json() == [["p1", "pricing", "redis://x", "7", True]]
        assert len(client.registry) == 1
    assert time.monotonic() - t0 < 10  # not the 30 s registry deadline
