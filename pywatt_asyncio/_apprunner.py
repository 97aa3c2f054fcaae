"""``python -m pywatt_asyncio._apprunner TARGET``: run TARGET as a PyWatt module.

TARGET forms:

* ``path/to/file.py`` -- the file is executed (not as ``__main__``, so an
  ``if __name__ == "__main__": app.run()`` block does not run twice) and its app is served;
* ``path/to/file.py:name`` or ``package.module:name`` -- that attribute is served.

Without a name, the app is the module-level ``app`` (or ``application``), else the only
module object defined in the file. What is served, recognised by behaviour, not by name:

* a module -- an instance of ``pywatt_asyncio.Module`` or ``pywatt_sync.Module`` or of any
  subclass (``asgi_module(app, secrets=[...])``, ``wsgi_module(...)``), or any object with
  the module interface (``run``, ``serve_stdio`` and ``endpoints``) -- its ``run()``;
* an ASGI application (``async def app(scope, receive, send)`` or an object whose
  ``__call__`` is a coroutine function: FastAPI, Starlette) -- ``pywatt_asyncio.asgi_module``;
* a WSGI application (``app(environ, start_response)``: Flask, Django) --
  ``pywatt_sync.wsgi_module``.

The stdout guard is installed before the target is imported, so even import-time ``print``
calls go to stderr. An import that fails prints the traceback of the user's code only
(pywatt's and the import machinery's frames left out) and exits 1.
"""

from __future__ import annotations

import importlib
import inspect
import os
import runpy
import sys
import traceback
from collections.abc import Callable
from typing import Any

_MODULE_CLASSES = ("pywatt_asyncio._module", "pywatt_sync._module")
_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


class TargetNotFound(LookupError):
    """The target was imported but has no object to serve (the message lists candidates)."""


def is_module(obj: object) -> bool:
    """Return True if ``obj`` is a PyWatt module of either driver (any subclass), or has
    the module interface (callable ``run``, ``serve_stdio`` and ``endpoints``)."""
    if isinstance(obj, type):
        return False
    for name in _MODULE_CLASSES:
        mod = sys.modules.get(name)  # an instance's class is imported already
        cls = getattr(mod, "Module", None) if mod is not None else None
        if isinstance(cls, type) and isinstance(obj, cls):
            return True
    return all(callable(getattr(obj, a, None)) for a in ("run", "serve_stdio", "endpoints"))


def _is_asgi(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def _candidates(namespace: dict[str, Any]) -> list[str]:
    """Describe every object in ``namespace`` that could be served (``name (Type)``)."""
    found: list[str] = []
    for name, value in namespace.items():
        if name.startswith("_") or inspect.ismodule(value) or isinstance(value, type):
            continue
        if is_module(value) or _is_asgi(value):
            found.append(f"{name} ({type(value).__module__}.{type(value).__qualname__})")
    return found


def split_target(target: str) -> tuple[str, str]:
    """Return (file or module, attribute name) of a target: ``x.py:app`` -> (``x.py``,
    ``app``); without a name ``""``. A drive letter's colon (``C:``) separates nothing."""
    path, sep, attr = target.rpartition(":")
    if not sep or (len(path) == 1 and path.isalpha()):
        return target, ""
    return path, attr


def load_target(target: str) -> Any:
    """Import TARGET and return the object to serve.

    Raises :class:`TargetNotFound` (a ``LookupError``: no app found; the message lists the
    candidates with their types, or names the missing attribute) or whatever importing the
    user's code raises.
    """
    path, attr = split_target(target)
    if path.endswith(".py") or os.path.isfile(path):
        full = os.path.abspath(path)
        sys.path.insert(0, os.path.dirname(full))
        namespace = runpy.run_path(full, run_name="__pywatt_app__")
    else:
        namespace = vars(importlib.import_module(path))
    if attr:
        obj: Any = namespace
        for part in attr.split("."):
            try:
                obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
            except (KeyError, AttributeError):
                have = ", ".join(_candidates(namespace)) or "none"
                raise TargetNotFound(
                    f"{target}: no attribute {part!r} (objects that could be served: {have})"
                ) from None
        return obj
    for name in ("app", "application"):
        if name in namespace:
            return namespace[name]
    modules = [v for v in namespace.values() if is_module(v)]
    if len(modules) == 1:
        return modules[0]
    found = _candidates(namespace)
    listed = "; objects that could be served: " + ", ".join(found) if found else ""
    raise TargetNotFound(f"{target}: no 'app' found (name it with {target}:NAME){listed}")


def _runner(obj: Any) -> Callable[[], object] | None:
    """Return the call that serves ``obj`` on stdin/stdout (see the module docstring), or
    None when it is none of the kinds served."""
    if is_module(obj):
        run: Callable[[], object] = obj.run
        return run
    if isinstance(obj, type) or not callable(obj):
        return None
    if _is_asgi(obj):
        from ._asgi import asgi_module

        return asgi_module(obj).run
    from pywatt_sync._wsgi import wsgi_module

    return wsgi_module(obj).run


def _user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without pywatt's, runpy's and importlib's frames."""
    tb = traceback.TracebackException.from_exception(exc)
    stack = tb.stack
    keep = [
        f
        for f in stack
        if not f.filename.startswith(_OWN_DIR)
        and os.path.basename(f.filename) != "runpy.py"
        and not f.filename.startswith(("<frozen runpy", "<frozen importlib"))
    ]
    tb.stack = traceback.StackSummary.from_list(keep)
    return "".join(tb.format())


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m pywatt_asyncio._apprunner TARGET``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pywatt_asyncio._apprunner TARGET", file=sys.stderr)
        sys.exit(2)
    from ._guard import guard_stdout

    guard_stdout()
    try:
        obj = load_target(args[0])
    except TargetNotFound as exc:
        print(f"pywatt: cannot load {args[0]}: {exc}", file=sys.stderr)
        sys.exit(1)
    except BaseException as exc:
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            raise
        sys.stderr.write(_user_traceback(exc))
        print(f"pywatt: cannot load {args[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    run = _runner(obj)
    if run is None:
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        what = "is not a PyWatt module, an ASGI app or a WSGI app"
        print(f"pywatt: cannot serve {args[0]}: a {kind} {what}", file=sys.stderr)
        sys.exit(1)
    run()


if __name__ == "__main__":
    main()
