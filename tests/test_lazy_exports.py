"""The package ``__init__`` files load their areas lazily (PEP 562) and still export everything.

* every name in ``__all__`` resolves, is the object of the private module it comes from, and
  is listed by ``dir()``;
* ``__all__`` and the lazy imports come from the one table (``_SURFACE``); the committed
  ``__init__.pyi`` stubs are what ``python -m pywatt_proto._surface`` generates from it and
  re-export exactly its names, and mypy --strict on a user file sees every name with its
  real type (not ``object`` through the run-time ``__getattr__``);
* a fresh interpreter that imports a driver's ``Module`` does not load the optional areas
  (HTTP client/server, JWT, ports, breaker, channels; asyncio and TLS for the blocking
  driver): start-up time.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pywatt_asyncio
import pywatt_proto
import pywatt_sync
from pywatt_proto._lazy import exported_from
from pywatt_proto._surface import render_stub, stub_path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [pywatt_proto, pywatt_asyncio, pywatt_sync]


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_every_export_resolves_and_is_listed(pkg: ModuleType) -> None:
    listed = set(dir(pkg))
    table = exported_from(pkg._SURFACE)
    assert list(table) == pkg.__all__
    for name, module in table.items():
        value = getattr(pkg, name)
        assert name in listed, name
        assert value is getattr(importlib.import_module(module, pkg.__name__), name), name
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018


def test_a_name_listed_twice_is_rejected() -> None:
    with pytest.raises(ValueError, match="'Router' is listed twice"):
        exported_from({"a": {"._router": "Router Request"}, "b": {"._x": "Router"}})


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_committed_stub_is_generated_from_the_table(pkg: ModuleType) -> None:
    committed = stub_path(pkg.__name__).read_text(encoding="utf-8")
    assert committed == render_stub(pkg._SURFACE), "stale stub: python -m pywatt_proto._surface"


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_stub_reexports_exactly_the_table(pkg: ModuleType) -> None:
    tree = ast.parse(stub_path(pkg.__name__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom):
            # a package's own module (relative) or the defining module of a name it re-uses
            assert stmt.level in (0, 1), ast.unparse(stmt)
            for alias in stmt.names:
                assert alias.asname == alias.name, ast.unparse(stmt)  # explicit re-export
                found[alias.name] = "." * stmt.level + str(stmt.module)
    assert found == exported_from(pkg._SURFACE)


def test_mypy_strict_sees_every_export_with_its_type(tmp_path: Path) -> None:
    """A user file importing every name of each package type-checks under --strict, the
    names have their real types (not ``object`` through ``__getattr__``), and an unknown
    name is an error (so nothing is accepted by a catch-all)."""
    pytest.importorskip("mypy")
    probes = {
        "pywatt_proto": ("Router", "pywatt_proto._router.Router"),
        "pywatt_asyncio": ("Module", "pywatt_asyncio._module.Module"),
        "pywatt_sync": ("Module", "pywatt_sync._module.Module"),
    }
    files = []
    for pkg in PACKAGES:
        path = tmp_path / f"use_{pkg.__name__}.py"
        path.write_text(
            f"from {pkg.__name__} import {', '.join(pkg.__all__)}\n"
            f"reveal_type({probes[pkg.__name__][0]})\n"
            f"from {pkg.__name__} import no_such_name\n"
        )
        files.append(str(path))
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", *files],
        cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    lines = sorted(out.splitlines())
    assert len(lines) == 6, out
    for pkg in PACKAGES:
        qualified = probes[pkg.__name__][1]
        reveal, missing = (line for line in lines if line.startswith(f"use_{pkg.__name__}.py:"))
        assert reveal.startswith(f"use_{pkg.__name__}.py:2: note: Revealed type is"), out
        assert f"-> {qualified}" in reveal, out
        assert missing == (
            f'use_{pkg.__name__}.py:3: error: Module "{pkg.__name__}" has no attribute '
            '"no_such_name"  [attr-defined]'
        ), out


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
