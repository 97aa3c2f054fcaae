"""Checks run when a route is registered, so mistakes fail at import with the user's line.

A pattern in another framework's spelling (Flask ``<int:id>``, Express ``:id``) is a valid
literal path that would answer 404 to every real request; a handler that cannot take the
request, or an ``async def`` one on the blocking driver, would answer 500 at the first
request. All of these are decided by the decorator's text and the handler's signature, so
they raise :class:`RouteDefinitionError` at registration, naming the file and line of the
first stack frame outside the pywatt packages.

The handler check reads the code object (argument counts, flags), not ``inspect.signature``:
``inspect`` is not on the blocking driver's start-up path. Callables without a code object
(classes, partials, objects with ``__call__``) are checked with ``inspect``.
"""

from __future__ import annotations

import re
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from collections.abc import Callable
    from typing import Any

# Code object flags (Include/cpython/code.h); the values are part of CPython's ABI.
_CO_VARARGS = 0x04
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200
_CO_ITERABLE_COROUTINE = 0x100

# Packages whose frames are skipped when looking for the user's line.
_OWN_PACKAGES = ("pywatt_proto", "pywatt_asyncio", "pywatt_sync")

# Flask/Werkzeug converters: <name>, <conv:name>, <conv(args):name>.
_FLASK = re.compile(r"<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
# Express/Rails parameters: a segment starting with ":" (optional "?" suffix).
_EXPRESS = re.compile(r"(?<=/):([A-Za-z_][A-Za-z0-9_]*)\??(?=/|$)")
# Flask converter names -> the router's parameter types.
_FLASK_TYPES = {"string": "", "int": "int", "float": "float", "path": "path", "uuid": "uuid"}


class RouteDefinitionError(TypeError, ValueError):
    """A route cannot be registered: bad pattern, unusable handler or a duplicate.

    Raised at registration (``@app.get(...)``, ``Router.add_route``), never at request time.
    The message starts with ``file:line:`` of the user's code that registered the route;
    that location is also in :attr:`location` (``""`` when no frame outside pywatt was
    found). A ``TypeError`` for handler problems and a ``ValueError`` for pattern problems
    alike, so either ``except`` clause catches it.
    """

    location: str

    def __init__(self, message: str, *, location: str | None = None) -> None:
        where = user_location() if location is None else location
        self.location = where
        super().__init__(f"{where}: {message}" if where else message)


def user_location() -> str:
    """Return ``"file:line"`` of the innermost caller outside the pywatt packages (or ``""``)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (isinstance(name, str) and name.split(".", 1)[0] in _OWN_PACKAGES):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def check_pattern(path: str) -> None:
    """Check a route pattern for other frameworks' parameter spellings.

    Returns None when ``path`` uses only the router's ``{name}`` / ``{name:type}`` syntax.

    Raises:
        RouteDefinitionError: ``path`` is not a string, or contains a Flask-style
            ``<conv:name>`` or Express-style ``:name`` segment; the message shows the
            pattern in the router's spelling.
    """
    if not isinstance(path, str):
        raise RouteDefinitionError(f"route path must be a str, got {type(path).__name__}")
    if "<" in path and _FLASK.search(path):
        fixed = _FLASK.sub(_flask_to_pywatt, path)
        raise RouteDefinitionError(
            f"route {path!r} uses Flask-style <...> parameters; write it as {fixed!r}"
        )
    if ":" in path and _EXPRESS.search(path):
        fixed = _EXPRESS.sub(lambda m: "{" + m.group(1) + "}", path)
        raise RouteDefinitionError(
            f"route {path!r} uses Express-style :name parameters; write it as {fixed!r}"
        )


def _flask_to_pywatt(m: re.Match[str]) -> str:
    conv, name = m.group(1), m.group(2)
    kind = _FLASK_TYPES.get(conv or "string", "")
    return "{" + name + (":" + kind if kind else "") + "}"


def is_async_handler(fn: object) -> bool:
    """Return True when calling ``fn`` returns a coroutine (``async def``, also wrapped in
    ``functools.partial`` or a bound method, or an object whose ``__call__`` is one)."""
    code = _code_of(fn)
    if code is not None:
        return bool(code.co_flags & (_CO_COROUTINE | _CO_ITERABLE_COROUTINE))
    import inspect  # unusual callables only (start-up time)

    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the callable object's own method
    )


def check_handler(
    fn: Callable[..., Any],
    *,
    allow_async: bool,
    what: str = "handler",
    call: tuple[str, ...] = ("request",),
) -> None:
    """Check that ``fn`` can be called with the positional arguments named in ``call``
    (a route handler: the request; middleware: ``(request, call_next)``; an error
    handler: ``(request, exc)``).

    Returns None when it can. ``allow_async`` False (the blocking driver) also refuses
    ``async def`` handlers.

    Raises:
        RouteDefinitionError: ``fn`` is not callable, is an async generator, cannot take
            ``len(call)`` positional arguments (``def h():`` or ``def h(a, b):`` for a
            route), or is ``async def`` where ``allow_async`` is False.
    """
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if not callable(fn):
        raise RouteDefinitionError(f"{what} {name} is not callable ({type(fn).__name__})")
    code = _code_of(fn)
    if code is not None and code.co_flags & _CO_ASYNC_GENERATOR:
        raise RouteDefinitionError(f"{what} {name} is an async generator, not a coroutine")
    if not allow_async and is_async_handler(fn):
        raise RouteDefinitionError(
            f"{what} {name} is 'async def' but this Module is blocking (pywatt_sync); "
            "use a plain 'def', or pywatt_asyncio.Module for coroutines"
        )
    problem = _arity_problem(fn, len(call))
    if problem:
        raise RouteDefinitionError(
            f"{what} {name} {problem}; it is called as {what}({', '.join(call)})"
        )


def _code_of(fn: object) -> Any:
    """Return the code object a call of ``fn`` runs, for plain functions and bound methods."""
    func = getattr(fn, "__func__", fn)  # bound method -> function
    code = getattr(func, "__code__", None)
    return code if type(getattr(code, "co_flags", None)) is int else None


def _arity_problem(fn: object, n: int) -> str:
    """Return why ``fn`` cannot be called with ``n`` positional arguments (``""`` if it can)."""
    code = _code_of(fn)
    func = getattr(fn, "__func__", fn)
    if code is not None and getattr(func, "__wrapped__", None) is None:
        bound = 1 if func is not fn and getattr(fn, "__self__", None) is not None else 0
        positional = code.co_argcount - bound
        defaults = len(getattr(func, "__defaults__", None) or ())
        required = positional - defaults
        kwdefaults = getattr(func, "__kwdefaults__", None) or {}
        kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
        missing_kw = [k for k in kwonly if k not in kwdefaults]
        if missing_kw:
            return f"has required keyword-only parameter(s) {', '.join(missing_kw)}"
        if required > n:
            return f"needs {required} positional arguments"
        if positional < n and not code.co_flags & _CO_VARARGS:
            return (
                "takes no positional argument"
                if positional == 0
                else (f"takes {positional} positional argument{'s' if positional > 1 else ''}")
            )
        return ""
    import inspect  # partials, classes, callable objects, decorated functions (start-up time)

    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # builtins without a signature: cannot tell, accept
        return ""
    try:
        sig.bind(*(object() for _ in range(n)))
    except TypeError as exc:
        return f"cannot take {n} positional argument{'s' if n > 1 else ''} ({exc})"
    return ""
