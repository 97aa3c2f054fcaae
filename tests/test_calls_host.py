"""Module calls under the development host itself: ``pywatt run`` with several modules.

The host's front door takes the HTTP requests; the modules call each other through the
host's ModuleNetwork (spec/modules.md).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import pytest
from test_e2e_asyncio import ROOT
from test_host import run_host

EXAMPLES = ROOT / "examples"
MODS = ROOT / "tests" / "callmods"


def test_the_readme_example_pair_under_pywatt_run() -> None:
    run = run_host(str(EXAMPLES / "gateway.py"), str(EXAMPLES / "pricing.py"))
    try:
        r = httpx.get(run.url + "/quote/apple?qty=3", timeout=10)
        assert r.status_code == 200, (r.text, run.stderr)
        assert r.json() == {
            "quote": {"sku": "apple", "qty": 3, "total": 1.5, "priced_for": "gateway"},
            "via": "gateway",
        }
        r = httpx.get(run.url + "/quote/durian", timeout=10)
        assert r.status_code == 422 and "unknown sku" in r.text
        r = httpx.get(run.url + "/providers", timeout=10)
        assert r.json() == [
            {"id": "p1", "module": "pricing", "address": "module://pricing/price", "healthy": True}
        ]
    finally:
        assert run.stop() == 0, run.stderr


def test_reference_protocol_target_with_extensions_none() -> None:
    """``--extensions none``: every module gets the reference init. The stdlib reference-like
    module (no pywatt inside) answers a call through its own router; errors still arrive."""
    run = run_host(
        "--extensions",
        "none",
        str(MODS / "async_mod.py"),
        "--",
        sys.executable,
        str(MODS / "ref_mod.py"),
    )
    try:

        def call(body: dict[str, object]) -> object:
            r = httpx.post(run.url + "/a/call", json=body, timeout=10)
            assert r.status_code == 200, (r.text, run.stderr)
            return r.json()

        assert call({"target": "ref_mod", "endpoint": "/double", "payload": 21}) == {
            "value": {"double": 42}
        }
        assert call({"target": "ref_mod", "endpoint": "/nope", "payload": 1}) == {
            "error": "unknown_endpoint",
            "type": "UnknownEndpointError",
            "status": 404,
            "took": pytest.approx(0, abs=1.0),
        }
        assert call({"target": "ghost", "endpoint": "/x"}) == {
            "error": "unknown_module",
            "type": "UnknownModuleError",
            "status": None,
            "took": pytest.approx(0, abs=1.0),
        }
        assert call({"target": "async_mod", "endpoint": "/a/echo", "payload": {"a": [1]}}) == {
            "value": {"echo": {"a": [1]}, "from": "async_mod"}
        }
    finally:
        assert run.stop() == 0, run.stderr


@pytest.fixture
def host() -> Any:
    """``pywatt run --restart on-failure`` with the asyncio and the blocking test module."""
    run = run_host("--restart", "on-failure", str(MODS / "async_mod.py"), str(MODS / "sync_mod.py"))
    yield run
    run.stop()


def _post(run: Any, path: str, body: object, timeout: float = 60) -> Any:
    r = httpx.post(run.url + path, json=body, timeout=timeout)
    assert r.status_code == 200, (r.status_code, r.text, run.stderr)
    return r.json()


def test_host_asyncio_and_blocking_call_each_other_1000_in_flight(host: Any) -> None:
    got = _post(host, "/a/call", {"target": "sync_mod", "endpoint": "/s/echo", "payload": [1]})
    assert got == {"value": {"echo": [1], "from": "async_mod"}}
    got = _post(host, "/s/call", {"target": "async_mod", "endpoint": "/a/echo", "payload": "é"})
    assert got == {"value": {"echo": "é", "from": "sync_mod"}}
    fan = {"n": 1000}
    assert _post(host, "/a/fanout", {**fan, "target": "sync_mod", "endpoint": "/s/echo"}) == {
        "ok": 1000,
        "mismatch": 0,
    }
    assert _post(host, "/s/fanout", {**fan, "target": "async_mod", "endpoint": "/a/echo"}) == {
        "ok": 1000,
        "mismatch": 0,
    }


@pytest.mark.parametrize("caller", ["/a/call", "/s/call"])
def test_host_every_error_kind_within_a_second(host: Any, caller: str) -> None:
    cases = [
        ({"target": "nobody", "endpoint": "/x"}, "unknown_module", None),
        ({"target": "async_mod", "endpoint": "/nope"}, "unknown_endpoint", 404),
        ({"target": "async_mod", "endpoint": "/a/boom"}, "target_failed", 500),
        ({"target": "async_mod", "endpoint": "/a/slow", "timeout": 0.5}, "deadline", None),
    ]
    for args, kind, status in cases:
        got = _post(host, caller, {"timeout": 20, **args})
        assert (got["error"], got["status"]) == (kind, status)
        # measured inside the calling module; the deadline case fails at its 0.5 s
        assert got["took"] < 1.0, (kind, got["took"])
        if kind == "deadline":
            assert got["took"] >= 0.5


def test_host_call_to_a_module_that_crashes(host: Any) -> None:
    """The target exits while handling the call: target_failed at once; the host restarts
    it (--restart on-failure) and later calls succeed again."""
    got = _post(host, "/s/call", {"target": "async_mod", "endpoint": "/a/exit", "timeout": 20})
    assert (got["error"], got["status"]) == ("target_failed", None)
    assert got["took"] < 1.0
    for _ in range(100):
        got = _post(host, "/s/call", {"target": "async_mod", "endpoint": "/a/echo", "payload": 1})
        if "value" in got:
            break
        assert got["error"] == "target_failed"  # restarting: not running yet
        time.sleep(0.1)
    assert got == {"value": {"echo": 1, "from": "sync_mod"}}


def test_host_registration_then_discovery_across_modules(host: Any) -> None:
    reg = {"type": "pricing", "address": "x"}
    assert _post(host, "/a/register", {**reg, "name": "p-a"}) == {"provider_id": "p1"}
    assert _post(host, "/s/register", {**reg, "name": "p-s"}) == {"provider_id": "p2"}
    assert _post(host, "/s/discover", {"type": "pricing"}) == [
        {"id": "p1", "module": "async_mod", "name": "p-a", "healthy": True}
    ]
    found = _post(host, "/a/discover", {"type": "pricing", "all": True})
    assert [(f["id"], f["module"], f["healthy"]) for f in found] == [
        ("p1", "async_mod", True),
        ("p2", "sync_mod", True),
    ]
