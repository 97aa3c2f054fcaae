"""Test module (asyncio) for tests/test_calls_e2e.py: serves calls and makes them."""

from __future__ import annotations

import asyncio
from typing import Any

from pywatt_asyncio import Module
from pywatt_proto import CallError, Request, RoutedMessage, ServiceType

app = Module()
_routed: list[Any] = []


@app.post("/echo")
async def echo(request: Request) -> Any:
    return {"echo": request.json(), "from": request.headers.get("x-pywatt-source-module")}


@app.post("/slow")
async def slow(request: Request) -> Any:
    await asyncio.sleep(30)
    return {}


@app.post("/boom")
async def boom(request: Request) -> Any:
    raise RuntimeError("boom")


@app.post("/exit")
async def exit_now(request: Request) -> Any:
    import os

    os._exit(3)


@app.post("/call")
async def call(request: Request) -> Any:
    a = request.json()
    try:
        value = await app.call_module(
            a["target"], a["endpoint"], a.get("payload"), timeout=a.get("timeout")
        )
    except CallError as exc:
        return {"error": exc.kind, "type": type(exc).__name__, "status": exc.status}
    return {"value": value}


@app.post("/fanout")
async def fanout(request: Request) -> Any:
    a = request.json()
    n = a["n"]

    async def one(i: int) -> bool:
        reply = await app.call_module(a["target"], "/echo", {"i": i, "s": "x" * (i % 7)})
        return bool(reply["echo"] == {"i": i, "s": "x" * (i % 7)})

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return {"ok": sum(results), "mismatch": n - sum(results)}


@app.post("/register")
async def register(request: Request) -> Any:
    a = request.json()
    pid = await app.register_service_provider(
        ServiceType.custom(a["type"]), a["name"], a["address"], version="1", metadata={"k": "v"}
    )
    return {"provider_id": pid}


@app.post("/discover")
async def discover(request: Request) -> Any:
    a = request.json()
    found = await app.discover_service_providers(
        ServiceType.custom(a["type"]), all_providers=a.get("all", False)
    )
    return [
        {"id": p.provider_id, "module": p.module_id, "name": p.name, "healthy": p.is_healthy}
        for p in found
    ]


@app.on_routed_message
def on_routed(message: RoutedMessage) -> None:
    _routed.append([message.source_module_id, message.value])


@app.get("/routed")
async def routed(request: Request) -> Any:
    return _routed


if __name__ == "__main__":
    app.run()
