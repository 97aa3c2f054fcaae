"""Module calls under the development host itself: ``pywatt run`` with several modules.

The host's front door takes the HTTP requests; the modules call each other through the
host's ModuleNetwork (spec/modules.md).
"""

from __future__ import annotations

import sys

import httpx
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
            r = httpx.post(run.url + "/call", json=body, timeout=10)
            assert r.status_code == 200, (r.text, run.stderr)
            return r.json()

        assert call({"target": "ref_mod", "endpoint": "/double", "payload": 21}) == {
            "value": {"double": 42}
        }
        assert call({"target": "ref_mod", "endpoint": "/nope", "payload": 1}) == {
            "error": "unknown_endpoint",
            "type": "UnknownEndpointError",
            "status": 404,
        }
        assert call({"target": "ghost", "endpoint": "/x"}) == {
            "error": "unknown_module",
            "type": "UnknownModuleError",
            "status": None,
        }
        assert call({"target": "async_mod", "endpoint": "/echo", "payload": {"a": [1]}}) == {
            "value": {"echo": {"a": [1]}, "from": "async_mod"}
        }
    finally:
        assert run.stop() == 0, run.stderr
