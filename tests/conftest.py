"""Shared test configuration: hypothesis profiles and test kinds.

``PYWATT_FUZZ_EXAMPLES=N`` runs every property/fuzz test with N examples
(CI uses the small default profile).

Every test gets one kind marker, by its file (``KINDS`` below):

* ``core`` -- pywatt_proto through its public API, in process: no event loop, thread,
  socket or child process. The everyday loop: ``pytest -m core`` (seconds).
* ``drivers`` -- pywatt_asyncio / pywatt_sync in process (loops, threads, local sockets,
  pipes).
* ``e2e`` -- child processes: real modules, the ``pywatt`` command, start-up checks.
* ``fuzz`` -- the parsers' fuzz targets in ``fuzz/`` (marked by ``fuzz/conftest.py``).

A file not listed gets a kind from what it imports (a child process -> e2e, a driver or
asyncio/threading/socket -> drivers, else core), so a new test file always runs in the
full suite and lands in a plausible group; list it here to say so explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
_long = os.environ.get("PYWATT_FUZZ_EXAMPLES")
if _long:
    settings.register_profile(
        "long",
        max_examples=int(_long),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("long")
else:
    settings.load_profile("ci")

TESTS = Path(__file__).resolve().parent

# fmt: off
#: test file -> kind (see the module docstring)
KINDS: dict[str, str] = {
    # core: the pure protocol core
    "test_backoff.py": "core", "test_calls.py": "core", "test_channel.py": "core",
    "test_codec_regressions.py": "core", "test_core_fastpath.py": "core",
    "test_framing.py": "core", "test_http_proto.py": "core", "test_jwt.py": "core",
    "test_jwt_helpers.py": "core", "test_jwt_interop.py": "core",
    "test_jwt_properties.py": "core", "test_messages.py": "core",
    "test_module_conn.py": "core", "test_module_startup.py": "core",
    "test_orchestrator_conn.py": "core", "test_payload.py": "core", "test_ports.py": "core",
    "test_purity.py": "core", "test_spec_tables.py": "core",
    "test_startup_records.py": "core", "test_vectors.py": "core",
    "test_wrapper_golden.py": "core",
    # drivers: asyncio / blocking drivers in process
    "test_adapter_secrets.py": "drivers", "test_asgi.py": "drivers",
    "test_asyncio_eager.py": "drivers", "test_asyncio_stdio.py": "drivers",
    "test_breaker.py": "drivers", "test_docs.py": "drivers", "test_frontdoor.py": "drivers",
    "test_http_client.py": "drivers", "test_http_direct_write.py": "drivers",
    "test_http_server_tasks.py": "drivers", "test_jwt_logging.py": "drivers",
    "test_jwt_middleware.py": "drivers", "test_jwt_rotation_first.py": "drivers",
    "test_module_api.py": "drivers", "test_ports_driver.py": "drivers",
    "test_router.py": "drivers", "test_secrets.py": "drivers",
    "test_testclient.py": "drivers", "test_trio_embed.py": "drivers",
    "test_wsgi.py": "drivers",
    # e2e: child processes
    "test_calls_e2e.py": "e2e", "test_channel_e2e.py": "e2e", "test_cli.py": "e2e",
    "test_conformance.py": "e2e", "test_contract.py": "e2e", "test_e2e_asyncio.py": "e2e",
    "test_e2e_sync.py": "e2e", "test_host.py": "e2e", "test_http_server.py": "e2e",
    "test_jwt_cli.py": "e2e", "test_jwt_cli_input.py": "e2e", "test_jwt_module.py": "e2e",
    "test_lazy_exports.py": "e2e", "test_router_results.py": "e2e",
    "test_startup.py": "e2e", "test_startup_lazylog.py": "e2e",
    "test_sync_leader.py": "e2e", "test_tcp_module_e2e.py": "e2e",
}
# fmt: on

_CHILD = re.compile(r"\bsubprocess\b|\bsys\.executable\b")
_DRIVER = re.compile(
    r"^\s*(?:from|import) (?:pywatt_asyncio|pywatt_sync|asyncio|threading|socket)\b", re.M
)
_guessed: dict[Path, str] = {}


def kind_of(path: Path) -> str:
    """Return the kind of the test file ``path`` (listed, or guessed from its imports)."""
    listed = KINDS.get(path.name)
    if listed is not None:
        return listed
    kind = _guessed.get(path)
    if kind is None:
        text = path.read_text(encoding="utf-8", errors="replace")
        kind = "e2e" if _CHILD.search(text) else "drivers" if _DRIVER.search(text) else "core"
        _guessed[path] = kind
    return kind


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if path.parent == TESTS:
            item.add_marker(kind_of(path))
