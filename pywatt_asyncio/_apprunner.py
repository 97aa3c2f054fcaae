"""``python -m pywatt_asyncio._apprunner TARGET``: run TARGET as a PyWatt module.

TARGET forms:

* ``path/to/file.py`` -- the file is executed (not as ``__main__``, so an
  ``if __name__ == "__main__": app.run()`` block does not run twice) and its app is served;
* ``path/to/file.py:name`` or ``package.module:name`` -- that attribute is served.

Without a name, the app is the module-level ``app`` (or ``application``), else the only
``Module`` instance defined in the file. What is served:

* a ``pywatt_asyncio.Module`` or ``pywatt_sync.Module`` -- its ``run()``;
* an ASGI application (``async def app(scope, receive, send)`` or an object whose
  ``__call__`` is a coroutine function: FastAPI, Starlette) -- ``pywatt_asyncio.asgi_module``;
* a WSGI application (``app(environ, start_response)``: Flask, Django) --
  ``pywatt_sync.wsgi_module``.

The stdout guard is installed before the target is imported, so even import-time ``print``
calls go to stderr.
"""

from __future__ import annotations

import importlib
import inspect
import os
import runpy
import sys
from typing import Any

__all__ = ["load_target", "main", "serve"]


def _is_module(obj: object) -> bool:
    mod = type(obj).__module__ or ""
    return type(obj).__name__ == "Module" and mod.startswith(("pywatt_asyncio", "pywatt_sync"))


def load_target(target: str) -> Any:
    """Import TARGET and return the object to serve. Raises ``LookupError``/``ImportError``."""
    path, sep, attr = target.rpartition(":")
    if not sep or (len(path) == 1 and path.isalpha()):  # no ":" (or a Windows drive letter)
        path, attr = target, ""
    if path.endswith(".py") or os.path.isfile(path):
        full = os.path.abspath(path)
        sys.path.insert(0, os.path.dirname(full))
        namespace = runpy.run_path(full, run_name="__pywatt_app__")
    else:
        namespace = vars(importlib.import_module(path))
    if attr:
        obj: Any = namespace
        for part in attr.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        return obj
    for name in ("app", "application"):
        if name in namespace:
            return namespace[name]
    modules = [v for v in namespace.values() if _is_module(v)]
    if len(modules) == 1:
        return modules[0]
    raise LookupError(f"{target}: no 'app' found (name it with {target}:NAME)")


def _is_asgi(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def serve(obj: Any) -> None:
    """Serve ``obj`` on stdin/stdout (never returns normally: the module exits)."""
    if _is_module(obj):
        obj.run()
        return
    if _is_asgi(obj):
        import pywatt_asyncio

        adapter = getattr(pywatt_asyncio, "asgi_module", None)
        if adapter is None:
            raise RuntimeError("the ASGI adapter (pywatt_asyncio.asgi_module) is not available")
        adapter(obj).run()
        return
    if callable(obj):
        import pywatt_sync

        adapter = getattr(pywatt_sync, "wsgi_module", None)
        if adapter is None:
            raise RuntimeError("the WSGI adapter (pywatt_sync.wsgi_module) is not available")
        adapter(obj).run()
        return
    raise TypeError(f"cannot serve {type(obj).__name__}: not a Module, ASGI or WSGI app")


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m pywatt_asyncio._apprunner TARGET``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pywatt_asyncio._apprunner TARGET", file=sys.stderr)
        sys.exit(2)
    from ._stdio import guard_stdout

    guard_stdout()
    try:
        obj = load_target(args[0])
    except Exception as exc:
        print(f"pywatt: cannot load {args[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    serve(obj)


if __name__ == "__main__":
    main()
