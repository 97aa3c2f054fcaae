"""The package ``__init__`` files load their areas lazily (PEP 562) and still export everything.

* every name in ``__all__`` resolves, is the object of the private module it comes from, and
  is listed by ``dir()``;
* the lazy table names exactly what the ``if TYPE_CHECKING:`` block imports (what mypy sees),
  from the same modules;
* a fresh interpreter that imports a driver's ``Module`` does not load the optional areas
  (HTTP client/server, JWT, ports, breaker, channels; asyncio and TLS for the blocking
  driver): start-up time.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pywatt_asyncio
import pywatt_proto
import pywatt_sync

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [pywatt_proto, pywatt_asyncio, pywatt_sync]


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_every_export_resolves_and_is_listed(pkg: ModuleType) -> None:
    listed = set(dir(pkg))
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert name in listed, name
        lazy = pkg._LAZY.get(name)
        if lazy is not None:
            module, attr = lazy
            assert value is getattr(importlib.import_module(module, pkg.__name__), attr), name
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018


def _type_checking_imports(path: Path) -> dict[str, tuple[str, str]]:
    tree = ast.parse(path.read_text())
    found: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1
                for alias in stmt.names:
                    found[alias.asname or alias.name] = ("." + str(stmt.module), alias.name)
    return found


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_lazy_table_mirrors_the_type_checking_imports(pkg: ModuleType) -> None:
    assert pkg.__file__ is not None
    assert _type_checking_imports(Path(pkg.__file__)) == pkg._LAZY
    eager = {n for n in pkg.__all__ if n not in pkg._LAZY}
    assert eager <= set(vars(pkg)), eager  # names not in the table are imported eagerly


OPTIONAL = [
    "pywatt_proto._http",
    "pywatt_proto._client_common",
    "pywatt_proto._ports",
    "pywatt_proto._breaker",
    "pywatt_proto._channel",
    "pywatt_proto._payload",
    "pywatt_proto._gateway",
    "pywatt_proto._orchestrator",
    "pywatt_proto.jwt",
    "h11",
]


@pytest.mark.parametrize("driver", ["pywatt_asyncio", "pywatt_sync"])
def test_importing_a_driver_module_skips_optional_areas(driver: str) -> None:
    code = f"import sys, json; from {driver} import Module; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(OPTIONAL), sorted(loaded & set(OPTIONAL))
    if driver == "pywatt_sync":  # (asyncio itself imports ssl)
        assert not loaded & {"asyncio", "ssl"}, sorted(loaded & {"asyncio", "ssl"})
