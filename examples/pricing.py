"""The pricing module: a blocking (pywatt_sync) module other modules call.

Run it together with the gateway that calls it (one command, from the repository root)::

    pywatt run examples/gateway.py examples/pricing.py
    curl -s localhost:8080/quote/apple?qty=3
    curl -s localhost:8080/providers

Calls from other modules arrive as ordinary POST requests (spec/modules.md): the JSON
argument is the body and ``x-pywatt-source-module`` names the caller, so ``@app.post``
serves them -- and curl could call the same route directly. On start-up the module
registers itself in the host's service registry, where the gateway discovers it.
"""

from __future__ import annotations

from pywatt_proto import HTTPException, Request, ServiceType
from pywatt_sync import Module

app = Module()

PRICES = {"apple": 0.5, "pear": 0.75, "fig": 2.0}


@app.post("/price")
def price(request: Request) -> dict[str, object]:
    """Price ``qty`` items of ``sku``: ``{"sku": "apple", "qty": 3}`` -> ``{"total": 1.5}``."""
    args = request.json()
    sku, qty = args.get("sku"), args.get("qty", 1)
    if sku not in PRICES:
        raise HTTPException(422, f"unknown sku {sku!r}")
    caller = request.headers.get("x-pywatt-source-module", "a client")
    return {"sku": sku, "qty": qty, "total": PRICES[sku] * qty, "priced_for": caller}


@app.on_startup
def register() -> None:
    # Registration is answered by the orchestrator (pywatt run keeps the registry).
    app.register_service_provider(
        ServiceType.custom("pricing"), "pricing", "module://pricing/price", version="1.0"
    )


if __name__ == "__main__":
    app.run()
