"""Module-to-module calls end to end: real module processes joined by ModuleNetwork.

The modules (tests/callmods/) run as children of pywatt_asyncio's ModuleProcess, the same
class the development host runs modules with; ModuleNetwork routes their calls and keeps the
provider registry. The test talks to the modules through ModuleProcess.request (what the
host's HTTP front door does) and the modules call each other from their handlers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pywatt_asyncio._config import python_argv
from pywatt_asyncio._network import ModuleNetwork
from pywatt_asyncio._orchestrator import ModuleProcess, child_env
from pywatt_proto import EncodedMessage, EncodingFormat

REPO = Path(__file__).resolve().parent.parent
MODS = REPO / "tests" / "callmods"


def _proc(module_id: str, script: str) -> ModuleProcess:
    return ModuleProcess(
        [sys.executable, str(MODS / script)],
        module_id=module_id,
        env=child_env(),
        heartbeat_interval=None,
        shutdown_grace=2.0,
    )


@pytest.fixture
async def net() -> AsyncIterator[ModuleNetwork]:
    network = ModuleNetwork()
    for mid, script in (("amod", "async_mod.py"), ("smod", "sync_mod.py"), ("ref", "ref_mod.py")):
        network.add(_proc(mid, script))
    await asyncio.gather(*(m.start() for m in network.modules.values()))
    try:
        yield network
    finally:
        await asyncio.gather(
            *(m.shutdown() for m in network.modules.values()), return_exceptions=True
        )


PREFIX = {"amod": "/a", "smod": "/s"}


async def post(net: ModuleNetwork, module: str, path: str, body: object) -> Any:
    """POST ``body`` to ``path`` of ``module`` (its routes live under its PREFIX)."""
    resp = await net.modules[module].request(
        "POST",
        PREFIX[module] + path,
        {"content-type": "application/json"},
        json.dumps(body).encode(),
    )
    assert resp.status_code == 200, (resp.status_code, resp.body)
    return json.loads(resp.body or b"null")


async def test_asyncio_and_blocking_modules_call_each_other(net: ModuleNetwork) -> None:
    got = await post(
        net, "amod", "/call", {"target": "smod", "endpoint": "/s/echo", "payload": [1]}
    )
    assert got == {"value": {"echo": [1], "from": "amod"}}
    got = await post(
        net, "smod", "/call", {"target": "amod", "endpoint": "/a/echo", "payload": "é"}
    )
    assert got == {"value": {"echo": "é", "from": "smod"}}


async def test_a_thousand_calls_in_flight_each_way_with_no_mismatch(net: ModuleNetwork) -> None:
    a, s = await asyncio.gather(
        post(net, "amod", "/fanout", {"target": "smod", "endpoint": "/s/echo", "n": 1000}),
        post(net, "smod", "/fanout", {"target": "amod", "endpoint": "/a/echo", "n": 1000}),
    )
    assert a == {"ok": 1000, "mismatch": 0}
    assert s == {"ok": 1000, "mismatch": 0}


@pytest.mark.parametrize("caller", ["amod", "smod"])
async def test_every_error_kind_arrives_within_a_second(net: ModuleNetwork, caller: str) -> None:
    cases = [
        ({"target": "nobody", "endpoint": "/x"}, "unknown_module", "UnknownModuleError", None),
        ({"target": "amod", "endpoint": "/nope"}, "unknown_endpoint", "UnknownEndpointError", 404),
        ({"target": "amod", "endpoint": "/a/boom"}, "target_failed", "TargetFailedError", 500),
        (
            {"target": "amod", "endpoint": "/a/slow", "timeout": 0.5},
            "deadline",
            "CallDeadlineError",
            None,
        ),
    ]
    for args, kind, name, status in cases:
        got = await post(net, caller, "/call", {**args, "timeout": args.get("timeout", 20)})
        took = got.pop("took")  # measured inside the calling module
        assert got == {"error": kind, "type": name, "status": status}
        assert took < 1.0, (kind, took)  # well before the 20 s deadline; "deadline" at 0.5 s


async def test_a_call_to_a_module_that_crashed(net: ModuleNetwork) -> None:
    resp = await net.modules["amod"].request("POST", "/a/exit", {}, b"")
    assert resp.status_code == 502
    await net.modules["amod"].wait()
    got = await post(net, "smod", "/call", {"target": "amod", "endpoint": "/a/echo", "timeout": 20})
    assert got.pop("took") < 1.0
    assert got == {"error": "target_failed", "type": "TargetFailedError", "status": None}


async def test_a_crash_while_the_call_is_in_flight(net: ModuleNetwork) -> None:
    call = asyncio.ensure_future(
        post(net, "smod", "/call", {"target": "amod", "endpoint": "/a/slow", "timeout": 20})
    )
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await net.modules["amod"].kill()
    got = await call
    got.pop("took")
    assert got == {"error": "target_failed", "type": "TargetFailedError", "status": None}
    assert time.monotonic() - t0 < 1.5  # after the kill, not at the 20 s deadline


async def test_registration_then_discovery_across_modules(net: ModuleNetwork) -> None:
    reg = await post(net, "amod", "/register", {"type": "pricing", "name": "p1", "address": "a"})
    assert reg == {"provider_id": "p1"}
    reg = await post(net, "smod", "/register", {"type": "pricing", "name": "p2", "address": "b"})
    assert reg == {"provider_id": "p2"}
    found = await post(net, "smod", "/discover", {"type": "pricing"})
    assert found == [{"id": "p1", "module": "amod", "name": "p1", "healthy": True}]
    await net.modules["amod"].kill()
    found = await post(net, "smod", "/discover", {"type": "pricing"})
    assert found == [{"id": "p2", "module": "smod", "name": "p2", "healthy": True}]
    found = await post(net, "smod", "/discover", {"type": "pricing", "all": True})
    assert [(f["id"], f["healthy"]) for f in found] == [("p1", False), ("p2", True)]
    assert await post(net, "smod", "/discover", {"type": "other"}) == []


async def test_a_reference_protocol_target_answers_through_its_router(net: ModuleNetwork) -> None:
    for caller in ("amod", "smod"):
        got = await post(
            net, caller, "/call", {"target": "ref", "endpoint": "/double", "payload": 21}
        )
        assert got == {"value": {"double": 42}}
        got = await post(
            net, caller, "/call", {"target": "ref", "endpoint": "/triple", "payload": 1}
        )
        assert got["error"] == "unknown_endpoint" and got["status"] == 404 and got["took"] < 1.0


async def test_the_example_pair_gateway_and_pricing() -> None:
    """examples/gateway.py (asyncio) calls examples/pricing.py (blocking), which registered
    itself from its on_startup hook."""
    network = ModuleNetwork()
    for name in ("gateway", "pricing"):
        network.add(
            ModuleProcess(
                python_argv(str(REPO / "examples" / f"{name}.py")),
                module_id=name,
                env=child_env(),
                heartbeat_interval=None,
                shutdown_grace=2.0,
            )
        )
    await asyncio.gather(*(m.start() for m in network.modules.values()))
    try:
        gateway = network.modules["gateway"]
        resp = await gateway.request("GET", "/quote/apple?qty=3", {}, None)
        assert resp.status_code == 200, resp.body
        assert json.loads(resp.body or b"") == {
            "quote": {"sku": "apple", "qty": 3, "total": 1.5, "priced_for": "gateway"},
            "via": "gateway",
        }
        resp = await gateway.request("GET", "/quote/durian", {}, None)
        assert resp.status_code == 422
        assert "unknown sku 'durian'" in (resp.body or b"").decode()
        resp = await gateway.request("GET", "/providers", {}, None)
        assert json.loads(resp.body or b"") == [
            {"id": "p1", "module": "pricing", "address": "module://pricing/price", "healthy": True}
        ]
    finally:
        await asyncio.gather(*(m.shutdown() for m in network.modules.values()))


@pytest.mark.parametrize("module", ["amod", "smod"])
async def test_one_way_routed_messages_reach_the_handlers(net: ModuleNetwork, module: str) -> None:
    """What a reference orchestrator delivers: routed_module_message with the reference
    sender's envelope payload; the handler gets the decoded argument."""
    proc = net.modules[module]
    inner = b'{"id":"0b7e2a52-9d0b-4f43-8f0e-3a2c6f3d1e55","content":{"n":1},"metadata":{}}'
    proc.conn.send_routed_message(
        "rustmod", uuid.uuid4(), EncodedMessage(data=inner, format=EncodingFormat.JSON)
    )
    proc.flush()
    for _ in range(200):
        resp = await proc.request("GET", PREFIX[module] + "/routed", {}, None)
        if json.loads(resp.body or b"[]"):
            break
        await asyncio.sleep(0.01)
    assert json.loads(resp.body or b"") == [["rustmod", {"n": 1}]]


async def test_a_caller_that_gives_up_forgets_the_call(net: ModuleNetwork) -> None:
    target = {"target": "amod", "endpoint": "/a/slow"}
    assert await post(net, "amod", "/cancel", target) == {"in_flight": 0}
    assert await post(net, "smod", "/cancel", target) == {"cancelled": True, "in_flight": 0}
    # the modules go on calling normally
    call = {"target": "smod", "endpoint": "/s/echo", "payload": 5}
    assert (await post(net, "amod", "/call", call))["value"]["echo"] == 5
