"""The gateway module: an asyncio module that calls the pricing module for every quote.

Run both with one command, from the repository root::

    pywatt run examples/gateway.py examples/pricing.py
    curl -s localhost:8080/quote/apple?qty=3      # -> pricing's answer, via a module call
    curl -s localhost:8080/quote/durian            # -> 422 passed on from pricing
    curl -s localhost:8080/providers               # -> what the registry knows

``await app.call_module(module_id, endpoint, value, timeout=...)`` sends ``value`` to
another module through the orchestrator and returns its decoded reply; every failure
raises its own ``CallError`` subclass at once (spec/modules.md section 5).
"""

from __future__ import annotations

from typing import Any

from pywatt_asyncio import Module
from pywatt_proto import (
    CallDeadlineError,
    HTTPException,
    Request,
    ServiceType,
    TargetFailedError,
    UnknownEndpointError,
    UnknownModuleError,
)

app = Module()


@app.get("/quote/{sku}")
async def quote(request: Request) -> dict[str, Any]:
    sku = str(request.path_params["sku"])
    try:
        qty = int(request.query.get("qty") or 1)
    except ValueError:
        raise HTTPException(400, "qty must be an integer") from None
    try:
        priced = await app.call_module("pricing", "/price", {"sku": sku, "qty": qty}, timeout=2)
    except (UnknownModuleError, UnknownEndpointError) as exc:
        raise HTTPException(503, f"pricing is not available: {exc.message}") from None
    except CallDeadlineError:
        raise HTTPException(504, "pricing did not answer in time") from None
    except TargetFailedError as exc:
        status = exc.status if exc.status is not None and exc.status < 500 else 502
        raise HTTPException(status, exc.message) from None
    return {"quote": priced, "via": "gateway"}


@app.get("/providers")
async def providers(request: Request) -> list[dict[str, Any]]:
    found = await app.discover_service_providers(ServiceType.custom("pricing"), all_providers=True)
    return [
        {"id": p.provider_id, "module": p.module_id, "address": p.address, "healthy": p.is_healthy}
        for p in found
    ]


if __name__ == "__main__":
    app.run()
