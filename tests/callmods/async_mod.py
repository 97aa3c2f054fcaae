"""Test module (asyncio) for tests/test_calls_e2e.py: serves calls and makes them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pywatt_asyncio import Module
from pywatt_proto import CallError, Request, RoutedMessage, ServiceType

app = Module()
_routed: list[Any] = []


@app.post("/a/echo")
async def echo(request: Request) -> Any:
    return {"echo": request.json(), "from": request.headers.get("x-pywatt-source-module")}


@app.post("/a/slow")
async def slow(request: Request) -> Any:
    await asyncio.sleep(30)
    return {}


@app.post("/a/boom")
async def boom(request: Request) -> Any:
    raise RuntimeError("boom")


@app.post("/a/exit")
async def exit_now(request: Request) -> Any:
    import os

    os._exit(3)


@app.post("/a/call")
async def call(request: Request) -> Any:
    a = request.json()
    t0 = time.monotonic()
    try:
        value = await app.call_module(
            a["target"], a["endpoint"], a.get("payload"), timeout=a.get("timeout")
        )
    except CallError as exc:
        # "took": how long the caller waited for the error (seconds), measured in the module
        took = time.monotonic() - t0
        return {"error": exc.kind, "type": type(exc).__name__, "status": exc.status, "took": took}
    return {"value": value}


@app.post("/a/cancel")
async def cancel(request: Request) -> Any:
    """Give up on a slow call: the call is forgotten (none left in flight)."""
    a = request.json()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.call_module(a["target"], a["endpoint"], None, timeout=20), 0.2)
    conn = app.connection
    assert conn is not None
    return {"in_flight": conn.calls_in_flight}


@app.post("/a/fanout")
async def fanout(request: Request) -> Any:
    a = request.json()
    n = a["n"]

    async def one(i: int) -> bool:
        reply = await app.call_module(a["target"], a["endpoint"], {"i": i, "s": "x" * (i % 7)})
        return bool(reply["echo"] == {"i": i, "s": "x" * (i % 7)})

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return {"ok": sum(results), "mismatch": n - sum(results)}


@app.post("/a/register")
async def register(request: Request) -> Any:
    a = request.json()
    pid = await app.register_service_provider(
        ServiceType.custom(a["type"]), a["name"], a["address"], version="1", metadata={"k": "v"}
    )
    return {"provider_id": pid}


@app.post("/a/discover")
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


@app.get("/a/routed")
async def routed(request: Request) -> Any:
    return _routed


if __name__ == "__main__":
    app.run()
