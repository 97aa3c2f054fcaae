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


@app.get("/routed")
def routed(request: Request) -> Any:
    return _routed


@app.post("/echo")
def echo(request: Request) -> Any:
    return {"echo": request.json(), "from": request.headers.get("x-pywatt-source-module")}


@app.post("/slow")
def slow(request: Request) -> Any:
    time.sleep(3)
    return {}


@app.post("/call")
def call(request: Request) -> Any:
    a = request.json()
    try:
        value = app.call_module(
            a["target"], a["endpoint"], a.get("payload"), timeout=a.get("timeout")
        )
    except CallError as exc:
        return {"error": exc.kind, "type": type(exc).__name__, "status": exc.status}
    return {"value": value}


@app.post("/fanout")
def fanout(request: Request) -> Any:
    a = request.json()
    n = a["n"]
    futures = [
        app.submit_call(a["target"], "/echo", {"i": i, "s": "y" * (i % 5)}) for i in range(n)
    ]
    ok = sum(f.result()["echo"] == {"i": i, "s": "y" * (i % 5)} for i, f in enumerate(futures))
    return {"ok": ok, "mismatch": n - ok}


@app.post("/register")
def register(request: Request) -> Any:
    a = request.json()
    pid = app.register_service_provider(ServiceType.custom(a["type"]), a["name"], a["address"])
    return {"provider_id": pid}


@app.post("/discover")
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
