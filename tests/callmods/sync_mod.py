"""Test module (blocking) for tests/test_calls_e2e.py: serves calls and makes them."""

from __future__ import annotations

import time
from typing import Any

from pywatt_proto import CallError, Request, RoutedMessage, ServiceType
from pywatt_sync import Module

app = Module()
_routed: list[Any] = []


@app.on_routed_message
def on_routed(message: RoutedMessage) -> None:
    _routed.append([message.source_module_id, message.value])


@app.get("/s/routed")
def routed(request: Request) -> Any:
    return _routed


@app.post("/s/echo")
def echo(request: Request) -> Any:
    return {"echo": request.json(), "from": request.headers.get("x-pywatt-source-module")}


@app.post("/s/slow")
def slow(request: Request) -> Any:
    time.sleep(3)
    return {}


@app.post("/s/call")
def call(request: Request) -> Any:
    a = request.json()
    t0 = time.monotonic()
    try:
        value = app.call_module(
            a["target"], a["endpoint"], a.get("payload"), timeout=a.get("timeout")
        )
    except CallError as exc:
        # "took": how long the caller waited for the error (seconds), measured in the module
        took = time.monotonic() - t0
        return {"error": exc.kind, "type": type(exc).__name__, "status": exc.status, "took": took}
    return {"value": value}


@app.post("/s/cancel")
def cancel(request: Request) -> Any:
    """Give up on a slow call: the call is forgotten (none left in flight)."""
    a = request.json()
    future = app.submit_call(a["target"], a["endpoint"], None, timeout=20)
    future.cancel()
    conn = app.connection
    assert conn is not None
    return {"cancelled": future.cancelled(), "in_flight": conn.calls_in_flight}


@app.post("/s/fanout")
def fanout(request: Request) -> Any:
    a = request.json()
    n = a["n"]
    futures = [
        app.submit_call(a["target"], a["endpoint"], {"i": i, "s": "y" * (i % 5)}) for i in range(n)
    ]
    ok = sum(f.result()["echo"] == {"i": i, "s": "y" * (i % 5)} for i, f in enumerate(futures))
    return {"ok": ok, "mismatch": n - ok}


@app.post("/s/register")
def register(request: Request) -> Any:
    a = request.json()
    pid = app.register_service_provider(ServiceType.custom(a["type"]), a["name"], a["address"])
    return {"provider_id": pid}


@app.post("/s/discover")
def discover(request: Request) -> Any:
    a = request.json()
    found = app.discover_service_providers(
        ServiceType.custom(a["type"]), all_providers=a.get("all", False)
    )
    return [
        {"id": p.provider_id, "module": p.module_id, "name": p.name, "healthy": p.is_healthy}
        for p in found
    ]


if __name__ == "__main__":
    app.run()
