"""The protocol core stays Sans-IO: pywatt_proto never imports I/O, thread or clock modules.

Two independent checks, because each misses something the other sees:

1. **Source scan (AST).** Every ``.py`` file under ``pywatt_proto/`` (subpackages
   and ``__main__`` entry points included) is parsed; no ``import`` /
   ``from ... import`` anywhere in it (top level, inside functions, under
   ``TYPE_CHECKING``) may name a forbidden module, and no
   ``importlib.import_module("...")`` / ``__import__("...")`` call may name one
   in a string literal. This covers code paths that never run at import time.

2. **Fresh interpreter.** A subprocess imports ``pywatt_proto`` and every
   submodule (except ``__main__`` modules, which would run a CLI), with
   ``builtins.__import__`` wrapped to record every import *statement* executed
   by a ``pywatt_proto`` module, even of an already-loaded module. Then:

   * no pywatt_proto module executed an import of a forbidden module
     (catches dynamic imports the AST scan cannot see);
   * ``asyncio``, ``socket``, ``selectors``, ``threading`` and ``subprocess``
     are not in ``sys.modules`` afterwards unless they were already there at
     interpreter start-up -- so no *dependency* (stdlib or third-party) drags
     them in either.

   What is not meaningful, and therefore not asserted: ``time`` is already in
   ``sys.modules`` when a CPython 3.11 interpreter starts (``site`` and the
   import system load it), and ``datetime``'s C module imports it internally,
   so its presence after the import says nothing; for ``time`` only the first
   two checks (our own import statements) apply.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pywatt_proto

FORBIDDEN = frozenset({"asyncio", "socket", "selectors", "threading", "subprocess", "time"})
PACKAGE_DIR = Path(pywatt_proto.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def _forbidden_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            callee = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            first = node.args[0]
            if (
                callee in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names = [first.value]
        line = getattr(node, "lineno", 0)
        found.extend((line, n) for n in names if n.split(".")[0] in FORBIDDEN)
    return found


def test_scan_finds_forbidden_imports() -> None:
    # The scanner itself must be able to fail.
    src = (
        "import os\nimport time as t\nfrom asyncio import sleep\n"
        "def f():\n    import socket.x\n    return importlib.import_module('threading')\n"
        "from . import time\n"
    )
    assert [n for _, n in _forbidden_imports(ast.parse(src))] == [
        "time",
        "asyncio",
        "socket.x",
        "threading",
    ]


@pytest.mark.parametrize(
    "path", _source_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR.parent))
)
def test_source_has_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _forbidden_imports(tree) == [], f"{path} imports a forbidden module"


_PROBE = r"""
import builtins, importlib, json, pkgutil, sys

FORBIDDEN = set(json.loads(sys.argv[1]))
at_start = sorted(m for m in FORBIDDEN if m in sys.modules)
executed = []
failed = []
real_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if level == 0 and importer.startswith("pywatt_proto") and name.split(".")[0] in FORBIDDEN:
        executed.append([importer, name])
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
import pywatt_proto
imported = ["pywatt_proto"]
for info in pkgutil.walk_packages(pywatt_proto.__path__, "pywatt_proto."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception as exc:
        failed.append([info.name, repr(exc)])
builtins.__import__ = real_import
after = sorted(m for m in FORBIDDEN if m in sys.modules)
print(json.dumps({"at_start": at_start, "after": after, "executed": executed,
                  "failed": failed, "imported": imported}))
"""


def _probe(root: Path = REPO_ROOT) -> dict[str, list[str] | list[list[str]]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted(FORBIDDEN))],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=True,
    )
    result: dict[str, list[str] | list[list[str]]] = json.loads(
        proc.stdout.strip().splitlines()[-1]
    )
    return result


@pytest.fixture(scope="module")
def probe() -> dict[str, list[str] | list[list[str]]]:
    return _probe()


def test_every_core_module_imports(probe: dict[str, list[str] | list[list[str]]]) -> None:
    assert probe["failed"] == []
    assert "pywatt_proto._framing" in probe["imported"]
    assert "pywatt_proto.testing" in probe["imported"]


def test_core_executes_no_forbidden_import(probe: dict[str, list[str] | list[list[str]]]) -> None:
    assert probe["executed"] == []


def test_no_dependency_loads_io_machinery(probe: dict[str, list[str] | list[list[str]]]) -> None:
    # ``time`` is preloaded by the interpreter itself; see the module docstring.
    new = set(map(str, probe["after"])) - set(map(str, probe["at_start"])) - {"time"}
    assert new == set(), f"importing pywatt_proto loaded {sorted(new)}"


def test_probe_detects_a_violation(tmp_path: Path) -> None:
    # A copy of the package with one offending module: the probe must see it.
    shutil.copytree(PACKAGE_DIR, tmp_path / "pywatt_proto", ignore=shutil.ignore_patterns("*.pyc"))
    (tmp_path / "pywatt_proto" / "_offender.py").write_text(
        "import importlib\n_sock = importlib.import_module('selectors')\nimport time\n"
    )
    result = _probe(tmp_path)
    assert ["pywatt_proto._offender", "time"] in result["executed"]
    assert "selectors" in result["after"]
    assert _forbidden_imports(ast.parse((tmp_path / "pywatt_proto" / "_offender.py").read_text()))
